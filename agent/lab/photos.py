"""Detection quality on the shared photos: face, person and private-object recall, false
withholds on negatives, optionally beside `deface` measured with the same pixel rule.

Hand-measured boxes live in `agent/lab/data/photos_truth.json` (`agent.lab.truth`), tied to each
photo's sha256.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.clock import SystemClock
from agent.config import LoadedConfig, config_hash, parse_config_text
from agent.core.datatypes import Decision, Image
from agent.core.events import EventLog
from agent.core.redact import RedactedFrame, regions_mask, require_redacted
from agent.core.zones import Mask
from agent.errors import FixtureError, ModelError
from agent.lab.deface import run_deface
from agent.lab.scoring import (
    CHANGE_MIN,
    CHANGE_WINDOW_PX,
    COVERED_MIN,
    SOLID_MAX,
    Recall,
    box_change_fraction,
    box_cover_fraction,
    changed_pixels,
    read_image,
)
from agent.lab.truth import TRUTH_FILE, PhotoTruth, check_photo, photo_truth
from agent.vocab import Action, Mode, Style

CAMERA_ID = "photo"


EVAL_TIMEOUT_S = 120.0


# What we aim for; printed beside the figures. Recall below target is a
# finding to report, not a failure of the run.
TARGETS: Mapping[str, str] = {
    "face_recall": ">= 0.90 and >= deface (same pixel rule)",
    "private_object_recall": ">= 0.90",
    "false_withhold_rate": "0.00",
}


VARIANTS: Mapping[str, str] = {
    "default": "the default camera: faces every frame (YuNet-s), persons and beds/toilets/sinks (YOLOX-Nano); "
    "no foreground layer (a single photo has no empty scene to learn)",
    "faces_only": "only the face detector (objects off), to compare the face model itself with deface",
}


@dataclass
class PhotoOutcome:
    """One photo through one tool. Geometric figures are None for tools that report no regions."""

    name: str
    group: str
    action: str  # pass | mask | withhold (deface: "mask" or "pass")
    reasons: tuple[str, ...] = ()
    faces: Recall = field(default_factory=Recall)  # geometric (ours)
    faces_px: Recall = field(default_factory=Recall)  # pixel-change rule (any tool)
    objects: Recall = field(default_factory=Recall)
    persons: Recall = field(default_factory=Recall)
    masked_fraction: float = 0.0  # of the frame's pixels (1.0 when withheld)
    problems: list[str] = field(default_factory=list)  # hard failures: an unexplained or false output
    notes: list[str] = field(default_factory=list)  # pipeline events worth reading (model missing, faults)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "photo": self.name, "group": self.group, "action": self.action, "reasons": list(self.reasons),
            "faces": self.faces.to_json(), "faces_pixel_rule": self.faces_px.to_json(),
            "private_objects": self.objects.to_json(), "persons": self.persons.to_json(),
            "masked_fraction": round(self.masked_fraction, 6), "problems": self.problems, "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


class _MemorySink:
    """Keeps released frames in memory (the measurement needs the exact redacted pixels)."""

    name = "memory"
    plaintext = True

    def __init__(self) -> None:
        self.frames: list[RedactedFrame] = []

    def write(self, frame: RedactedFrame) -> None:
        self.frames.append(require_redacted(frame))

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        return None

    def close(self) -> None:
        return None


def eval_config(variant: str = "default") -> LoadedConfig:
    """The camera the photos run through: no zones, default detection (or faces only)."""
    if variant not in VARIANTS:
        raise FixtureError(f"unknown eval variant {variant!r} (known: {', '.join(VARIANTS)})")
    lines = [
        "data_dir: ./data",
        "analysis:",
        f"  timeout_s: {EVAL_TIMEOUT_S:g}",
        "cameras:",
        f"  - id: {CAMERA_ID}",
        "    source: photo.png",
        "    zones: []",
    ]
    # A single photo has no empty scene to learn, so the unexplained-foreground layer would withhold
    # every photo while it learns (`foreground:learning`): these figures measure the detectors, so
    # both cameras run without that layer (the drawn fixtures measure it, as video).
    lines += ["detection:", "  foreground:", "    enabled: false"]
    if variant == "faces_only":
        lines += ["  objects:", "    enabled: false"]
    lines.append("sinks: []")
    # The eval cameras turn protections off on purpose (a measurement, not a
    # homeowner's config); keep the expected warnings out of the report.
    det_log = logging.getLogger("agent.config.detection")
    level = det_log.level
    det_log.setLevel(logging.ERROR)
    try:
        cfg = parse_config_text("\n".join(lines) + "\n", f"<eval {variant}>")
    finally:
        det_log.setLevel(level)
    return LoadedConfig(config=cfg, path=Path.cwd() / f"eval-{variant}.yaml", sha256=config_hash(cfg))


@dataclass(frozen=True, slots=True)
class SingleFrameRun:
    """What the pipeline did with one image: its decision, the released pixels, and what went wrong."""

    decision: Decision | None
    output: Image | None  # None when withheld (or missing)
    problems: tuple[str, ...]  # hard failures
    notes: tuple[str, ...]  # events other than the routine ones


def run_single_frame(png: Path, loaded: LoadedConfig, mode: Mode | None = None) -> SingleFrameRun:
    """Run one image through a fresh pipeline of the config's camera."""
    from agent.analysis.build import build_analyzers
    from agent.core.pipeline import CameraPipeline
    from agent.core.policy import camera_policy
    from agent.media.sources import SourceOpener

    cam = loaded.config.camera(CAMERA_ID)
    clock = SystemClock()
    events = EventLog()
    policy = camera_policy(loaded, cam)
    analyzers = build_analyzers(loaded, cam, policy, clock, events)
    sink = _MemorySink()
    decisions: list[tuple[Decision, int | None]] = []
    chosen = mode or loaded.config.modes.default
    pipe = CameraPipeline(
        policy, analyzers, [sink], lambda: chosen, events, clock=clock,
        analysis_timeout_s=loaded.config.analysis.timeout_s, max_lag_s=loaded.config.analysis.max_lag_s,
        on_decision=lambda d, oi: decisions.append((d, oi)),
    )
    # A glob of the one file makes an image source (a plain path would be opened as a video).
    pipe.run(SourceOpener(str(png.parent / "*.png")))
    notes = tuple(f"event {e.kind}: {e.message}" for e in events.events
                  if e.kind not in ("source_ended", "withheld", "released"))
    if len(decisions) != 1:
        return SingleFrameRun(None, None, (f"expected one decision, got {len(decisions)}",), notes)
    d, oi = decisions[0]
    if d.action is Action.WITHHOLD:
        bad = ("a withheld frame reached the sink",) if sink.frames else ()
        return SingleFrameRun(d, None, bad, notes)
    if oi != 0 or len(sink.frames) != 1:
        return SingleFrameRun(d, None, (f"released frame missing from the output (out_index {oi}, "
                                        f"{len(sink.frames)} frames)",), notes)
    return SingleFrameRun(d, np.asarray(sink.frames[0].image), (), notes)


