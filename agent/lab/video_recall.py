"""Face recall on video: ours from the decisions, deface's and any output's by the pixel rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.errors import FixtureError
from agent.lab.deface import run_deface
from agent.lab.scoring import (
    CHANGE_MIN,
    CHANGE_WINDOW_PX,
    COVERED_MIN,
    Recall,
    box_change_fraction,
    changed_pixels,
)
from agent.media.video import video_frames


@dataclass
class VideoFaceRecall:
    tool: str
    faces: Recall = field(default_factory=Recall)
    # The same, over released frames only: a withheld frame masks every face,
    # so this is the figure that shows the detector itself.
    faces_released: Recall = field(default_factory=Recall)
    frames_in: int = 0
    frames_out: int = 0
    frames_withheld: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "face_recall_pixel_rule": self.faces.to_json(),
            "face_recall_pixel_rule_released_frames": self.faces_released.to_json(), "frames_in": self.frames_in,
            "frames_out": self.frames_out, "frames_withheld": self.frames_withheld, "problems": self.problems,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "fps": round(self.frames_in / self.seconds, 2) if self.seconds else None,
        }


def _fit(out: Image, w: int, h: int, res: VideoFaceRecall) -> Image:
    if out.shape[:2] == (h, w):
        return out
    # Encoders may pad to a multiple of 2 or 16 (crop) or rescale (imageio's macro_block_size): undo it.
    if out.shape[0] >= h and out.shape[1] >= w and (out.shape[0] - h) < 16 and (out.shape[1] - w) < 16:
        return out[:h, :w]
    if not any("resized" in p for p in res.problems):
        res.problems.append(f"output frames are {out.shape[1]}x{out.shape[0]}, resized to {w}x{h} to compare")
    return np.asarray(cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def video_face_recall_ours(fixture_dir: Path, replay_dir: Path) -> VideoFaceRecall:
    """Pixel-rule face recall of our replay (`redacted.mp4` + `decisions.jsonl`) of a fixture."""
    from agent.lab.decisions import fixture_frames, read_decisions
    from agent.lab.fixtures import load_truth

    truth = load_truth(fixture_dir)
    decisions = read_decisions(replay_dir)
    res = VideoFaceRecall("ours")
    video = replay_dir / "redacted.mp4"
    outs = video_frames(video) if video.exists() else iter(())
    next_out = 0
    for i, src in enumerate(fixture_frames(fixture_dir, truth)):
        fr = truth["per_frame"][i]
        res.frames_in += 1
        d = decisions.get(i)
        if d is None:
            res.problems.append(f"frame {i} has no decision")
            for _ in fr["faces"]:
                res.faces.add(False)
            continue
        if d.action == "withhold":
            res.frames_withheld += 1
            for _ in fr["faces"]:
                res.faces.add(True)
            continue
        out = next(outs, None)
        if out is None or d.out_index != next_out:
            res.problems.append(f"frame {i}: released but output frame {next_out} is missing or out of order")
            for _ in fr["faces"]:
                res.faces.add(False)
            continue
        next_out += 1
        res.frames_out += 1
        _score_video_frame(res, src, _fit(out, src.shape[1], src.shape[0], res), fr["faces"])
    return res


def _score_video_frame(res: VideoFaceRecall, src: Image, out: Image, faces: Sequence[Sequence[float]]) -> None:
    if not faces:
        return
    changed, measurable = changed_pixels(src, out)
    for b in faces:
        hit = box_change_fraction(changed, measurable, b) >= COVERED_MIN
        res.faces.add(hit)
        res.faces_released.add(hit)


def video_face_recall_deface(fixture_dir: Path, deface_bin: Path, work: Path) -> VideoFaceRecall:
    """Run deface (default settings) on a fixture's video and score it by the pixel rule."""
    from agent.lab.fixtures import load_truth

    source = str(load_truth(fixture_dir).get("source", "video.mp4"))
    if any(c in source for c in "*?["):
        raise FixtureError(f"fixture {fixture_dir} is a PNG sequence; the deface comparison needs a video fixture")
    work.mkdir(parents=True, exist_ok=True)
    dst = work / "deface.mp4"
    seconds = run_deface(deface_bin, fixture_dir / source, dst)
    res = video_face_recall_output(fixture_dir, dst, "deface")
    res.seconds = seconds
    return res


def video_face_recall_output(fixture_dir: Path, video: Path, tool: str) -> VideoFaceRecall:
    """Pixel-rule face recall of a tool that writes every input frame, in order, to `video`."""
    from agent.lab.decisions import fixture_frames
    from agent.lab.fixtures import load_truth

    truth = load_truth(fixture_dir)
    res = VideoFaceRecall(tool)
    outs = video_frames(video)
    for i, src in enumerate(fixture_frames(fixture_dir, truth)):
        res.frames_in += 1
        out = next(outs, None)
        fr = truth["per_frame"][i]
        if out is None:
            res.problems.append(f"{tool} output ends before input frame {i}")
            for _ in fr["faces"]:
                res.faces.add(False)
            continue
        res.frames_out += 1
        _score_video_frame(res, src, _fit(out, src.shape[1], src.shape[0], res), fr["faces"])
    extra = sum(1 for _ in outs)
    if extra:
        res.problems.append(f"{tool} output has {extra} more frames than the input")
    return res


def format_video_comparison(rows: Sequence[VideoFaceRecall], scenario: str) -> str:
    lines = [f"face recall on the {scenario} fixture video, pixel rule (>= {COVERED_MIN:.0%} of the box changed "
             f"by >= {CHANGE_MIN} levels, {CHANGE_WINDOW_PX}x{CHANGE_WINDOW_PX} mean; withheld = masked)",
             f"  {'tool':8} {'face recall':>18} {'on released frames':>20} {'frames out':>10} {'withheld':>8}"]
    for r in rows:
        lines.append(f"  {r.tool:8} {r.faces.text():>18} {r.faces_released.text():>20} {r.frames_out:>10} "
                     f"{r.frames_withheld:>8}")
        for p in r.problems[:5]:
            lines.append(f"    note: {p}")
    return "\n".join(lines)
