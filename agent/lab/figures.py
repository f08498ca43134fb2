"""Drawn figures for the fixtures: people, a pet, a curtain, a TV, and furniture in front of them,
each drawn together with its exact pixel mask.

The layered-masking fixtures need the truth of every person pixel (hair, an arm outside a box,
the sliver of a head at the frame edge), not only a box; a rectangle cut from a photo cannot give
that. So people are drawn from filled shapes in skin, hair and clothing colours, with a real face
from the shared photos composited into the head, and every primitive is drawn into the picture and
into the figure's mask by the same call. The mask is then exactly the set of pixels the figure
wrote: nothing of it is measured or estimated.

Invariants:
- Primitives are drawn without anti-aliasing (`cv2.LINE_8`), so a pixel is either the figure's
  or the scene's; there are no half-covered pixels to argue about.
- `draw_figures` paints in order, later figures on top; an `Occluder` puts the empty scene back
  inside its polygon, so whatever it covers is removed from every mask under it.
- Colours keep a luma of at least 40 (hair, shoes, trousers included): the decoded leak rule of
  `agent.lab.evaluate` cannot tell a darker source pixel from a black mask.
- Rendering is pure and deterministic: the same figure gives the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.errors import FixtureError
from agent.lab.truth import photo_truth

Mask = np.ndarray
BGR = tuple[int, int, int]

# Label values in a fixture's per-frame label image (masks/NNNNN.png).
LABELS = {1: "person", 2: "pet", 3: "curtain", 4: "tv"}
LABEL_OF = {v: k for k, v in LABELS.items()}


@dataclass(frozen=True, slots=True)
class Look:
    skin: BGR
    hair: BGR
    shirt: BGR
    trousers: BGR
    shoes: BGR
    face: int  # index into FACES


# Skin tones from light to dark, brown/blond/grey hair, everyday clothes (all BGR, luma >= 40).
LOOKS = (
    Look((150, 180, 225), (45, 75, 110), (60, 60, 190), (120, 80, 50), (70, 90, 110), 0),
    Look((95, 130, 175), (50, 60, 75), (170, 150, 70), (70, 70, 80), (80, 80, 90), 1),
    Look((70, 100, 140), (55, 55, 60), (200, 200, 205), (140, 110, 60), (60, 75, 95), 2),
    Look((130, 165, 210), (90, 160, 200), (60, 140, 90), (90, 90, 100), (90, 100, 120), 3),
)


@dataclass(frozen=True, slots=True)
class FaceSource:
    photo: str
    index: int  # which ground-truth face of the photo


# Real frontal faces from the shared photos (photos_truth.json), pasted into the drawn heads.
FACES = (
    FaceSource("skimage_astronaut.png", 0),
    FaceSource("coco_val2017_000000001000.jpg", 4),
    FaceSource("coco_val2017_000000001000.jpg", 2),
    FaceSource("coco_val2017_000000001000.jpg", 9),
)


@dataclass(frozen=True, slots=True)
class Person:
    """A standing or walking person, front (face visible) or back view, in frame pixels.

    `cx_px` is the body's centre line, `top_px` the top of the hair, `height_px` hair to soles.
    `phase` swings arms and legs (radians); `reach` 0..1 lifts one arm from hanging down to
    pointing straight out sideways (`reach_dir` -1 left, +1 right), longer than the box a
    detector draws around the body.
    """

    name: str
    cx_px: float
    top_px: float
    height_px: float
    look: int = 0
    phase: float = 0.0
    reach: float = 0.0
    reach_dir: int = -1
    facing: bool = True


@dataclass(frozen=True, slots=True)
class Pet:
    """A cat seen from the side: `x_px`, `y_px` the top-left of its body, `length_px` nose to rump."""

    name: str
    x_px: float
    y_px: float
    length_px: float
    phase: float = 0.0
    facing: int = 1  # +1 walks right, -1 walks left


@dataclass(frozen=True, slots=True)
class Curtain:
    """A curtain panel hanging from a rod across `box_px`, its free edge swaying with `phase`."""

    name: str
    box_px: tuple[int, int, int, int]
    phase: float = 0.0
    sway_px: float = 12.0


@dataclass(frozen=True, slots=True)
class Tv:
    """A TV: a static bezel around `box_px` and a screen whose picture changes every frame (`seed`)."""

    name: str
    box_px: tuple[int, int, int, int]
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Occluder:
    """Furniture in front: inside the polygon the empty scene is put back, over every figure below."""

    name: str
    points_px: tuple[tuple[int, int], ...]


Figure = Person | Pet | Curtain | Tv | Occluder


@dataclass(frozen=True, slots=True)
class Drawn:
    """What one figure left visible in the frame."""

    name: str
    label: str
    px: int
    box_px: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (end exclusive) of the visible pixels
    face_box_px: tuple[int, int, int, int] | None = None
    face_visible: float = 0.0  # fraction of the face's pixels in the frame and not covered


class _Canvas:
    """A colour layer and a mask over the frame: each primitive is drawn into both by one call."""

    def __init__(self, w: int, h: int) -> None:
        self.layer = np.zeros((h, w, 3), np.uint8)
        self.mask = np.zeros((h, w), np.uint8)

    def poly(self, pts: Sequence[tuple[float, float]], colour: BGR) -> None:
        arr = np.round(np.asarray(pts, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.layer, [arr], colour, cv2.LINE_8)
        cv2.fillPoly(self.mask, [arr], 255, cv2.LINE_8)

    def ellipse(self, c: tuple[float, float], axes: tuple[float, float], colour: BGR) -> None:
        cc, ax = (round(c[0]), round(c[1])), (max(1, round(axes[0])), max(1, round(axes[1])))
        cv2.ellipse(self.layer, cc, ax, 0, 0, 360, colour, -1, cv2.LINE_8)
        cv2.ellipse(self.mask, cc, ax, 0, 0, 360, 255, -1, cv2.LINE_8)

    def limb(self, a: tuple[float, float], b: tuple[float, float], width: float, colour: BGR) -> None:
        # A thick segment as a polygon (cv2.line's thickness rounds its caps with anti-aliasing-free
        # but size-dependent discs; a quad is exact and cheap).
        dx, dy = b[0] - a[0], b[1] - a[1]
        n = math.hypot(dx, dy) or 1.0
        ox, oy = -dy / n * width / 2, dx / n * width / 2
        self.poly(((a[0] + ox, a[1] + oy), (b[0] + ox, b[1] + oy), (b[0] - ox, b[1] - oy), (a[0] - ox, a[1] - oy)),
                  colour)


def _shade(layer: Image, mask: Mask, seed: int) -> None:
    """Mild fabric/skin texture (+-6 levels), so a figure is not a flat cartoon to the codec."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, size=(y1 - y0, x1 - x0, 1), dtype=np.int16)
    sub = layer[y0:y1, x0:x1].astype(np.int16) + noise
    inside = mask[y0:y1, x0:x1, None] > 0
    layer[y0:y1, x0:x1] = np.where(inside, np.clip(sub, 0, 255), layer[y0:y1, x0:x1]).astype(np.uint8)


