"""The detector interface and the shared ONNX plumbing of the plugins.

A detector takes a BGR image (any size, grey accepted) and returns
`Detection`s with relative boxes and policy labels (`face`, `person`, `bed`,
...). It never draws, decides or keeps frames.

Invariants:
- Construction loads and checks the model (sha256 via the caller, input
  shape against the manifest); any problem is a `ModelError`, never a
  half-working detector.
- `detect()` reports only the labels it was asked for (`wanted`), each only
  at or above its per-label threshold. Scores are in 0..1; boxes are clipped
  to the frame.
- Bad input (empty, wrong dtype, wrong channel count) raises `AnalysisError`;
  the analysis stage turns any raise into WITHHOLD.
- At most `INFERENCE_SLOTS` (half the cores, at least one) inferences run at once in the
  process, whatever the number of cameras and models. ONNX Runtime keeps the working memory of
  every run in flight, so the eight lanes of four cameras inside `run` together held eight
  runs' worth (four cameras' shared detectors: 89 MiB, against 54 MiB bounded) for no more
  throughput than the cores give. A lane waiting for a slot leaves the cores to the other stages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.config import FALLBACK_THRESHOLD, OnnxRuntimeConfig
from agent.core.datatypes import Detection
from agent.detect.nms import batched_nms
from agent.detect.prep import FloatArray, Letterbox, PrepSpec, as_bgr, prepare
from agent.detect.session import open_session
from agent.errors import ModelError
from agent.geometry import BoxRel
from models.install import ManifestEntry


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def inference_slots(cores: int) -> int:
    """How many inferences may run at once on a machine with `cores` cores: half of them.

    A convolution network's run streams its weights and activations through the caches, and
    two runs at once on two cores slowed each other down more than they overlapped: each face
    run took about 10 ms instead of 8.6, and foreground, redaction and encoding, which shared
    the cores with them, slowed down too. With one slot on this 2-core machine, the other core
    is left to decoding, foreground, redaction and encoding, which interleave with a run rather
    than compete with another. Four live 720p cameras (bench/bench_live.py, two interleaved
    pairs of 40 s) read 51.1 and 50.5 frames a second in all for 31.2 and 31.6 ms of CPU per
    frame, against 44.3 and 42.7 for 35.9 and 37.4 with one slot per core; one camera's file
    replay is no slower (53.5-55.7 against 51.8-54.7 fps). A 4-core Pi gets two; that split is
    not measured there.
    """
    return max(1, cores // 2)


#: Inferences that may run at once in this process (see the module docstring).
INFERENCE_SLOTS = inference_slots(_cores())
_inference_slots = threading.BoundedSemaphore(INFERENCE_SLOTS)


@runtime_checkable
class Detector(Protocol):
    """What the analysis stage needs from a detector plugin."""

    model: str  # manifest name, reported as Detection.detector
    labels: frozenset[str]  # policy labels this instance reports

    def detect(self, image_bgr: npt.NDArray[np.uint8],
               half_bgr: npt.NDArray[np.uint8] | None = None) -> tuple[Detection, ...]:
        """Detect in one image. Raises on bad input or inference failure.

        `half_bgr`: the same image area-averaged to half its size (`Frame.half`), when the caller
        has it. A detector that shrinks the image may start from it; the result must be the same
        as without it."""
        ...


def policy_label(name: str) -> str:
    """COCO/class name -> policy label: lower case, spaces to underscores."""
    return name.strip().lower().replace(" ", "_")


def read_labels(entry: ManifestEntry, path: Path | None) -> tuple[str, ...]:
    """Class names for a model: 'face' for face models, else the labels file's lines."""
    if entry.labels == "face":
        return ("face",)
    if path is None:
        raise ModelError(f"model {entry.name!r} needs labels {entry.labels!r} but none were given")
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise ModelError(f"model {entry.name!r}: cannot read labels {path}: {e}") from None
    return tuple(policy_label(n) for n in names)


