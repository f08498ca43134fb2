"""The default models fit their input to the frame's aspect (YuNet: long side 640; YOLOX: its declared
square size as the long side; the short side a multiple of 32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detect_support import model_cache, photo

from agent.detect.registry import load_detector
from agent.geometry import BoxRel


@pytest.mark.parametrize(("w", "h", "want"), [
    (1280, 720, (640, 384)), (1920, 1080, (640, 384)), (640, 480, (640, 480)), (480, 640, (480, 640)),
    (768, 576, (640, 480)), (100, 3000, (32, 640)),
])
def test_auto_input_size(tmp_path_factory: pytest.TempPathFactory, w: int, h: int, want: tuple[int, int]) -> None:
    cache: Path = model_cache(tmp_path_factory)
    det = load_detector("yunet_s_dynamic", kind="face", cache=cache, wanted=frozenset({"face"}))
    assert det.input_size_for(w, h) == want  # type: ignore[attr-defined]
    assert det.detect(np.zeros((h // 4, w // 4, 3), np.uint8)) == ()


@pytest.mark.parametrize(("w", "h", "want"), [
    (1280, 720, (416, 256)), (1920, 1080, (416, 256)), (640, 480, (416, 320)), (480, 640, (320, 416)),
    (416, 416, (416, 416)), (100, 3000, (32, 416)),
])
def test_yolox_input_is_fitted_to_the_frame(tmp_path_factory: pytest.TempPathFactory, w: int, h: int,
                                            want: tuple[int, int]) -> None:
    cache: Path = model_cache(tmp_path_factory)
    det = load_detector("yolox_nano", kind="objects", cache=cache, wanted=frozenset({"person", "bed"}))
    assert det.input_size_for(w, h) == want
    assert det.detect(np.zeros((h // 4, w // 4, 3), np.uint8)) == ()


def test_fitted_yolox_finds_what_the_square_input_finds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Same objects at the same scale: the fitted input only drops the letterbox padding."""
    cache: Path = model_cache(tmp_path_factory)
    det = load_detector("yolox_nano", kind="objects", cache=cache,
                        wanted=frozenset({"person", "bed", "toilet", "sink"}))
    for name in ("coco_val2017_000000000632.jpg", "coco_val2017_000000003156.jpg",
                 "coco_val2017_000000001000.jpg"):
        img = photo(name)
        fitted = det.detect(img)
        square = det.input_size_for  # run once more at the declared square size
        det.input_size_for = lambda w, h: (416, 416)  # type: ignore[method-assign]
        try:
            letterboxed = det.detect(img)
        finally:
            det.input_size_for = square  # type: ignore[method-assign]
        assert det.input_size_for(img.shape[1], img.shape[0]) != (416, 416)
        assert sorted(d.label for d in fitted) == sorted(d.label for d in letterboxed), name
        for a in letterboxed:
            best = max((b for b in fitted if b.label == a.label),
                       key=lambda b: _iou(a.box, b.box))
            assert _iou(a.box, best.box) > 0.8, (name, a, best)


def _iou(a: BoxRel, b: BoxRel) -> float:
    ax0, ay0, ax1, ay1 = a.x0_rel, a.y0_rel, a.x1_rel, a.y1_rel
    bx0, by0, bx1, by1 = b.x0_rel, b.y0_rel, b.x1_rel, b.y1_rel
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
