"""Small synthetic videos for core tests (fixtures with ground truth live in agent.lab.fixtures)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def textured(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A background with structure (not 'covered'), deterministic."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def walker_frames(n: int, w: int = 320, h: int = 240, stop_at_x: int | None = None) -> list[np.ndarray]:
    """A block walking left to right (optionally stopping still at `stop_at_x`)."""
    bg = textured(w, h)
    out = []
    for i in range(n):
        f = bg.copy()
        x = 10 + i * 6
        if stop_at_x is not None:
            x = min(x, stop_at_x)
        cv2.rectangle(f, (x, h // 3), (x + w // 8, h - 20), (40, 200, 240), -1)
        out.append(f)
    return out


def decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out