@lru_cache(maxsize=16)
def face_crop(index: int) -> Image:
    """The face of FACES[index], cropped from its photo at its ground-truth box (BGR)."""
    from agent.lab.shared_data import shared_file

    src = FACES[index]
    truth = photo_truth()[src.photo]
    x0, y0, x1, y1 = (round(v) for v in truth.px(truth.faces[src.index]))
    img = cv2.imread(str(shared_file("fixtures", src.photo)), cv2.IMREAD_COLOR)
    if img is None:
        raise FixtureError(f"shared photo {src.photo} cannot be decoded")
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    crop.setflags(write=False)
    return crop


def _person(cv: _Canvas, p: Person) -> tuple[Mask, int]:
    """Draw a person; returns the face's own mask (inside the head) and its full pixel count."""
    lk = LOOKS[p.look % len(LOOKS)]
    hh, cx, top = p.height_px, p.cx_px, p.top_px
    swing = 0.35 * math.sin(p.phase)
    hip_y, shoulder_y = top + 0.5 * hh, top + 0.17 * hh
    # Legs behind the torso, then the torso, then the arms, then the head on top.
    for side, s in ((-1, swing), (1, -swing)):
        hip = (cx + side * 0.045 * hh, hip_y)
        foot = (hip[0] + math.sin(s) * 0.46 * hh, hip_y + math.cos(s) * 0.46 * hh)
        cv.limb(hip, foot, 0.075 * hh, lk.trousers)
        cv.ellipse((foot[0], foot[1] - 0.01 * hh), (0.04 * hh, 0.018 * hh), lk.shoes)
    cv.poly(((cx - 0.12 * hh, top + 0.15 * hh), (cx + 0.12 * hh, top + 0.15 * hh),
             (cx + 0.095 * hh, hip_y + 0.02 * hh), (cx - 0.095 * hh, hip_y + 0.02 * hh)), lk.shirt)
    for side, s in ((-1, -swing), (1, swing)):
        shoulder = (cx + side * 0.105 * hh, shoulder_y)
        if side == p.reach_dir and p.reach > 0:
            s = side * p.reach * math.pi / 2  # from hanging down to straight out sideways
        length = 0.36 * hh * (1 + 0.1 * (p.reach if side == p.reach_dir else 0.0))
        elbow = (shoulder[0] + math.sin(s) * length / 2, shoulder[1] + math.cos(s) * length / 2)
        hand = (shoulder[0] + math.sin(s) * length, shoulder[1] + math.cos(s) * length)
        cv.limb(shoulder, elbow, 0.055 * hh, lk.shirt)
        cv.limb(elbow, hand, 0.045 * hh, lk.skin)
        cv.ellipse(hand, (0.028 * hh, 0.028 * hh), lk.skin)
    cv.limb((cx, top + 0.11 * hh), (cx, top + 0.16 * hh), 0.05 * hh, lk.skin)  # neck
    head_c, head_ax = (cx, top + 0.065 * hh), (0.05 * hh, 0.065 * hh)
    cv.ellipse(head_c, head_ax, lk.hair)  # the hair: the whole head from behind, a cap from the front
    face_mask = np.zeros_like(cv.mask)
    if not p.facing:
        return face_mask, 0
    fc, fax = (cx, top + 0.075 * hh), (0.043 * hh, 0.055 * hh)
    cv.ellipse(fc, fax, lk.skin)
    cv2.ellipse(face_mask, (round(fc[0]), round(fc[1])), (max(1, round(fax[0])), max(1, round(fax[1]))),
                0, 0, 360, 255, -1, cv2.LINE_8)
    # The real face, scaled to the face ellipse's box and kept only inside the ellipse.
    x0, y0 = round(fc[0]) - max(1, round(fax[0])), round(fc[1]) - max(1, round(fax[1]))
    fw, fh = 2 * max(1, round(fax[0])) + 1, 2 * max(1, round(fax[1])) + 1
    face = cv2.resize(face_crop(lk.face % len(FACES)), (fw, fh), interpolation=cv2.INTER_AREA)
    h, w = cv.mask.shape
    vx0, vy0, vx1, vy1 = max(0, x0), max(0, y0), min(w, x0 + fw), min(h, y0 + fh)
    if vx1 > vx0 and vy1 > vy0:
        sub = face[vy0 - y0 : vy1 - y0, vx0 - x0 : vx1 - x0]
        inside = face_mask[vy0:vy1, vx0:vx1, None] > 0
        cv.layer[vy0:vy1, vx0:vx1] = np.where(inside, sub, cv.layer[vy0:vy1, vx0:vx1])
    full = round(math.pi * max(1, round(fax[0])) * max(1, round(fax[1])))
    return face_mask, full


