"""The person-leak figure of `privacy-agent eval` and the over-masking of still scenes.

The rule (agent.lab.leaks) looks only at pixels: the fixture's frame, the decoded output and the
drawn person mask. It is checked on hand-made arrays first, then on hand-made replays of the drawn
fixtures whose figures are known exactly: every person masked (0), one frame with a strip of hair
left visible (1), that frame withheld instead (0).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_eval import oracle_replay

from agent.cli.main import main
from agent.core.datatypes import MaskRegion
from agent.geometry import PointRel
from agent.lab.evaluate import evaluate, format_report
from agent.lab.fixtures import load_truth
from agent.lab.leaks import PERSON_LEAK_MIN_PX, person_leak_blobs, source_pixels

ScenarioDir = Callable[[str], Path]
Regions = Callable[[Mapping[str, Any]], tuple[MaskRegion, ...]]


def _rect(name: str, kind: str, box: list[float], top_cut_rel: float = 0.0) -> MaskRegion:
    x0, y0, x1, y1 = box
    y0 += top_cut_rel
    return MaskRegion(name, kind, (PointRel(x0, y0), PointRel(x1, y0), PointRel(x1, y1), PointRel(x0, y1)))


def _people(fr: Mapping[str, Any]) -> tuple[MaskRegion, ...]:
    return tuple(_rect(p["name"], "person", p["box"]) for p in fr["people"])


def hand_replay(fixture: Path, out: Path, regions: Regions, withhold: Callable[[int], bool] = lambda i: False) -> Path:
    """A replay directory written like run_replay's, from hand-made decisions."""
    return oracle_replay(fixture, out, regions=regions, withhold=lambda fr: withhold(int(fr["frame"])))


# --- the rule on hand-made arrays -------------------------------------------------


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    src = rng.integers(60, 220, size=(40, 50, 3), dtype=np.uint8)
    person = np.zeros((40, 50), bool)
    person[10:30, 20:30] = True
    return src, person


