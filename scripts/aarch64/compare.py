"""Compares two replays' decisions.jsonl (native and emulated arm64) frame by frame.

Required: the same frame count and, per frame, the same action, the same reasons (as a set: their
order follows which detector lane answered first, which is timing) and the same masked area: the
union of the frame's regions, drawn on a 640x480 grid, may differ by at most `--area-tolerance` of
the frame. Only a reason that stands for one found region (`detection:*`, `foreground:unexplained`,
`foreground:person`, and their `ahead:` forms, the next frame's regions) may be on one side only, and only within that area tolerance. The two builds of ONNX Runtime and OpenCV differ slightly (boxes in the 3rd decimal,
detections near the score threshold, foreground blobs), so boxes are paired per kind and name and
reported (the largest difference of a pair, the boxes found on one side only), not required equal.
Prints a one-line verdict, then the differing frames; exits 0 when they agree, 1 when not."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

AREA_TOLERANCE = 0.005  # share of the frame masked on one side only
#: Reasons that stand for one region the analysis found; see `differences`.
REGION_REASONS = ("detection:", "foreground:unexplained", "foreground:person")
#: The next frame's regions a frame is masked with too (look-ahead) are named `ahead:<region name>`:
#: a detection's region is named by its label.
AHEAD_REGION_NAMES = ("face", "person", "foreground:unexplained", "foreground:person")


def region_reason(reason: str) -> bool:
    """Whether `reason` stands for one region the analysis found, on this frame or the next."""
    if reason.startswith("ahead:"):
        return reason.removeprefix("ahead:") in AHEAD_REGION_NAMES
    return reason.startswith(REGION_REASONS)
PAIR_TOLERANCE = 0.05   # two boxes further apart than this (relative) are not the same box
GRID_W, GRID_H = 640, 480


def load(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"compare: cannot read {path}: {exc}") from None


def _points(region: Any) -> list[tuple[float, float]]:
    pts = region.get("points") if isinstance(region, dict) else None
    return [(float(p[0]), float(p[1])) for p in pts or []]


def masked(regions: Any) -> np.ndarray:
    """The frame's masked area: every region filled on the grid."""
    grid = np.zeros((GRID_H, GRID_W), np.uint8)
    for r in regions or []:
        pts = np.array([[x * GRID_W, y * GRID_H] for x, y in _points(r)], np.int32)
        if len(pts):
            cv2.fillPoly(grid, [pts], 1)
    return grid.astype(bool)


def _distance(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((max(abs(p[0] - q[0]), abs(p[1] - q[1])) for p, q in zip(a, b, strict=True)), default=0.0)


@dataclass
class Pairing:
    pairs: int = 0
    max_diff: float = 0.0
    one_side: int = 0


def pair_boxes(native: Any, other: Any, into: Pairing) -> None:
    """Pairs each native region with the closest unpaired arm64 region of its kind and name."""
    left = [r for r in other or [] if isinstance(r, dict)]
    for r in native or []:
        same = [q for q in left if (q.get("kind"), q.get("name")) == (r.get("kind"), r.get("name"))]
        best = min(same, key=lambda q: _distance(_points(r), _points(q)), default=None)
        if best is None or _distance(_points(r), _points(best)) > PAIR_TOLERANCE:
            into.one_side += 1
            continue
        into.pairs += 1
        into.max_diff = max(into.max_diff, _distance(_points(r), _points(best)))
        left.remove(best)
    into.one_side += len(left)


def differences(native: list[dict[str, Any]], other: list[dict[str, Any]], area_tol: float,
                pairing: Pairing | None = None) -> list[str]:
    out = []
    if len(native) != len(other):
        out.append(f"frame count: {len(native)} native, {len(other)} arm64")
    for a, b in zip(native, other, strict=False):
        frame = a.get("frame")
        for key in ("frame", "action", "out_index"):
            if a.get(key) != b.get(key):
                out.append(f"frame {frame}: {key} {a.get(key)!r} native, {b.get(key)!r} arm64")
        ma, mb = masked(a.get("regions")), masked(b.get("regions"))
        only = float((ma ^ mb).sum()) / ma.size
        ra, rb = set(a.get("reasons") or []), set(b.get("reasons") or [])
        # A region the analysis found (a detection or a foreground blob) may sit just above its
        # threshold on one build and just below on the other; its reason may then be on one side
        # only, as long as the action is the same and the masked area agrees within the
        # tolerance. Every other reason (zones, rooms, modes, faults, learning) must match.
        if {r for r in ra ^ rb if not region_reason(r)} or (ra != rb and only > area_tol):
            out.append(f"frame {frame}: reasons {a.get('reasons')!r} native, {b.get('reasons')!r} arm64")
        if only > area_tol:
            out.append(f"frame {frame}: {only:.2%} of the frame masked on one side only "
                       f"({(ma & ~mb).sum()} px native only, {(mb & ~ma).sum()} px arm64 only)")
        if pairing is not None:
            pair_boxes(a.get("regions"), b.get("regions"), pairing)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("native", type=Path, help="decisions.jsonl of the native replay")
    p.add_argument("other", type=Path, help="decisions.jsonl of the arm64 replay")
    p.add_argument("--area-tolerance", type=float, default=AREA_TOLERANCE,
                   help="largest share of a frame that may be masked on one side only")
    args = p.parse_args(argv)
    native, other = load(args.native), load(args.other)
    if not native:
        print(f"compare: FAIL: {args.native} has no decisions")
        return 1
    pairing = Pairing()
    diffs = differences(native, other, args.area_tolerance, pairing)
    boxes = (f"{pairing.pairs} regions paired (largest difference {pairing.max_diff:.4f}), "
             f"{pairing.one_side} on one side only")
    if diffs:
        print(f"compare: FAIL: {len(diffs)} differences over {len(native)} frames; {boxes}")
        print("\n".join(diffs))
        return 1
    acts: dict[str, int] = {}
    for d in native:
        acts[d["action"]] = acts.get(d["action"], 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in sorted(acts.items()))
    print(f"compare: OK: {len(native)} frames, same action and reasons per frame ({summary}), masked area "
          f"within {args.area_tolerance:.1%} of each frame; {boxes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