def _solid_claim_problems(d: Decision, out: Image) -> list[str]:
    """Every pixel of the decision's solid regions must be black in the output."""
    solid = tuple(r for r in d.regions if r.style is Style.SOLID)
    if not solid:
        return []
    h, w = out.shape[:2]
    m = regions_mask(solid, w, h) > 0
    bad = int(np.count_nonzero(out.max(axis=2)[m] > SOLID_MAX))
    return [f"{bad} pixels inside solid mask regions are not black"] if bad else []


def score_ours(t: PhotoTruth, src: Image, run: SingleFrameRun) -> PhotoOutcome:
    """Score one photo's decision and output against its truth."""
    h, w = src.shape[:2]
    d, out = run.decision, run.output
    if d is None:
        res = PhotoOutcome(t.name, t.group, "none", problems=list(run.problems), notes=list(run.notes))
        for _ in t.faces:
            res.faces.add(False)
            res.faces_px.add(False)
        for _ in t.private_objects:
            res.objects.add(False)
        for _ in t.persons:
            res.persons.add(False)
        return res
    res = PhotoOutcome(t.name, t.group, str(d.action), tuple(d.reasons), problems=list(run.problems),
                       notes=list(run.notes))
    if d.action is Action.WITHHOLD or out is None:
        reg: Mask | None = None
        res.masked_fraction = 1.0
    else:
        reg = regions_mask(d.regions, w, h)
        res.masked_fraction = int(np.count_nonzero(reg)) / (w * h)
        res.problems += _solid_claim_problems(d, out)
    changed = measurable = None
    if out is not None:
        changed, measurable = changed_pixels(src, out)
    for b in t.faces:
        res.faces.add(box_cover_fraction(reg, b, w, h) >= COVERED_MIN)
        res.faces_px.add(True if changed is None or measurable is None
                         else box_change_fraction(changed, measurable, b) >= COVERED_MIN)
    for _, b in t.private_objects:
        res.objects.add(box_cover_fraction(reg, b, w, h) >= COVERED_MIN)
    for b in t.persons:
        res.persons.add(box_cover_fraction(reg, b, w, h) >= COVERED_MIN)
    return res


