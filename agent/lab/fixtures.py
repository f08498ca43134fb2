"""Fixture rendering: synthetic videos with exact ground truth (`truth.json`).

Each scenario (`agent.lab.scenarios`) is rendered frame by frame from the shared photos; the
truth records the zones, every face and person box and the frames that must be withheld. The
canary scenario paints a unique high-entropy pattern into its private zone, touching the frame
edges, so any leaked pixel of it is found in the output.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.zones import Mask
from agent.errors import FixtureError
from agent.lab.decisions import read_json_object
from agent.lab.figures import LABELS, draw_figures
from agent.lab.scenarios import (
    CAMERA_ID,
    FACE_MIN_VISIBLE,
    PHOTO_TRUTH,
    SCENARIOS,
    SPRITES,
    Background,
    BoxPx,
    FrameSpec,
    Params,
    PhotoTruth,
    Scenario,
    ZoneSpec,
    load_photo,
    resized,
    sprite_image,
)

log = logging.getLogger(__name__)


# A sprite touching a zone by less than this area (in square pixels) does not
# occupy it: below one pixel the "overlap" is floating-point noise on a shared edge.
OVERLAP_MIN_PX2 = 0.5


# Fast lossless PNG: Huffman coding only (deflate's matching finds little in noisy frames).
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


TRUTH_FORMAT = """\
truth.json:
  scenario, width_px, height_px (first frame), fps, frames (count), source (as in config.yaml),
  zones: [{name, points [[x,y] relative], action mask|withhold, style}],
  per_frame: [{frame, t_s, width_px, height_px,
               faces: [[x0,y0,x1,y1] relative], persons: [[x0,y0,x1,y1]],
               private_objects: [{label, box}], must_withhold, zone_occupied: {zone: bool}}],
  canary (canary scenario only): zone, seed, box_px, pattern, canary_probe_hex, probe_origin
  labels (drawn scenarios only): values {"1": "person", ...}, static_scene (no person in any frame);
    then per frame: labels (masks/NNNNN.png), people/moving [{name, label, box, px}], light_gain
