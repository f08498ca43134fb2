"""Scoring a replay against a fixture's ground truth: zone pixels leaked, withhold misses,
over-masking, face recall.

A ground-truth face counts as covered when at least `COVERED_MIN` of it is under the released
frame's mask regions (`agent.core.redact.regions_mask`), or the frame was withheld. Decoded
output is checked too: a zone pixel that survives encoding is a leak whatever the decisions say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image, MaskRegion
from agent.core.redact import regions_mask
from agent.core.zones import Mask, box_pixels
from agent.geometry import BoxRel, PointRel
from agent.lab.decisions import fixture_frames, output_frames, read_decisions
from agent.lab.figures import LABEL_OF
from agent.lab.fixtures import load_truth, read_labels
from agent.lab.leaks import LEAK_TOL, OUTPUT_MIN_LUMA, SOURCE_MIN_LUMA, LabelScore, source_pixels
from agent.media.video import fit_into
from agent.vocab import Style

COVERED_MIN = 0.8


# The decoded-pixel rule (LEAK_TOL, SOURCE_MIN_LUMA, OUTPUT_MIN_LUMA) has one home,
# agent.lab.leaks, shared by the zone and person figures. The decoded count is a lower bound
# (an edge leak smeared by the codec is only partly counted); the geometric count is exact for
# what the decisions claim, the decoded one checks the claim.


@dataclass
class _Coverage:
    boxes: int = 0
    covered: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "gt_boxes": self.boxes,
            "covered": self.covered,
            "fraction_covered": round(self.covered / self.boxes, 6) if self.boxes else None,
        }


@dataclass
class EvalReport:
    fixture: str
    replay: str
    scenario: str
    frames_in: int = 0
    frames_released: int = 0
    frames_withheld: int = 0
    must_withhold_frames: int = 0
    leaked_geometric: int = 0
    leaked_decoded: int | None = None
    decoded_checked_px: int = 0
    decoded_indeterminate_px: int = 0
    decoded_skipped_styled_px: int = 0
    leak_frames: list[int] = field(default_factory=list)
    withhold_miss_frames: list[int] = field(default_factory=list)
    over_px: int = 0
    over_px_outside_objects: int = 0
    total_px: int = 0
    over_withheld_frames: int = 0
    faces: _Coverage = field(default_factory=_Coverage)
    persons: _Coverage = field(default_factory=_Coverage)
    missing_decisions: list[int] = field(default_factory=list)
    unexpected_decisions: list[int] = field(default_factory=list)
    output_expected: int = 0
    output_decoded: int | None = None
    output_problems: list[str] = field(default_factory=list)
    # Drawn fixtures only (truth with label images): person leaks, over-masking of the still scene.
    labels: LabelScore | None = None
    static_scene: bool = False

    @property
    def person_leaks(self) -> int | None:
        return self.labels.person_leaks if self.labels is not None else None

    @property
    def zone_pixels_leaked(self) -> int:
        return max(self.leaked_geometric, self.leaked_decoded or 0)

    @property
    def withhold_misses(self) -> int:
        return len(self.withhold_miss_frames)

    @property
    def over_masking_ratio(self) -> float:
        return self.over_px / self.total_px if self.total_px else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.zone_pixels_leaked == 0
            and self.withhold_misses == 0
            and not self.missing_decisions
            and not self.output_problems
            and not self.person_leaks
        )

    def to_json(self) -> dict[str, Any]:
        has_faces = self.faces.boxes > 0
        return {
            "fixture": self.fixture,
            "replay": self.replay,
            "scenario": self.scenario,
            "ok": self.ok,
            "zone_pixels_leaked": self.zone_pixels_leaked,
            "zone_pixels_leaked_geometric": self.leaked_geometric,
            "zone_pixels_leaked_decoded": self.leaked_decoded,
            "decoded_check": {
                "pixels_checked": self.decoded_checked_px,
                "pixels_indeterminate_dark": self.decoded_indeterminate_px,
                "pixels_skipped_styled": self.decoded_skipped_styled_px,
                "leak_tol": LEAK_TOL,
                "source_min_luma": SOURCE_MIN_LUMA,
                "output_min_luma": OUTPUT_MIN_LUMA,
            },
            "leak_frames": self.leak_frames[:50],
            "withhold_misses": self.withhold_misses,
            "withhold_miss_frames": self.withhold_miss_frames,
            "must_withhold_frames": self.must_withhold_frames,
            "over_masking_ratio": round(self.over_masking_ratio, 6),
            "over_masking_ratio_outside_gt_objects": round(self.over_px_outside_objects / self.total_px, 6)
            if self.total_px
            else 0.0,
            "over_withheld_frames": self.over_withheld_frames,
            "frames_in": self.frames_in,
            "frames_released": self.frames_released,
            "frames_withheld": self.frames_withheld,
            "faces": self.faces.to_json() if has_faces else None,
            # Face recall: ground-truth faces with >= COVERED_MIN of the box masked (withheld = masked).
            "face_recall": round(self.faces.covered / self.faces.boxes, 6) if has_faces else None,
            "persons": self.persons.to_json() if self.persons.boxes else None,
            # Frames in which any ground-truth person pixel is visible in the decoded output
            # (agent.lab.leaks); None for fixtures without person masks.
            "person_leak_frames": self.person_leaks,
            "person_leak": self.labels.to_json() if self.labels is not None else None,
            "static_scene": self.static_scene if self.labels is not None else None,
            "integrity": {
                "missing_decisions": self.missing_decisions[:50],
                "unexpected_decisions": self.unexpected_decisions[:50],
                "output_frames_expected": self.output_expected,
                "output_frames_decoded": self.output_decoded,
                "problems": self.output_problems,
            },
        }


def _truth_mask(zones: Sequence[Mapping[str, Any]], w: int, h: int) -> Mask:
    # The same rasterisation redaction uses, so a perfect replay scores exactly 0 both ways.
    regions = tuple(
        MaskRegion(str(z["name"]), "zone", tuple(PointRel(float(x), float(y)) for x, y in z["points"]))
        for z in zones if z["action"] == "mask"
    )
    return regions_mask(regions, w, h)


def _box_mask(boxes: Sequence[Sequence[float]], w: int, h: int) -> Mask:
    m = np.zeros((h, w), np.uint8)
    for b in boxes:
        x0, y0, x1, y1 = box_pixels(BoxRel.clipped(*b), w, h)
        m[y0:y1, x0:x1] = 255
    return m


def _coverage(cov: _Coverage, boxes: Sequence[Sequence[float]], reg: Mask | None, w: int, h: int) -> None:
    for b in boxes:
        cov.boxes += 1
        if reg is None:  # withheld: nothing of the box left the hub
            cov.covered += 1
            continue
        x0, y0, x1, y1 = box_pixels(BoxRel.clipped(*b), w, h)
        area = (x1 - x0) * (y1 - y0)
        if area <= 0:
            cov.covered += 1
            continue
        inside = int(np.count_nonzero(reg[y0:y1, x0:x1]))
        if inside >= COVERED_MIN * area:
            cov.covered += 1


def decoded_leaks(src: Image, out: Image, truth: Mask, skip: Mask | None) -> tuple[int, int, int, int]:
    """Per-pixel leak test on decoded output (agent.lab.leaks). Returns (leaked, checked, dark, skipped)."""
    inside = truth > 0
    skipped = 0
    if skip is not None:
        styled = inside & (skip > 0)
        skipped = int(np.count_nonzero(styled))
        inside &= ~styled
    passes, bright = source_pixels(src, out)
    return (int(np.count_nonzero(inside & passes)), int(np.count_nonzero(inside & bright)),
            int(np.count_nonzero(inside & ~bright)), skipped)


def _fit_mask(mask: Mask, w: int, h: int) -> Mask:
    """A mask scaled like `fit_into` scales the frame; only pixels fully inside stay set."""
    if mask.shape[:2] == (h, w):
        return mask
    fitted = fit_into(np.dstack([mask, mask, mask]), w, h)
    return np.where(fitted[:, :, 0] == 255, 255, 0).astype(np.uint8)


def evaluate(fixture_dir: Path, replay_dir: Path, *, decode: bool = True) -> EvalReport:
    """Compare `replay_dir` (written by `run_replay`) with the truth of `fixture_dir`."""
    truth = load_truth(fixture_dir)
    decisions = read_decisions(replay_dir)
    rep = EvalReport(str(fixture_dir), str(replay_dir), str(truth["scenario"]))
    zones = truth["zones"]
    n = int(truth["frames"])
    rep.frames_in = n
    rep.unexpected_decisions = sorted(f for f in decisions if f >= n)
    if "labels" in truth:
        rep.labels = LabelScore()
        rep.static_scene = bool(truth["labels"].get("static_scene"))

    released: dict[int, tuple[int, Mask, Mask | None]] = {}  # out_index -> frame, truth mask, styled mask
    next_out = 0
    for fr in truth["per_frame"]:
        i = int(fr["frame"])
        w, h = int(fr["width_px"]), int(fr["height_px"])
        rep.total_px += w * h
        must = bool(fr["must_withhold"])
        rep.must_withhold_frames += must
        tmask = _truth_mask(zones, w, h)
        d = decisions.get(i)
        lab = read_labels(fixture_dir, fr) if rep.labels is not None and d is not None else None
        if d is None:
            rep.missing_decisions.append(i)
            if must:
                rep.withhold_miss_frames.append(i)
            continue
        if d.action == "withhold":
            rep.frames_withheld += 1
            if d.out_index is not None:
                rep.output_problems.append(f"frame {i} is withheld but has out_index {d.out_index}")
            if not must:
                rep.over_withheld_frames += 1
                private = int(np.count_nonzero(tmask))
                rep.over_px += w * h - private
                objs = cv2.bitwise_or(tmask, _box_mask(_gt_boxes(fr), w, h))
                rep.over_px_outside_objects += w * h - int(np.count_nonzero(objs))
            _coverage(rep.faces, fr["faces"], None, w, h)
            _coverage(rep.persons, fr["persons"], None, w, h)
            if rep.labels is not None and lab is not None:
                rep.labels.released(i, lab == LABEL_OF["person"], lab == LABEL_OF["pet"], _private(tmask, fr), None)
            continue
        rep.frames_released += 1
        if must:
            rep.withhold_miss_frames.append(i)
        reg = regions_mask(d.regions, w, h)
        leaked = int(np.count_nonzero(cv2.bitwise_and(tmask, cv2.bitwise_not(reg))))
        if leaked:
            rep.leaked_geometric += leaked
            rep.leak_frames.append(i)
        if not must:
            over = cv2.bitwise_and(reg, cv2.bitwise_not(tmask))
            rep.over_px += int(np.count_nonzero(over))
            objs = _box_mask(_gt_boxes(fr), w, h)
            rep.over_px_outside_objects += int(np.count_nonzero(cv2.bitwise_and(over, cv2.bitwise_not(objs))))
        _coverage(rep.faces, fr["faces"], reg, w, h)
        _coverage(rep.persons, fr["persons"], reg, w, h)
        if rep.labels is not None and lab is not None:
            rep.labels.released(i, lab == LABEL_OF["person"], lab == LABEL_OF["pet"], _private(tmask, fr), reg,
                                _causes(d.regions, w, h))
        oi = d.out_index if d.out_index is not None else next_out
        if oi != next_out:
            rep.output_problems.append(f"frame {i} has out_index {oi}, expected {next_out} (released frames in order)")
        next_out = oi + 1
        styled = [r for r in d.regions if r.style is not Style.SOLID]
        released[oi] = (i, tmask, regions_mask(tuple(styled), w, h) if styled else None)
    rep.output_expected = len(released)
    video = replay_dir / "redacted.mp4"
    if decode and video.exists():
        _check_decoded(rep, fixture_dir, truth, video, released)
    elif decode and released:
        rep.output_problems.append(f"{video} is missing but {len(released)} frames were released")
    return rep


def _causes(regions: Sequence[MaskRegion], w: int, h: int) -> dict[str, Mask]:
    """The decision's regions grouped by what they are (detections by label)."""
    groups: dict[str, list[MaskRegion]] = {}
    for r in regions:
        groups.setdefault(f"detection:{r.name}" if r.kind == "detection" else r.kind, []).append(r)
    return {k: regions_mask(tuple(v), w, h) for k, v in groups.items()}