def score_pixels_only(t: PhotoTruth, src: Image, out: Image, tool: str) -> PhotoOutcome:
    """Score another tool's output image by the pixel-change rule only."""
    changed, measurable = changed_pixels(src, out)
    res = PhotoOutcome(t.name, t.group, "mask" if bool(changed.any()) else "pass", (tool,))
    res.masked_fraction = float(np.count_nonzero(changed)) / changed.size
    for b in t.faces:
        res.faces_px.add(box_change_fraction(changed, measurable, b) >= COVERED_MIN)
    return res


def photo_inputs(work: Path, names: Sequence[str] | None = None) -> list[tuple[PhotoTruth, Path, Image]]:
    """Decode each (checked) photo once and write it as `work/<stem>/frame.png`, the input every tool gets."""
    truth = photo_truth()
    chosen = list(names) if names else sorted(truth)
    unknown = [n for n in chosen if n not in truth]
    if unknown:
        raise FixtureError(f"no ground truth for photo(s) {', '.join(unknown)} in {TRUTH_FILE}")
    out = []
    for n in chosen:
        t = truth[n]
        path = check_photo(t)
        raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if raw is None:
            raise FixtureError(f"shared photo {path} cannot be decoded")
        img = np.asarray(raw, dtype=np.uint8)
        if img.shape[:2] != (t.height_px, t.width_px):
            raise FixtureError(f"photo {n} decodes to {img.shape[1]}x{img.shape[0]} but its truth says "
                               f"{t.width_px}x{t.height_px}")
        d = work / Path(n).stem
        d.mkdir(parents=True, exist_ok=True)
        png = d / "frame.png"
        if not cv2.imwrite(str(png), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise FixtureError(f"cannot write {png}")
        out.append((t, png, img))
    return out


@dataclass
class PhotoReport:
    variants: dict[str, list[PhotoOutcome]] = field(default_factory=dict)
    deface: list[PhotoOutcome] | None = None
    deface_bin: str | None = None

    @staticmethod
    def _sum(rows: Sequence[PhotoOutcome], attr: str, group: str | None = None) -> Recall:
        r = Recall()
        for o in rows:
            if group is None or o.group == group:
                r += getattr(o, attr)
        return r

    def summary(self, variant: str) -> dict[str, Any]:
        rows = self.variants[variant]
        neg = [o for o in rows if o.group == "negative"]
        withheld = sum(1 for o in neg if o.action == "withhold")
        return {
            "face_recall": self._sum(rows, "faces").to_json(),
            "face_recall_pixel_rule": self._sum(rows, "faces_px").to_json(),
            "private_object_recall": self._sum(rows, "objects", "private").to_json(),
            "person_recall": self._sum(rows, "persons").to_json(),
            "false_withhold_rate": round(withheld / len(neg), 6) if neg else None,
            "negatives_withheld": withheld,
            "negatives": len(neg),
            "negatives_masked_fraction": round(sum(o.masked_fraction for o in neg) / len(neg), 6) if neg else None,
            "withheld_photos": [o.name for o in rows if o.action == "withhold"],
        }

    @property
    def problems(self) -> list[str]:
        return [f"{v} {o.name}: {p}" for v, rows in self.variants.items() for o in rows for p in o.problems]

    @property
    def notes(self) -> list[str]:
        return [f"{v} {o.name}: {n}" for v, rows in self.variants.items() for o in rows for n in o.notes]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "truth": str(TRUTH_FILE),
            "covered_min": COVERED_MIN,
            "pixel_rule": {"change_min": CHANGE_MIN, "window_px": CHANGE_WINDOW_PX},
            "targets": dict(TARGETS),
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "variants": {
                v: {"about": VARIANTS[v], "summary": self.summary(v), "photos": [o.to_json() for o in rows]}
                for v, rows in self.variants.items()
            },
        }
        if self.deface is not None:
            doc["deface"] = {
                "binary": self.deface_bin,
                "settings": "default (CenterFace, threshold 0.2, blur, ellipse, mask scale 1.3)",
                "face_recall_pixel_rule": self._sum(self.deface, "faces_px").to_json(),
                "photos": [o.to_json() for o in self.deface],
            }
        return doc


