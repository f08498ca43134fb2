"""Saving the page's zones: the same validation as `check-config`, written with comments kept, applied live.

The page sends one camera's whole list of zones. Each zone the page loaded carries the name it
was loaded under (`was`), so an edited zone keeps its place, its other keys (`hold_s`) and its
comments in the YAML; a zone the page no longer sends is removed; a new one is appended.

Invariants:
- Nothing is written unless the whole new file passes `agent.config.parse_config_text`, the
  validation `check-config` and `run` use; its messages (key path and line) go back to the page.
- Only the camera's `zones:` list changes; every other byte of the file round-trips (ruamel, as
  `zones discover --apply` does), and the previous file is kept as `.bak`.
- The running pipeline gets the new policy only after the file is written (record, then act).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from agent.config import LoadedConfig, config_hash, parse_config_text
from agent.config.edit import edit_camera, write_config_atomically
from agent.core.policy import CameraPolicy, camera_policy

ZONE_KEYS = {"name", "points", "action", "style", "was"}
MAX_ZONES = 64
MAX_POINTS = 64


class BadZones(ValueError):
    """The request does not have the shape of a list of zones (before any config validation)."""


@dataclass(frozen=True, slots=True)
class PageZone:
    name: str
    points: tuple[tuple[float, float], ...]
    action: str
    style: str
    was: str | None


def parse_page_zones(doc: Any) -> list[PageZone]:
    """The request body's zones, shape-checked. Values (ranges, polygons) are the config's to judge."""
    if not isinstance(doc, dict) or set(doc) != {"zones"} or not isinstance(doc["zones"], list):
        raise BadZones('expected {"zones": [...]}')
    if len(doc["zones"]) > MAX_ZONES:
        raise BadZones(f"at most {MAX_ZONES} zones per camera")
    out = []
    for i, z in enumerate(doc["zones"]):
        if not isinstance(z, dict) or not set(z) <= ZONE_KEYS or not {"name", "points"} <= set(z):
            raise BadZones(f"zones[{i}]: expected name, points and optionally action, style, was")
        pts = z["points"]
        if not isinstance(pts, list) or len(pts) > MAX_POINTS or not all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in pts):
            raise BadZones(f"zones[{i}].points: expected at most {MAX_POINTS} [x, y] pairs of numbers")
        for key in ("name", "action", "style"):
            if key in z and not isinstance(z[key], str):
                raise BadZones(f"zones[{i}].{key}: expected a string")
        was = z.get("was")
        if was is not None and not isinstance(was, str):
            raise BadZones(f"zones[{i}].was: expected a string or null")
        out.append(PageZone(z["name"], tuple((float(x), float(y)) for x, y in pts), z.get("action", "mask"),
                            z.get("style", "solid"), was))
    return out


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _flow(items: list[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, list) else v


def _rounded(v: float) -> float | int:
    r = round(v, 4)  # 0.0001 of the frame: finer than a pixel of a 4K camera
    return int(r) if r == int(r) else r


def zones_text(path: Path, camera_id: str, zones: list[PageZone]) -> str:
    """The config file's text with the camera's zones replaced by `zones` (comments kept)."""

    def replace_zones(cam: CommentedMap) -> None:
        old = cam.get("zones")
        old_by_name = {z.get("name"): z for z in old if isinstance(z, CommentedMap)} if isinstance(old, list) else {}
        new = CommentedSeq()
        for z in zones:
            m = old_by_name.get(z.was) if z.was is not None else None
            if m is None:
                m = CommentedMap()
            # Only what changed is assigned: an untouched value keeps its quotes and layout, and a
            # default the file never spelled out (`action: mask`, `style: solid`) is not added.
            if m.get("name") != z.name:
                m["name"] = z.name
            # Compared as sent: a zone the homeowner did not touch is not rewritten (rounded), which
            # for a withhold zone would change what the analyzers watch and hold the camera until a
            # restart. Only a zone that changed is written, rounded.
            if _plain(m.get("points")) != [[x, y] for x, y in z.points]:
                m["points"] = _flow([_flow([_rounded(x), _rounded(y)]) for x, y in z.points])
            for key, value, default in (("action", z.action, "mask"), ("style", z.style, "solid")):
                if key in m or value != default:
                    if m.get(key) != value:
                        m[key] = value
            new.append(m)
        if isinstance(old, CommentedSeq) and not old.fa.flow_style():
            # Keep the list object (and the comments attached to it); replace its items.
            old.clear()
            old.extend(new)
        else:
            cam["zones"] = new

    return edit_camera(path, camera_id, replace_zones)


@dataclass(frozen=True, slots=True)
class Saved:
    loaded: LoadedConfig
    policy: CameraPolicy
    backup: Path


class ZoneSaver:
    """Validate, write and apply one camera's zones; one save at a time."""

    def __init__(self, loaded: LoadedConfig, apply: Callable[[str, CameraPolicy], bool],
                 record: Callable[[str, dict[str, Any]], object] | None = None) -> None:
        self._loaded = loaded
        self._apply = apply
        self._record = record
        self._lock = threading.Lock()

    @property
    def loaded(self) -> LoadedConfig:
        return self._loaded

    def save(self, camera_id: str, zones: list[PageZone]) -> tuple[Saved, bool]:
        """Raises ConfigError (nothing written) when the result would not validate, and the audit
        log's error when it cannot record the change. Returns what was saved and whether it applied
        live (False: the camera withholds until a restart)."""
        with self._lock:
            path = self._loaded.path
            text = zones_text(path, camera_id, zones)
            cfg = parse_config_text(text, path.name)  # the very validation of check-config
            loaded = LoadedConfig(config=cfg, path=path, sha256=config_hash(cfg))
            if self._record is not None:
                # Record, then act: the audit log has the change before the file and the pipeline do.
                # A log that cannot take it raises (an AgentError): nothing is written then.
                self._record("config_change", {"from_sha256": self._loaded.sha256, "config_sha256": loaded.sha256,
                                               "camera": camera_id, "by": "web", "zones": len(zones)})
            backup = write_config_atomically(path, text)
            self._loaded = loaded
            policy = camera_policy(loaded, cfg.camera(camera_id))
            live = self._apply(camera_id, policy)
            return Saved(loaded, policy, backup), live
