"""`zones discover`: proposals from detected private objects, snippet + preview, --apply keeping comments."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import pytest
from detect_support import BATHROOM_SINK, BEDROOM_1, det, model_cache

from agent.analysis.discover import group_detections
from agent.cli.homeowner import add_discover_parser
from agent.config import load_config
from agent.config.edit import merge_into_config
from agent.errors import AgentError, ConfigError
from agent.lab.shared_data import shared_file

CONFIG = """\
# Test house
cameras:
  # the bedroom camera
  - id: bedroom
    source: frames/*.jpg   # stills
    zones:
      - name: window  # keep the window private
        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]
  - id: bath
    source: bath/*.jpg
detection:
  model_cache: {cache}
"""


@pytest.fixture
def house(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = model_cache(tmp_path_factory)
    for sub, photo, n in (("frames", BEDROOM_1, 3), ("bath", BATHROOM_SINK, 2)):
        (tmp_path / sub).mkdir()
        for i in range(n):  # copies in the test's tmp dir only, never in the repository
            shutil.copy(shared_file("fixtures", photo), tmp_path / sub / f"{i}.jpg")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(cache=cache), encoding="utf-8")
    return cfg


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


def test_apply_merges_keeping_comments_and_is_idempotent(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = house.read_text()
    out = str(house.parent / "out")
    assert _run("--config", str(house), "--camera", "bedroom", "--out-dir", out, "--apply", "--yes") == 0
    after = house.read_text()
    assert (house.parent / "config.yaml.bak").read_text() == before
    for comment in ("# Test house", "# the bedroom camera", "# stills", "# keep the window private"):
        assert comment in after
    # The only change is three added lines, at the camera's zone list's indentation.
    added = [ln for ln in after.splitlines() if ln not in before.splitlines()]
    assert len(added) == 3 and added[0].startswith("      - name: bed  # discovered")
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