class OnnxDetector:
    """Base for the ONNX plugins: session, pre-processing, thresholds, box conversion.

    Subclasses set `plugin` and implement `decode()`, returning boxes in
    network-input pixels (xyxy), scores and class indices before NMS.
    """

    plugin: ClassVar[str] = ""
    nms_iou: ClassVar[float] = 0.45
    # Area-averaged downscaling: worth its cost for small faces, not for beds and people.
    antialias: ClassVar[bool] = True
    max_detections: ClassVar[int] = 300

    def __init__(
        self,
        entry: ManifestEntry,
        path: Path,
        *,
        onnx: OnnxRuntimeConfig | None = None,
        thresholds: Mapping[str, float] | None = None,
        wanted: frozenset[str] | None = None,
        input_size: tuple[int, int] | None = None,
        labels_path: Path | None = None,
    ) -> None:
        self.entry = entry
        self.model = entry.name
        self.spec = PrepSpec.parse(entry.preprocess, f"model {entry.name!r} preprocess")
        self.class_names = read_labels(entry, labels_path)
        wanted_set = frozenset(self.class_names) if wanted is None else frozenset(wanted)
        self.labels = frozenset(n for n in self.class_names if n in wanted_set)
        th = dict(thresholds or {})
        # Per-class score floor, indexed like the model's classes; unwanted classes never pass.
        self.class_min = np.array(
            [th.get(n, FALLBACK_THRESHOLD) if n in self.labels else np.inf for n in self.class_names],
            dtype=np.float32,
        )
        self.session = self.open(path, onnx or OnnxRuntimeConfig())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.in_w_px, self.in_h_px = self.choose_input_size(list(inp.shape), input_size)

    # --- hooks for plugins -----------------------------------------------------

    def open(self, path: Path, onnx: OnnxRuntimeConfig) -> ort.InferenceSession:
        return open_session(self.entry, path, onnx)

    def choose_input_size(self, declared: Sequence[object], requested: tuple[int, int] | None) -> tuple[int, int]:
        """(width, height) of the network input. Fixed models use their declared size."""
        h, w = declared[2], declared[3]
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            if requested is not None and requested != (w, h):
                raise ModelError(f"model {self.model!r} has a fixed input {w}x{h}; input_size {requested} is not possible")
            return w, h
        if requested is None:
            raise ModelError(f"model {self.model!r} has a dynamic input; set an input_size")
        return requested

    def input_size_for(self, src_w_px: int, src_h_px: int) -> tuple[int, int]:
        return self.in_w_px, self.in_h_px

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        """-> (boxes Nx4 xyxy in input pixels, scores N, class indices N)."""
        raise NotImplementedError

    def select(self, boxes: FloatArray, cls_scores: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        """Multi-label selection: one candidate per (box, class) at or above that class's threshold."""
        if cls_scores.ndim != 2 or cls_scores.shape[1] != len(self.class_names):
            raise ModelError(
                f"model {self.model!r}: {cls_scores.shape[-1]} class scores per box, "
                f"but {len(self.class_names)} labels"
            )
        rows, cols = np.nonzero(cls_scores >= self.class_min[None, :])
        return boxes[rows], cls_scores[rows, cols], cols.astype(np.int64)

    # --- the pipeline ----------------------------------------------------------

    def run(self, image_bgr: npt.NDArray[np.uint8],
            half_bgr: npt.NDArray[np.uint8] | None = None) -> tuple[dict[str, FloatArray], Letterbox]:
        img = as_bgr(image_bgr)
        w, h = self.input_size_for(img.shape[1], img.shape[0])
        blob, box = prepare(img, self.spec, w, h, self.antialias, half_bgr)
        with _inference_slots:
            outs = self.session.run(self.output_names, {self.input_name: blob})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs, strict=True)}, box

    def detect(self, image_bgr: npt.NDArray[np.uint8],
               half_bgr: npt.NDArray[np.uint8] | None = None) -> tuple[Detection, ...]:
        if not self.labels:
            return ()
        outputs, box = self.run(image_bgr, half_bgr)
        boxes, scores, cls = self.decode(outputs, box)
        if scores.size == 0:
            return ()
        ok = scores >= self.class_min[cls]
        boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
        if scores.size == 0:
            return ()
        keep = batched_nms(boxes, scores, cls, self.nms_iou, self.max_detections)
        rel = box.boxes_to_rel(boxes[keep])
        out = []
        for (x0, y0, x1, y1), s, c in zip(rel, scores[keep], cls[keep], strict=True):
            out.append(Detection(
                label=self.class_names[int(c)],
                score=float(min(1.0, max(0.0, s))),
                box=BoxRel.clipped(float(x0), float(y0), float(x1), float(y1)),
                detector=self.model,
            ))
        return tuple(out)
