"""`zones discover`: proposals from detected private objects, snippet + preview, --apply keeping comments."""

from __future__ import annotations

import argparse
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_support import BATHROOM_SINK, BEDROOM_1, det, model_cache

from agent.analysis.discover import discover, group_detections, render_preview, with_proposals
from agent.cli.homeowner import add_discover_parser
from agent.config import load_config
from agent.config.edit import merge_into_config
from agent.core.datatypes import Frame
from agent.core.policy import CameraPolicy, camera_policy, decide_zones_only
from agent.core.redact import apply
from agent.core.zones import zone_mask
from agent.errors import AgentError, ConfigError
from agent.lab.shared_data import shared_file
from agent.media.preview import redacted_view
from agent.vocab import Mode

# Quoted scalars, a blank line and comments in several places: `--apply` must give them all back as written.
CONFIG = """\
# Test house
cameras:
  # the bedroom camera
  - id: bedroom
    name: "Main bedroom"
    source: "frames/*.jpg"   # stills
    zones:
      - name: 'window'  # keep the window private
        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]

  - id: bath
    source: 'bath/*.jpg'
    zones:{bath_zones}
detection:
  model_cache: "{cache}"  # installed by the test
"""


def _house(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, bath_zones: str = " []") -> Path:
    cache = model_cache(tmp_path_factory)
    for sub, photo, n in (("frames", BEDROOM_1, 3), ("bath", BATHROOM_SINK, 2)):
        (tmp_path / sub).mkdir()
        for i in range(n):  # copies in the test's tmp dir only, never in the repository
            shutil.copy(shared_file("fixtures", photo), tmp_path / sub / f"{i}.jpg")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(cache=cache, bath_zones=bath_zones), encoding="utf-8")
    return cfg


@pytest.fixture
def house(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _house(tmp_path, tmp_path_factory)


def _inserted(before: str, after: str, n: int) -> list[str]:
    """The `n` lines `after` adds to `before` in one block; fails unless every other byte is unchanged."""
    b, a = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b) + n
    i = next((k for k, (x, y) in enumerate(zip(b, a, strict=False)) if x != y), len(b))
    assert a[:i] + a[i + n:] == b, "--apply changed the file outside the added zones"
    return [ln.rstrip("\n") for ln in a[i:i + n]]


def _run(*argv: str) -> int:
    p = argparse.ArgumentParser()
    add_discover_parser(p.add_subparsers())
    args = p.parse_args(["discover", *argv])
    return int(args.func(args))


