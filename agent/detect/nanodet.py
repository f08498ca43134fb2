"""NanoDet-m COCO-80 object detector (GFL head), decoded in numpy.

Outputs: for strides 8, 16, 32 a class-score map (N x 80, already sigmoid)
and a distance map (N x 4*(reg_max+1)), told apart by their last dimension.
Each side's distance is the expectation of a softmax over reg_max+1 bins,
times the stride, measured from the cell centre (col*s + (s-1)/2).
Input is BGR, mean/std normalised, letterboxed centred (manifest).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from agent.detect.base import OnnxDetector
from agent.detect.nms import grid
from agent.detect.prep import FloatArray, Letterbox
from agent.errors import ModelError

STRIDES = (8, 16, 32)
REG_MAX = 7


def decode_nanodet(cls_maps: list[FloatArray], reg_maps: list[FloatArray], in_w_px: int, in_h_px: int,
                   strides: tuple[int, ...] = STRIDES, reg_max: int = REG_MAX) -> tuple[FloatArray, FloatArray]:
    """-> (boxes Nx4 xyxy in input pixels, class scores N x classes), levels in stride order."""
    boxes, scores = [], []
    bins = np.arange(reg_max + 1, dtype=np.float32)
    for s, c, r in zip(strides, cls_maps, reg_maps, strict=True):
        cells, _ = grid(in_w_px, in_h_px, (s,))
        c = c.reshape(-1, c.shape[-1])
        r = r.reshape(-1, 4, reg_max + 1)
        if c.shape[0] != cells.shape[0] or r.shape[0] != cells.shape[0]:
            raise ModelError(f"NanoDet stride {s}: outputs do not match a {cells.shape[0]}-cell grid")
        e = np.exp(r - r.max(axis=2, keepdims=True))
        dist = (e / e.sum(axis=2, keepdims=True)) @ bins * s  # N x 4: left, top, right, bottom
        centre = cells * s + (s - 1) / 2.0
        boxes.append(np.concatenate([centre - dist[:, 0:2], centre + dist[:, 2:4]], axis=1))
        scores.append(c)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


class NanoDetDetector(OnnxDetector):
    plugin = "nanodet"
    nms_iou = 0.6
    antialias = False

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        n_cls = len(self.class_names)
        arrays = [outputs[n] for n in self.output_names]
        # Sort each kind by number of cells, largest first = stride 8 first.
        cls_maps = sorted((a for a in arrays if a.shape[-1] == n_cls), key=lambda a: -a.size)
        reg_maps = sorted((a for a in arrays if a.shape[-1] == 4 * (REG_MAX + 1)), key=lambda a: -a.size)
        if len(cls_maps) != len(STRIDES) or len(reg_maps) != len(STRIDES):
            raise ModelError(f"model {self.model!r}: expected 3 class and 3 box outputs, got shapes "
                             f"{[a.shape for a in arrays]}")
        boxes, cls_scores = decode_nanodet(cls_maps, reg_maps, box.in_w_px, box.in_h_px)
        return self.select(boxes, cls_scores)
