"""The drawn scenarios (agent.lab.scenes): people at the edges, an arm out of a box, people hidden
behind others and furniture, a scene cut, and a pet, a curtain, a TV and the light as moving things
that are not people. Their per-pixel ground truth must be exact: every person pixel is in the
mask (hair and arms included) and nothing else is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.lab.decisions import fixture_frames
from agent.lab.figures import LABEL_OF, Occluder, Person
from agent.lab.fixtures import load_truth, read_labels, render_labelled
from agent.lab.scenes import DRAWN_SCENARIOS, LEAD
from agent.lab.specs import FrameSpec, Params, Scenario

ScenarioDir = Callable[[str], Path]
PERSON = LABEL_OF["person"]
P = Params(320, 240, 7.0)


def _scenario(name: str) -> Scenario:
    return DRAWN_SCENARIOS[name](P)


def _bare(spec: FrameSpec, figures: tuple = ()) -> FrameSpec:
    # The same frame without camera noise (and with other figures), so pixels compare exactly.
    return dataclasses.replace(spec, noise_sd=0.0, figures=figures)


def _labels(spec: FrameSpec) -> tuple[np.ndarray, np.ndarray, dict]:
    img, truth, labels = render_labelled(spec, ())
    assert labels is not None
    return img, labels, truth


@pytest.mark.parametrize("name", list(DRAWN_SCENARIOS))
def test_drawn_scenarios_render_with_label_images(scenario_dir: ScenarioDir, name: str) -> None:
    d = scenario_dir(name)
    truth = load_truth(d)
    assert truth["labels"]["values"] == {"1": "person", "2": "pet", "3": "curtain", "4": "tv"}
    assert truth["source"] == "frames/*.png", "lossless: the pipeline sees exactly the drawn pixels"
    frames = list(fixture_frames(d, truth))
    any_person = False
    for fr, img in zip(truth["per_frame"], frames, strict=True):
        lab = read_labels(d, fr)
        assert lab.shape == img.shape[:2]
        person = lab == PERSON
        any_person |= bool(person.any())
        # The listed people add up to the person pixels, and their boxes hold them.
        assert sum(p["px"] for p in fr["people"]) == int(np.count_nonzero(person))
        assert fr["persons"] == [p["box"] for p in fr["people"]]
        for m in fr["moving"]:
            assert m["px"] == int(np.count_nonzero(lab == LABEL_OF[m["label"]]))
        if fr["t_s"] < LEAD * P.seconds - 1e-9:
            assert not lab.any() or name in ("curtain", "tv"), "the clip starts with an empty room"
    assert truth["labels"]["static_scene"] == (not any_person)
    assert truth["labels"]["static_scene"] == (name in ("pet", "curtain", "tv", "light"))


@pytest.mark.parametrize(("name", "frame"), [("edges", 12), ("edges", 30), ("edges", 61), ("arm_reach", 35),
                                              ("occluded", 50), ("scene_cut", 40), ("pet", 35)])
def test_the_mask_is_exactly_what_was_drawn(name: str, frame: int) -> None:
    spec = _bare(_scenario(name).frames[frame], _scenario(name).frames[frame].figures)
    img, lab, _ = _labels(spec)
    empty, _ = render_labelled(_bare(spec), ())[:2]
    changed = (img != empty).any(axis=2)
    drawn = lab > 0
    assert drawn.any()
    assert not (changed & ~drawn).any(), "a pixel outside the mask was changed"
    # Inside the mask every pixel is the figure's; one equal to the photo behind it by chance is rare.
    assert np.count_nonzero(drawn & ~changed) <= 0.01 * np.count_nonzero(drawn)


def test_a_person_entering_from_the_bottom_shows_the_top_of_the_head_first() -> None:
    sc = _scenario("edges")
    seen = []
    for spec in sc.frames:
        people = [f for f in spec.figures if isinstance(f, Person) and f.name == "from_bottom"]
        if not people:
            continue
        _, lab, _ = _labels(_bare(spec, spec.figures))
        rows = np.nonzero((lab == PERSON).any(axis=1))[0]
        if rows.size:
            seen.append((rows.min(), rows.max(), people[0]))
    first_rows = [P.height_px - lo for lo, _, _ in seen[:4]]
    assert seen and all(hi == P.height_px - 1 for _, hi, _ in seen), "always cut by the bottom edge"
    assert first_rows == sorted(first_rows) and first_rows[0] <= 3, "a sliver first, then more"
    lo, _, p = seen[0]
    assert lo == round(p.top_px), "the top row of the mask is the top of the hair"
    # Every side gets its entry, each starting with a sliver.
    names = {f.name for s in sc.frames for f in s.figures}
    assert names == {"from_bottom", "from_left", "from_right", "from_top"}


def test_an_arm_reaching_out_is_in_the_mask_far_outside_the_body() -> None:
    sc = _scenario("arm_reach")
    spec = next(s for s in sc.frames if s.figures and s.figures[0].reach == 1.0)
    p = spec.figures[0]
    assert isinstance(p, Person)
    _, lab, truth = _labels(_bare(spec, spec.figures))
    cols = np.nonzero((lab == PERSON).any(axis=0))[0]
    # The torso is 0.24 H wide; the hand reaches 0.4 H past the shoulder.
    assert cols.min() <= p.cx_px - 0.45 * p.height_px
    hand_row = round(p.top_px + 0.17 * p.height_px)
    assert (lab[hand_row, cols.min():round(p.cx_px)] == PERSON).all(), "the arm is one unbroken line of pixels"
    assert truth["persons"][0][0] == pytest.approx(cols.min() / P.width_px, abs=1e-6)


def test_people_behind_the_bed_and_behind_each_other_keep_only_their_visible_pixels() -> None:
    sc = _scenario("occluded")
    with_bed = next(s for s in sc.frames if len(s.figures) == 3 and abs(s.figures[2].cx_px - s.figures[0].cx_px) < 5)
    back, bed, front = with_bed.figures
    assert isinstance(back, Person) and isinstance(bed, Occluder) and isinstance(front, Person)
    _, alone, _ = _labels(_bare(with_bed, (back,)))
    _, behind_bed, _ = _labels(_bare(with_bed, (back, bed)))
    _, all_three, truth = _labels(_bare(with_bed, (back, bed, front)))
    n_alone = np.count_nonzero(alone == PERSON)
    n_bed = np.count_nonzero(behind_bed == PERSON)
    assert 0.4 * n_alone < n_bed < 0.9 * n_alone, "the bed hides the lower body"
    hidden = next(p for p in truth["people"] if p["name"] == "behind_bed")
    assert 0 < hidden["px"] < 0.5 * n_bed, "the person in front hides most of the rest"
    bed_mask = np.zeros_like(alone)
    cv2.fillPoly(bed_mask, [np.asarray(bed.points_px, np.int32)], 1)
    assert not (behind_bed[bed_mask > 0] == PERSON).any()


def test_the_scene_cut_changes_room_in_one_frame_and_a_person_is_there_at_once(scenario_dir: ScenarioDir) -> None:
    d = scenario_dir("scene_cut")
    truth = load_truth(d)
    frames = [f.astype(np.int16) for f in fixture_frames(d, truth)]
    cut = truth["frames"] // 2
    jumps = [float(np.abs(b - a).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    assert int(np.argmax(jumps)) + 1 == cut and jumps[cut - 1] > 30
    # Elsewhere: camera noise (about 2.3) and a person walking (up to about 6).
    assert max(jumps[: cut - 1] + jumps[cut:]) < 10, "nothing else is a cut"
    before, after = truth["per_frame"][cut - 1], truth["per_frame"][cut]
    assert before["people"] and after["people"] and before["people"][0]["name"] != after["people"][0]["name"]
    assert before["persons"][0][2] < after["persons"][0][0], "the second room's person is elsewhere"
    assert [o["label"] for o in after["private_objects"]] == ["sink", "sink"]


def test_moving_things_that_are_not_people(scenario_dir: ScenarioDir) -> None:
    for name, label in (("pet", "pet"), ("curtain", "curtain"), ("tv", "tv")):
        truth = load_truth(scenario_dir(name))
        moving = [m for fr in truth["per_frame"] for m in fr["moving"]]
        assert moving and {m["label"] for m in moving} == {label}
        assert not any(fr["people"] for fr in truth["per_frame"])
    light = load_truth(scenario_dir("light"))
    gains = [fr["light_gain"] for fr in light["per_frame"]]
    assert min(gains) < 0.75 and max(gains) > 1.05 and not any(fr["moving"] for fr in light["per_frame"])


def test_front_facing_people_carry_a_real_face_in_the_truth(scenario_dir: ScenarioDir) -> None:
    truth = load_truth(scenario_dir("arm_reach"))
    # Whole in the frame (not still coming in through the right edge).
    standing = [fr for fr in truth["per_frame"] if fr["people"] and fr["people"][0]["box"][2] < 0.99]
    assert standing and all(len(fr["faces"]) == 1 for fr in standing)
    for fr in standing:
        (fx0, fy0, fx1, fy1), (px0, py0, px1, py1) = fr["faces"][0], fr["persons"][0]
        assert px0 <= fx0 < fx1 <= px1 and py0 <= fy0 < fy1 <= py1


def test_drawn_frames_are_deterministic() -> None:
    spec = _scenario("occluded").frames[50]
    a, la, ta = _labels(spec)
    b, lb, tb = _labels(spec)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and ta == tb
    noisy = (a.astype(np.int16) - _labels(_bare(spec, spec.figures))[0]).std()
    assert 1.0 < noisy < 3.0, "camera noise of about NOISE_SD levels"


def test_label_images_are_checked_when_read(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    import json
    import shutil

    from agent.errors import FixtureError

    d = tmp_path / "pet"
    shutil.copytree(scenario_dir("pet"), d)
    truth = load_truth(d)
    fr = dict(truth["per_frame"][3])
    assert read_labels(d, fr).shape == (P.height_px, P.width_px)
    for bad in ("../truth.json", "masks/../../x.png", "frames/00003.png"):
        with pytest.raises(FixtureError, match="label image"):
            read_labels(d, {**fr, "labels": bad})
    cv2.imwrite(str(d / fr["labels"]), np.zeros((10, 10), np.uint8))
    with pytest.raises(FixtureError, match="8-bit 320x240"):
        read_labels(d, fr)
    del truth["per_frame"][5]["people"]
    (d / "truth.json").write_text(json.dumps(truth))
    with pytest.raises(FixtureError, match="lacks 'people'"):
        load_truth(d)
