"""The fixture generator and the shared-data access it relies on.

Ground truth must be exact and the generator deterministic, because every
leak and withhold figure of `privacy-agent eval` is measured against it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.cli.main import main
from agent.cli.tester import _parse_size
from agent.config import load_config
from agent.errors import FixtureError
from agent.lab import shared_data
from agent.lab.decisions import fixture_frames
from agent.lab.fixtures import (
    OVERLAP_MIN_PX2,
    canary_pattern,
    load_truth,
    make_scenario,
    polygon_box_overlap,
)
from agent.lab.scenarios import CANARY_ZONE, PHOTO_TRUTH, SCENARIOS, SPRITES, Params

ScenarioDir = Callable[[str], Path]


# --- shared data -------------------------------------------------------------


def test_manifest_lists_every_photo_the_generator_uses() -> None:
    names = {e.file for e in shared_data.manifest("fixtures")}
    used = {s.photo for s in SPRITES.values()} | set(PHOTO_TRUTH)
    assert used <= names
    entry = shared_data.manifest_entry("fixtures", "skimage_astronaut.png")
    assert entry.size_bytes > 0 and len(entry.sha256) == 64
    assert "license" in entry.extra and "what" in entry.extra
    for name in sorted(used):
        assert shared_data.shared_file("fixtures", name).is_file()


def test_models_manifest_is_readable() -> None:
    entries = shared_data.manifest("models")
    assert entries and all(len(e.sha256) == 64 for e in entries)


def _fake_shared(tmp_path: Path, content: bytes = b"hello") -> Path:
    import hashlib

    d = tmp_path / "shared" / "fixtures"
    d.mkdir(parents=True)
    (d / "a.bin").write_bytes(content)
    digest = hashlib.sha256(b"hello").hexdigest()
    (d / "MANIFEST.tsv").write_text(f"file\tsize_bytes\tsha256\twhat\na.bin\t5\t{digest}\ta test file\n")
    return tmp_path / "shared"


def test_shared_file_verifies_sha256_and_notices_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shared_data.ENV_VAR, str(_fake_shared(tmp_path)))
    p = shared_data.shared_file("fixtures", "a.bin")
    assert p.read_bytes() == b"hello"
    assert shared_data.manifest("fixtures")[0].extra["what"] == "a test file"
    # Same size, different bytes, new mtime: the cache must not vouch for it.
    p.write_bytes(b"jello")
    os.utime(p, ns=(1, 1))
    with pytest.raises(FixtureError, match="sha256"):
        shared_data.shared_file("fixtures", "a.bin")
    p.write_bytes(b"hello!")
    with pytest.raises(FixtureError, match="bytes"):
        shared_data.shared_file("fixtures", "a.bin")
    p.unlink()
    with pytest.raises(FixtureError, match="missing"):
        shared_data.shared_file("fixtures", "a.bin")
    with pytest.raises(FixtureError, match="not listed"):
        shared_data.shared_file("fixtures", "b.bin")
    with pytest.raises(FixtureError, match="plain folder"):
        shared_data.shared_file("../etc", "a.bin")


def test_missing_shared_dir_names_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shared_data.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FixtureError, match=shared_data.ENV_VAR):
        shared_data.manifest("fixtures")


def test_default_shared_dir_is_beside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(shared_data.ENV_VAR, raising=False)
    assert shared_data.shared_dir() == (shared_data.repo_dir().parent / "shared").resolve()


_cell = st.text(alphabet=st.characters(blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_cell, st.integers(-5, 10**9), st.text("0123456789abcdefABCDEF", min_size=0, max_size=66), _cell),
                max_size=5))
def test_parse_manifest_accepts_good_rows_and_rejects_bad_ones_cleanly(rows: list[tuple[str, int, str, str]]) -> None:
    text = "file\tsize_bytes\tsha256\twhat\n" + "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in rows)
    try:
        entries = shared_data.parse_manifest(text, "M.tsv")
    except FixtureError as e:
        assert "M.tsv" in str(e)
        return
    assert len(entries) == len([r for r in rows if any(str(c).strip() for c in r)])
    for entry in entries:
        assert len(entry.sha256) == 64 and entry.size_bytes >= 0 and "/" not in entry.file


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("file\tsha256\n", "size_bytes"),
        ("file\tsize_bytes\tsha256\nx\t1\n", "columns"),
        ("file\tsize_bytes\tsha256\n../x\t1\t" + "0" * 64 + "\n", "plain name"),
        ("file\tsize_bytes\tsha256\nx\tone\t" + "0" * 64 + "\n", "integer"),
        ("file\tsize_bytes\tsha256\nx\t1\t" + "0" * 64 + "\nx\t1\t" + "0" * 64 + "\n", "twice"),
    ],
)
def test_parse_manifest_errors_name_the_problem(text: str, match: str) -> None:
    with pytest.raises(FixtureError, match=match):
        shared_data.parse_manifest(text, "M.tsv")


# --- geometry ----------------------------------------------------------------

_coord = st.floats(0, 100, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(_coord, _coord, _coord, _coord, _coord, _coord, _coord, _coord)
def test_overlap_of_two_rectangles_is_exact(a: float, b: float, c: float, d: float,
                                            e: float, f: float, g: float, h: float) -> None:
    x0, x1 = sorted((a, b))
    y0, y1 = sorted((c, d))
    bx0, bx1 = sorted((e, f))
    by0, by1 = sorted((g, h))
    poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    expect = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
    assert polygon_box_overlap(poly, (bx0, by0, bx1, by1)) == pytest.approx(expect, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40), st.floats(0, 40)), min_size=3, max_size=3),
       st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 20), st.integers(1, 20)))
def test_overlap_of_a_triangle_matches_fine_sampling(tri: list[tuple[float, float]],
                                                     box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    (ax, ay), (bx, by), (cx, cy) = tri
    assume(abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)) > 1e-3)  # a real triangle
    got = polygon_box_overlap(tri, (x, y, x + w, y + h))
    # Count sample points at 1/8 px spacing inside both shapes.
    s = 8
    xs, ys = np.meshgrid((np.arange(w * s) + 0.5) / s + x, (np.arange(h * s) + 0.5) / s + y)

    def side(px: np.ndarray, py: np.ndarray, ux: float, uy: float, vx: float, vy: float) -> np.ndarray:
        return (vx - ux) * (py - uy) - (vy - uy) * (px - ux)

    d1, d2, d3 = side(xs, ys, ax, ay, bx, by), side(xs, ys, bx, by, cx, cy), side(xs, ys, cx, cy, ax, ay)
    inside = ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))
    sampled = inside.sum() / (s * s)
    # Sampling error is bounded by the boundary length times the spacing.
    perimeter = sum(np.hypot(p[0] - q[0], p[1] - q[1]) for p, q in zip(tri, tri[1:] + tri[:1], strict=True))
    assert abs(got - sampled) <= (perimeter + 2 * (w + h)) / s + 1e-6


# --- generated scenarios -----------------------------------------------------


def _read_frames(d: Path, truth: dict) -> list[np.ndarray]:
    return list(fixture_frames(d, truth))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_truth_is_sane_and_config_loads(scenario_dir: ScenarioDir, name: str) -> None:
    d = scenario_dir(name)
    truth = load_truth(d)
    assert truth["scenario"] == name and truth["frames"] == len(truth["per_frame"]) == 70
    frames = _read_frames(d, truth)
    assert len(frames) == truth["frames"]
    for fr, img in zip(truth["per_frame"], frames, strict=True):
        assert img.shape[:2] == (fr["height_px"], fr["width_px"])
        assert fr["t_s"] == pytest.approx(fr["frame"] / truth["fps"])
        boxes = [*fr["faces"], *fr["persons"], *(o["box"] for o in fr["private_objects"])]
        for b in boxes:
            assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1, b
        assert set(fr["zone_occupied"]) == {z["name"] for z in truth["zones"]}
        assert fr["must_withhold"] == any(fr["zone_occupied"][z["name"]] for z in truth["zones"]
                                          if z["action"] == "withhold")
    cfg = load_config(d / "config.yaml")
    cam = cfg.config.camera("cam")
    assert [(z.name, z.points, str(z.action), str(z.style)) for z in cam.zones] == [
        (z["name"], z["points"], z["action"], z["style"]) for z in truth["zones"]
    ]
    assert cam.source == truth["source"] and cam.fps == truth["fps"]
    assert glob.glob(str(cfg.resolve(cam.source)))


@pytest.mark.parametrize("name", ["bedroom_walk", "bathroom"])
def test_withhold_scenarios_have_a_person_standing_still_in_the_zone(scenario_dir: ScenarioDir, name: str) -> None:
    d = scenario_dir(name)
    truth = load_truth(d)
    pf = truth["per_frame"]
    must = [f["frame"] for f in pf if f["must_withhold"]]
    assert must and must[0] > 5 and must[-1] < len(pf) - 5, "empty frames before and after"
    assert must == list(range(must[0], must[-1] + 1)), "one visit"
    # The longest run of frames where the person box does not move at all.
    run, best = 1, 1
    for a, b in zip(must, must[1:], strict=False):
        run = run + 1 if pf[a]["persons"] == pf[b]["persons"] else 1
        best = max(best, run)
    assert best >= 2 * truth["fps"], "the person stands perfectly still for at least 2 s"
    # Recompute occupancy from the person boxes and the zone polygons.
    w, h = truth["width_px"], truth["height_px"]
    zone = next(z for z in truth["zones"] if z["action"] == "withhold")
    for f in pf:
        area = sum(polygon_box_overlap([(x * w, y * h) for x, y in zone["points"]],
                                       (b[0] * w, b[1] * h, b[2] * w, b[3] * h)) for b in f["persons"])
        assert f["must_withhold"] == (area >= OVERLAP_MIN_PX2)


def test_still_frames_are_pixel_identical_in_png(tmp_path: Path) -> None:
    # Render the bedroom frames directly (no lossy codec) and check stillness is exact.
    from agent.lab.fixtures import render

    sc = SCENARIOS["bedroom_walk"](Params(160, 120, 7.0))
    still = [i for i, f in enumerate(sc.frames) if f.placements[0] == sc.frames[35].placements[0]]
    assert len(still) >= 20
    a, _ = render(sc.frames[still[0]], sc.zones)
    b, _ = render(sc.frames[still[-1]], sc.zones)
    p = sc.frames[35].placements[0]
    assert np.array_equal(a[p.y_px :, p.x_px :], b[p.y_px :, p.x_px :])


def test_resize_scenario_changes_resolution_and_zones_touch_edges(scenario_dir: ScenarioDir) -> None:
    truth = load_truth(scenario_dir("resize"))
    sizes = [(f["width_px"], f["height_px"]) for f in truth["per_frame"]]
    changes = sum(1 for a, b in zip(sizes, sizes[1:], strict=False) if a != b)
    assert len(set(sizes)) == 2 and changes == 2
    pts = [p for z in truth["zones"] for p in z["points"]]
    assert {0.0, 1.0} <= {p[0] for p in pts} and {0.0, 1.0} <= {p[1] for p in pts}


def test_canary_frames_hold_the_documented_pattern(scenario_dir: ScenarioDir) -> None:
    d = scenario_dir("canary")
    truth = load_truth(d)
    can = truth["canary"]
    assert can["zone"] == "canary" and truth["zones"][0]["points"] == [list(p) for p in CANARY_ZONE]
    assert max(p[0] for p in CANARY_ZONE) == 1.0 and max(p[1] for p in CANARY_ZONE) == 1.0
    x0, y0, x1, y1 = can["box_px"]
    assert (x1, y1) == (truth["width_px"], truth["height_px"])
    frames = _read_frames(d, truth)
    seen: set[bytes] = set()
    for i, img in enumerate(frames):
        pat = canary_pattern(can["seed"], i, can["box_px"])
        assert np.array_equal(img[y0:y1, x0:x1], pat), "PNG frames carry the exact pattern"
        seen.add(pat.tobytes()[:64])
    assert len(seen) == len(frames), "a different pattern in every frame"
    raw = b"".join(f.tobytes() for f in frames)
    probes = [bytes.fromhex(p) for p in can["canary_probe_hex"]]
    assert all(len(p) == 16 for p in probes)
    bgr = [p for p, o in zip(probes, can["probe_origin"], strict=True) if o["order"] == "bgr"]
    assert bgr and all(p in raw for p in bgr), "probes come from the frames as decoded (BGR)"


def test_generator_is_deterministic(tmp_path: Path) -> None:
    p = Params(96, 72, 2.0)
    for name in ("bathroom", "canary"):
        a = make_scenario(name, tmp_path / "a" / name, p)
        b = make_scenario(name, tmp_path / "b" / name, p)
        assert (a / "truth.json").read_bytes() == (b / "truth.json").read_bytes()
        assert (a / "config.yaml").read_bytes() == (b / "config.yaml").read_bytes()
        ta = load_truth(a)
        for fa, fb in zip(_read_frames(a, ta), _read_frames(b, ta), strict=True):
            assert np.array_equal(fa, fb)
    c = make_scenario("canary", tmp_path / "c", Params(96, 72, 2.0, seed=7))
    assert load_truth(c)["canary"]["canary_probe_hex"] != ta["canary"]["canary_probe_hex"]


def test_remaking_into_the_same_dir_replaces_old_frames(tmp_path: Path) -> None:
    make_scenario("resize", tmp_path / "r", Params(64, 48, 3.0))
    make_scenario("resize", tmp_path / "r", Params(64, 48, 2.0))
    assert len(list((tmp_path / "r" / "frames").glob("*.png"))) == load_truth(tmp_path / "r")["frames"] == 20


def test_bad_params_and_names_raise_fixture_errors(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="unknown fixture scenario"):
        make_scenario("kitchen", tmp_path)
    with pytest.raises(FixtureError, match="size"):
        Params(8, 8)
    with pytest.raises(FixtureError, match="fps"):
        Params(fps=0)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(FixtureError, match="cannot write fixture faces"):
        make_scenario("faces", tmp_path / "a_file" / "x", Params(64, 48, 1.0))
    with pytest.raises(FixtureError, match="does not exist"):
        load_truth(tmp_path)
    (tmp_path / "truth.json").write_text("{")
    with pytest.raises(FixtureError, match="cannot read"):
        load_truth(tmp_path)


def test_truth_validation_catches_truncated_per_frame(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    d = tmp_path / "f"
    shutil.copytree(scenario_dir("faces"), d)
    doc = json.loads((d / "truth.json").read_text())
    doc["per_frame"] = doc["per_frame"][:-1]
    (d / "truth.json").write_text(json.dumps(doc))
    with pytest.raises(FixtureError, match="per_frame"):
        load_truth(d)


def test_faces_scenario_has_many_faces_of_several_sizes(scenario_dir: ScenarioDir) -> None:
    truth = load_truth(scenario_dir("faces"))
    counts = [len(f["faces"]) for f in truth["per_frame"]]
    assert max(counts) >= 10 and min(counts) >= 1
    widths = [b[2] - b[0] for f in truth["per_frame"] for b in f["faces"]]
    assert max(widths) > 3 * min(widths)


def test_cli_make_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fixtures", "list"]) == 0
    assert "bedroom_walk" in capsys.readouterr().out
    rc = main(["fixtures", "make", "--out", str(tmp_path), "--scenario", "faces", "--size", "64x48",
               "--seconds", "1", "--fps", "5"])
    assert rc == 0
    assert "faces: 5 frames" in capsys.readouterr().out
    assert load_truth(tmp_path / "faces")["width_px"] == 64
    assert _parse_size("320X240") == (320, 240)
    with pytest.raises(SystemExit):
        main(["fixtures", "make", "--out", str(tmp_path), "--size", "big"])
