"""`scripts/aarch64/compare.py`: which differences between the native and the emulated arm64 replay
are the two builds' rounding, and which are a real difference in what the hub decided."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

SPEC = importlib.util.spec_from_file_location("aarch64_compare", Path(__file__).resolve().parents[1] / "scripts" / "aarch64"
                                              / "compare.py")
assert SPEC is not None and SPEC.loader is not None
compare = importlib.util.module_from_spec(SPEC)
sys.modules["aarch64_compare"] = compare  # its dataclasses look their module up by name
SPEC.loader.exec_module(compare)

SPECK = [[0.5, 0.5], [0.502, 0.5], [0.502, 0.502], [0.5, 0.502]]  # a region of a few grid pixels
FACE = [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2], [0.1, 0.2]]


def rec(reasons: list[str], regions: list[dict[str, Any]], action: str = "mask") -> dict[str, Any]:
    return {"frame": 5, "action": action, "out_index": 5, "reasons": reasons, "regions": regions}


def region(name: str, kind: str, points: list[list[float]]) -> dict[str, Any]:
    return {"name": name, "kind": kind, "style": "solid", "points": points}


def test_a_small_region_found_on_one_build_only_is_rounding_on_this_frame_or_the_next() -> None:
    face = region("face", "detection", FACE)
    speck = region("foreground:unexplained", "foreground", SPECK)
    for reason in ("foreground:unexplained", "ahead:foreground:unexplained"):
        assert compare.differences([rec(["detection:face"], [face])],
                                   [rec(["detection:face", reason], [face, speck])], 0.005) == []


def test_a_reason_of_the_hubs_own_is_a_difference_even_ahead() -> None:
    for reasons in (["ahead:room:bathroom:person"], ["ahead:mode:privacy"], ["room:bathroom:person"]):
        out = compare.differences([rec([], [], "withhold")], [rec(reasons, [], "withhold")], 0.005)
        assert out and "reasons" in out[0], reasons
