"""Scenarios drawn with agent.lab.figures, for layered masking: people entering at each edge, an arm
out of a box, people hidden behind others and furniture, a scene cut, and moving things that are not
people (a pet, a curtain, a TV, the light). Every person pixel is in the ground truth.

Each clip starts with LEAD of the clip empty, so a scene model can learn the room first; every
frame carries camera noise (NOISE_SD levels) so the still scene is not bit-identical. Frames are
PNG: the pipeline sees exactly the pixels the masks describe, with no codec in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from agent.lab.figures import Curtain, Figure, Occluder, Person, Pet, Tv
from agent.lab.specs import Background, FrameSpec, Params, Scenario

LEAD = 0.1


NOISE_SD = 2.0


FigureFn = Callable[[float, int, int, int], tuple[Figure, ...]]


def _drawn(p: Params, bg: Callable[[float], Background], figs: FigureFn,
           gain: Callable[[float], float] | None = None) -> tuple[FrameSpec, ...]:
    n, w, h = p.frames, p.width_px, p.height_px
    out = []
    for i in range(n):
        t = i / (n - 1)
        out.append(FrameSpec(w, h, bg(t), (), figs(t, w, h, i), gain(t) if gain else 1.0, NOISE_SD, i))
    return tuple(out)


def _drawn_scenario(name: str, description: str, frames: tuple[FrameSpec, ...]) -> Scenario:
    return Scenario(name, description, (), frames, png=True, labelled=True)


def _stride(p: Params, t: float) -> float:
    """The walking phase at clip time t: one stride a second."""
    return t * p.seconds * 2 * math.pi


def _ramp(t: float, t0: float, t1: float) -> float:
    return min(1.0, max(0.0, (t - t0) / (t1 - t0)))


def _edges(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        if t < LEAD:
            return ()
        u4 = (t - LEAD) / (1 - LEAD) * 4
        q = min(3, int(u4))
        u = u4 - q
        # In over the first 60% of the quarter, back out over the rest; squared, so the first
        # frames show only a sliver (the top of the hair, a hand, the feet).
        d = u / 0.6 if u < 0.6 else (1 - u) / 0.4
        e = max(0.0, min(1.0, d)) ** 2
        ph = _stride(p, t)
        if q == 0:  # walks away under the camera: the top of the head comes in at the bottom edge
            hh = 0.95 * h
            return (Person("from_bottom", 0.45 * w, h - e * 0.55 * hh, hh, 0, ph, facing=False),)
        if q == 1:
            hh = 0.7 * h
            return (Person("from_left", -0.3 * hh + e * (0.3 * w + 0.3 * hh), 0.2 * h, hh, 1, ph),)
        if q == 2:
            hh = 0.7 * h
            return (Person("from_right", w + 0.3 * hh - e * (0.3 * w + 0.3 * hh), 0.22 * h, hh, 2, ph),)
        hh = 0.6 * h  # walks towards the camera from the far side: the feet come in at the top edge
        return (Person("from_top", 0.6 * w, -1.05 * hh + e * (1.05 * hh + 0.15 * h), hh, 3, ph),)

    return _drawn_scenario("edges", "a person enters through each edge in turn (bottom: the top of the head first), "
                    "then leaves; kitchen", _drawn(p, lambda t: Background("coco_val2017_000000000802.jpg"), figs))


def _arm_reach(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        hh = 0.7 * h
        walk = _ramp(t, LEAD, 0.25) - _ramp(t, 0.85, 1.0)  # in from the right, stand, back out
        if walk <= 0:
            return ()
        cx = w + 0.3 * hh - walk * (w + 0.3 * hh - 0.72 * w)
        reach = _ramp(t, 0.3, 0.45) - _ramp(t, 0.7, 0.8)
        ph = _stride(p, t) if walk < 1 else 0.0
        return (Person("reacher", cx, 0.2 * h, hh, 2, ph, reach=reach, reach_dir=-1),)

    return _drawn_scenario("arm_reach", "a person walks in, stands and reaches an arm far out sideways, then leaves; bedroom",
                    _drawn(p, lambda t: Background("coco_val2017_000000000632.jpg"), figs))


# The bed of coco_val2017_000000000632.jpg, following its top edge (as the bedroom_walk bed zone).
BED_632 = ((0.0, 0.6), (0.19, 0.6), (0.52, 0.635), (0.6, 0.67), (0.62, 0.83), (0.61, 1.0), (0.0, 1.0))


def _occluded(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        out: list[Figure] = []
        back = _ramp(t, LEAD, 0.3)
        if back > 0:  # walks in from the left behind the bed and stays: only the upper body shows
            hh = 0.6 * h
            out.append(Person("behind_bed", -0.3 * hh + back * (0.3 * w + 0.3 * hh), 0.2 * h, hh, 1,
                              _stride(p, t) if back < 1 else 0.0))
        out.append(Occluder("bed", tuple((round(x * w), round(y * h)) for x, y in BED_632)))
        front = _ramp(t, 0.4, 0.9)
        if 0 < front < 1:  # walks right to left in front of the bed and of the other person
            hh = 0.85 * h
            out.append(Person("in_front", w + 0.3 * hh - front * (w + 0.6 * hh), 0.12 * h, hh, 0, _stride(p, t)))
        return tuple(out)

    return _drawn_scenario("occluded", "one person half hidden behind a bed, another walks in front of them; bedroom",
                    _drawn(p, lambda t: Background("coco_val2017_000000000632.jpg"), figs))


def _scene_cut(p: Params) -> Scenario:
    # Frame n // 2 is the first of the second room (t >= 0.5).
    def bg(t: float) -> Background:
        return Background("coco_val2017_000000000802.jpg" if t < 0.5 else "coco_val2017_000000006213.jpg")

    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        if t < 0.5:
            walk = _ramp(t, LEAD, 0.4)
            if walk <= 0:
                return ()
            hh = 0.7 * h
            return (Person("kitchen", -0.3 * hh + walk * (0.3 * w + 0.3 * hh), 0.2 * h, hh, 1,
                           _stride(p, t) if walk < 1 else 0.0),)
        # Already in the second room at the cut, far from where the first room's person stood.
        return (Person("bathroom", 0.8 * w, 0.25 * h, 0.65 * h, 3, 0.0),)

    return _drawn_scenario("scene_cut", "a cut from a kitchen with a person to a bathroom with another person and sinks",
                    _drawn(p, bg, figs))


def _pet(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        walk = _ramp(t, LEAD, 0.9)
        if not 0 < walk < 1:
            return ()
        length = 0.28 * w
        return (Pet("cat", -1.2 * length + walk * (w + 1.6 * length), 0.74 * h, length, 2 * _stride(p, t)),)

    return _drawn_scenario("pet", "a cat crosses the kitchen floor; nobody else (must stay visible)",
                    _drawn(p, lambda t: Background("coco_val2017_000000000802.jpg"), figs))


def _curtain(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        box = (round(0.47 * w), round(0.02 * h), round(0.62 * w), round(0.5 * h))
        return (Curtain("curtain", box, t * p.seconds * 2 * math.pi * 0.4, 0.05 * w),)

    return _drawn_scenario("curtain", "a curtain sways in a draught; nobody in the room; bedroom",
                    _drawn(p, lambda t: Background("coco_val2017_000000000632.jpg"), figs))


def _tv(p: Params) -> Scenario:
    def figs(t: float, w: int, h: int, i: int) -> tuple[Figure, ...]:
        return (Tv("tv", (round(0.06 * w), round(0.12 * h), round(0.3 * w), round(0.3 * h)), i),)

    return _drawn_scenario("tv", "a TV on the wall shows a changing picture every frame; nobody in the room; bedroom",
                    _drawn(p, lambda t: Background("coco_val2017_000000001993.jpg"), figs))


def _light(p: Params) -> Scenario:
    def gain(t: float) -> float:
        # Clouds dim the room to 70% and back; at 80% of the clip a lamp goes on (+10%).
        return 1.0 - 0.3 * math.sin(math.pi * t) ** 2 + (0.1 if t >= 0.8 else 0.0)

    return _drawn_scenario("light", "the light in an empty bathroom dims and brightens, then a lamp goes on; sinks",
                    _drawn(p, lambda t: Background("coco_val2017_000000006213.jpg"), lambda t, w, h, i: (), gain))


DRAWN_SCENARIOS: Mapping[str, Callable[[Params], Scenario]] = {
    "edges": _edges,
    "arm_reach": _arm_reach,
    "occluded": _occluded,
    "scene_cut": _scene_cut,
    "pet": _pet,
    "curtain": _curtain,
    "tv": _tv,
    "light": _light,
}
