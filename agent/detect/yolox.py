"""YOLOX (Megvii) COCO-80 object detector, decoded in numpy.

Output 1 x N x (5 + classes): (dx, dy, log w, log h, objectness, class
scores...) per grid cell for strides 8, 16, 32. Decode: centre = (cell + d) *
s, size = exp(log wh) * s, score = objectness * class score. Input is BGR
0-255, letterboxed top-left with grey (114) padding; the manifest records it.

The file declares a square input (416x416 for YOLOX-Nano), but the network is
fully convolutional and its head flattens whatever grid it gets. Its input
and output are re-declared symbolic (`agent.detect.onnxedit`) and the input
is fitted to the frame's aspect with the declared size as the long side: a
16:9 frame runs at 416x256 instead of 416x416, objects at the same scale,
about 40% less compute and none of it spent on padding.

Invariant: every wanted class of a cell is considered on its own (multi-label),
not just the cell's best class: a bed the model also half-believes is a sofa
must still count as a bed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.config import OnnxRuntimeConfig
from agent.detect.base import OnnxDetector
from agent.detect.nms import grid, xywh_to_xyxy
from agent.detect.onnxedit import io_names, open_rewritten, unusable
from agent.detect.prep import FloatArray, Letterbox, fit_aspect
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
    _long_side_px = 0

    def open(self, path: Path, onnx: OnnxRuntimeConfig) -> ort.InferenceSession:
        # The declared (manifest-checked) square size becomes the long side of a fitted input.
        if self.entry.input_shape is None or not all(isinstance(v, int) for v in self.entry.input_shape[2:]):
            raise ModelError(f"model {self.model!r}: the manifest must give a fixed NxCxHxW input for YOLOX")
        h, w = self.entry.input_shape[2], self.entry.input_shape[3]
        assert h is not None and w is not None  # checked above
        self._long_side_px = max(h, w)
        data = path.read_bytes()
        try:
            inputs, outputs = io_names(data)
        except ModelError as e:
            raise unusable(self.entry, path, e) from None
        if not inputs or not outputs:
            raise ModelError(f"model {self.model!r}: {path} declares no graph input or output")
        return open_rewritten(self.entry, path, onnx, inputs[0],
                              {inputs[0]: [1, 3, "H", "W"], outputs[0]: [1, "N", "C"]}, data)

    def choose_input_size(self, declared: Sequence[object], requested: tuple[int, int] | None) -> tuple[int, int]:
        if requested is not None:
            raise ModelError(f"model {self.model!r}: its input is fitted to each frame; input_size is not used")
        return self._long_side_px, self._long_side_px

    def input_size_for(self, src_w_px: int, src_h_px: int) -> tuple[int, int]:
        return fit_aspect(src_w_px, src_h_px, self._long_side_px)

    def decode(self, outputs: Mapping[str, FloatArray], box: Letterbox) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
        pred = outputs[self.output_names[0]]
        boxes, cls_scores = decode_yolox(pred, box.in_w_px, box.in_h_px)
        return self.select(boxes, cls_scores)