"""


def _clip_box(b: BoxPx, w: int, h: int) -> BoxPx | None:
    x0, y0 = max(0.0, b[0]), max(0.0, b[1])
    x1, y1 = min(float(w), b[2]), min(float(h), b[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _area(b: BoxPx) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _rel(b: BoxPx, w: int, h: int) -> list[float]:
    return [round(b[0] / w, 6), round(b[1] / h, 6), round(b[2] / w, 6), round(b[3] / h, 6)]


def polygon_box_overlap(points: Sequence[tuple[float, float]], box: BoxPx) -> float:
    """Area of the intersection of a simple polygon and an axis-aligned box (Sutherland-Hodgman).

    The box is convex, so clipping the polygon against its four half-planes is
    exact for any simple polygon; units are those of the inputs.
    """
    poly = [(float(x), float(y)) for x, y in points]
    x0, y0, x1, y1 = box

    def clip(pts: list[tuple[float, float]], inside: Callable[[tuple[float, float]], bool],
             cross: Callable[[tuple[float, float], tuple[float, float]], tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(xc: float) -> Callable[[tuple[float, float], tuple[float, float]], tuple[float, float]]:
        return lambda a, b: (xc, a[1] + (b[1] - a[1]) * (xc - a[0]) / (b[0] - a[0]))

    def at_y(yc: float) -> Callable[[tuple[float, float], tuple[float, float]], tuple[float, float]]:
        return lambda a, b: (a[0] + (b[0] - a[0]) * (yc - a[1]) / (b[1] - a[1]), yc)

    for inside, cross in (
        (lambda q: q[0] >= x0, at_x(x0)), (lambda q: q[0] <= x1, at_x(x1)),
        (lambda q: q[1] >= y0, at_y(y0)), (lambda q: q[1] <= y1, at_y(y1)),
    ):
        if not poly:
            return 0.0
        poly = clip(poly, inside, cross)
    n = len(poly)
    if n < 3:
        return 0.0
    return abs(sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))) / 2


@dataclass(frozen=True, slots=True)
class _Bg:
    image: Image
    sx: float
    sy: float
    ox: int
    oy: int

    def map_box(self, b: BoxPx) -> BoxPx:
        return (b[0] * self.sx - self.ox, b[1] * self.sy - self.oy, b[2] * self.sx - self.ox, b[3] * self.sy - self.oy)


def _background(bg: Background, w: int, h: int) -> _Bg:
    ph, pw = load_photo(bg.photo).shape[:2]
    s = max(w / pw, h / ph) * bg.zoom
    rw, rh = max(w, math.ceil(pw * s)), max(h, math.ceil(ph * s))
    ox, oy = round((rw - w) * bg.pan_x), round((rh - h) * bg.pan_y)
    img = resized(bg.photo, rw, rh)[oy : oy + h, ox : ox + w]
    return _Bg(img, rw / pw, rh / ph, ox, oy)


def render(spec: FrameSpec, zones: Sequence[ZoneSpec]) -> tuple[Image, dict[str, Any]]:
    """Draw one frame and return it with its truth (without frame index and time)."""
    img, truth, _ = render_labelled(spec, zones)
    return img, truth


def render_labelled(spec: FrameSpec, zones: Sequence[ZoneSpec]) -> tuple[Image, dict[str, Any], Mask | None]:
    """Draw one frame; also its label image (figures.LABELS values) when the frame has drawn figures."""
    w, h = spec.width_px, spec.height_px
    bg = _background(spec.background, w, h)
    img = bg.image.copy()
    faces: list[list[float]] = []
    persons: list[list[float]] = []
    objects: list[dict[str, Any]] = []
    pt = PHOTO_TRUTH.get(spec.background.photo, PhotoTruth())
    for fb in pt.faces:
        _add_face(faces, bg.map_box(fb), w, h)
    for pb in pt.persons:
        c = _clip_box(bg.map_box(pb), w, h)
        if c:
            persons.append(_rel(c, w, h))
    for label, ob in pt.private_objects:
        c = _clip_box(bg.map_box(ob), w, h)
        if c:
            objects.append({"label": label, "box": _rel(c, w, h)})

    occupied = {z.name: False for z in zones}
    pasted: list[tuple[str, BoxPx]] = []
    for pl in spec.placements:
        sp = SPRITES[pl.sprite]
        simg = sprite_image(pl.sprite, pl.height_px)
        sh, sw = simg.shape[:2]
        rect: BoxPx = (pl.x_px, pl.y_px, pl.x_px + sw, pl.y_px + sh)
        vis = _clip_box(rect, w, h)
        if vis is None:
            continue
        vx0, vy0, vx1, vy1 = (int(v) for v in vis)
        img[vy0:vy1, vx0:vx1] = simg[vy0 - pl.y_px : vy1 - pl.y_px, vx0 - pl.x_px : vx1 - pl.x_px]
        for other_name, other in pasted:
            if _clip_box((max(vis[0], other[0]), max(vis[1], other[1]), min(vis[2], other[2]), min(vis[3], other[3])), w, h):
                raise FixtureError(f"scenario layout error: sprites {other_name} and {pl.sprite} overlap")
        pasted.append((pl.sprite, vis))
        if sp.kind == "person":
            persons.append(_rel(vis, w, h))
        cx0, cy0, cx1, cy1 = sp.crop_px
        kx, ky = sw / (cx1 - cx0), sh / (cy1 - cy0)
        for fb in sp.faces_px:
            _add_face(faces, (pl.x_px + (fb[0] - cx0) * kx, pl.y_px + (fb[1] - cy0) * ky,
                              pl.x_px + (fb[2] - cx0) * kx, pl.y_px + (fb[3] - cy0) * ky), w, h)
        for z in zones:
            area = polygon_box_overlap([(x * w, y * h) for x, y in z.points], vis)
            if area >= OVERLAP_MIN_PX2:
                occupied[z.name] = True
    labels: Mask | None = None
    extra: dict[str, Any] = {}
    if spec.figures:
        labels, drawn = draw_figures(img, bg.image, spec.figures)
        extra = {"people": [], "moving": [], "light_gain": spec.light_gain}
        for d in drawn:
            if d.box_px is None:
                continue
            box = _rel(d.box_px, w, h)
            entry: dict[str, Any] = {"name": d.name, "box": box, "px": d.px}
            if d.label == "person":
                persons.append(box)
                extra["people"].append(entry)
                if d.face_box_px is not None and d.face_visible >= FACE_MIN_VISIBLE:
                    faces.append(_rel(d.face_box_px, w, h))
                for z in zones:
                    if polygon_box_overlap([(x * w, y * h) for x, y in z.points], d.box_px) >= OVERLAP_MIN_PX2:
                        occupied[z.name] = True
            else:
                extra["moving"].append({"label": d.label, **entry})
    if spec.light_gain != 1.0:
        img = cv2.convertScaleAbs(img, alpha=spec.light_gain)  # rounds and saturates (img is never negative)
    if spec.noise_sd > 0:
        lit = img.astype(np.int16) + _noise(spec.noise_sd, spec.noise_seed, w, h)
        img = np.clip(lit, 0, 255).astype(np.uint8)
    must = any(occupied[z.name] for z in zones if z.action == "withhold")
    truth = {
        "width_px": w, "height_px": h, "faces": faces, "persons": persons, "private_objects": objects,
        "must_withhold": must, "zone_occupied": occupied, **extra,
    }
    return img, truth, labels


@lru_cache(maxsize=4)
def _noise_bank(sd: float, w: int, h: int) -> np.ndarray:
    bank = np.rint(np.random.default_rng(11).normal(0.0, sd, size=(h + _NOISE_PAD, w + _NOISE_PAD, 3)))
    out = bank.astype(np.int16)
    out.setflags(write=False)
    return out


_NOISE_PAD = 64


def _noise(sd: float, seed: int, w: int, h: int) -> np.ndarray:
    """Camera noise for one frame: a window of one Gaussian field, moved per frame by `seed`.

    Cutting a window out of one field is ~10x cheaper than drawing a new field each frame, and
    neighbouring frames still get unrelated noise at every pixel (the window moves by >= 1 px).
    """
    dy, dx = np.random.default_rng([seed, 11]).integers(0, _NOISE_PAD, size=2)
    return _noise_bank(sd, w, h)[dy : dy + h, dx : dx + w]


def _add_face(faces: list[list[float]], b: BoxPx, w: int, h: int) -> None:
    c = _clip_box(b, w, h)
    if c and _area(c) >= FACE_MIN_VISIBLE * _area(b):
        faces.append(_rel(c, w, h))


CANARY_PATTERN_DOC = (
    "numpy.random.default_rng([seed, frame]).integers(0, 256, size=(y1-y0, x1-x0, 3), dtype=numpy.uint8), "
    "written as BGR into frame[y0:y1, x0:x1] with box_px = [x0, y0, x1, y1]"
)


def canary_pattern(seed: int, frame_index: int, box_px: Sequence[int]) -> Image:
    """The canary pixels of one frame (BGR, H x W x 3), as described in CANARY_PATTERN_DOC."""
    x0, y0, x1, y1 = (int(v) for v in box_px)
    rng = np.random.default_rng([int(seed), int(frame_index)])
    return rng.integers(0, 256, size=(y1 - y0, x1 - x0, 3), dtype=np.uint8)


def _canary_probes(seed: int, n_frames: int, box_px: Sequence[int]) -> tuple[list[str], list[dict[str, Any]]]:
    """16-byte sequences from raw pattern rows, in BGR (memory) and RGB (PNG, converted) order."""
    probes: list[str] = []
    origin: list[dict[str, Any]] = []
    for fi in sorted({0, n_frames // 2, n_frames - 1}):
        pat = canary_pattern(seed, fi, box_px)
        for row in sorted({0, pat.shape[0] // 2, pat.shape[0] - 1}):
            for order, arr in (("bgr", pat[row]), ("rgb", pat[row, :, ::-1])):
                probes.append(np.ascontiguousarray(arr).tobytes()[:16].hex())
                origin.append({"frame": fi, "row": row, "order": order})
    return probes, origin


def _config_yaml(sc: Scenario, source: str, fps: float) -> str:
    lines = [
        f"# Fixture {sc.name}: {sc.description}.",
        "# Written by `privacy-agent fixtures make`; ground truth is in truth.json beside this file.",
        "data_dir: ./data",
        "cameras:",
        f"  - id: {CAMERA_ID}",
        f'    source: "{source}"',
        f"    fps: {fps:g}",
    ]
    if sc.privacy_room is not None:
        lines += [
            "    # This scene shows how people and faces are masked, so the room is declared not private;",
            "    # by default (`auto`) the bed makes it a bedroom, where a person withholds the whole frame.",
            f"    privacy_room: {sc.privacy_room}",
        ]
    if sc.zones:
        lines.append("    zones:")
        for z in sc.zones:
            pts = ", ".join(f"[{x:g}, {y:g}]" for x, y in z.points)
            lines += [
                f"      - name: {z.name}",
                f"        points: [{pts}]",
                f"        action: {z.action}",
                f"        style: {z.style}",
            ]
            if z.hold_s is not None:
                lines.append(f"        hold_s: {z.hold_s:g}")
    else:
        lines.append("    zones: []")
    lines.append("sinks: []")
    return "\n".join(lines) + "\n"


def make_scenario(name: str, out_dir: Path, params: Params | None = None) -> Path:
    """Render one scenario into `out_dir` (created; existing fixture files are replaced)."""
    if name not in SCENARIOS:
        raise FixtureError(f"unknown fixture scenario {name!r} (known: {', '.join(SCENARIOS)})")
    p = params or Params()
    sc = SCENARIOS[name](p)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return _write_scenario(sc, out_dir, p)
    except OSError as e:
        raise FixtureError(f"cannot write fixture {name} into {out_dir}: {e.strerror or e}") from e


def _write_scenario(sc: Scenario, out_dir: Path, p: Params) -> Path:
    name = sc.name
    per_frame: list[dict[str, Any]] = []
    writer: cv2.VideoWriter | None = None
    if sc.png:
        source = "frames/*.png"
        frames_dir = out_dir / "frames"
        frames_dir.mkdir(exist_ok=True)
        for old in frames_dir.glob("*.png"):
            old.unlink()
    else:
        source = "video.mp4"
        first = sc.frames[0]
        writer = cv2.VideoWriter(
            str(out_dir / "video.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), p.fps, (first.width_px, first.height_px)
        )
        if not writer.isOpened():
            raise FixtureError(f"cannot open an mp4v writer for {out_dir / 'video.mp4'}")
    labelled = sc.labelled or any(f.figures for f in sc.frames)
    if labelled:
        masks_dir = out_dir / "masks"
        masks_dir.mkdir(exist_ok=True)
        for old in masks_dir.glob("*.png"):
            old.unlink()
    try:
        for i, spec in enumerate(sc.frames):
            img, truth, labels = render_labelled(spec, sc.zones)
            if labelled:
                if labels is None:  # an empty frame of a drawn scenario: all still scene
                    labels = np.zeros(img.shape[:2], np.uint8)
                    truth.update(people=[], moving=[], light_gain=spec.light_gain)
                truth["labels"] = f"masks/{i:05d}.png"
                if not cv2.imwrite(str(out_dir / truth["labels"]), labels, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise FixtureError(f"cannot write the label image of frame {i} into {out_dir / 'masks'}")
            if sc.canary is not None:
                x0, y0, x1, y1 = sc.canary.box_px
                img[y0:y1, x0:x1] = canary_pattern(sc.canary.seed, i, sc.canary.box_px)
            if writer is not None:
                writer.write(img)
            elif not cv2.imwrite(str(out_dir / "frames" / f"{i:05d}.png"), img, _PNG):
                raise FixtureError(f"cannot write frame {i} of fixture {name} into {out_dir / 'frames'}")
            per_frame.append({"frame": i, "t_s": round(i / p.fps, 6), **truth})
    finally:
        if writer is not None:
            writer.release()
    first_spec = sc.frames[0]
    doc: dict[str, Any] = {
        "scenario": name,
        "description": sc.description,
        "width_px": first_spec.width_px,
        "height_px": first_spec.height_px,
        "fps": p.fps,
        "frames": len(sc.frames),
        "source": source,
        "camera": CAMERA_ID,
        "seed": p.seed,
        "notes": "Sprite boxes are exact pasted rectangles; face boxes inside sprites and boxes in whole photos "
        "were measured by hand. Faces are listed while at least half visible; persons and objects while any part "
        f"is visible. must_withhold: a sprite overlaps a withhold zone by >= {OVERLAP_MIN_PX2} px^2.",
        "zones": [z.to_json() for z in sc.zones],
        "per_frame": per_frame,
    }
    if labelled:
        doc["labels"] = {
            "values": {str(k): v for k, v in LABELS.items()},
            "notes": "masks/NNNNN.png is frame NNNNN's label image (8-bit grey, same size as the frame): "
            "each pixel holds the value of what is drawn there (0: the still scene). Drawn figures are exact: "
            "the mask is the set of pixels the figure wrote. people/moving list each figure's visible box and "
            "pixel count; persons lists the people's visible boxes too.",
            "static_scene": not any(fr.get("people") for fr in per_frame),
        }
    if sc.canary is not None:
        probes, origin = _canary_probes(sc.canary.seed, len(sc.frames), sc.canary.box_px)
        doc["canary"] = {
            "zone": sc.canary.zone,
            "seed": sc.canary.seed,
            "box_px": list(sc.canary.box_px),
            "pattern": CANARY_PATTERN_DOC,
            "canary_probe_hex": probes,
            "probe_origin": origin,
        }
    (out_dir / "config.yaml").write_text(_config_yaml(sc, source, p.fps), encoding="utf-8")
    (out_dir / "truth.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    log.info("fixture %s: %d frames in %s", name, len(sc.frames), out_dir)
    return out_dir


def make_fixtures(root: Path, names: Sequence[str] | None = None, params: Params | None = None) -> list[Path]:
    """Render several scenarios into `root/<name>/`; all of them by default."""
    chosen = list(names) if names else list(SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise FixtureError(f"unknown fixture scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    return [make_scenario(n, root / n, params) for n in chosen]


def read_labels(fixture_dir: Path, frame_truth: dict[str, Any]) -> Mask:
    """The label image of one frame of a drawn fixture (figures.LABELS values), checked against its size."""
    rel = frame_truth.get("labels")
    if not isinstance(rel, str) or not rel.startswith("masks/") or "/" in rel[6:] or ".." in rel:
        raise FixtureError(f"{fixture_dir}: frame {frame_truth.get('frame')} names no label image under masks/")
    path = fixture_dir / rel
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    w, h = frame_truth["width_px"], frame_truth["height_px"]
    if img is None or img.dtype != np.uint8 or img.shape != (h, w):
        raise FixtureError(f"label image {path} is missing or is not an 8-bit {w}x{h} grey PNG")
    return np.asarray(img)


def load_truth(fixture_dir: Path) -> dict[str, Any]:
    """Read and sanity-check `truth.json` of a fixture directory."""
    path = fixture_dir / "truth.json"
    doc = read_json_object(path, f"is {fixture_dir} a fixture made by `fixtures make`?")
    for key in ("scenario", "fps", "frames", "zones", "per_frame"):
        if key not in doc:
            raise FixtureError(f"{path}: missing key {key!r}")
    pf = doc["per_frame"]
    if not isinstance(pf, list) or len(pf) != doc["frames"]:
        raise FixtureError(f"{path}: per_frame must list all {doc['frames']} frames")
    for i, fr in enumerate(pf):
        if not isinstance(fr, dict) or fr.get("frame") != i:
            raise FixtureError(f"{path}: per_frame[{i}] is not frame {i}")
        for key in ("width_px", "height_px", "must_withhold", "faces", "persons"):
            if key not in fr:
                raise FixtureError(f"{path}: per_frame[{i}] lacks {key!r}")
        if "labels" in doc:
            for key in ("labels", "people", "moving"):
                if key not in fr:
                    raise FixtureError(f"{path}: per_frame[{i}] of a drawn fixture lacks {key!r}")
    return doc
