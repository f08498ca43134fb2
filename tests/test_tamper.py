"""Tamper: a covered camera and a moved camera withhold; people walking past do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.analysis.tamper import TamperAnalyzer
from agent.config import TamperConfig
from agent.core.datatypes import Frame
from agent.lab.shared_data import shared_file


@pytest.fixture(scope="module")
def cctv() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_file("fixtures", "opencv_vtest.avi")))
    frames = []
    while len(frames) < 300:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == 300
    return frames


def run(frames: list[np.ndarray], fps: float = 10.0) -> list[tuple[str, ...]]:
    a = TamperAnalyzer(TamperConfig())
    return [a.analyze(Frame("cam", i, i / fps, 0.0, f)).faults for i, f in enumerate(frames)]


def test_pedestrians_are_not_tampering(cctv: list[np.ndarray]) -> None:
    assert not any(run(cctv)), "people walking through a real CCTV scene must not look like tampering"


@pytest.mark.parametrize("how", ["shift", "rotate"])
def test_moved_camera_withholds_until_relearned(cctv: list[np.ndarray], how: str) -> None:
    h, w = cctv[0].shape[:2]
    m = (np.float32([[1, 0, 0.1 * w], [0, 1, 0]]) if how == "shift"
         else cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0))
    moved = [cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT) for f in cctv[40:80]]
    a = TamperAnalyzer(TamperConfig())
    frames = cctv[:40] + moved + cctv[80:120]
    faults = [a.analyze(Frame("cam", i, i / 10.0, 0.0, f)).faults for i, f in enumerate(frames)]
    assert not any(faults[:40])
    # Flagged within moved_hold_s (1 s = 10 frames), and latched: a view that comes back is
    # still withheld until the owner relearns (never automatic).
    assert all("tamper:moved" in f for f in faults[51:])
    a.relearn()
    after = [a.analyze(Frame("cam", i, i / 10.0, 0.0, f)).faults for i, f in enumerate(cctv[120:180], 120)]
    assert not any(after)


def test_covered_camera(cctv: list[np.ndarray]) -> None:
    black = [np.zeros_like(cctv[0])] * 5
    faults = run(cctv[:10] + black + cctv[10:20])
    assert all(f == ("tamper:covered",) for f in faults[10:15])
    assert not any(faults[15:])


def test_disabled() -> None:
    a = TamperAnalyzer(TamperConfig(enabled=False))
    assert a.analyze(Frame("cam", 0, 0.0, 0.0, np.zeros((10, 10, 3), np.uint8))).faults == ()
