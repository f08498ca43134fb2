"""Pixel rules shared by the photo and video evaluations: box coverage, changed pixels, recall.

A box counts as masked when at least `COVERED_MIN` (80%) of its pixels are under the released
frame's mask, or (the pixel rule, the only one that also applies to other tools) when at least
`COVERED_MIN` of its measurable pixels changed by `CHANGE_MIN` levels, averaged over a
`CHANGE_WINDOW_PX` square window.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.zones import Mask, box_pixels
from agent.errors import FixtureError
from agent.geometry import BoxRel

COVERED_MIN = 0.8


CHANGE_MIN = 10


CHANGE_WINDOW_PX = 9


# A solid mask must be black. Our photo outputs are read exactly (in memory,
# never encoded), so any channel above this inside a solid region means the
# decision claims a mask the pixels do not have.
SOLID_MAX = 0


@dataclass
class Recall:
    """Ground-truth boxes counted as masked, out of all of them."""

    hits: int = 0
    total: int = 0

    def add(self, hit: bool) -> None:
        self.total += 1
        self.hits += int(hit)

    def __iadd__(self, other: Recall) -> Recall:
        self.hits += other.hits
        self.total += other.total
        return self

    @property
    def fraction(self) -> float | None:
        return self.hits / self.total if self.total else None

    def to_json(self) -> dict[str, Any]:
        f = self.fraction
        return {"masked": self.hits, "total": self.total, "recall": None if f is None else round(f, 6)}

    def text(self) -> str:
        f = self.fraction
        return f"{self.hits}/{self.total}" + ("" if f is None else f" = {f:.3f}")


def _box_px(box: BoxRel | Sequence[float], w: int, h: int) -> tuple[int, int, int, int]:
    b = box if isinstance(box, BoxRel) else BoxRel.clipped(*box)
    return box_pixels(b, w, h)


def box_cover_fraction(mask: Mask | None, box: BoxRel | Sequence[float], w: int, h: int) -> float:
    """Fraction of the box's pixels set in `mask`; None (a withheld frame) covers everything."""
    if mask is None:
        return 1.0
    x0, y0, x1, y1 = _box_px(box, w, h)
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        return 1.0
    return int(np.count_nonzero(mask[y0:y1, x0:x1])) / area


def changed_pixels(src: Image, out: Image) -> tuple[np.ndarray, np.ndarray]:
    """(changed, measurable) boolean maps for an output frame against its input (see module docstring)."""
    if src.shape != out.shape:
        raise FixtureError(f"output frame is {out.shape[1]}x{out.shape[0]} but its input is {src.shape[1]}x{src.shape[0]}")
    diff = np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=2).astype(np.float32)
    local = cv2.blur(diff, (CHANGE_WINDOW_PX, CHANGE_WINDOW_PX), borderType=cv2.BORDER_REFLECT)
    changed = local >= CHANGE_MIN
    dark = (src.max(axis=2) < CHANGE_MIN) & (out.max(axis=2) < CHANGE_MIN)
    return changed, ~dark


def box_change_fraction(changed: np.ndarray, measurable: np.ndarray, box: BoxRel | Sequence[float]) -> float:
    """Fraction of the box's measurable pixels that changed (1.0 if none is measurable)."""
    h, w = changed.shape[:2]
    x0, y0, x1, y1 = _box_px(box, w, h)
    m = measurable[y0:y1, x0:x1]
    n = int(np.count_nonzero(m))
    if n == 0:
        return 1.0
    return int(np.count_nonzero(changed[y0:y1, x0:x1] & m)) / n


def masked_by_pixels(src: Image, out: Image | None, box: BoxRel | Sequence[float]) -> bool:
    """The pixel-change rule for one box; `out` None means the frame was withheld (masked)."""
    if out is None:
        return True
    changed, measurable = changed_pixels(src, out)
    return box_change_fraction(changed, measurable, box) >= COVERED_MIN


def read_image(path: Path) -> Image:
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if raw is None:
        raise FixtureError(f"cannot decode {path}")
    return np.asarray(raw, dtype=np.uint8)


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    """`keep` if given (created, left in place), else a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="epa-quality-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise FixtureError(f"cannot write report {path}: {e.strerror or e}") from e
