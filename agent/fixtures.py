"""Fixture generator: short videos with exact ground truth, rendered from the shared photos.

`privacy-agent fixtures make --out ROOT` writes one directory per scenario:

- `video.mp4` (OpenCV `mp4v`) or `frames/00000.png ...` (lossless PNG, for the
  scenarios whose pixels must reach the pipeline exactly: `resize`, whose
  resolution changes mid-stream, and `canary`, whose pattern bytes are
  searched for in the outputs);
- `config.yaml`: a valid config (camera `cam`, source relative to the file);
- `truth.json`: zones, and per frame the size, face/person/private-object
  boxes, `must_withhold` and `zone_occupied` (format in `TRUTH_FORMAT`).

Invariants:
- Deterministic: the same scenario, size, duration, fps and seed give the same
  pixels and the same truth. Photos are read only through
  `agent.shared_data.shared_file`, which checks their sha256.
- Sprite ground truth is exact: a sprite is a rectangular crop of a real photo
  pasted at integer pixel positions, and its box is the pasted rectangle (in
  relative coordinates, clipped to the frame). Face boxes inside crops and
  boxes of people in whole photos were measured by hand (about +-3 px for
  faces, +-10 px for people and objects in the source photo).
- `must_withhold` is true exactly while a sprite (person or head) overlaps a
  `withhold` zone by at least `OVERLAP_MIN_PX2` square pixels, including while
  it stands perfectly still there.
- Scenario layouts keep sprites apart from each other and face sprites out of
  zones; the generator raises `FixtureError` if a layout breaks that, because
  occlusion would make the truth wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.data import photo_truth
from agent.datatypes import Image
from agent.errors import FixtureError
from agent.shared_data import shared_file

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)
DEFAULT_SECONDS = 7.0
DEFAULT_FPS = 10.0
DEFAULT_SEED = 20261127
CAMERA_ID = "cam"
# A sprite touching a zone by less than this area (in square pixels) does not
# occupy it: below one pixel the "overlap" is floating-point noise on a shared edge.
OVERLAP_MIN_PX2 = 0.5
# Faces count in the truth only while at least this fraction of the face is in
# the frame; a sliver of a face is not a detectable face. People and objects
# count while any part of them is visible.
FACE_MIN_VISIBLE = 0.5

TRUTH_FORMAT = """\
truth.json:
  scenario, width_px, height_px (first frame), fps, frames (count), source (as in config.yaml),
  zones: [{name, points [[x,y] relative], action mask|withhold, style}],
  per_frame: [{frame, t_s, width_px, height_px,
               faces: [[x0,y0,x1,y1] relative], persons: [[x0,y0,x1,y1]],
               private_objects: [{label, box}], must_withhold, zone_occupied: {zone: bool}}],
  canary (canary scenario only): zone, seed, box_px, pattern, canary_probe_hex, probe_origin
"""

BoxPx = tuple[float, float, float, float]


# --- photos and sprites ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sprite:
    """A rectangular crop of a shared photo. Boxes are in the photo's own pixels."""

    photo: str
    crop_px: tuple[int, int, int, int]
    kind: str  # "person" (a whole body) or "head"
    faces_px: tuple[BoxPx, ...] = ()


@dataclass(frozen=True, slots=True)
class PhotoTruth:
    """Hand-measured boxes in a whole photo (photo pixels)."""

    faces: tuple[BoxPx, ...] = ()
    persons: tuple[BoxPx, ...] = ()
    private_objects: tuple[tuple[str, BoxPx], ...] = ()


# The one source of truth for what is in each shared photo is
# agent/data/photos_truth.json (also scored by `eval --photos`); here it is
# only converted to photo pixels.
PHOTO_TRUTH: Mapping[str, PhotoTruth] = {
    name: PhotoTruth(
        tuple(t.px(b) for b in t.faces),
        tuple(t.px(b) for b in t.persons),
        tuple((label, t.px(b)) for label, b in t.private_objects),
    )
    for name, t in photo_truth().items()
}