def test_a_fully_masked_person_leaks_nothing_and_a_visible_one_leaks_every_pixel() -> None:
    src, person = _scene()
    out = src.copy()
    out[person] = 0
    assert person_leak_blobs(src, out, person) == []
    assert person_leak_blobs(src, src.copy(), person) == [200]
    # Codec-like error within the tolerance is still the source; a grey fill is not.
    noisy = np.clip(src.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    assert person_leak_blobs(src, noisy, person) == [200]
    grey = src.copy()
    grey[person] = 128
    assert sum(person_leak_blobs(src, grey, person)) < 200


def test_one_pixel_of_hair_is_a_leak_and_blobs_are_counted_apart() -> None:
    src, person = _scene()
    out = src.copy()
    out[person] = 0
    out[10, 25] = src[10, 25]  # one pixel at the top of the head
    out[29, 20:23] = src[29, 20:23]  # three at the feet
    assert PERSON_LEAK_MIN_PX == 1
    assert person_leak_blobs(src, out, person) == [3, 1]
    # A pixel under a pixelate/blur region cannot be judged and is skipped.
    skip = np.zeros_like(person)
    skip[29, :] = True
    assert person_leak_blobs(src, out, person, skip) == [1]


def test_dark_source_pixels_are_indeterminate_not_leaks() -> None:
    src, person = _scene()
    src[person] = 20  # darker than SOURCE_MIN_LUMA: cannot be told from black
    passes, bright = source_pixels(src, src.copy())
    assert not (passes & person).any() and not (bright & person).any()


# --- hand-made replays of the drawn fixtures ---------------------------------------


def test_every_person_masked_scores_0_and_cli_reports_it(scenario_dir: ScenarioDir, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fx = scenario_dir("edges")
    rd = hand_replay(fx, tmp_path / "r", _people)
    rep = evaluate(fx, rd)
    assert rep.labels is not None and rep.labels.person_frames > 30
    assert rep.person_leaks == 0 and rep.labels.person_px_unmasked_geometric == 0
    assert rep.labels.person_px_checked > 0.9 * rep.labels.person_px
    assert rep.ok, format_report(rep)
    rc = main(["eval", "--fixture", str(fx), "--replay", str(rd), "--out", str(tmp_path / "e.json")])
    assert rc == 0
    shown = capsys.readouterr().out
    assert "person leak frames" in shown and "over-masking (still)" in shown
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["person_leak_frames"] == 0 and saved["face_recall"] is not None
    pl = saved["person_leak"]
    assert pl["person_leak_share"] == 0.0 and pl["frames_with_person"] == rep.labels.person_frames
    assert saved["static_scene"] is False


def _first_bottom_entry_frame(fx: Path) -> int:
    truth = load_truth(fx)
    return next(fr["frame"] for fr in truth["per_frame"]
                if any(p["name"] == "from_bottom" and p["box"][3] - p["box"][1] > 0.1 for p in fr["people"]))


def test_a_head_top_strip_left_visible_in_one_frame_is_one_leak(scenario_dir: ScenarioDir, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fx = scenario_dir("edges")
    k = _first_bottom_entry_frame(fx)

    def regions(fr: Mapping[str, Any]) -> tuple[MaskRegion, ...]:
        # The box starts 3 rows below the top of the hair (as a detector that fires late would).
        cut = 3 / fr["height_px"] if fr["frame"] == k else 0.0
        return tuple(_rect(p["name"], "person", p["box"], cut) for p in fr["people"])

    rep = evaluate(fx, hand_replay(fx, tmp_path / "r", regions))
    assert rep.labels is not None
    assert rep.person_leaks == 1 and rep.labels.person_leak_frames == rep.labels.leak_frames == [k]
    assert rep.labels.person_px_unmasked_geometric > 0
    assert not rep.ok
    assert "person leak frames" in format_report(rep) and "FAIL" in format_report(rep)
    # The same frame withheld instead: nothing of the person left the hub.
    rep2 = evaluate(fx, hand_replay(fx, tmp_path / "w", regions, withhold=lambda i: i == k))
    assert rep2.person_leaks == 0 and rep2.ok, format_report(rep2)
    # Nobody masked at all: every frame with a person leaks; the pixels show all but the
    # thinnest slivers the codec smears, which the decision's own regions give away.
    rep3 = evaluate(fx, hand_replay(fx, tmp_path / "n", lambda fr: ()))
    assert rep3.labels is not None and rep3.person_leaks == rep3.labels.person_frames
    assert len(rep3.labels.person_leak_frames) >= rep3.labels.person_frames - 2


def test_over_masking_of_a_still_scene_and_the_pet_staying_visible(scenario_dir: ScenarioDir,
                                                                    tmp_path: Path) -> None:
    fx = scenario_dir("pet")
    clean = evaluate(fx, hand_replay(fx, tmp_path / "a", lambda fr: ()))
    assert clean.labels is not None and clean.static_scene
    assert clean.labels.over_masking_static == 0.0 and clean.person_leaks == 0
    assert clean.to_json()["person_leak"]["pet_masked_share"] == 0.0
    assert "goal <= 2%" in format_report(clean) and "nobody in this fixture" in format_report(clean)

    def pet_boxes(fr: Mapping[str, Any]) -> tuple[MaskRegion, ...]:
        return tuple(_rect(m["name"], "foreground", m["box"]) for m in fr["moving"])

    masked = evaluate(fx, hand_replay(fx, tmp_path / "b", pet_boxes, withhold=lambda i: i == 0))
    assert masked.labels is not None
    assert masked.to_json()["person_leak"]["pet_masked_share"] > 0.99
    # One frame of 70 withheld (all of it) plus the pet's boxes (about 5% of the pixels).
    assert 1 / 70 + 0.02 < masked.labels.over_masking_static < 0.1
    doc = masked.to_json()["person_leak"]
    assert doc["over_masking_static"] == pytest.approx(masked.labels.over_masking_static, abs=1e-6)
    by = doc["over_masking_static_by_cause"]
    assert set(by) == {"withheld", "foreground"} and by["withheld"] == pytest.approx(1 / 70, rel=0.02)
    assert "withheld 1.4" in format_report(masked)


def test_fixtures_without_person_masks_report_no_person_figure(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    from test_eval import oracle_replay

    fx = scenario_dir("bathroom")
    rep = evaluate(fx, oracle_replay(fx, tmp_path / "r"))
    assert rep.labels is None and rep.person_leaks is None and rep.ok
    doc = rep.to_json()
    assert doc["person_leak_frames"] is None and doc["person_leak"] is None
    assert "person leak frames" not in format_report(rep)