# The cat's face in skimage_chelsea.png (x0, y0, x1, y1 in photo pixels), pasted into the drawn head
# so that the pet is a cat to a detector too, not only to a person.
PET_FACE = ("skimage_chelsea.png", (40, 0, 400, 300))


@lru_cache(maxsize=1)
def _pet_face() -> Image:
    from agent.lab.shared_data import shared_file

    photo, (x0, y0, x1, y1) = PET_FACE
    img = cv2.imread(str(shared_file("fixtures", photo)), cv2.IMREAD_COLOR)
    if img is None:
        raise FixtureError(f"shared photo {photo} cannot be decoded")
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    crop.setflags(write=False)
    return crop


def _paste_in_ellipse(cv: _Canvas, c: tuple[float, float], axes: tuple[float, float], src: Image) -> None:
    """`src` scaled to the ellipse's box, written into the canvas only inside the (already drawn) ellipse."""
    ax, ay = max(1, round(axes[0])), max(1, round(axes[1]))
    cx, cy = round(c[0]), round(c[1])
    x0, y0, fw, fh = cx - ax, cy - ay, 2 * ax + 1, 2 * ay + 1
    inside_all = np.zeros_like(cv.mask)
    cv2.ellipse(inside_all, (cx, cy), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_8)
    h, w = cv.mask.shape
    vx0, vy0, vx1, vy1 = max(0, x0), max(0, y0), min(w, x0 + fw), min(h, y0 + fh)
    if vx1 <= vx0 or vy1 <= vy0:
        return
    scaled = cv2.resize(src, (fw, fh), interpolation=cv2.INTER_AREA)
    sub = scaled[vy0 - y0 : vy1 - y0, vx0 - x0 : vx1 - x0]
    inside = inside_all[vy0:vy1, vx0:vx1, None] > 0
    cv.layer[vy0:vy1, vx0:vx1] = np.where(inside, sub, cv.layer[vy0:vy1, vx0:vx1])


