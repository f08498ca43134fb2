"""Drawing zones over a frame for the homeowner: translucent fill, outline and label.

The frame drawn on is unredacted: the picture is written only where the homeowner asks, on the hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from agent.core.zones import zone_mask

if TYPE_CHECKING:
    pass


_ZONE_COLOURS = [(0, 0, 255), (0, 200, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 0)]


def render_zones(img: np.ndarray, zones: list[tuple[str, tuple, str]]) -> np.ndarray:
    """Draw zones (name, points, action) over a frame: translucent fill, outline, label."""
    h, w = img.shape[:2]
    out = img.copy()
    overlay = img.copy()
    for i, (_name, pts, _action) in enumerate(zones):
        colour = _ZONE_COLOURS[i % len(_ZONE_COLOURS)]
        m = zone_mask(pts, w, h)
        overlay[m > 0] = colour
        poly = np.array([[p.x_rel * w, p.y_rel * h] for p in pts], np.int32)
        cv2.polylines(out, [poly], True, colour, max(1, w // 400), cv2.LINE_AA)
    out = cv2.addWeighted(overlay, 0.35, out, 0.65, 0)
    scale = max(0.4, w / 1400)
    for i, (name, pts, action) in enumerate(zones):
        colour = _ZONE_COLOURS[i % len(_ZONE_COLOURS)]
        cx = int(sum(p.x_rel for p in pts) / len(pts) * w)
        cy = int(sum(p.y_rel for p in pts) / len(pts) * h)
        label = f"{name} [{action}]"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0 = max(0, min(w - tw - 4, cx - tw // 2))
        y0 = max(th + 4, min(h - 4, cy))
        cv2.rectangle(out, (x0 - 2, y0 - th - 4), (x0 + tw + 2, y0 + 4), (0, 0, 0), -1)
        cv2.putText(out, label, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out
