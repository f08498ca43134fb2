"""`privacy-agent zones discover`: propose privacy zones from detected private objects.

It samples frames from a camera's source, runs the configured object detector
for the private labels (bed, toilet, sink by default), groups detections of
the same object across frames, and proposes one rectangular zone per object,
named after it (`bed`, `bed_2`, ...). It writes a YAML snippet and a PNG
preview for the homeowner to check; `--apply` merges the proposals into the
config file after confirmation.

Invariants:
- Nothing leaves the hub: frames are read, detected on and drawn locally; the
  preview is written only where the homeowner asks.
- `--apply` never writes an invalid config: the merged text is validated with
  the normal loader first, then written atomically (temporary file + rename)
  with a `.bak` copy of the old file. Comments and layout are kept (ruamel
  round-trip, indentation guessed from the file).
- A proposal that an existing zone already covers is reported, not added, so
  running discover twice does not duplicate zones.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from agent.config import CameraConfig, LoadedConfig, load_config, parse_config_text
from agent.datatypes import BoxRel, Detection, Image
from agent.detect.config import effective_detection
from agent.detect.factory import model_cache_path
from agent.detect.registry import load_detector
from agent.errors import AgentError, ConfigError, SinkError, SourceError
from agent.sources import SourceOpener

log = logging.getLogger(__name__)

_GROUP_IOU = 0.3  # detections of one object in different frames overlap at least this much
_COVERED_REL = 0.9  # an existing zone covering this much of a proposal's box makes it redundant


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


# --- sampling and grouping -------------------------------------------------------------


def sample_frames(loaded: LoadedConfig, cam: CameraConfig, source: str | None, count: int) -> list[Image]:
    """Up to `count` frames spread over a file source (or one per second of a live one)."""
    src = SourceOpener(source or cam.source, loaded.path.parent, cam.fps)()
    try:
        total = src.info.frame_count
        step = max(1, total // count) if total else max(1, round(src.info.fps))
        frames: list[Image] = []
        i = 0
        while len(frames) < count:
            img = src.read()
            if img is None:
                break
            if i % step == 0:
                frames.append(img)
            i += 1
    finally:
        src.close()
    if not frames:
        raise SourceError(f"source {source or cam.source}: no frames to discover zones in")
    return frames


def _union(boxes: list[BoxRel]) -> BoxRel:
    return BoxRel(min(b.x0_rel for b in boxes), min(b.y0_rel for b in boxes),
                  max(b.x1_rel for b in boxes), max(b.y1_rel for b in boxes))


def _covered_by(box: BoxRel, zone_points: list[list[float]]) -> float:
    """Fraction of `box` inside the zone polygon (rasterised on a 200x200 grid)."""
    n = 200
    poly = np.array([[p[0] * n, p[1] * n] for p in zone_points], np.int32)
    zone = np.zeros((n, n), np.uint8)
    cv2.fillPoly(zone, [poly], 1)
    x0, y0 = int(box.x0_rel * n), int(box.y0_rel * n)
    x1, y1 = max(x0 + 1, math.ceil(box.x1_rel * n)), max(y0 + 1, math.ceil(box.y1_rel * n))
    region = zone[y0:y1, x0:x1]
    return float(region.mean()) if region.size else 0.0


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
        box = _union(g.boxes).expanded(margin_rel)
        if len(seen) < min_frames:
            skipped.append(Skipped(label, box, f"seen in {len(seen)} of {len(per_frame)} frames (< {min_frames})"))
            continue
        cover = next((z for z, pts in existing.items() if _covered_by(box, pts) >= _COVERED_REL), None)
        if cover is not None:
            skipped.append(Skipped(label, box, f"already covered by zone {cover!r}"))
            continue
        name, k = label, 2
        while name in taken:
            name, k = f"{label}_{k}", k + 1
        taken.add(name)
        proposals.append(Proposal(name, label, box, len(seen), len(per_frame), best))
    return proposals, skipped


# --- output ------------------------------------------------------------------------------


def _zone_map(p: Proposal, action: str) -> CommentedMap:
    m = CommentedMap()
    m["name"] = p.name
    pts = CommentedSeq()
    for xy in p.points():
        pair = CommentedSeq(xy)
        pair.fa.set_flow_style()
        pts.append(pair)
    pts.fa.set_flow_style()
    m["points"] = pts
    m["action"] = action
    m.yaml_add_eol_comment(
        f"discovered: {p.label} in {p.frames_seen}/{p.frames_sampled} sampled frames (best score {p.best_score:.2f})",
        "name",
    )
    return m


def _mapping_indent(text: str) -> int:
    """Indentation the file uses for nested mappings (ruamel's guess only knows sequences)."""
    prev: tuple[int, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(line) - len(line.lstrip(" "))
        if prev is not None and prev[1].endswith(":") and col > prev[0] and not stripped.startswith("-"):
            return col - prev[0]
        prev = (col, stripped.split("#")[0].rstrip())
    return 2


def snippet_text(camera_id: str, proposals: list[Proposal], action: str) -> str:
    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    seq = CommentedSeq([_zone_map(p, action) for p in proposals])
    with tempfile.SpooledTemporaryFile(mode="w+") as buf:
        y.dump(seq, buf)
        buf.seek(0)
        body = buf.read()
    head = (f"# Proposed privacy zones for camera {camera_id!r} (privacy-agent zones discover).\n"
            "# Check them on the preview image, then add them under the camera's `zones:`\n"
            "# or run the same command again with --apply.\n")
    return head + (body if proposals else "[]\n")


def render_preview(img: Image, proposals: list[Proposal], skipped: list[Skipped],
                   existing: dict[str, list[list[float]]] | None = None) -> Image:
    """Proposals filled red, skipped detections grey, zones already in the config outlined green."""
    h, w = img.shape[:2]
    overlay = img.copy()
    thick = max(1, w // 300)
    scale = max(0.4, w / 1400)
    for p in proposals:
        x0, y0, x1, y1 = (int(p.box.x0_rel * w), int(p.box.y0_rel * h), int(p.box.x1_rel * w), int(p.box.y1_rel * h))
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (0, 0, 255), -1)
    out = np.asarray(cv2.addWeighted(overlay, 0.35, img, 0.65, 0), dtype=np.uint8)
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
    return out


# --- applying ------------------------------------------------------------------------------


def merge_into_config(path: Path, camera_id: str, proposals: list[Proposal], action: str) -> str:
    """The config file's text with the proposals appended to the camera's zones (comments kept)."""
    text = path.read_text(encoding="utf-8")
    try:
        root, indent, block_seq_indent = load_yaml_guess_indent(text)
    except Exception as e:  # noqa: BLE001  (ruamel raises many types; the loader already reported details)
        raise ConfigError(f"{path}: cannot parse for merging: {e}") from None
    cams = root.get("cameras") if isinstance(root, CommentedMap) else None
    cam = next((c for c in cams or [] if isinstance(c, CommentedMap) and c.get("id") == camera_id), None)
    if cam is None:
        raise ConfigError(f"{path}: no camera with id {camera_id!r} to add zones to")
    zones = cam.get("zones")
    if zones is None:
        zones = CommentedSeq()
        cam["zones"] = zones
    if not isinstance(zones, CommentedSeq):
        raise ConfigError(f"{path}: cameras[{camera_id}].zones is not a list")
    for p in proposals:
        zones.append(_zone_map(p, action))
    y = YAML(typ="rt")
    # ruamel's guess: `indent` is where a sequence item's content starts, `block_seq_indent` where its dash is.
    y.indent(mapping=_mapping_indent(text), sequence=indent or 2, offset=block_seq_indent or 0)
    y.width = 4096
    with tempfile.SpooledTemporaryFile(mode="w+") as buf:
        y.dump(root, buf)
        buf.seek(0)
        merged = buf.read()
    return str(merged)


def write_config_atomically(path: Path, text: str) -> Path:
    """Validate, back up the old file, and replace it in one rename."""
    parse_config_text(text, path.name)  # raises ConfigError: never write a config the agent cannot load
    backup = path.with_name(path.name + ".bak")
    backup.write_bytes(path.read_bytes())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return backup


# --- command ---------------------------------------------------------------------------------


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


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise AgentError("--apply needs confirmation: run it in a terminal, or add --yes")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def cmd_zones_discover(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    proposals, skipped, first, action, existing = discover(loaded, args.camera, args.source, args.frames, args.min_frames)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snippet = out_dir / f"zones-{args.camera}.yaml"
    preview = out_dir / f"zones-{args.camera}.png"
    snippet.write_text(snippet_text(args.camera, proposals, action), encoding="utf-8")
    if not cv2.imwrite(str(preview), render_preview(first, proposals, skipped, existing)):
        raise SinkError(f"cannot write preview image {preview}")
    for p in proposals:
        print(f"proposed zone {p.name!r}: {p.label} seen in {p.frames_seen}/{p.frames_sampled} frames, "
              f"points {p.points()}")
    for s in skipped:
        print(f"not proposed: {s.label} ({s.reason})")
    print(f"wrote {snippet} and {preview}")
    if not args.apply:
        return 0
    if not proposals:
        print("nothing to apply")
        return 0
    if not args.yes and not _confirm(f"Add {len(proposals)} zone(s) to camera {args.camera!r} in {args.config}?"):
        print("not applied")
        return 1
    merged = merge_into_config(loaded.path, args.camera, proposals, action)
    backup = write_config_atomically(loaded.path, merged)
    print(f"added {len(proposals)} zone(s) to {loaded.path} (previous version in {backup})")
    return 0


def add_discover_parser(zones_sub: argparse._SubParsersAction) -> None:
    """Add `discover` under the `zones` command group (called by agent.commands)."""
    d = zones_sub.add_parser(
        "discover",
        help="detect private objects (bed, toilet, sink, ...) and propose zones for them",
        description="Samples frames from a camera, detects the private objects listed in "
        "detection.private_objects.labels and proposes one zone per object. Writes zones-<camera>.yaml "
        "and zones-<camera>.png; --apply adds the zones to the config (comments kept, .bak written).",
    )
    d.add_argument("--config", required=True, help="path to config.yaml")
    d.add_argument("--camera", required=True, help="camera id")
    d.add_argument("--source", help="sample this source instead of the camera's")
    d.add_argument("--frames", type=int, default=8, help="frames to sample (default 8)")
    d.add_argument("--min-frames", type=int, default=None,
                   help="propose an object only if seen in at least this many sampled frames (default: a quarter)")
    d.add_argument("--out-dir", default=".", help="where to write the snippet and preview (default: .)")
    d.add_argument("--apply", action="store_true", help="add the proposed zones to the config file")
    d.add_argument("--yes", action="store_true", help="with --apply: do not ask for confirmation")
    d.set_defaults(func=cmd_zones_discover)