def _pet(cv: _Canvas, p: Pet) -> None:
    fur, dark, L, d = (100, 145, 180), (55, 85, 115), p.length_px, p.facing
    x, y = p.x_px, p.y_px
    body_c = (x + 0.5 * L, y + 0.2 * L)
    swing = 0.3 * math.sin(p.phase)
    for i, fx in enumerate((0.2, 0.3, 0.7, 0.8)):
        s = swing if i % 2 else -swing
        hip = (x + fx * L, y + 0.25 * L)
        cv.limb(hip, (hip[0] + math.sin(s) * 0.28 * L, hip[1] + math.cos(s) * 0.28 * L), 0.07 * L, fur)
    tail0 = (body_c[0] - d * 0.48 * L, body_c[1] - 0.05 * L)
    cv.limb(tail0, (tail0[0] - d * 0.3 * L, tail0[1] - 0.25 * L + 0.05 * L * math.sin(p.phase)), 0.06 * L, dark)
    cv.ellipse(body_c, (0.5 * L, 0.17 * L), fur)
    for k in range(4):  # tabby stripes across the back
        sx = body_c[0] + (k - 1.5) * 0.18 * L
        cv.limb((sx, body_c[1] - 0.16 * L), (sx - 0.03 * L, body_c[1] + 0.05 * L), 0.04 * L, dark)
    head_c, head_ax = (body_c[0] + d * 0.55 * L, y - 0.02 * L), (0.2 * L, 0.17 * L)
    for ex in (-0.12, 0.1):
        ear = head_c[0] + d * ex * L
        cv.poly(((ear - 0.06 * L, head_c[1] - 0.1 * L), (ear + 0.06 * L, head_c[1] - 0.1 * L),
                 (ear, head_c[1] - 0.27 * L)), fur)
    cv.ellipse(head_c, head_ax, fur)
    _paste_in_ellipse(cv, head_c, head_ax, _pet_face())