def _private(zones_mask: Mask, fr: Mapping[str, Any]) -> Mask:
    """The frame's private pixels: mask zones and ground-truth private objects (boxes)."""
    w, h = int(fr["width_px"]), int(fr["height_px"])
    return cv2.bitwise_or(zones_mask, _box_mask([o["box"] for o in fr.get("private_objects", [])], w, h))


def _gt_boxes(fr: Mapping[str, Any]) -> list[Sequence[float]]:
    return [*fr["faces"], *fr["persons"], *(o["box"] for o in fr.get("private_objects", []))]


def _check_decoded(
    rep: EvalReport, fixture_dir: Path, truth: Mapping[str, Any], video: Path,
    released: Mapping[int, tuple[int, Mask, Mask | None]],
) -> None:
    by_frame = {fi: (oi, tm, sk) for oi, (fi, tm, sk) in released.items()}
    frames = truth["per_frame"]
    enc_size: tuple[int, int] | None = None
    if released:
        first = frames[released[min(released)][0]]
        enc_size = (int(first["width_px"]), int(first["height_px"]))
    out_iter = output_frames(video)
    decoded = 0
    leaked_total = 0
    for i, src in enumerate(fixture_frames(fixture_dir, truth)):
        if i not in by_frame:
            continue
        oi, tmask, skip = by_frame[i]
        out = next(out_iter, None)
        if out is None:
            break
        decoded += 1
        if decoded - 1 != oi:
            rep.output_problems.append(f"output frame {decoded - 1} does not line up with frame {i}")
            break
        assert enc_size is not None
        ew, eh = enc_size
        if out.shape[0] < eh or out.shape[1] < ew:
            rep.output_problems.append(f"output frame {oi} is {out.shape[1]}x{out.shape[0]}, expected {ew}x{eh}")
            continue
        out = out[:eh, :ew]
        if src.shape[:2] != (eh, ew):
            src = fit_into(src, ew, eh)
            tmask = _fit_mask(tmask, ew, eh)
            skip = _fit_mask(skip, ew, eh) if skip is not None else None
        lk, ck, dark, sk = decoded_leaks(src, out, tmask, skip)
        leaked_total += lk
        rep.decoded_checked_px += ck
        rep.decoded_indeterminate_px += dark
        rep.decoded_skipped_styled_px += sk
        if lk and i not in rep.leak_frames:
            rep.leak_frames.append(i)
        if rep.labels is not None:
            person = read_labels(fixture_dir, frames[i]) == LABEL_OF["person"]
            if person.shape != src.shape[:2]:
                person = _fit_mask(person.astype(np.uint8) * 255, ew, eh) > 0
            rep.labels.decoded_frame(i, src, out, person, skip > 0 if skip is not None else None)
    # Frames in the video beyond those the decisions released are unexplained output.
    extra = sum(1 for _ in out_iter)
    rep.output_decoded = decoded + extra
    if rep.output_decoded != rep.output_expected:
        rep.output_problems.append(
            f"{video.name} has {rep.output_decoded} frames but decisions release {rep.output_expected}"
        )
    rep.leaked_decoded = leaked_total
    rep.leak_frames.sort()


