"""Downscaling for scene analysis (motion, tamper): cheap where coarse statistics can afford it."""

from __future__ import annotations

import cv2

from agent.core.datatypes import Image


def shrink(img: Image, size_px: tuple[int, int]) -> Image:
    """Downscale for analysis: bilinear to twice the target, then area-average.

    Close to a direct INTER_AREA reduction, at a fraction of its cost for a
    large frame (0.3 ms against 2 ms for 1080p to 160x120). Bilinear straight
    to twice the target skips pixels on a large reduction, which coarse scene
    statistics can afford; detector input, where one small face matters, uses
    `agent.detect.prep.area_shrink`, which counts every pixel.
    """
    w, h = size_px
    if img.shape[1] >= 4 * w and img.shape[0] >= 4 * h:  # from 4x: 720p to 320 px is 4x exactly
        img = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
