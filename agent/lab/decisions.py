"""Reading a replay's `decisions.jsonl` and the frames of a fixture or an output video.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image, MaskRegion
from agent.errors import FixtureError
from agent.geometry import PointRel
from agent.jsonlimits import loads_bounded
from agent.media.video import video_frames
from agent.vocab import Style

ACTIONS = ("pass", "mask", "withhold")

# Replay outputs and fixtures may come from anyone (a shared bundle, a bug report): parsed bounded.
# A decision line or truth.json nests a handful of levels; a summary is well under these.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    frame: int
    action: str
    regions: tuple[MaskRegion, ...]
    out_index: int | None
    reasons: tuple[str, ...] = ()


def _region(obj: Any, where: str) -> MaskRegion:
    if not isinstance(obj, dict):
        raise FixtureError(f"{where}: a region must be an object")
    pts = obj.get("points")
    if not isinstance(pts, list) or len(pts) < 3:
        raise FixtureError(f"{where}: region points must be a list of at least 3 [x, y] pairs")
    if not all(isinstance(p, list) and len(p) == 2 for p in pts):
        raise FixtureError(f"{where}: every region point must be [x, y]")
    try:
        points = tuple(PointRel(float(p[0]), float(p[1])) for p in pts)
    except (TypeError, ValueError) as e:
        raise FixtureError(f"{where}: bad region point: {e}") from None
    try:
        style = Style(obj.get("style", "solid"))
    except ValueError:
        raise FixtureError(f"{where}: unknown region style {obj.get('style')!r}") from None
    return MaskRegion(str(obj.get("name", "")), str(obj.get("kind", "")), points, style)


def parse_decisions(text: str, where: str = "decisions.jsonl") -> dict[int, DecisionRecord]:
    """Parse decisions.jsonl text into records by input frame index."""
    out: dict[int, DecisionRecord] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        at = f"{where}:{lineno}"
        try:
            obj = loads_bounded(line, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH, what=at)
        except json.JSONDecodeError as e:
            raise FixtureError(f"{at}: not JSON: {e.msg}") from None
        except ValueError as e:  # over a limit (JsonLimitError, which names the line) or bad UTF-8
            raise FixtureError(str(e)) from None
        if not isinstance(obj, dict):
            raise FixtureError(f"{at}: each line must be a JSON object")
        frame = obj.get("frame")
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise FixtureError(f"{at}: 'frame' must be a non-negative integer, got {frame!r}")
        action = obj.get("action")
        if action not in ACTIONS:
            raise FixtureError(f"{at}: 'action' must be one of {', '.join(ACTIONS)}, got {action!r}")
        regions = obj.get("regions", [])
        if not isinstance(regions, list):
            raise FixtureError(f"{at}: 'regions' must be a list")
        oi = obj.get("out_index")
        if oi is not None and (not isinstance(oi, int) or isinstance(oi, bool) or oi < 0):
            raise FixtureError(f"{at}: 'out_index' must be null or a non-negative integer, got {oi!r}")
        if frame in out:
            raise FixtureError(f"{at}: frame {frame} has a second decision")
        reasons = obj.get("reasons", [])
        out[frame] = DecisionRecord(
            frame, action, tuple(_region(r, f"{at} regions[{i}]") for i, r in enumerate(regions)), oi,
            tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
        )
    return out


def read_decisions(replay_dir: Path) -> dict[int, DecisionRecord]:
    path = replay_dir / "decisions.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FixtureError(f"{path} does not exist; run a replay into {replay_dir} first") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FixtureError(f"cannot read {path}: {e}") from None
    return parse_decisions(text, str(path))


def fixture_frames(fixture_dir: Path, truth: Mapping[str, Any]) -> Iterator[Image]:
    """The fixture's frames as the pipeline decodes them (cv2, BGR)."""
    source = str(truth.get("source", "video.mp4"))
    if any(c in source for c in "*?["):
        files = sorted(glob.glob(str(fixture_dir / source)))
        if not files:
            raise FixtureError(f"fixture source {fixture_dir / source} matches no files")
        for f in files:
            img = cv2.imread(f, cv2.IMREAD_COLOR)
            if img is None:
                raise FixtureError(f"cannot decode fixture frame {f}")
            yield np.asarray(img, dtype=np.uint8)
        return
    yield from output_frames(fixture_dir / source)


def output_frames(path: Path) -> Iterator[Image]:
    if not path.is_file():
        raise FixtureError(f"video {path} does not exist")
    yield from video_frames(path)


def read_json_object(path: Path, missing: str) -> dict[str, Any]:
    """A JSON file whose top level is an object; `missing` says what to do when it is absent."""
    try:
        doc = loads_bounded(path.read_text(encoding="utf-8"), max_bytes=MAX_JSON_BYTES,
                            max_depth=MAX_JSON_DEPTH, what=str(path))
    except FileNotFoundError:
        raise FixtureError(f"{path} does not exist; {missing}") from None
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8, bad JSON or over a limit
        raise FixtureError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise FixtureError(f"{path}: top level must be an object")
    return doc