def test_discover_writes_snippet_and_preview(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = house.parent / "out"
    before = house.read_text()
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", str(out)) == 0
    text = (out / "zones-bedroom.yaml").read_text()
    assert "- name: bed  # discovered: bed in 3/3 sampled frames" in text
    img = cv2.imread(str(out / "zones-bedroom.png"))
    assert img is not None and img.shape == (483, 640, 3)
    assert "proposed zone 'bed'" in capsys.readouterr().out
    assert house.read_text() == before  # not applied without --apply


def test_discover_preview_is_the_frame_as_it_leaves_the_hub(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = house.parent / "out"
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", str(out), "--mode", "home") == 0
    for f in ("zones-bedroom.png", "zones-bedroom.yaml"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o600, f
    printed = capsys.readouterr().out
    assert "the picture shows the frame as it leaves the hub in mode home" in printed
    png = cv2.imread(str(out / "zones-bedroom.png"))
    # The same sampling again, and what the pipeline would send with the proposals applied.
    loaded = load_config(house)
    proposals, skipped, first, action, existing = discover(loaded, "bedroom", None, 8, None)
    assert [p.name for p in proposals] == ["bed"] and action == "mask"
    policy = with_proposals(camera_policy(loaded, loaded.config.camera("bedroom")), proposals, action)
    raw = first.copy()
    frame = Frame("bedroom", 0, 0.0, 0.0, raw.copy())
    released = apply(frame, decide_zones_only(policy, frame, Mode.HOME))
    assert png is not None and released is not None and png.shape == raw.shape
    h, w = raw.shape[:2]
    # Pixels no outline or label covers: drawing over all-0 and all-255 frames, a drawn pixel equals neither.
    blank = [render_preview(redacted_view(np.full_like(raw, v), CameraPolicy("bedroom"), Mode.HOME),
                            proposals, skipped, existing) for v in (0, 255)]
    free = (blank[0] == 0).all(axis=2) & (blank[1] == 255).all(axis=2)
    for z in policy.zones:  # the window (in the config) and the proposed bed, both mask zones
        inside = zone_mask(z.points, w, h) > 0
        seen = inside & free
        assert seen.sum() > 0.5 * inside.sum(), z.name
        assert (png[seen] == released.image[seen]).all(), z.name  # exactly what redaction outputs
        assert (png[seen] == 0).all() and raw[seen].std() > 20, z.name  # solid: the photo is gone


def test_apply_merges_keeping_comments_and_is_idempotent(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = house.read_text()
    out = str(house.parent / "out")
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", out, "--apply", "--yes") == 0
    after = house.read_text()
    assert (house.parent / "config.yaml.bak").read_text() == before
    # The only change is three added lines, at the camera's zone list's indentation: quotes, comments, the
    # blank line and the comment columns outside them are the homeowner's bytes.
    added = _inserted(before, after, 3)
    assert added[0].startswith("      - name: bed  # discovered")
    assert '    source: "frames/*.jpg"   # stills\n' in after and "    source: 'bath/*.jpg'\n" in after
    zones = load_config(house).config.camera("bedroom").zones
    assert [z.name for z in zones] == ["window", "bed"]
    bed = zones[1].points
    assert bed[0][1] > 0.4 and bed[2][1] == 1.0 and bed[0][0] == 0.0  # the lower-left of the room
    # Running again proposes nothing: the new zone covers the bed.
    capsys.readouterr()
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", out, "--apply", "--yes") == 0
    assert "already covered by zone 'bed'" in capsys.readouterr().out
    assert house.read_text() == after


def test_apply_to_a_camera_without_zones(house: Path) -> None:
    assert _run("--config", str(house), "--camera", "bath", "--out-dir", str(house.parent / "o"),
                "--apply", "--yes") == 0
    zones = load_config(house).config.camera("bath").zones
    # The double vanity: one proposal per sink the detector separates, named after the object.
    assert zones and all(z.name.startswith("sink") for z in zones) and zones[0].name == "sink"
    assert all(str(z.action) == "mask" for z in zones)


def test_apply_needs_confirmation(house: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(AgentError, match="needs confirmation"):
        _run("--config", str(house), "--camera", "bedroom", "--out-dir", str(house.parent / "o"), "--apply")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda q: "n")
    before = house.read_text()
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", str(house.parent / "o"), "--apply") == 1
    assert house.read_text() == before


def test_grouping_names_and_thresholds() -> None:
    frames = [
        (det("bed", 0.0, 0.5, 0.5, 1.0), det("bed", 0.6, 0.5, 1.0, 1.0, score=0.5)),
        (det("bed", 0.01, 0.5, 0.5, 1.0), det("sink", 0.1, 0.1, 0.2, 0.2)),
        (det("bed", 0.0, 0.52, 0.5, 1.0), det("toilet", 0.3, 0.3, 0.4, 0.4)),
    ]
    props, skipped = group_detections(frames, ["bed", "sink"], 0.0, 1, {"bed": [[0.9, 0.9], [1, 0.9], [1, 1]]})
    assert [(p.name, p.frames_seen) for p in props] == [("bed_2", 3), ("sink", 1), ("bed_3", 1)]
    assert props[0].box.x1_rel == 0.5 and props[0].box.y0_rel == 0.5  # union over the frames
    assert skipped == []  # toilet is not a wanted label here
    props, skipped = group_detections(frames, ["bed", "sink"], 0.0, 2, {})
    assert [p.name for p in props] == ["bed"] and len(skipped) == 2


def test_merge_refuses_unknown_camera(house: Path) -> None:
    with pytest.raises(ConfigError, match="no camera with id 'garage'"):
        merge_into_config(house, "garage", [], "mask")


def test_a_zone_drawn_around_the_object_suppresses_its_proposal(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The homeowner drew the bed tightly (no margin) and named it their own way: still no `bed` on top of it.
    text = house.read_text().replace(
        "        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]\n",
        "        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]\n"
        "      - name: sleeping\n        points: [[0.0, 0.58], [0.62, 0.58], [0.62, 1.0], [0.0, 1.0]]\n")
    house.write_text(text)
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", str(house.parent / "o"),
                "--apply", "--yes") == 0
    out = capsys.readouterr().out
    assert "not proposed: bed (already covered by zone 'sleeping'" in out and "proposed zone" not in out
    assert "nothing to apply" in out and house.read_text() == text


def test_a_covered_sink_is_skipped_while_the_other_sink_is_proposed(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # The double vanity: a zone over the left basin only. The right basin does not overlap it.
    cfg = _house(tmp_path, tmp_path_factory,
                 bath_zones="\n      - name: basin  # left one\n"
                 "        points: [[0.6, 0.62], [0.81, 0.62], [0.81, 0.7], [0.6, 0.7]]")
    before = cfg.read_text()
    assert _run("--config", str(cfg), "--camera", "bath", "--out-dir", str(tmp_path / "o"), "--apply", "--yes") == 0
    out = capsys.readouterr().out
    assert "not proposed: sink (already covered by zone 'basin'" in out
    after = cfg.read_text()
    added = _inserted(before, after, 3)
    assert added[0].startswith("      - name: sink  # discovered")  # the name is free: `basin` is not `sink`
    zones = load_config(cfg).config.camera("bath").zones
    assert [z.name for z in zones] == ["basin", "sink"] and zones[1].points[0][0] > 0.81


def test_coverage_is_by_area_not_by_name() -> None:
    bed = det("bed", 0.0, 0.5, 0.5, 1.0)
    toilet = det("toilet", 0.7, 0.1, 0.9, 0.3)
    tight = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]
    # A zone named `bed` elsewhere covers nothing; a zone named `rug` over the bed covers it, even with
    # the margin making the proposal's box larger than the zone.
    props, skipped = group_detections([(bed, toilet)], ["bed", "toilet"], 0.25, 1,
                                      {"bed": [[0.6, 0.0], [0.65, 0.0], [0.65, 0.05]], "rug": tight})
    assert [p.name for p in props] == ["toilet"]
    assert [(s.label, s.reason) for s in skipped] == [("bed", "already covered by zone 'rug' (100% of its box)")]
    # Two zones side by side cover it together; a zone over a third of it does not.
    halves = {"left": [[0.0, 0.5], [0.25, 0.5], [0.25, 1.0], [0.0, 1.0]],
              "right": [[0.25, 0.5], [0.5, 0.5], [0.5, 1.0], [0.25, 1.0]]}
    props, skipped = group_detections([(bed,)], ["bed"], 0.25, 1, halves)
    assert props == [] and "zone 'left', 'right'" in skipped[0].reason
    props, skipped = group_detections([(bed,)], ["bed"], 0.25, 1, {"third": [[0.0, 0.5], [0.17, 0.5], [0.17, 1.0]]})
    assert [p.name for p in props] == ["bed"] and skipped == []
