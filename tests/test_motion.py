"""Presence, not only motion: a still person keeps a withhold zone occupied; warm-up and covers withhold."""

from __future__ import annotations

import cv2
import numpy as np
from videokit import textured

from agent.analysis.motion import MotionAnalyzer
from agent.config import MotionConfig
from agent.core.datatypes import Frame
from agent.core.policy import ZonePolicy
from agent.geometry import validate_polygon
from agent.vocab import Style, ZoneAction

DOOR = ZonePolicy("door", validate_polygon([[0.6, 0], [1, 0], [1, 1], [0.6, 1]]), ZoneAction.WITHHOLD,
                  Style.SOLID, 1.0)


def run(frames: list[np.ndarray], fps: float = 10.0) -> list[tuple[bool, str]]:
    a = MotionAnalyzer((DOOR,), MotionConfig(warmup_frames=3))
    out = []
    for i, img in enumerate(frames):
        za = a.analyze(Frame("cam", i, i / fps, 0.0, img)).zone_activity[0]
        out.append((za.occupied, za.reason))
    return out


def person(bg: np.ndarray, x: int) -> np.ndarray:
    f = bg.copy()
    h = f.shape[0]
    cv2.rectangle(f, (x, h // 3), (x + 30, h - 10), (30, 190, 250), -1)
    return f


def test_still_person_stays_withheld_until_gone_plus_hold() -> None:
    bg = textured(320, 240)
    frames = [bg] * 5  # empty room (warm-up learns it)
    frames += [person(bg, 120 + 15 * i) for i in range(6)]  # walks into the zone (x >= 192)
    frames += [person(bg, 240)] * 300  # stays perfectly still for 30 s
    frames += [bg] * 20  # leaves
    res = run(frames)
    assert all(o for o, _ in res[:2]), "warm-up withholds"
    assert not res[4][0], "empty zone after warm-up is released"
    still = res[11:311]
    assert all(o for o, _ in still), "a still person must stay withheld"
    assert still[-1][1] == "presence"
    after = res[311:]
    # Released only after hold_s (1 s = 10 frames) of an empty zone.
    assert all(o for o, _ in after[:10]) and not any(o for o, _ in after[11:])


def test_resolution_change_restarts_warmup() -> None:
    bg = textured(320, 240)
    res = run([bg] * 5 + [cv2.resize(bg, (160, 120))] * 2)
    assert not res[4][0] and res[5] == (True, "warmup")
