"""CenterFace support: the ONNX dimension rewrite (checked on a real YuNet file) and the heatmap decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from detect_support import ASTRONAUT, model_cache, photo

from agent.detect.centerface import decode_centerface
from agent.detect.onnxedit import rewrite_io_dims
from agent.detect.prep import PrepSpec, prepare
from agent.errors import ModelError


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_cache(tmp_path_factory)


def _session(model: bytes | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def test_rewrite_makes_a_fixed_model_dynamic_without_changing_it(cache: Path) -> None:
    # yunet_s_320 and yunet_s_640 hold the same weights with different declared input sizes:
    # the 320 file, re-declared dynamic, must compute exactly what the 640 file does at 640x640.
    data = (cache / "yunet_s_320_320.onnx").read_bytes()
    dims: dict[str, list[int | str | None]] = {"input": ["B", 3, "H", "W"]}
    for s in (8, 16, 32):
        for k, c in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
            dims[f"{k}_{s}"] = ["B", "N", c]
    new, old = rewrite_io_dims(data, dims)
    assert old["input"] == [1, 3, 320, 320] and old["kps_8"] == [1, 1600, 10]
    dyn = _session(new)
    assert dyn.get_inputs()[0].shape == ["B", 3, "H", "W"]
    ref = _session(str(cache / "face_detection_yunet_2023mar.onnx"))
    blob, _ = prepare(photo(ASTRONAUT), PrepSpec(), 640, 640)
    names = ["cls_8", "obj_16", "bbox_32", "kps_8"]
    for a, b in zip(dyn.run(names, {"input": blob}), ref.run(names, {"input": blob}), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rewrite_errors(cache: Path) -> None:
    data = (cache / "yunet_s_320_320.onnx").read_bytes()
    with pytest.raises(ModelError, match=r"no graph input/output named \['nope'\]"):
        rewrite_io_dims(data, {"nope": [1]})
    with pytest.raises(ModelError, match="truncated"):
        rewrite_io_dims(data[:1000], {"input": [1]})


def test_decode_centerface_cell() -> None:
    heat = np.zeros((1, 1, 8, 8), np.float32)
    scale = np.zeros((1, 2, 8, 8), np.float32)
    offset = np.zeros((1, 2, 8, 8), np.float32)
    heat[0, 0, 2, 3] = 0.9  # row 2, col 3
    scale[0, :, 2, 3] = [np.log(4.0), np.log(2.0)]  # height 16 px, width 8 px
    offset[0, :, 2, 3] = [0.25, 0.5]  # y, x
    boxes, scores = decode_centerface(heat, scale, offset, 32, 32, 0.5)
    cx, cy = (3 + 0.5 + 0.5) * 4, (2 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(boxes, [[cx - 4, cy - 8, cx + 4, cy + 8]])
    assert scores.tolist() == pytest.approx([0.9])
    assert decode_centerface(heat, scale, offset, 32, 32, 0.95)[0].shape == (0, 4)