def format_report(rep: EvalReport) -> str:
    def flag(ok: bool) -> str:
        return "OK" if ok else "FAIL"

    dec = "not checked" if rep.leaked_decoded is None else (
        f"decoded {rep.leaked_decoded} of {rep.decoded_checked_px} checked"
    )
    lines = [
        f"eval {rep.scenario}: {rep.frames_in} frames in, {rep.frames_released} released, {rep.frames_withheld} withheld",
        f"  {'zone pixels leaked':24} {rep.zone_pixels_leaked:>10}   (geometric {rep.leaked_geometric}, {dec})"
        f"   {flag(rep.zone_pixels_leaked == 0)}",
        f"  {'withhold misses':24} {rep.withhold_misses:>10}   (of {rep.must_withhold_frames} must-withhold frames)"
        f"   {flag(rep.withhold_misses == 0)}",
        f"  {'over-masking ratio':24} {rep.over_masking_ratio:>10.4f}   (over-withheld frames: {rep.over_withheld_frames})",
    ]
    for name, cov in ((f"face recall (>={COVERED_MIN:.0%})", rep.faces),
                      (f"persons covered (>={COVERED_MIN:.0%})", rep.persons)):
        if cov.boxes:
            lines.append(f"  {name:24} {cov.covered:>5}/{cov.boxes:<4}   ({100 * cov.covered / cov.boxes:.1f}%)")
    if rep.labels is not None:
        lines += _label_lines(rep.labels, rep.static_scene, flag)
    if rep.withhold_miss_frames:
        lines.append(f"  missed frames: {rep.withhold_miss_frames[:20]}")
    if rep.leak_frames:
        lines.append(f"  frames with leaks: {rep.leak_frames[:20]}")
    if rep.missing_decisions:
        lines.append(f"  FAIL: {len(rep.missing_decisions)} frames have no decision: {rep.missing_decisions[:20]}")
    for p in rep.output_problems[:10]:
        lines.append(f"  FAIL: {p}")
    lines.append("  result: " + ("OK" if rep.ok else "FAIL"))
    return "\n".join(lines)