def _require_models(loaded: LoadedConfig) -> None:
    """A missing model withholds every frame, which would score as perfect recall: refuse instead."""
    from agent.analysis.factory import model_cache_path
    from models.install import verify

    det = loaded.config.detection
    names = [m for m, on in ((det.faces.model, det.enabled and det.faces.enabled),
                             (det.objects.model, det.objects_active)) if on]
    bad = [r for r in verify(names, cache=model_cache_path(det, loaded.path.parent)) if not r.ok]
    if bad:
        raise ModelError("cannot measure detection quality: " + "; ".join(r.problem for r in bad)
                         + " (run `privacy-agent models install`, offline with --from DIR)")


def evaluate_photos(
    work: Path, *, names: Sequence[str] | None = None, variants: Sequence[str] = ("default", "faces_only"),
    deface_bin: Path | None = None,
) -> PhotoReport:
    """Run every photo through our pipeline (each variant) and optionally deface; score all of them."""
    inputs = photo_inputs(work / "in", names)
    rep = PhotoReport()
    for v in variants:
        loaded = eval_config(v)
        _require_models(loaded)
        rows = []
        for t, png, img in inputs:
            t0 = time.perf_counter()
            o = score_ours(t, img, run_single_frame(png, loaded))
            o.seconds = time.perf_counter() - t0
            rows.append(o)
        rep.variants[v] = rows
    if deface_bin is not None:
        rep.deface_bin = str(deface_bin)
        rows = []
        for t, png, img in inputs:
            dst = work / "deface" / f"{Path(t.name).stem}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            sec = run_deface(deface_bin, png, dst)
            o = score_pixels_only(t, img, read_image(dst), "deface")
            o.seconds = sec
            rows.append(o)
        rep.deface = rows
    return rep


def _frac(r: Recall) -> str:
    return f"{r.hits}/{r.total}" if r.total else "-"