def _faces_in(photo: str, crop_px: tuple[int, int, int, int]) -> tuple[BoxPx, ...]:
    """The photo's ground-truth faces that lie wholly inside a crop rectangle."""
    x0, y0, x1, y1 = crop_px
    return tuple(f for f in PHOTO_TRUTH[photo].faces if x0 <= f[0] and y0 <= f[1] and f[2] <= x1 and f[3] <= y1)


def _sprite(photo: str, crop_px: tuple[int, int, int, int], kind: str) -> Sprite:
    return Sprite(photo, crop_px, kind, _faces_in(photo, crop_px))


# Crop rectangles measured on the photos (x0, y0, x1, y1; end exclusive).
SPRITES: Mapping[str, Sprite] = {
    # Boy in the red shirt, front right of the tennis group.
    "boy_red": _sprite("coco_val2017_000000001000.jpg", (416, 214, 522, 480), "person"),
    # Boy in the white shirt and cap, far right of the tennis group.
    "boy_white": _sprite("coco_val2017_000000001000.jpg", (526, 188, 640, 478), "person"),
    # Head and shoulders of the astronaut portrait: one frontal face.
    "astronaut": _sprite("skimage_astronaut.png", (150, 30, 310, 210), "head"),
}


@lru_cache(maxsize=16)
def _photo(name: str) -> Image:
    path = shared_file("fixtures", name)
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if raw is None:
        raise FixtureError(f"shared photo {path} cannot be decoded")
    img = np.asarray(raw, dtype=np.uint8)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=64)