def _label_lines(lb: LabelScore, static: bool, flag: Callable[[bool], str]) -> list[str]:
    leaks = lb.person_leaks
    if leaks is None:
        shown = "not checked (no decoded output)"
    elif not lb.person_frames:
        shown = f"{leaks:>5}        (nobody in this fixture)"
    else:
        share = f"{100 * leaks / lb.person_frames:.1f}% of " if lb.person_frames else ""
        shown = (f"{leaks:>5}/{lb.person_frames:<4}   ({share}frames with a person show a person pixel"
                 f" in the decoded output)   {flag(leaks == 0)}")
    goal = "; goal <= 2%" if static else ""
    causes = ", ".join(f"{k} {100 * v / lb.static_px:.2f}%"
                       for k, v in sorted(lb.static_px_by_cause.items(), key=lambda kv: -kv[1])) if lb.static_px else ""
    out = [
        f"  {'person leak frames':24} {shown}",
        f"  {'over-masking (still)':24} {100 * lb.over_masking_static:>9.2f}%   (of the pixels that are neither a "
        f"person nor private{goal}){': ' + causes if causes else ''}",
    ]
    if lb.pet_px:
        out.append(f"  {'pet masked':24} {100 * lb.pet_px_masked / lb.pet_px:>9.2f}%   (a pet must stay visible)")
    return out
