"""Hand-measured ground truth for the shared photos (`agent/lab/data/photos_truth.json`).

The JSON file is the one source of truth for what is in each photo of
`../shared/fixtures`: faces, persons and private objects as relative boxes,
plus the photo's sha256 and decoded size. `agent.lab.fixtures` builds its
generated videos' truth from it and `agent.lab.photos` scores the pipeline
against it (`privacy-agent eval --photos`).

Invariants:
- Loading validates everything a consumer relies on: every box is inside
  0..1 with x0 < x1 and y0 < y1, the group is known, sizes are positive, the
  sha256 is 64 hex digits. A bad file is a `FixtureError` naming the photo.
- The truth is bound to the photo bytes by sha256; `check_photo` compares it
  with the shared manifest, so boxes measured on one file are never scored
  against another.
- This module imports only the standard library and `agent.errors`, so any
  module (including `agent.lab.fixtures`) can use it without import cycles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.errors import FixtureError

TRUTH_FILE = Path(__file__).resolve().parent / "data" / "photos_truth.json"
GROUPS = ("private", "people", "negative")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

BoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class PhotoTruth:
    """Ground truth of one shared photo. Boxes are (x0, y0, x1, y1) relative to the photo size."""

    name: str
    sha256: str
    width_px: int
    height_px: int
    group: str  # one of GROUPS
    what: str
    faces: tuple[BoxTuple, ...] = ()
    persons: tuple[BoxTuple, ...] = ()
    private_objects: tuple[tuple[str, BoxTuple], ...] = ()

    def px(self, box: BoxTuple) -> BoxTuple:
        """A relative box in this photo's pixels.

        Rounded to 1/100 px: the file stores 6 decimals, so this gives back the
        whole pixels that were measured instead of 74.9998 for 75.
        """
        w, h = self.width_px, self.height_px
        return (round(box[0] * w, 2), round(box[1] * h, 2), round(box[2] * w, 2), round(box[3] * h, 2))


def _box(v: Any, where: str) -> BoxTuple:
    if not (isinstance(v, list) and len(v) == 4 and all(isinstance(c, int | float) and not isinstance(c, bool)
                                                         for c in v)):
        raise FixtureError(f"{where}: a box must be [x0, y0, x1, y1] numbers, got {v!r}")
    x0, y0, x1, y1 = (float(c) for c in v)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise FixtureError(f"{where}: box {v!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return (x0, y0, x1, y1)


def parse_photo_truth(doc: Any, where: str = "photos_truth.json") -> dict[str, PhotoTruth]:
    """Validate the decoded JSON document and return the truth by photo file name."""
    if not isinstance(doc, dict) or not isinstance(doc.get("photos"), dict):
        raise FixtureError(f"{where}: the top level must be an object with a 'photos' object")
    if doc.get("format") != 1:
        raise FixtureError(f"{where}: unknown format {doc.get('format')!r} (expected 1)")
    out: dict[str, PhotoTruth] = {}
    for name, p in doc["photos"].items():
        at = f"{where}: photo {name}"
        if not isinstance(p, dict):
            raise FixtureError(f"{at}: must be an object")
        sha = p.get("sha256")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise FixtureError(f"{at}: sha256 must be 64 lowercase hex digits")
        w, h = p.get("width_px"), p.get("height_px")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise FixtureError(f"{at}: width_px and height_px must be positive integers")
        group = p.get("group")
        if group not in GROUPS:
            raise FixtureError(f"{at}: group must be one of {', '.join(GROUPS)}, got {group!r}")
        for key in ("faces", "persons", "private_objects"):
            if not isinstance(p.get(key), list):
                raise FixtureError(f"{at}: {key!r} must be a list")
        objects: list[tuple[str, BoxTuple]] = []
        for i, o in enumerate(p["private_objects"]):
            if not isinstance(o, dict) or not isinstance(o.get("label"), str) or not o["label"]:
                raise FixtureError(f"{at}: private_objects[{i}] must be an object with a non-empty 'label'")
            objects.append((o["label"], _box(o.get("box"), f"{at} private_objects[{i}]")))
        out[name] = PhotoTruth(
            name, sha, w, h, group, str(p.get("what", "")),
            tuple(_box(b, f"{at} faces[{i}]") for i, b in enumerate(p["faces"])),
            tuple(_box(b, f"{at} persons[{i}]") for i, b in enumerate(p["persons"])),
            tuple(objects),
        )
    return out


@lru_cache(maxsize=1)
def _load() -> Mapping[str, PhotoTruth]:
    try:
        doc = json.loads(TRUTH_FILE.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FixtureError(f"cannot read the photo ground truth {TRUTH_FILE}: {e}") from None
    return MappingProxyType(parse_photo_truth(doc, str(TRUTH_FILE)))


def photo_truth() -> Mapping[str, PhotoTruth]:
    """The ground truth of every shared photo, by file name (read once, read-only)."""
    return _load()


def check_photo(truth: PhotoTruth) -> Path:
    """The photo's path in the shared folder, after checking manifest and truth agree on its sha256."""
    from agent.lab.shared_data import manifest_entry, shared_file

    entry = manifest_entry("fixtures", truth.name)
    if entry.sha256 != truth.sha256:
        raise FixtureError(
            f"photo {truth.name}: the ground truth was measured on sha256 {truth.sha256} but the shared "
            f"manifest lists {entry.sha256}; measure the new photo again"
        )
    return shared_file("fixtures", truth.name)
