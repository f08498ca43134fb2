"""YOLOX (Megvii) COCO-80 object detector, decoded in numpy.

Output 1 x N x (5 + classes): (dx, dy, log w, log h, objectness, class
scores...) per grid cell for strides 8, 16, 32. Decode: centre = (cell + d) *
s, size = exp(log wh) * s, score = objectness * class score. Input is BGR
0-255, letterboxed top-left with grey (114) padding; the manifest records it.

Invariant: every wanted class of a cell is considered on its own (multi-label),
not just the cell's best class: a bed the model also half-believes is a sofa
must still count as a bed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from agent.detect.base import OnnxDetector
from agent.detect.nms import grid, xywh_to_xyxy
from agent.detect.prep import FloatArray, Letterbox
from agent.errors import ModelError

STRIDES = (8, 16, 32)


def decode_yolox(pred: FloatArray, in_w_px: int, in_h_px: int,
                 strides: tuple[int, ...] = STRIDES) -> tuple[FloatArray, FloatArray]:
    """-> (boxes Nx4 xyxy in input pixels, class scores N x classes), one row per cell."""
    p = np.asarray(pred, dtype=np.float32)
    p = p.reshape(-1, p.shape[-1])
    cells, st = grid(in_w_px, in_h_px, strides)
    if p.shape[0] != cells.shape[0] or p.shape[1] < 6:
        raise ModelError(f"YOLOX output has shape {p.shape}; expected {cells.shape[0]} x (5 + classes)")
    xy = (p[:, 0:2] + cells) * st[:, None]
    wh = np.exp(np.minimum(p[:, 2:4], 20.0)) * st[:, None]
    cls_scores = p[:, 5:] * p[:, 4:5]
    return xywh_to_xyxy(np.concatenate([xy, wh], axis=1)), cls_scores.astype(np.float32)


class YoloxDetector(OnnxDetector):
    plugin = "yolox"
    nms_iou = 0.45
    antialias = False

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        pred = outputs[self.output_names[0]]
        boxes, cls_scores = decode_yolox(pred, box.in_w_px, box.in_h_px)
        return self.select(boxes, cls_scores)
