"""Evaluation: compare a replay's outputs with a fixture's ground truth.

`privacy-agent eval --fixture DIR [--replay OUTDIR] [--out REPORT.json]`
reports three figures, prints them as a table and saves them as JSON:

1. `zone_pixels_leaked` (must be 0): pixels of the truth's `mask` zones that a
   released frame does not hide. Counted twice: geometrically (truth zones
   rasterised with `agent.redact.regions_mask` against the union of the decision's
   regions) and on the decoded pixels of `redacted.mp4`. The headline is the
   larger of the two.
2. `withhold_misses` (must be 0): frames whose truth says `must_withhold`
   that were not withheld. (Pixels of an occupied withhold zone in such a
   frame are a withhold miss, not a pixel leak.)
3. `over_masking_ratio`: masked or withheld pixels outside the truth's private
   area, over all pixels of all input frames; plus `over_withheld_frames`.

Face recall and person coverage (a truth box counts as masked when at least
80% of its pixels are under the frame's regions, or the frame is withheld)
are reported too, for the detection work.

`privacy-agent eval --photos` scores the pipeline on the shared photos
instead (face recall, private-object recall, false-withhold rate; see
`agent.quality`), and `--deface [BIN]` adds the same face recall for the
`deface` CLI, measured on output pixels for both tools.

Invariants:
- The evaluation only reads; it never changes the replay or the fixture.
- Anything that makes the outputs unverifiable (a frame without a decision,
  an output frame no decision accounts for) fails the evaluation, because an
  unexplained frame is exactly how a leak would look.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.datatypes import BoxRel, Image, MaskRegion, PointRel, Style
from agent.errors import FixtureError
from agent.fixtures import load_truth
from agent.redact import regions_mask
from agent.video import fit_into, video_frames
from agent.zones import Mask, box_pixels

log = logging.getLogger(__name__)

ACTIONS = ("pass", "mask", "withhold")
COVERED_MIN = 0.8

# Decoded-pixel leak test, on the luma of each pixel for "black or not" (chroma
# is subsampled 4:2:0 and rings at zone edges) and on every channel for "is it
# the source". Measured on the five fixtures with x264 CRF 23 (the replay's
# encoder settings): inside correctly masked zones the decoded luma stays
# <= 17 (ringing next to bright edges; single channels reach 42), while leaked
# source pixels come back within a few levels of the source (rarely more than
# 30 in one channel, at 1-px edge leaks that 4:2:0 smears). So a truth-zone
# pixel counts as leaked when its decoded luma is >= OUTPUT_MIN_LUMA (about 2x
# the ringing seen) and every channel is within LEAK_TOL of the source. A
# source pixel darker than SOURCE_MIN_LUMA cannot be told apart from black; it
# is counted as indeterminate, not checked. The decoded count is a lower bound
# (an edge leak smeared by the codec is only partly counted); the geometric
# count is exact for what the decisions claim, the decoded one checks the claim.
LEAK_TOL = 32
SOURCE_MIN_LUMA = 40
OUTPUT_MIN_LUMA = 32


# --- reading the replay ------------------------------------------------------


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
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FixtureError(f"{at}: not JSON: {e.msg}") from None
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


def _source_frames(fixture_dir: Path, truth: Mapping[str, Any]) -> Iterator[Image]:
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
    yield from _video_frames(fixture_dir / source)


def _video_frames(path: Path) -> Iterator[Image]:
    if not path.is_file():
        raise FixtureError(f"video {path} does not exist")
    yield from video_frames(path)


# --- the report --------------------------------------------------------------


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
            "integrity": {
                "missing_decisions": self.missing_decisions[:50],
                "unexpected_decisions": self.unexpected_decisions[:50],
                "output_frames_expected": self.output_expected,
                "output_frames_decoded": self.output_decoded,
                "problems": self.output_problems,
            },
        }


# --- evaluation --------------------------------------------------------------


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
    """Per-pixel leak test on decoded output (see LEAK_TOL). Returns (leaked, checked, dark, skipped)."""
    inside = truth > 0
    skipped = 0
    if skip is not None:
        styled = inside & (skip > 0)
        skipped = int(np.count_nonzero(styled))
        inside &= ~styled
    bright = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY) >= SOURCE_MIN_LUMA
    not_black = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY) >= OUTPUT_MIN_LUMA
    diff = np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=2)
    leaked = inside & bright & not_black & (diff <= LEAK_TOL)
    checked = inside & bright
    return (int(np.count_nonzero(leaked)), int(np.count_nonzero(checked)),
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
    out_iter = _video_frames(video)
    decoded = 0
    leaked_total = 0
    for i, src in enumerate(_source_frames(fixture_dir, truth)):
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
    # Frames in the video beyond those the decisions released are unexplained output.
    extra = sum(1 for _ in out_iter)
    rep.output_decoded = decoded + extra
    if rep.output_decoded != rep.output_expected:
        rep.output_problems.append(
            f"{video.name} has {rep.output_decoded} frames but decisions release {rep.output_expected}"
        )
    rep.leaked_decoded = leaked_total
    rep.leak_frames.sort()


# --- command line ------------------------------------------------------------


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


def _replay_fixture(fixture_dir: Path, replay_dir: Path) -> None:
    from agent.config import load_config
    from agent.fixtures import CAMERA_ID
    from agent.replay import run_replay

    loaded = load_config(fixture_dir / "config.yaml")
    cam = loaded.config.camera(CAMERA_ID)
    source = str(loaded.resolve(cam.source))
    run_replay(source, loaded, CAMERA_ID, replay_dir, progress=sys.stderr.isatty())


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.photos:
        return _cmd_eval_photos(args)
    if not args.fixture:
        raise FixtureError("eval needs --fixture DIR or --photos")
    fixture_dir = Path(args.fixture)
    replay_dir = Path(args.replay) if args.replay else fixture_dir / "replay"
    load_truth(fixture_dir)  # fail early on a directory that is not a fixture
    if not (replay_dir / "decisions.jsonl").exists():
        print(f"no replay in {replay_dir}; replaying {fixture_dir / 'config.yaml'} first", file=sys.stderr)
        _replay_fixture(fixture_dir, replay_dir)
    rep = evaluate(fixture_dir, replay_dir)
    doc = rep.to_json()
    comparison = None
    if args.deface is not None:
        comparison = _compare_deface_video(fixture_dir, replay_dir, args)
        doc["face_recall_pixel_rule"] = {r.tool: r.to_json() for r in comparison}
    out = Path(args.out) if args.out else replay_dir / "eval.json"
    try:
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise FixtureError(f"cannot write report {out}: {e.strerror or e}") from e
    print(format_report(rep))
    if comparison is not None:
        from agent.quality import format_video_comparison

        print(format_video_comparison(comparison, rep.scenario))
    print(f"  report: {out}")
    return 0 if rep.ok else 1


def _deface_bin(args: argparse.Namespace) -> Path:
    from agent.quality import check_deface, default_deface_bin

    return check_deface(Path(args.deface) if args.deface else default_deface_bin())


def _compare_deface_video(fixture_dir: Path, replay_dir: Path, args: argparse.Namespace) -> list[Any]:
    from agent.quality import video_face_recall_deface, video_face_recall_ours, work_dir

    binary = _deface_bin(args)
    ours = video_face_recall_ours(fixture_dir, replay_dir)
    with work_dir(Path(args.work) if args.work else None) as work:
        print(f"running deface on {fixture_dir} ...", file=sys.stderr)
        theirs = video_face_recall_deface(fixture_dir, binary, work)
    return [ours, theirs]


def _cmd_eval_photos(args: argparse.Namespace) -> int:
    from agent.quality import evaluate_photos, format_photo_report, work_dir, write_json

    if args.fixture or args.replay:
        raise FixtureError("--photos cannot be combined with --fixture/--replay")
    binary = _deface_bin(args) if args.deface is not None else None
    with work_dir(Path(args.work) if args.work else None) as work:
        rep = evaluate_photos(work, names=args.photo or None, deface_bin=binary)
    print(format_photo_report(rep))
    if args.out:
        write_json(Path(args.out), rep.to_json())
        print(f"  report: {args.out}")
    return 0 if rep.ok else 1


def register_cli(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="measure privacy and quality against ground truth (a fixture replay, or the shared photos)"
    )
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--fixture", help="fixture directory (from `fixtures make`)")
    what.add_argument("--photos", action="store_true",
                      help="run each shared photo through the pipeline and report face recall, private-object "
                      "recall and the false-withhold rate against agent/data/photos_truth.json")
    ev.add_argument("--replay", help="replay output directory (default FIXTURE/replay; replayed if empty)")
    ev.add_argument("--photo", action="append", metavar="NAME",
                    help="with --photos: only this photo (repeatable; default all)")
    ev.add_argument("--deface", nargs="?", const="", metavar="BIN",
                    help="also measure the deface CLI (default settings) the same way; BIN defaults to "
                    "$EPA_DEFACE or .cache/deface-venv/bin/deface")
    ev.add_argument("--work", help="keep intermediate outputs (inputs, deface outputs) in this directory")
    ev.add_argument("--out", help="report JSON path (default REPLAY/eval.json; --photos: not saved unless given)")
    ev.set_defaults(func=_cmd_eval)
