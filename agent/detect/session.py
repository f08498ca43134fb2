"""ONNX Runtime sessions built from config, with load-time checks against the manifest.

Invariants:
- A session is only built from a file that `models.install.model_path()` has
  just verified (size and sha256), so a corrupted or swapped file never runs.
- Every load failure (missing file, bad hash, ONNX Runtime refusing the file,
  an input shape that differs from the manifest, no usable provider) raises
  `ModelError` naming the model; the caller decides withhold vs refuse-start.
- Thread settings come from config; by default one intra-op thread and no
  spinning, so one camera's detector does not starve the others on a Pi.
- No session is built before ONNX Runtime's telemetry events are switched off
  through its API as well (`ORT_DISABLE_TELEMETRY=1`, forced in `agent/__init__.py`,
  is the switch that keeps the uploader and the device id from ever existing).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import onnxruntime as ort

from agent.config import OnnxRuntimeConfig
from agent.errors import ModelError
from models.install import ManifestEntry

log = logging.getLogger(__name__)

_OPT_LEVEL = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def disable_telemetry_events() -> bool:
    """Switch off ONNX Runtime's telemetry events through its API; True if the call was made.

    Belt and braces beside `ORT_DISABLE_TELEMETRY=1`: the API exists in the 1.x builds we
    use, but another build may lack it or refuse the call, and neither may stop detection.
    """
    fn = getattr(ort, "disable_telemetry_events", None)
    if not callable(fn):
        log.debug("this ONNX Runtime has no disable_telemetry_events(); relying on ORT_DISABLE_TELEMETRY=1")
        return False
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (a native binding; the env var is the real switch)
        log.debug("ONNX Runtime refused disable_telemetry_events(): %s", e)
        return False
    return True


_arena_lock = threading.Lock()
_arena_registered: list[bool] = []


def shared_cpu_arena() -> bool:
    """Register one CPU arena for every session in the process (once); False if this ONNX Runtime
    cannot, and then each session keeps its own.

    Each session otherwise grows a private arena to its own high-water mark and never gives it
    back: with a face and an object model, about 4 MiB more than one shared arena, which serves
    whichever session runs (at most `INFERENCE_SLOTS` inferences run at once, `detect.base`). The arena
    grows by what is asked for, not to the next power of two (the default), so it holds little
    unused room. Measured with bench/bench_live.py.
    """
    with _arena_lock:
        if not _arena_registered:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max_mem 0 (no limit), extend strategy 1 (kSameAsRequested), defaults for the rest.
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                _arena_registered.append(True)
            except Exception as e:  # noqa: BLE001  (a native binding; per-session arenas still work)
                log.debug("ONNX Runtime refused a shared CPU arena (%s); sessions keep their own", e)
                _arena_registered.append(False)
        return _arena_registered[0]


def session_options(cfg: OnnxRuntimeConfig) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.intra_op_threads
    so.inter_op_num_threads = cfg.inter_op_threads
    so.graph_optimization_level = _OPT_LEVEL[cfg.graph_optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = cfg.memory_pattern
    # The CPU arena stays on: without it both default models cost 19 instead of 14.6 ms per
    # 720p frame, and malloc's fragmentation held more memory than the arena does.
    # Some exported models list their weights as graph inputs; ONNX Runtime warns about each
    # one at load. Errors still surface as exceptions.
    so.log_severity_level = 3
    spin = "1" if cfg.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if shared_cpu_arena():
        so.add_session_config_entry("session.use_env_allocators", "1")
    return so


def providers(cfg: OnnxRuntimeConfig, model: str) -> list[str]:
    available = set(ort.get_available_providers())
    chosen = [p for p in cfg.providers if p in available]
    for p in cfg.providers:
        if p not in available:
            log.warning("model %s: ONNX Runtime provider %s is not available here; skipping it", model, p)
    if not chosen:
        raise ModelError(
            f"model {model!r}: none of the configured providers {cfg.providers} is available "
            f"(available: {sorted(available)})"
        )
    return chosen


def shape_matches(declared: list[Any], expected: tuple[int | None, ...]) -> bool:
    """Does the ONNX input's declared shape match the manifest (None = dynamic)?"""
    if len(declared) != len(expected):
        return False
    for d, e in zip(declared, expected, strict=True):
        d_dynamic = not isinstance(d, int) or d <= 0
        if e is None:
            continue  # the manifest allows any size here
        if d_dynamic or d != e:
            return False
    return True


def open_session(entry: ManifestEntry, path: Path, cfg: OnnxRuntimeConfig,
                 model_bytes: bytes | None = None) -> ort.InferenceSession:
    """Build a session for `entry` and check its single image input against the manifest.

    `model_bytes` lets a plugin pass a rewritten model (e.g. dynamic dims);
    `path` must still be the verified file it came from.
    """
    disable_telemetry_events()
    try:
        sess = ort.InferenceSession(
            model_bytes if model_bytes is not None else str(path),
            sess_options=session_options(cfg),
            providers=providers(cfg, entry.name),
        )
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001  (ONNX Runtime raises several unrelated types for bad files)
        raise ModelError(f"model {entry.name!r}: ONNX Runtime cannot load {path}: {e}") from None
    if model_bytes is not None and getattr(sess, "_model_bytes", None) is model_bytes:
        # ONNX Runtime's Python wrapper keeps the model's bytes for the life of the session, only
        # to rebuild it when a GPU provider falls back to the CPU. Sessions here are CPU-only and
        # never rebuilt, and the rewritten object model is 3.5 MiB held for nothing.
        sess._model_bytes = None
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"model {entry.name!r}: expected 1 input, {path} has {len(inputs)}")
    declared = list(inputs[0].shape)
    if model_bytes is None and entry.input_shape is not None and not shape_matches(declared, entry.input_shape):
        want = "x".join("?" if v is None else str(v) for v in entry.input_shape)
        raise ModelError(
            f"model {entry.name!r}: {path} declares input shape {declared}, the manifest says {want}"
        )
    if inputs[0].type != "tensor(float)":
        raise ModelError(f"model {entry.name!r}: input type is {inputs[0].type}, expected tensor(float)")
    return sess
