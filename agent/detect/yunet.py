"""YuNet face detector (libfacedetection / OpenCV zoo), decoded in numpy.

Outputs per stride s in (8, 16, 32): cls_s, obj_s (N x 1), bbox_s (N x 4),
kps_s (N x 10), one row per grid cell, row-major. Decoding follows
`cv2.FaceDetectorYN` (the test suite checks against it on real photos):
score = sqrt(clip(cls) * clip(obj)); centre = (cell + d_xy) * s;
size = exp(d_wh) * s.

Invariant: boxes are in network-input pixels until `OnnxDetector` maps them
back to relative frame coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from agent.detect.base import OnnxDetector
from agent.detect.nms import grid
from agent.detect.prep import FloatArray, Letterbox, fit_aspect
from agent.errors import ModelError

STRIDES = (8, 16, 32)
# Dynamic-input YuNet without an explicit input_size: the long side of the
# frame maps to this many pixels and the short side to the next multiple of
# 32 that keeps the aspect. A 16:9 frame runs at 640x384 instead of being
# letterboxed into 640x640, about 40% less compute for the same face sizes.
AUTO_LONG_SIDE_PX = 640
DEFAULT_DYNAMIC_SIZE = (640, 480)


def decode_yunet(outputs: Mapping[str, FloatArray], in_w_px: int, in_h_px: int,
                 strides: tuple[int, ...] = STRIDES,
                 min_score: float = 0.0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """-> (boxes Nx4 xyxy, scores N, landmarks Nx10) in input pixels, for the cells scoring at
    least `min_score` (0: all cells). Scores come first so that boxes are only decoded where a
    face can pass the threshold: at 640x384 that is a handful of the 5,040 cells."""
    boxes, scores, kps = [], [], []
    for s in strides:
        try:
            cls = outputs[f"cls_{s}"].reshape(-1)
            obj = outputs[f"obj_{s}"].reshape(-1)
            bb = outputs[f"bbox_{s}"].reshape(-1, 4)
            kp = outputs[f"kps_{s}"].reshape(-1, 10)
        except KeyError as e:
            raise ModelError(f"YuNet output {e.args[0]!r} is missing") from None
        cells, _ = grid(in_w_px, in_h_px, (s,))
        if not (cells.shape[0] == cls.shape[0] == obj.shape[0] == bb.shape[0] == kp.shape[0]):
            raise ModelError(f"YuNet stride {s}: {cls.shape[0]} outputs for a {cells.shape[0]}-cell grid")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        if min_score > 0:
            keep = np.flatnonzero(score >= min_score)
            score, cells, bb, kp = score[keep], cells[keep], bb[keep], kp[keep]
        scores.append(score)
        c = (cells + bb[:, 0:2]) * s
        wh = np.exp(np.minimum(bb[:, 2:4], 20.0)) * s  # cap: exp overflow on garbage output
        boxes.append(np.concatenate([c - wh / 2, c + wh / 2], axis=1))
        k = kp.reshape(-1, 5, 2)
        kps.append(((k + cells[:, None, :]) * s).reshape(-1, 10))
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(kps).astype(np.float32))


class YuNetDetector(OnnxDetector):
    plugin = "yunet"
    nms_iou = 0.3  # FaceDetectorYN's default

    _auto = False

    def choose_input_size(self, declared: Sequence[object], requested: tuple[int, int] | None) -> tuple[int, int]:
        h, w = declared[2], declared[3]
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0) and requested is None:
            self._auto = True
            requested = DEFAULT_DYNAMIC_SIZE
        return super().choose_input_size(declared, requested)

    def input_size_for(self, src_w_px: int, src_h_px: int) -> tuple[int, int]:
        if not self._auto:
            return self.in_w_px, self.in_h_px
        return fit_aspect(src_w_px, src_h_px, AUTO_LONG_SIDE_PX)

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        # Only cells that can pass the face threshold are decoded (detect() filters by it anyway).
        floor = float(self.class_min.min())
        boxes, scores, _ = decode_yunet(outputs, box.in_w_px, box.in_h_px, min_score=floor if floor < np.inf else 0.0)
        return boxes, scores, np.zeros(scores.shape[0], dtype=np.int64)