def format_photo_report(rep: PhotoReport) -> str:
    lines = [
        f"eval photos: truth {TRUTH_FILE.name}; a box counts as masked when >= {COVERED_MIN:.0%} of it is "
        "masked, or the frame is withheld",
        f"  geometric = under the decision's mask regions; px = pixel rule (>= {CHANGE_MIN} levels, "
        f"{CHANGE_WINDOW_PX}x{CHANGE_WINDOW_PX} mean), the only measure that also applies to deface",
    ]
    dface = {o.name: o for o in rep.deface} if rep.deface is not None else {}
    if "default" in rep.variants:
        lines += ["", f"[default] {VARIANTS['default']}",
                  f"  {'photo':31} {'group':8} {'action':8} {'faces':>5} {'px':>5} {'objects':>7} "
                  f"{'persons':>7} {'masked':>7}  reasons"]
        for o in rep.variants["default"]:
            why = ",".join(sorted({r.split(":")[0] + ":" + r.split(":")[1] if ":" in r else r for r in o.reasons}))
            lines.append(f"  {o.name:31} {o.group:8} {o.action:8} {_frac(o.faces):>5} {_frac(o.faces_px):>5} "
                         f"{_frac(o.objects):>7} {_frac(o.persons):>7} {o.masked_fraction:7.1%}  {why}")
    if "faces_only" in rep.variants:
        lines += ["", f"[faces_only] {VARIANTS['faces_only']}",
                  f"  {'photo':31} {'faces':>5} {'px':>5} {'masked':>7}" + (f" {'deface px':>9} {'masked':>7}"
                                                                           if dface else "")]
        for o in rep.variants["faces_only"]:
            if not photo_truth()[o.name].faces and o.masked_fraction == 0 and (
                    not dface or dface[o.name].masked_fraction == 0):
                continue
            line = f"  {o.name:31} {_frac(o.faces):>5} {_frac(o.faces_px):>5} {o.masked_fraction:7.1%}"
            if dface:
                d = dface[o.name]
                line += f" {_frac(d.faces_px):>9} {d.masked_fraction:7.1%}"
            lines.append(line)
        lines.append("  (photos without faces where nothing was masked are not listed)")

    def row(label: str, value: str, target: str = "") -> str:
        return f"  {label:44} {value:18} {target}"

    lines += ["", row("summary", "value", "target")]
    for v in rep.variants:
        s = rep.summary(v)
        fr, fp, po = (Recall(s[k]["masked"], s[k]["total"]) for k in
                      ("face_recall", "face_recall_pixel_rule", "private_object_recall"))
        lines += [row(f"[{v}] face recall (geometric)", fr.text(), TARGETS["face_recall"]),
                  row(f"[{v}] face recall (pixel rule)", fp.text())]
        if v == "default":
            lines += [
                row(f"[{v}] private-object recall", po.text(), TARGETS["private_object_recall"]),
                row(f"[{v}] false-withhold rate (negatives)",
                    f"{s['negatives_withheld']}/{s['negatives']}" + (
                        "" if s["false_withhold_rate"] is None else f" = {s['false_withhold_rate']:.3f}"),
                    TARGETS["false_withhold_rate"]),
                row(f"[{v}] masked pixels on negatives (mean)",
                    "-" if s["negatives_masked_fraction"] is None else f"{s['negatives_masked_fraction']:.1%}"),
                row(f"[{v}] person recall (geometric)", Recall(s["person_recall"]["masked"],
                                                           s["person_recall"]["total"]).text()),
            ]
    if rep.deface is not None:
        lines.append(row("[deface] face recall (pixel rule)", PhotoReport._sum(rep.deface, "faces_px").text(),
                         "CenterFace, default settings"))
    for n in rep.notes[:20]:
        lines.append(f"  note: {n}")
    for p in rep.problems[:20]:
        lines.append(f"  FAIL: {p}")
    lines.append("  result: " + ("OK (no privacy failure; recall is reported, not enforced)" if rep.ok else "FAIL"))
    return "\n".join(lines)