def _resized(name: str, width_px: int, height_px: int) -> Image:
    img = np.asarray(cv2.resize(_photo(name), (width_px, height_px), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=64)
def _sprite_image(name: str, height_px: int) -> Image:
    sp = SPRITES[name]
    x0, y0, x1, y1 = sp.crop_px
    crop = _photo(sp.photo)[y0:y1, x0:x1]
    width_px = max(1, round((x1 - x0) * height_px / (y1 - y0)))
    img = np.asarray(cv2.resize(crop, (width_px, height_px), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    img.setflags(write=False)
    return img


# --- scene description -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Background:
    """A photo scaled to cover the frame (times `zoom`), then cropped at `pan` (0..1 of the slack)."""

    photo: str
    zoom: float = 1.0
    pan_x: float = 0.5
    pan_y: float = 0.5


@dataclass(frozen=True, slots=True)
class Placement:
    """A sprite pasted with its top-left corner at (x_px, y_px), scaled to `height_px`."""

    sprite: str
    x_px: int
    y_px: int
    height_px: int


@dataclass(frozen=True, slots=True)
class FrameSpec:
    width_px: int
    height_px: int
    background: Background
    placements: tuple[Placement, ...] = ()


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    name: str
    points: tuple[tuple[float, float], ...]
    action: str
    style: str = "solid"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "points": [[x, y] for x, y in self.points],
            "action": self.action,
            "style": self.style,
        }


@dataclass(frozen=True, slots=True)
class Params:
    width_px: int = DEFAULT_SIZE[0]
    height_px: int = DEFAULT_SIZE[1]
    seconds: float = DEFAULT_SECONDS
    fps: float = DEFAULT_FPS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not (32 <= self.width_px <= 4096 and 32 <= self.height_px <= 4096):
            raise FixtureError(f"fixture size {self.width_px}x{self.height_px} must be 32..4096 on each side")
        if not (math.isfinite(self.fps) and 1 <= self.fps <= 60):
            raise FixtureError(f"fixture fps {self.fps} must be 1..60")
        if not (math.isfinite(self.seconds) and 1 <= self.seconds <= 600):
            raise FixtureError(f"fixture length {self.seconds} s must be 1..600 s")

    @property
    def frames(self) -> int:
        return max(2, round(self.seconds * self.fps))


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    zones: tuple[ZoneSpec, ...]
    frames: tuple[FrameSpec, ...]
    png: bool = False
    canary: CanarySpec | None = None


@dataclass(frozen=True, slots=True)
class CanarySpec:
    zone: str
    seed: int
    box_px: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Track:
    """Sprite keyframes (t as a fraction of the clip, x/y of the top-left and height, relative)."""

    sprite: str
    keys: tuple[tuple[float, float, float, float], ...] = field(default=())

    def at(self, t_frac: float, width_px: int, height_px: int) -> Placement:
        ks = self.keys
        k: tuple[float, ...] = ks[-1][1:]
        if t_frac <= ks[0][0]:
            k = ks[0][1:]
        elif t_frac < ks[-1][0]:
            for a, b in zip(ks, ks[1:], strict=False):
                if a[0] <= t_frac <= b[0]:
                    u = 0.0 if b[0] == a[0] else (t_frac - a[0]) / (b[0] - a[0])
                    k = tuple(av + (bv - av) * u for av, bv in zip(a[1:], b[1:], strict=True))
                    break
        x, y, h = k
        return Placement(self.sprite, round(x * width_px), round(y * height_px), max(8, round(h * height_px)))


def _frames(
    p: Params, bg: Callable[[float], Background], tracks: Sequence[Track],
    size: Callable[[float], tuple[int, int]] | None = None,
) -> tuple[FrameSpec, ...]:
    out = []
    n = p.frames
    for i in range(n):
        t = i / (n - 1)
        w, h = size(t) if size else (p.width_px, p.height_px)
        out.append(FrameSpec(w, h, bg(t), tuple(tr.at(t, w, h) for tr in tracks)))
    return tuple(out)


# --- scenarios ---------------------------------------------------------------


def _bedroom_walk(p: Params) -> Scenario:
    zones = (
        # Over the bed, following its top edge; reaches the left and bottom frame edges.
        ZoneSpec("bed", ((0.0, 0.6), (0.19, 0.6), (0.52, 0.635), (0.6, 0.67), (0.62, 0.83), (0.61, 1.0), (0.0, 1.0)), "mask"),
        # The dressing side of the room (right of the bed, in front of the bookcase).
        ZoneSpec("dressing", ((0.66, 0.3), (1.0, 0.3), (1.0, 1.0), (0.66, 1.0)), "withhold"),
    )
    # The person walks in from the right edge, stands perfectly still inside
    # the withhold zone for ~40% of the clip, then walks back out.
    person = Track("boy_red", ((0.0, 1.0, 0.36, 0.62), (0.15, 1.0, 0.36, 0.62), (0.3, 0.74, 0.36, 0.62),
                               (0.7, 0.74, 0.36, 0.62), (0.85, 1.0, 0.36, 0.62), (1.0, 1.0, 0.36, 0.62)))
    # A face drifting along the wall above the bed, never inside a zone.
    face = Track("astronaut", ((0.0, 0.02, 0.04, 0.22), (1.0, 0.42, 0.12, 0.22)))
    frames = _frames(p, lambda t: Background("coco_val2017_000000000632.jpg"), (person, face))
    return Scenario("bedroom_walk", "bedroom; bed masked; a person stands still in a withhold zone; a face moves",
                    zones, frames)


def _bathroom(p: Params) -> Scenario:
    zones = (
        # Bathtub and shower, from the left frame edge.
        ZoneSpec("bath", ((0.0, 0.15), (0.5, 0.15), (0.5, 1.0), (0.0, 1.0)), "withhold"),
        # The mirrors reflect the room: masked, reaching the right frame edge.
        ZoneSpec("mirrors", ((0.66, 0.17), (1.0, 0.17), (1.0, 0.6), (0.66, 0.6)), "mask"),
    )
    person = Track("boy_white", ((0.0, -0.2, 0.36, 0.62), (0.2, -0.2, 0.36, 0.62), (0.35, 0.2, 0.36, 0.62),
                                 (0.65, 0.2, 0.36, 0.62), (0.8, -0.2, 0.36, 0.62), (1.0, -0.2, 0.36, 0.62)))
    frames = _frames(p, lambda t: Background("coco_val2017_000000006213.jpg"), (person,))
    return Scenario("bathroom", "bathroom; a person enters the bath zone, stays still, leaves; mirrors masked",
                    zones, frames)


CANARY_ZONE = ((0.6, 0.55), (1.0, 0.55), (1.0, 1.0), (0.6, 1.0))


def _canary(p: Params) -> Scenario:
    zones = (ZoneSpec("canary", CANARY_ZONE, "mask"),)
    person = Track("boy_red", ((0.0, -0.2, 0.3, 0.6), (1.0, 0.38, 0.3, 0.6)))
    frames = _frames(p, lambda t: Background("coco_val2017_000000000802.jpg"), (person,))
    # The pattern fills the pixels whose whole area lies inside the zone (the
    # zone's mask may add a conservative border; that border stays photo).
    box = (
        math.ceil(CANARY_ZONE[0][0] * p.width_px), math.ceil(CANARY_ZONE[0][1] * p.height_px),
        p.width_px, p.height_px,
    )
    return Scenario("canary", "a unique random pattern fills a mask zone at the right/bottom edges in every frame",
                    zones, frames, png=True, canary=CanarySpec("canary", p.seed, box))


def _resize(p: Params) -> Scenario:
    zones = (
        ZoneSpec("corner", ((0.55, 0.0), (1.0, 0.0), (1.0, 1.0), (0.85, 1.0), (0.7, 0.5)), "mask"),
        ZoneSpec("left_foot", ((0.0, 0.7), (0.3, 1.0), (0.0, 1.0)), "mask"),
    )
    big = (p.width_px, p.height_px)
    other = (_even(p.width_px * 5 // 4), _even(p.height_px * 3 // 4))

    def size(t: float) -> tuple[int, int]:
        return other if 1 / 3 <= t < 2 / 3 else big

    face = Track("astronaut", ((0.0, 0.05, 0.15, 0.3), (1.0, 0.3, 0.3, 0.3)))
    frames = _frames(p, lambda t: Background("coco_val2017_000000001993.jpg"), (face,), size)
    return Scenario("resize", "PNG sequence whose resolution changes twice; mask zones touch frame edges",
                    zones, frames, png=True)


def _faces(p: Params) -> Scenario:
    # First half: the tennis group photo, zoomed 1.25x and panned corner to corner.
    # Second half: a kitchen with the astronaut's head growing as it moves and a
    # boy walking in from the right.
    head = Track("astronaut", ((0.5, 0.02, 0.05, 0.15), (1.0, 0.2, 0.2, 0.45)))
    boy = Track("boy_white", ((0.5, 1.0, 0.3, 0.6), (1.0, 0.62, 0.3, 0.6)))
    n = p.frames
    out = []
    for i in range(n):
        t = i / (n - 1)
        w, h = p.width_px, p.height_px
        if t < 0.5:
            u = t / 0.5
            out.append(FrameSpec(w, h, Background("coco_val2017_000000001000.jpg", 1.25, u, u)))
        else:
            out.append(FrameSpec(w, h, Background("coco_val2017_000000000802.jpg"),
                                 (head.at(t, w, h), boy.at(t, w, h))))
    return Scenario("faces", "faces for detection: a group photo panned, then a head and a person moving",
                    (), tuple(out))


def _even(v: int) -> int:
    return v - (v % 2)


SCENARIOS: Mapping[str, Callable[[Params], Scenario]] = {
    "bedroom_walk": _bedroom_walk,
    "bathroom": _bathroom,
    "canary": _canary,
    "resize": _resize,
    "faces": _faces,
}


# --- geometry ----------------------------------------------------------------


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


# --- rendering ---------------------------------------------------------------


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
    ph, pw = _photo(bg.photo).shape[:2]
    s = max(w / pw, h / ph) * bg.zoom
    rw, rh = max(w, math.ceil(pw * s)), max(h, math.ceil(ph * s))
    ox, oy = round((rw - w) * bg.pan_x), round((rh - h) * bg.pan_y)
    img = _resized(bg.photo, rw, rh)[oy : oy + h, ox : ox + w]
    return _Bg(img, rw / pw, rh / ph, ox, oy)


def render(spec: FrameSpec, zones: Sequence[ZoneSpec]) -> tuple[Image, dict[str, Any]]:
    """Draw one frame and return it with its truth (without frame index and time)."""
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
        simg = _sprite_image(pl.sprite, pl.height_px)
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
    must = any(occupied[z.name] for z in zones if z.action == "withhold")
    truth = {
        "width_px": w, "height_px": h, "faces": faces, "persons": persons, "private_objects": objects,
        "must_withhold": must, "zone_occupied": occupied,
    }
    return img, truth


def _add_face(faces: list[list[float]], b: BoxPx, w: int, h: int) -> None:
    c = _clip_box(b, w, h)
    if c and _area(c) >= FACE_MIN_VISIBLE * _area(b):
        faces.append(_rel(c, w, h))


# --- the canary --------------------------------------------------------------


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


# --- writing -----------------------------------------------------------------


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
    try:
        for i, spec in enumerate(sc.frames):
            img, truth = render(spec, sc.zones)
            if sc.canary is not None:
                x0, y0, x1, y1 = sc.canary.box_px
                img[y0:y1, x0:x1] = canary_pattern(sc.canary.seed, i, sc.canary.box_px)
            if writer is not None:
                writer.write(img)
            elif not cv2.imwrite(str(out_dir / "frames" / f"{i:05d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
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


# --- reading -----------------------------------------------------------------


def load_truth(fixture_dir: Path) -> dict[str, Any]:
    """Read and sanity-check `truth.json` of a fixture directory."""
    path = fixture_dir / "truth.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(f"{path} does not exist; is {fixture_dir} a fixture made by `fixtures make`?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FixtureError(f"cannot read ground truth {path}: {e}") from None
    if not isinstance(doc, dict):
        raise FixtureError(f"{path}: top level must be an object")
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
    return doc


# --- command line ------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w_s, h_s = text.lower().split("x")
        w, h = int(w_s), int(h_s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 640x480") from None
    if w < 32 or h < 32 or w > 4096 or h > 4096:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be 32..4096 pixels")
    return w, h


def _cmd_make(args: argparse.Namespace) -> int:
    w, h = args.size
    params = Params(w, h, args.seconds, args.fps, args.seed)
    dirs = make_fixtures(Path(args.out), args.scenario, params)
    for d in dirs:
        truth = load_truth(d)
        n_hold = sum(1 for f in truth["per_frame"] if f["must_withhold"])
        n_faces = sum(len(f["faces"]) for f in truth["per_frame"])
        print(f"{d}: {truth['frames']} frames, {n_hold} must be withheld, {n_faces} face boxes")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    p = Params(64, 48, 1.0)
    for name, fn in SCENARIOS.items():
        print(f"{name:14} {fn(p).description}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    fx = sub.add_parser("fixtures", help="generate test videos with ground truth from the shared photos")
    fsub = fx.add_subparsers(dest="fixtures_command", metavar="SUBCOMMAND", required=True)
    mk = fsub.add_parser("make", help="render scenarios into OUT/<scenario>/ (video, config.yaml, truth.json)")
    mk.add_argument("--out", required=True, help="root directory; each scenario gets a sub-directory")
    mk.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="scenario to render (repeatable; default: all)")
    mk.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="clip length (default %(default)s)")
    mk.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate (default %(default)s)")
    mk.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, metavar="WxH",
                    help="frame size (default 640x480)")
    mk.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the canary pattern")
    mk.set_defaults(func=_cmd_make)
    ls = fsub.add_parser("list", help="list the scenarios")
    ls.set_defaults(func=_cmd_list)
