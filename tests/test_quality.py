"""Quality against ground truth (`agent.lab.photos`, `agent.lab.truth`, `eval --photos`).

The photo truth is checked against the shared manifest; recall is checked on
hand-made decisions whose answer is known (perfect, shifted, partial,
withheld); the pixel-change rule on synthetic outputs (solid, blur like
deface's, untouched, re-encoded); and `eval --photos` end to end on three
photos with the real models. deface itself is not needed here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli.main import main
from agent.core.datatypes import Decision, Frame, MaskRegion
from agent.core.redact import apply
from agent.errors import FixtureError
from agent.geometry import BoxRel
from agent.lab.decisions import fixture_frames
from agent.lab.evaluate import evaluate, format_report
from agent.lab.fixtures import load_truth
from agent.lab.photos import SingleFrameRun, photo_inputs, score_ours
from agent.lab.scenarios import PHOTO_TRUTH, SPRITES
from agent.lab.scoring import COVERED_MIN, box_change_fraction, changed_pixels, masked_by_pixels
from agent.lab.shared_data import manifest_entry
from agent.lab.truth import PhotoTruth, check_photo, parse_photo_truth, photo_truth
from agent.lab.video_recall import video_face_recall_ours, video_face_recall_output
from agent.media.video import VideoEncoder
from agent.vocab import Action

ScenarioDir = Callable[[str], Path]
ASTRONAUT = "skimage_astronaut.png"
GROUP = "coco_val2017_000000001000.jpg"


# --- the truth file ------------------------------------------------------------


def test_photo_truth_matches_the_shared_photos() -> None:
    truth = photo_truth()
    groups = {t.group for t in truth.values()}
    assert groups == {"private", "people", "negative"}
    for name, t in truth.items():
        assert manifest_entry("fixtures", name).sha256 == t.sha256, name
        img = cv2.imread(str(check_photo(t)), cv2.IMREAD_COLOR)
        assert img.shape[:2] == (t.height_px, t.width_px), name
        for b in (*t.faces, *t.persons, *(o for _, o in t.private_objects)):
            assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1, (name, b)
        for f in t.faces:  # "clearly visible": at least ~12 px
            x0, y0, x1, y1 = t.px(f)
            assert min(x1 - x0, y1 - y0) >= 12, (name, f)
    # What the issue names: bedrooms and bathrooms have private objects, negatives have none.
    assert {n for n, t in truth.items() if t.group == "negative"} == {
        "coco_val2017_000000000139.jpg", "coco_val2017_000000000285.jpg", "coco_val2017_000000000802.jpg",
        "skimage_chelsea.png", "skimage_coffee.png",
    }
    for t in truth.values():
        assert bool(t.private_objects) == (t.group == "private"), t.name
        if t.group == "negative":
            assert not t.faces
    assert len(truth[GROUP].faces) == 12 and len(truth[ASTRONAUT].faces) == 1


def test_fixture_generator_reads_the_same_truth() -> None:
    # One source of truth: the generator's photo boxes and sprite faces come from the JSON.
    t = photo_truth()[GROUP]
    assert PHOTO_TRUTH[GROUP].faces == tuple(t.px(f) for f in t.faces)
    assert PHOTO_TRUTH[GROUP].faces[10] == (458, 228, 503, 274)
    assert SPRITES["boy_red"].faces_px == ((458, 228, 503, 274),)
    assert SPRITES["astronaut"].faces_px == (photo_truth()[ASTRONAUT].px(photo_truth()[ASTRONAUT].faces[0]),)


@pytest.mark.parametrize(("mutate", "msg"), [
    (lambda p: p["faces"].append([0.5, 0.5, 0.4, 0.6]), "faces"),
    (lambda p: p["persons"].append([0.1, 0.1, 1.2, 0.5]), "persons"),
    (lambda p: p.update(group="kitchen"), "group"),
    (lambda p: p.update(sha256="xyz"), "sha256"),
    (lambda p: p["private_objects"].append({"box": [0.1, 0.1, 0.2, 0.2]}), "label"),
])
def test_bad_truth_is_refused_with_the_photo_named(mutate: Callable[[dict], object], msg: str) -> None:
    p = {"sha256": "0" * 64, "width_px": 10, "height_px": 10, "group": "people", "faces": [], "persons": [],
         "private_objects": []}
    mutate(p)
    with pytest.raises(FixtureError, match=f"x.jpg.*{msg}"):
        parse_photo_truth({"format": 1, "photos": {"x.jpg": p}})


def test_truth_bound_to_another_file_is_refused() -> None:
    t = photo_truth()[ASTRONAUT]
    other = PhotoTruth(t.name, "0" * 64, t.width_px, t.height_px, t.group, t.what, t.faces)
    with pytest.raises(FixtureError, match="measure the new photo again"):
        check_photo(other)


# --- recall on known decisions -------------------------------------------------


def _photo(name: str) -> np.ndarray:
    return np.asarray(cv2.imread(str(check_photo(photo_truth()[name])), cv2.IMREAD_COLOR))


def _run(img: np.ndarray, action: Action, boxes: Sequence[BoxRel]) -> SingleFrameRun:
    regions = tuple(MaskRegion("face", "detection", b.to_points()) for b in boxes)
    d = Decision("photo", 0, 0.0, action, ("test",), regions if action is Action.MASK else ())
    rf = apply(Frame("photo", 0, 0.0, 0.0, img.copy()), d)
    return SingleFrameRun(d, None if rf is None else np.asarray(rf.image), (), ())


def _shift(b: BoxRel, dx: float) -> BoxRel:
    return BoxRel.clipped(b.x0_rel + dx, b.y0_rel, b.x1_rel + dx, b.y1_rel)


@pytest.mark.parametrize("name", [ASTRONAUT, GROUP])
def test_face_recall_perfect_and_broken(name: str) -> None:
    t = photo_truth()[name]
    img = _photo(name)
    faces = [BoxRel(*f) for f in t.faces]
    n = len(faces)

    def recall(action: Action, boxes: Sequence[BoxRel]) -> tuple[int, int]:
        o = score_ours(t, img, _run(img, action, boxes))
        assert o.faces.total == o.faces_px.total == n and not o.problems
        return o.faces.hits, o.faces_px.hits

    assert recall(Action.MASK, faces) == (n, n)
    assert recall(Action.WITHHOLD, []) == (n, n), "a withheld frame hides every face"
    assert recall(Action.PASS, []) == (0, 0)
    if name == ASTRONAUT:
        # Shifted by 40% of its width: 60% covered, below the 80% rule. (Not on the
        # group photo: there a shifted mask lands on the neighbouring face.)
        assert recall(Action.MASK, [_shift(b, 0.4 * b.width_rel) for b in faces]) == (0, 0)
    # Shifted by 10%: 90% covered, counts.
    assert recall(Action.MASK, [_shift(b, 0.1 * b.width_rel) for b in faces]) == (n, n)
    # Every other face only.
    assert recall(Action.MASK, faces[::2]) == ((n + 1) // 2, (n + 1) // 2)


def test_no_decision_scores_nothing_and_is_a_problem() -> None:
    t = photo_truth()[ASTRONAUT]
    o = score_ours(t, _photo(ASTRONAUT), SingleFrameRun(None, None, ("expected one decision, got 0",), ()))
    assert o.faces.hits == 0 and o.faces.total == 1 and o.problems


def test_mask_claim_without_black_pixels_is_a_failure() -> None:
    t = photo_truth()[ASTRONAUT]
    img = _photo(ASTRONAUT)
    run = _run(img, Action.MASK, [BoxRel(*t.faces[0])])
    # The decision says masked, the pixels are the input.
    o = score_ours(t, img, SingleFrameRun(run.decision, img, (), ()))
    assert o.faces.hits == 1 and o.faces_px.hits == 0
    assert any("not black" in p for p in o.problems)


# --- the pixel-change rule -----------------------------------------------------


def test_pixel_rule_solid_blur_untouched_and_reencoded() -> None:
    t = photo_truth()[ASTRONAUT]
    img = _photo(ASTRONAUT)
    face = t.faces[0]
    x0, y0, x1, y1 = (round(v) for v in t.px(face))
    solid = img.copy()
    solid[y0:y1, x0:x1] = 0
    assert masked_by_pixels(img, solid, face)
    assert not masked_by_pixels(img, img.copy(), face)
    assert masked_by_pixels(img, None, face), "withheld counts as masked"
    # deface's blur: a box filter half the (1.3x) face box, over the whole box.
    blurred = img.copy()
    w, h = x1 - x0, y1 - y0
    blurred[y0:y1, x0:x1] = cv2.blur(img[y0:y1, x0:x1], (w // 2, h // 2))
    assert masked_by_pixels(img, blurred, face)
    # Compression alone is not masking: JPEG quality 75, then the 80% rule.
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])
    jpeg = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    changed, measurable = changed_pixels(img, jpeg)
    assert ok and box_change_fraction(changed, measurable, face) < 0.2
    # Half the face masked: not enough.
    half = img.copy()
    half[y0:y1, x0:(x0 + x1) // 2] = 0
    assert not masked_by_pixels(img, half, face)


def test_pixel_rule_ignores_black_on_black() -> None:
    src = np.zeros((40, 40, 3), np.uint8)
    src[:, 20:] = 200
    out = src.copy()
    out[:, 20:] = 0
    changed, measurable = changed_pixels(src, out)
    box = (0.0, 0.0, 0.5, 1.0)  # the already-black half: nothing measurable, nothing visible
    assert box_change_fraction(changed, measurable, box) == 1.0
    assert box_change_fraction(changed, measurable, (0.5, 0.0, 1.0, 1.0)) >= COVERED_MIN
    with pytest.raises(FixtureError, match="40x40"):
        changed_pixels(src, out[:20])


# --- videos ---------------------------------------------------------------------


def _write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=int(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _black_faces(img: np.ndarray, faces: Sequence[Sequence[float]]) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    for b in faces:
        out[int(b[1] * h):int(np.ceil(b[3] * h)), int(b[0] * w):int(np.ceil(b[2] * w))] = 0
    return out


def test_video_face_recall_of_a_tool_output(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    fx = scenario_dir("faces")
    truth = load_truth(fx)
    srcs = list(fixture_frames(fx, truth))
    total = sum(len(fr["faces"]) for fr in truth["per_frame"])
    masked = [_black_faces(s, fr["faces"]) for s, fr in zip(srcs, truth["per_frame"], strict=True)]
    _write_video(tmp_path / "masked.mp4", masked, truth["fps"])
    _write_video(tmp_path / "plain.mp4", srcs, truth["fps"])
    good = video_face_recall_output(fx, tmp_path / "masked.mp4", "tool")
    assert good.faces.hits == good.faces.total == total and not good.problems
    plain = video_face_recall_output(fx, tmp_path / "plain.mp4", "tool")
    assert plain.faces.hits == 0 and plain.faces.total == total
    _write_video(tmp_path / "short.mp4", masked[:-5], truth["fps"])
    short = video_face_recall_output(fx, tmp_path / "short.mp4", "tool")
    assert short.frames_out == len(srcs) - 5 and any("ends before" in p for p in short.problems)


def test_video_face_recall_of_our_replay_and_eval_labels(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    # A hand-made replay: odd frames withheld, faces masked on the others.
    fx = scenario_dir("faces")
    truth = load_truth(fx)
    rd = tmp_path / "r"
    rd.mkdir()
    enc: VideoEncoder | None = None
    oi = 0
    with (rd / "decisions.jsonl").open("w") as f:
        for i, img in enumerate(fixture_frames(fx, truth)):
            fr = truth["per_frame"][i]
            if i % 2:
                d = Decision("cam", i, fr["t_s"], Action.WITHHOLD, ("test",))
                f.write(json.dumps({**d.to_json(), "out_index": None}) + "\n")
                continue
            regs = tuple(MaskRegion("face", "detection", BoxRel(*b).to_points()) for b in fr["faces"])
            d = Decision("cam", i, fr["t_s"], Action.MASK if regs else Action.PASS, ("test",), regs)
            rf = apply(Frame("cam", i, fr["t_s"], 0.0, img), d)
            assert rf is not None
            if enc is None:
                enc = VideoEncoder(str(rd / "redacted.mp4"), rf.width_px, rf.height_px, truth["fps"])
            enc.write(rf)
            f.write(json.dumps({**d.to_json(), "out_index": oi}) + "\n")
            oi += 1
    assert enc is not None
    enc.close()
    total = sum(len(fr["faces"]) for fr in truth["per_frame"])
    ours = video_face_recall_ours(fx, rd)
    assert ours.faces.hits == ours.faces.total == total and not ours.problems
    assert ours.frames_withheld == len(truth["per_frame"]) // 2
    released = sum(len(fr["faces"]) for fr in truth["per_frame"][::2])
    assert ours.faces_released.hits == ours.faces_released.total == released
    rep = evaluate(fx, rd)
    assert rep.to_json()["face_recall"] == 1.0
    assert f"face recall (>={COVERED_MIN:.0%})" in format_report(rep)


# --- eval --photos end to end ------------------------------------------------------


def test_eval_photos_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "photos.json"
    photos = [ASTRONAUT, "coco_val2017_000000005503.jpg", "skimage_coffee.png"]
    args = ["eval", "--photos", "--out", str(out), "--work", str(tmp_path / "w")]
    for p in photos:
        args += ["--photo", p]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "private-object recall" in shown and "false-withhold rate" in shown and "face recall" in shown
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and not doc["problems"]
    s = doc["variants"]["default"]["summary"]
    # Sane floors with the real models: the astronaut's face and the toilet are masked,
    # the coffee cup is not withheld.
    assert s["face_recall"] == {"masked": 1, "total": 1, "recall": 1.0}
    assert s["face_recall_pixel_rule"]["masked"] == 1
    assert s["private_object_recall"] == {"masked": 1, "total": 1, "recall": 1.0}
    assert s["negatives"] == 1 and s["negatives_withheld"] == 0 and s["false_withhold_rate"] == 0.0
    assert doc["variants"]["faces_only"]["summary"]["face_recall"]["masked"] == 1
    # Every tool got the same lossless input.
    assert (tmp_path / "w" / "in" / "skimage_astronaut" / "frame.png").is_file()


def test_eval_needs_a_target_and_unknown_photos_are_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["eval"])
    with pytest.raises(FixtureError, match="nope.jpg"):
        photo_inputs(tmp_path, ["nope.jpg"])
    assert main(["eval", "--photos", "--photo", "nope.jpg"]) != 0
