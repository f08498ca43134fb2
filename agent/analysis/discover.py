"""Zone discovery: sample a camera's frames, detect private objects, propose polygons.

Proposals are named after what was found (`bed`, `toilet`, ...); overlapping detections across
samples are grouped, and objects the existing zones already cover (by area, not by name) are
skipped. The preview is drawn over the frame as it would leave the hub with the proposals
applied (`with_proposals`, then `agent.media.preview.redacted_view`): never over raw pixels.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from agent.analysis.factory import model_cache_path
from agent.config import CameraConfig, LoadedConfig, effective_detection
from agent.config.edit import NewZone
from agent.core.datatypes import Detection, Image
from agent.core.policy import CameraPolicy, ZonePolicy
from agent.core.redact import RedactedFrame
from agent.detect.registry import load_detector
from agent.errors import ConfigError, SourceError
from agent.geometry import BoxRel, PointRel
from agent.media.preview import Withheld, canvas, draw_withheld_notice
from agent.media.sources import SourceOpener, public_spec, read_clean
from agent.vocab import Style, ZoneAction

_GROUP_IOU = 0.3  # detections of one object in different frames overlap at least this much


# Existing zones covering this share of a detected object's box make a proposal for it redundant. Measured
# on the object's own box, before the margin: a homeowner draws a zone around the bed, not around the bed
# plus 25% on each side, and a proposal on top of their `bed` zone (`bed_2`) is noise they must delete.
# Below this share the object pokes out of the zones, and proposing it errs on the private side.
_COVERED_REL = 0.6


@dataclass(frozen=True, slots=True)
class Proposal:
    name: str
    label: str
    box: BoxRel
    frames_seen: int
    frames_sampled: int
    best_score: float

    def points(self) -> list[list[float]]:
        return [[round(x, 4), round(y, 4)] for x, y in (
            (self.box.x0_rel, self.box.y0_rel), (self.box.x1_rel, self.box.y0_rel),
            (self.box.x1_rel, self.box.y1_rel), (self.box.x0_rel, self.box.y1_rel))]

    def as_zone(self) -> NewZone:
        """The proposal as a zone for the config, with where it came from as the zone's comment."""
        return NewZone(self.name, tuple((x, y) for x, y in self.points()),
                       f"discovered: {self.label} in {self.frames_seen}/{self.frames_sampled} sampled frames "
                       f"(best score {self.best_score:.2f})")


@dataclass(frozen=True, slots=True)
class Skipped:
    label: str
    box: BoxRel
    reason: str


@dataclass
class _Group:
    label: str
    boxes: list[BoxRel]
    frames: set[int]
    best: float


