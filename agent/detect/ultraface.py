"""Ultra-Light-Fast-Generic-Face-Detector (RFB-320) face detector, decoded in numpy.

The ONNX export outputs `scores` N x 2 (background, face; softmax applied)
and `boxes` N x 4 as raw SSD offsets (not yet corner boxes, whatever the
file's name suggests) against a fixed set of priors: strides 8, 16, 32, 64
with min box sizes (10, 16, 24), (32, 48), (64, 96), (128, 192, 256) pixels,
variances 0.1 (centre) and 0.2 (size). Input is RGB, (x - 127) / 128,
stretched to 320x240 (manifest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from agent.detect.base import OnnxDetector
from agent.detect.prep import FloatArray, Letterbox
from agent.errors import ModelError

STRIDES = (8, 16, 32, 64)
MIN_BOXES_PX = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def priors(in_w_px: int, in_h_px: int) -> FloatArray:
    """N x 4 (cx, cy, w, h) priors, relative to the input, in the model's output order."""
    out = []
    for s, sizes in zip(STRIDES, MIN_BOXES_PX, strict=True):
        fw, fh = math.ceil(in_w_px / s), math.ceil(in_h_px / s)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (xs.ravel() + 0.5) * s / in_w_px
        cy = (ys.ravel() + 0.5) * s / in_h_px
        for_cell = np.array([[m / in_w_px, m / in_h_px] for m in sizes], dtype=np.float32)
        centres = np.repeat(np.stack([cx, cy], axis=1), len(sizes), axis=0)
        sizes_all = np.tile(for_cell, (fw * fh, 1))
        out.append(np.concatenate([centres, sizes_all], axis=1))
    return np.clip(np.concatenate(out).astype(np.float32), 0.0, 1.0)


def decode_ultraface(loc: FloatArray, pri: FloatArray) -> FloatArray:
    """Raw offsets N x 4 -> corner boxes N x 4 relative to the input."""
    c = loc[:, 0:2] * CENTER_VARIANCE * pri[:, 2:4] + pri[:, 0:2]
    wh = np.exp(np.minimum(loc[:, 2:4] * SIZE_VARIANCE, 20.0)) * pri[:, 2:4]
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


class UltraFaceDetector(OnnxDetector):
    plugin = "ultraface"
    nms_iou = 0.3

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        try:
            scores = outputs["scores"].reshape(-1, 2)[:, 1]
            loc = outputs["boxes"].reshape(-1, 4)
        except KeyError as e:
            raise ModelError(f"model {self.model!r}: output {e.args[0]!r} is missing") from None
        pri = priors(box.in_w_px, box.in_h_px)
        if loc.shape[0] != pri.shape[0] or scores.shape[0] != pri.shape[0]:
            raise ModelError(f"model {self.model!r}: {loc.shape[0]} boxes for {pri.shape[0]} priors")
        rel = decode_ultraface(loc, pri)
        boxes = rel * np.array([box.in_w_px, box.in_h_px, box.in_w_px, box.in_h_px], dtype=np.float32)
        return boxes, scores.astype(np.float32), np.zeros(scores.shape[0], dtype=np.int64)
