"""The closing summary of `scripts/demo`: what was masked, what was withheld and why, and the
leak figures of `eval`, with the files to look at.

It reads only the replay's own outputs (`decisions.jsonl`, `summary.json`, `eval.json`); it never
opens a frame. Run as `python -m agent.lab.demo REPLAY_DIR [FILE ...]`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from agent.errors import AgentError
from agent.lab.decisions import read_decisions, read_json_object
from agent.lab.replay import withhold_zone

# What each withhold reason's last part means, in a homeowner's words.
WHY = {
    "warmup": "learning the zone's empty state at start",
    "presence": "someone in the zone",
    "activity": "movement in the zone",
    "hold": "hold time after the zone emptied",
    "person": "a person detected in the zone",
    "unknown": "the zone's state could not be measured (fail closed)",
}


def summarize(replay_dir: Path, files: list[str] | None = None) -> str:
    """The summary text for one replay directory (with `eval.json` in it)."""
    decisions = read_decisions(replay_dir)
    summary = read_json_object(replay_dir / "summary.json", "run the replay and eval first")
    ev = read_json_object(replay_dir / "eval.json", "run the replay and eval first")
    n = len(decisions)
    masked_by: Counter[str] = Counter()
    held_by: Counter[str] = Counter()
    for d in decisions.values():
        if d.action == "mask":
            # One count per frame and region name, e.g. "zone bed" or "detected face".
            masked_by.update({f"{'zone' if r.kind == 'zone' else 'detected'} {r.name}" for r in d.regions})
        elif d.action == "withhold":
            held_by.update(set(d.reasons))
    # Frames that came back: released frames after the last withheld one that followed a release.
    order = sorted(decisions)
    back = [i for k, i in enumerate(order) if k and decisions[i].action != "withhold"
            and decisions[order[k - 1]].action == "withhold"]
    lines = [
        f"demo summary ({n} frames in, {summary['frames_out']} released to redacted.mp4):",
        f"  masked   {summary['masked']} frames: "
        + ", ".join(f"{what} in {c}" for what, c in sorted(masked_by.items(), key=lambda kv: -kv[1])),
        f"  withheld {summary['withheld']} frames:",
    ]
    for reason, c in sorted(held_by.items(), key=lambda kv: -kv[1]):
        zone = withhold_zone(reason)
        why = WHY.get(reason.rsplit(":", 1)[-1], reason)
        lines.append(f"    {c:4d} x {reason}" + (f"  (zone {zone}: {why})" if zone else ""))
    if back:
        lines.append("  released again (first frame after each withhold): frame " + ", ".join(map(str, back)))
    for zone, c in summary.get("busy_withhold_zones", {}).items():
        lines.append(f"  warning: withhold zone {zone} withheld {c} of {n} frames (over a busy area?)")
    faces = ev.get("faces") or {}
    lines += [
        f"  eval: zone pixels leaked {ev['zone_pixels_leaked']} (geometric {ev['zone_pixels_leaked_geometric']}, "
        f"decoded {ev['zone_pixels_leaked_decoded']}), withhold misses {ev['withhold_misses']} of "
        f"{ev['must_withhold_frames']} must-withhold frames, face recall "
        f"{faces.get('covered', '-')}/{faces.get('gt_boxes', '-')}: {'OK' if ev['ok'] else 'FAILED'}",
    ]
    if files:
        lines.append("  see: " + ", ".join(files))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m agent.lab.demo REPLAY_DIR [FILE ...]", file=sys.stderr)
        return 2
    try:
        print(summarize(Path(argv[0]), argv[1:]))
    except AgentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