def sample_frames(loaded: LoadedConfig, cam: CameraConfig, source: str | None, count: int) -> list[Image]:
    """Up to `count` frames spread over a file source (or one per second of a live one)."""
    src = SourceOpener(source or cam.source, loaded.path.parent, cam.fps)()
    try:
        total = src.info.frame_count
        step = max(1, total // count) if total else max(1, round(src.info.fps))
        frames: list[Image] = []
        i = 0
        while len(frames) < count:
            img = read_clean(src)  # a damaged frame is no place to look for a bed
            if img is None:
                break
            if i % step == 0:
                frames.append(img)
            i += 1
    finally:
        src.close()
    if not frames:
        raise SourceError(f"source {public_spec(source or cam.source)}: no frames to discover zones in")
    return frames


def _union(boxes: list[BoxRel]) -> BoxRel:
    return BoxRel(min(b.x0_rel for b in boxes), min(b.y0_rel for b in boxes),
                  max(b.x1_rel for b in boxes), max(b.y1_rel for b in boxes))


_COVER_GRID = 400  # zones are rasterised on this many cells a side to measure overlap (0.25% resolution)


def _zone_raster(zone_points: list[list[float]]) -> np.ndarray:
    n = _COVER_GRID
    poly = np.array([[round(p[0] * n), round(p[1] * n)] for p in zone_points], np.int32)
    zone = np.zeros((n, n), np.uint8)
    cv2.fillPoly(zone, [poly], 1)
    return zone


def _box_share(box: BoxRel, raster: np.ndarray) -> float:
    """Share of `box`'s area where `raster` is set."""
    n = _COVER_GRID
    x0, y0 = int(box.x0_rel * n), int(box.y0_rel * n)
    x1, y1 = max(x0 + 1, math.ceil(box.x1_rel * n)), max(y0 + 1, math.ceil(box.y1_rel * n))
    region = raster[y0:y1, x0:x1]
    return float(region.mean()) if region.size else 0.0


def covered_share(box: BoxRel, existing: dict[str, list[list[float]]]) -> tuple[float, list[str]]:
    """Share of `box` inside the union of the existing zones, and the zones that overlap it (most first).

    The union, not each zone alone: two zones drawn side by side over one bed cover it together.
    """
    rasters = {name: _zone_raster(pts) for name, pts in existing.items()}
    if not rasters:
        return 0.0, []
    union = np.zeros((_COVER_GRID, _COVER_GRID), np.uint8)
    for r in rasters.values():
        union |= r
    shares = {name: _box_share(box, r) for name, r in rasters.items()}
    overlapping = sorted((n for n, v in shares.items() if v > 0), key=lambda n: -shares[n])
    return _box_share(box, union), overlapping


def group_detections(per_frame: list[tuple[Detection, ...]], labels: list[str], margin_rel: float,
                     min_frames: int, existing: dict[str, list[list[float]]]) -> tuple[list[Proposal], list[Skipped]]:
    """Group per-frame detections into one proposal per object (same label, overlapping boxes)."""
    groups: list[_Group] = []
    for fi, dets in enumerate(per_frame):
        for d in sorted(dets, key=lambda x: -x.score):
            if d.label not in labels:
                continue
            g = next((g for g in groups if g.label == d.label and _union(g.boxes).iou(d.box) >= _GROUP_IOU), None)
            if g is None:
                groups.append(_Group(d.label, [d.box], {fi}, d.score))
            else:
                g.boxes.append(d.box)
                g.frames.add(fi)
                g.best = max(g.best, d.score)
    proposals: list[Proposal] = []
    skipped: list[Skipped] = []
    taken = set(existing)
    # Most-seen objects first so the plain name (`bed`) goes to the clearest one.
    for g in sorted(groups, key=lambda g: (-len(g.frames), -g.best)):
        label, seen, best = g.label, g.frames, g.best
        seen_box = _union(g.boxes)
        box = seen_box.expanded(margin_rel)
        if len(seen) < min_frames:
            skipped.append(Skipped(label, box, f"seen in {len(seen)} of {len(per_frame)} frames (< {min_frames})"))
            continue
        # By overlap, never by name: a zone called `bed` over the window does not cover the bed.
        share, zones = covered_share(seen_box, existing)
        if share >= _COVERED_REL:
            names = ", ".join(repr(z) for z in zones)
            skipped.append(Skipped(label, box, f"already covered by zone {names} ({share:.0%} of its box)"))
            continue
        name, k = label, 2
        while name in taken:
            name, k = f"{label}_{k}", k + 1
        taken.add(name)
        proposals.append(Proposal(name, label, box, len(seen), len(per_frame), best))
    return proposals, skipped


def with_proposals(policy: CameraPolicy, proposals: list[Proposal], action: str) -> CameraPolicy:
    """The camera's policy as `--apply` would leave it: the proposals added as zones, with the points
    written to the config (rounded), the configured action and the default style (solid)."""
    added = tuple(
        # hold_s is 0: a preview treats every withhold zone as empty, so it plays no part. The points
        # are not validated again: redaction rasterises even a degenerate box (outlined, dilated).
        ZonePolicy(p.name, tuple(PointRel(x, y) for x, y in p.points()), ZoneAction(action), Style.SOLID, 0.0)
        for p in proposals
    )
    return dataclasses.replace(policy, zones=policy.zones + added)


def render_preview(view: RedactedFrame | Withheld, proposals: list[Proposal], skipped: list[Skipped],
                   existing: dict[str, list[list[float]]] | None = None) -> Image:
    """Over the frame as it leaves the hub (`view`): proposals outlined red, skipped detections grey,
    zones already in the config green. Mask zones, proposed or not, are filled by redaction."""
    out = canvas(view)
    h, w = out.shape[:2]
    thick = max(1, w // 300)
    scale = max(0.4, w / 1400)
    items: list[tuple[str, BoxRel, tuple[int, int, int]]] = [(p.name, p.box, (0, 0, 255)) for p in proposals]
    items += [(f"{s.label} (skipped)", s.box, (160, 160, 160)) for s in skipped]
    for name, pts in (existing or {}).items():
        poly = np.array([[p[0] * w, p[1] * h] for p in pts], np.int32)
        cv2.polylines(out, [poly], True, (0, 200, 0), thick, cv2.LINE_AA)
        cv2.putText(out, name, (int(poly[0][0]) + 2, int(poly[0][1]) + int(20 * scale) + 4),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 200, 0), 1, cv2.LINE_AA)
    for text, box, colour in items:
        x0, y0, x1, y1 = (int(box.x0_rel * w), int(box.y0_rel * h), int(box.x1_rel * w), int(box.y1_rel * h))
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(th + 4, y0 + th + 4)
        cv2.rectangle(out, (x0, ty - th - 4), (min(w - 1, x0 + tw + 4), ty + 4), (0, 0, 0), -1)
        cv2.putText(out, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    if isinstance(view, Withheld):
        draw_withheld_notice(out, view)
    return out


def discover(loaded: LoadedConfig, camera_id: str, source: str | None, frames: int,
             min_frames: int | None) -> tuple[list[Proposal], list[Skipped], Image, str, dict[str, list[list[float]]]]:
    """Sample, detect and group. Returns proposals, skipped objects, a frame, the zone action, existing zones."""
    cam = loaded.config.camera(camera_id)
    cfg = effective_detection(loaded.config.detection, cam.detection)
    po = cfg.private_objects
    if not po.labels:
        raise ConfigError("detection.private_objects.labels is empty; nothing to discover")
    detector = load_detector(
        cfg.objects.model, kind="objects", onnx=cfg.onnxruntime, thresholds=cfg.thresholds,
        wanted=frozenset(po.labels), cache=model_cache_path(cfg, loaded.path.parent),
    )
    imgs = sample_frames(loaded, cam, source, frames)
    per_frame = [detector.detect(img) for img in imgs]
    need = min_frames if min_frames is not None else max(1, math.ceil(0.25 * len(imgs)))
    existing = {z.name: z.points for z in cam.zones}
    proposals, skipped = group_detections(per_frame, po.labels, po.margin_rel, need, existing)
    return proposals, skipped, imgs[0], str(po.action), existing
