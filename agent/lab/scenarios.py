"""The synthetic scenarios the fixtures are rendered from: sprites cut from the shared photos,
backgrounds, tracks, zones, and their exact ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.errors import FixtureError
from agent.lab.scenes import DRAWN_SCENARIOS
from agent.lab.shared_data import shared_file
from agent.lab.specs import (  # noqa: F401  (DEFAULT_*, ZoneSpec: re-exported for the CLI and fixtures)
    DEFAULT_FPS,
    DEFAULT_SECONDS,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    Background,
    CanarySpec,
    FrameSpec,
    Params,
    Placement,
    Scenario,
    ZoneSpec,
)
from agent.lab.truth import photo_truth

CAMERA_ID = "cam"


# Faces count in the truth only while at least this fraction of the face is in
# the frame; a sliver of a face is not a detectable face. People and objects
# count while any part of them is visible.
FACE_MIN_VISIBLE = 0.5


BoxPx = tuple[float, float, float, float]


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
# agent/lab/data/photos_truth.json (also scored by `eval --photos`); here it is
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
def load_photo(name: str) -> Image:
    path = shared_file("fixtures", name)
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if raw is None:
        raise FixtureError(f"shared photo {path} cannot be decoded")
    img = np.asarray(raw, dtype=np.uint8)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=64)
def resized(name: str, width_px: int, height_px: int) -> Image:
    img = np.asarray(cv2.resize(load_photo(name), (width_px, height_px), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=64)
def sprite_image(name: str, height_px: int) -> Image:
    sp = SPRITES[name]
    x0, y0, x1, y1 = sp.crop_px
    crop = load_photo(sp.photo)[y0:y1, x0:x1]
    width_px = max(1, round((x1 - x0) * height_px / (y1 - y0)))
    img = np.asarray(cv2.resize(crop, (width_px, height_px), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    img.setflags(write=False)
    return img


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
                    zones, frames, privacy_room="none")


def _demo(p: Params) -> Scenario:
    # Made for `scripts/demo` (8 s at 10 fps): every protection is seen at work
    # and most frames still come back. The timeline is in fractions of the clip,
    # so a shorter test render shows the same sequence.
    zones = (
        # The bed, masked in every frame (as in bedroom_walk).
        ZoneSpec("bed", ((0.0, 0.6), (0.19, 0.6), (0.52, 0.635), (0.6, 0.67), (0.62, 0.83), (0.61, 1.0), (0.0, 1.0)), "mask"),
        # The dressing corner: frames are withheld while someone is in it. A short
        # hold (1 s, against the 3 s default) so the frames that come back afterwards
        # are in the clip too.
        ZoneSpec("dressing", ((0.7, 0.3), (1.0, 0.3), (1.0, 1.0), (0.7, 1.0)), "withhold", hold_s=1.0),
    )
    # The person walks in from the left (face and body masked as they move),
    # steps into the dressing corner for a moment, then walks back out left.
    person = Track("boy_red", ((0.0, -0.19, 0.36, 0.62), (0.28, 0.76, 0.36, 0.62), (0.36, 0.76, 0.36, 0.62),
                               (0.42, 0.42, 0.36, 0.62), (0.8, -0.2, 0.36, 0.62), (1.0, -0.2, 0.36, 0.62)))
    # A face drifting along the wall above the bed, never inside a zone.
    face = Track("astronaut", ((0.0, 0.02, 0.04, 0.22), (1.0, 0.42, 0.12, 0.22)))
    frames = _frames(p, lambda t: Background("coco_val2017_000000000632.jpg"), (person, face))
    return Scenario("demo", "the demo: bed masked; a person walks through a withhold zone and out; a face moves",
                    zones, frames, privacy_room="none")


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
                    zones, frames, png=True, privacy_room="none")


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
    "demo": _demo,
    **DRAWN_SCENARIOS,
}
