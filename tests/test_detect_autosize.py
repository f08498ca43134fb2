"""The default face model fits its input to the frame's aspect (long side 640, multiples of 32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detect_support import model_cache

from agent.detect.registry import load_detector


@pytest.mark.parametrize(("w", "h", "want"), [
    (1280, 720, (640, 384)), (1920, 1080, (640, 384)), (640, 480, (640, 480)), (480, 640, (480, 640)),
    (768, 576, (640, 480)), (100, 3000, (32, 640)),
])
def test_auto_input_size(tmp_path_factory: pytest.TempPathFactory, w: int, h: int, want: tuple[int, int]) -> None:
    cache: Path = model_cache(tmp_path_factory)
    det = load_detector("yunet_s_dynamic", kind="face", cache=cache, wanted=frozenset({"face"}))
    assert det.input_size_for(w, h) == want  # type: ignore[attr-defined]
    assert det.detect(np.zeros((h // 4, w // 4, 3), np.uint8)) == ()
