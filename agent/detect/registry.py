"""The explicit detector registry: manifest `decoder` name -> plugin class.

Invariant: no discovery, no entry points. A plugin exists only if it is
listed here, so what can run on the hub is visible in one place. Loading goes
through `load_detector()`, which verifies the model file (size, sha256)
before ONNX Runtime sees it.

Cameras with the same detection settings share one detector (its ONNX Runtime session):
detectors keep no per-camera state (a camera's carried results, cadence and failures live
in its own `DetectionAnalyzer`), ONNX Runtime's `run` is safe to call from several threads
at once, and one session per model instead of one per camera saves about 20 MiB for each
further camera. Sharing never skips a check: the file is verified on
every load, and a detector is reused only for the same verified file (name, sha256, path)
and the same settings. The cache holds detectors weakly: once no camera uses one, it goes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

from agent.config import OnnxRuntimeConfig
from agent.detect.base import Detector, OnnxDetector
from agent.detect.centerface import CenterFaceDetector
from agent.detect.nanodet import NanoDetDetector
from agent.detect.ultraface import UltraFaceDetector
from agent.detect.yolox import YoloxDetector
from agent.detect.yunet import YuNetDetector
from agent.errors import ModelError
from models.install import ManifestEntry, load_manifest, manifest_entry, model_path

REGISTRY: dict[str, type[OnnxDetector]] = {
    "yunet": YuNetDetector,
    "yolox": YoloxDetector,
    "nanodet": NanoDetDetector,
    "ultraface": UltraFaceDetector,
    "centerface": CenterFaceDetector,
}


def load_detector(
    model: str,
    *,
    kind: str | None = None,
    onnx: OnnxRuntimeConfig | None = None,
    thresholds: Mapping[str, float] | None = None,
    wanted: frozenset[str] | None = None,
    input_size: tuple[int, int] | None = None,
    cache: str | Path | None = None,
    manifest: dict[str, ManifestEntry] | None = None,
) -> Detector:
    """Verify and load one model. Raises ModelError for anything wrong with it.

    `kind` ("face" or "objects") guards against configuring, say, an object
    model as the face detector.
    """
    m = manifest if manifest is not None else load_manifest()
    entry = manifest_entry(model, m)
    if kind is not None and entry.kind != kind:
        raise ModelError(f"model {model!r} is a {entry.kind} model, not a {kind} model")
    plugin = REGISTRY.get(entry.decoder)
    if plugin is None:
        raise ModelError(f"model {model!r}: no detector plugin {entry.decoder!r} (known: {', '.join(REGISTRY)})")
    path = model_path(model, cache=cache, manifest=m)
    labels_path = None
    for dep in entry.depends_on():
        labels_path = model_path(dep, cache=cache, manifest=m)
    onnx = onnx or OnnxRuntimeConfig()
    key = (entry, str(path), str(labels_path), plugin, onnx.model_dump_json(),
           tuple(sorted((thresholds or {}).items())), None if wanted is None else tuple(sorted(wanted)), input_size)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is not None:
            return shared
        # Built under the lock: two cameras starting at once must not both build a session.
        det = plugin(entry, path, onnx=onnx, thresholds=thresholds, wanted=wanted,
                     input_size=input_size, labels_path=labels_path)
        _shared[key] = det
        return det


#: Loaded detectors by (verified file, settings), shared by every camera that asks for the same.
_shared: weakref.WeakValueDictionary[tuple[object, ...], OnnxDetector] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()