def _curtain(cv: _Canvas, c: Curtain) -> None:
    x0, y0, x1, y1 = c.box_px
    steps = max(2, (y1 - y0) // 4)
    edge = []
    for i in range(steps + 1):
        yy = y0 + (y1 - y0) * i / steps
        depth = (yy - y0) / max(1, y1 - y0)  # the rod holds the top; the hem sways most
        edge.append((x1 - c.sway_px * depth * (1 + math.sin(c.phase + 3 * depth)) / 2, yy))
    cv.poly(((x0, y0), *edge, (x0, y1)), (150, 170, 190))
    # Vertical folds: darker bands that drift with the sway.
    for k in range(1, 5):
        fx = x0 + (x1 - x0 - c.sway_px) * k / 5 + 2 * math.sin(c.phase + k)
        cv.limb((fx, y0), (fx + c.sway_px * 0.3 * math.sin(c.phase), y1), 3, (120, 140, 160))


def _tv(img: Image, cv: _Canvas, t: Tv) -> Mask:
    """Draw the screen into the canvas and the bezel straight into the picture; returns the bezel."""
    x0, y0, x1, y1 = t.box_px
    b = max(2, (x1 - x0) // 20)
    # The bezel is furniture (part of the still scene), so it is in no figure's mask.
    bezel = np.zeros(cv.mask.shape, np.uint8)
    cv2.rectangle(bezel, (x0 - b, y0 - b), (x1 + b - 1, y1 + b - 1), 255, -1, cv2.LINE_8)
    img[bezel > 0] = (60, 60, 60)
    rng = np.random.default_rng([t.seed, 7])
    grid = rng.integers(40, 256, size=(6, 8, 3), dtype=np.uint8)
    screen = cv2.resize(grid, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    cv.layer[y0:y1, x0:x1] = screen
    cv.mask[y0:y1, x0:x1] = 255
    return bezel


def _box(mask: Mask) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def draw_figures(img: Image, empty: Image, figures: Sequence[Figure], seed: int = 0) -> tuple[Mask, list[Drawn]]:
    """Draw `figures` into `img` (in place); `empty` is the same frame without any figure.

    Returns the label image (LABELS values, 0 for the scene) and what each figure left visible.
    """
    h, w = img.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    owner = np.full((h, w), -1, np.int16)  # which figure owns each pixel
    faces: dict[int, tuple[Mask, int]] = {}
    kinds: list[str] = []
    for i, f in enumerate(figures):
        if isinstance(f, Occluder):
            poly = np.asarray(f.points_px, np.int32).reshape(-1, 1, 2)
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [poly], 255, cv2.LINE_8)
            inside = m > 0
            img[inside] = empty[inside]
            labels[inside] = 0
            owner[inside] = -1
            kinds.append("occluder")
            continue
        cv = _Canvas(w, h)
        if isinstance(f, Person):
            faces[i] = _person(cv, f)
            label = "person"
        elif isinstance(f, Pet):
            _pet(cv, f)
            label = "pet"
        elif isinstance(f, Curtain):
            _curtain(cv, f)
            label = "curtain"
        else:
            bezel = _tv(img, cv, f) > 0
            labels[bezel] = 0
            owner[bezel] = -1
            label = "tv"
        if label != "tv":
            _shade(cv.layer, cv.mask, seed * 1009 + i)
        inside = cv.mask > 0
        img[inside] = cv.layer[inside]
        labels[inside] = LABEL_OF[label]
        owner[inside] = i
        kinds.append(label)
    out: list[Drawn] = []
    for i, f in enumerate(figures):
        if kinds[i] == "occluder":
            continue
        mine = owner == i
        d = Drawn(f.name, kinds[i], int(np.count_nonzero(mine)), _box(mine))
        if i in faces and faces[i][1] > 0:
            vis = faces[i][0].astype(bool) & mine
            d = Drawn(d.name, d.label, d.px, d.box_px, _box(vis), int(np.count_nonzero(vis)) / faces[i][1])
        out.append(d)
    return labels, out
