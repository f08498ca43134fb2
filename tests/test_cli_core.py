"""End to end through the command line: check-config, zones preview, replay, run, mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from videokit import decode_all, textured, walker_frames, write_video

from agent.cli.main import main

CONFIG = """\
data_dir: data
cameras:
  - id: cam
    source: {source}
    zones:
      - name: left
        points: [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
      - name: door
        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 1.0], [0.7, 1.0]]
        action: withhold
        hold_s: 0.5
sinks: {sinks}
"""


def setup(tmp_path: Path, source: str = "v.mp4", sinks: str = "[]", frames: int = 40) -> Path:
    if source == "v.mp4":
        write_video(tmp_path / "v.mp4", walker_frames(frames))
    cfg = CONFIG.replace("{source}", source).replace("{sinks}", sinks)
    p = tmp_path / "config.yaml"
    p.write_text(cfg)
    return p


def test_check_config_ok_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path)
    assert main(["check-config", str(cfg)]) == 0
    assert "OK" in capsys.readouterr().out
    cfg.write_text(cfg.read_text().replace("[[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]", "[[0, 0], [1, 1]]"))
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cameras[0].zones[0].points: polygon needs at least 3 points" in err and "config.yaml:" in err


def test_zones_preview_draws_png(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    out = tmp_path / "zones.png"
    assert main(["zones", "preview", "--config", str(cfg), "--camera", "cam", "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (240, 320, 3)


def test_replay_outputs_are_complete_and_decodable(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "v.mp4"), "--config", str(cfg), "--camera", "cam", "--out", str(out),
                 "-q"]) == 0
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(decisions) == 40 == summary["frames_in"]
    for k in ("frames_in", "frames_out", "masked", "withheld", "fps", "config_sha256"):
        assert k in summary
    assert {d["action"] for d in decisions} <= {"pass", "mask", "withhold"}
    assert summary["withheld"] > 0 and summary["masked"] > 0
    released = [d for d in decisions if d["action"] != "withhold"]
    assert [d["out_index"] for d in released] == list(range(len(released)))
    assert all(d["regions"][0]["points"] for d in released)
    # OpenCV and FFmpeg (through PyAV) both decode the result, frame for frame.
    frames = decode_all(out / "redacted.mp4")
    assert len(frames) == summary["frames_out"]
    with av.open(str(out / "redacted.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == summary["frames_out"]
    # The left zone is black in every released frame, edge column included.
    for f in frames:
        assert f[:, : int(0.3 * 320) - 1].max() < 24


def test_replay_of_resolution_changing_glob_masks_every_size(tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    sizes = [(320, 240)] * 8 + [(200, 300)] * 8 + [(641, 359)] * 8
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), textured(w, h, seed=i))
    cfg = setup(tmp_path, source="frames/*.png")
    # Every frame is another picture at another size: tamper would rightly call that a moved camera
    # (a resolution change keeps the learned view), and the foreground layer would never learn an
    # empty scene (it withholds while learning); this test is about masking every size.
    cfg.write_text(cfg.read_text().replace("action: withhold", "action: mask")
                   + "analysis: {tamper: {moved_enabled: false}}\n"
                   + "detection: {foreground: {enabled: false}}\n")
    out = tmp_path / "out"
    assert main(["replay", str(frames_dir / "*.png"), "--config", str(cfg), "--out", str(out), "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["frames_in"] == 24 and s["frames_out"] == 24


def test_replay_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path)
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert main(["replay", str(tmp_path / "zero.mp4"), "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "empty (0 bytes)" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["replay", str(tmp_path / "v.mp4"), "--config", str(cfg), "--out", str(blocker / "out")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "v.mp4"), "--config", str(cfg), "--camera", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    assert "no camera with id 'nope'" in capsys.readouterr().err


def test_run_with_plaintext_directory_sink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, sinks="[{type: directory, path: segs, plaintext: true, segment_s: 1}]", frames=40)
    assert main(["run", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "PLAINTEXT" in err
    segs = sorted((tmp_path / "segs" / "cam").glob("*.mp4"))
    assert len(segs) >= 2 and not list((tmp_path / "segs" / "cam").glob("*.partial"))
    total = sum(len(decode_all(s)) for s in segs)
    assert 0 < total < 40  # withheld frames are absent
    assert (tmp_path / "data" / "events.jsonl").exists()


def test_run_with_full_disk_reports_and_leaves_no_partial_file(tmp_path: Path) -> None:
    cfg = setup(tmp_path, sinks="[{type: directory, path: segs, plaintext: true, segment_s: 60}]", frames=20)
    seg_dir = tmp_path / "segs" / "cam"
    seg_dir.mkdir(parents=True)
    # Whichever frame starts the first segment, its file is the kernel's
    # always-full device: writes fail with a real ENOSPC.
    for i in range(20):
        (seg_dir / f"cam-000000-{i:08d}.mp4.partial").symlink_to("/dev/full")
    assert main(["run", "--config", str(cfg)]) == 1
    events = [json.loads(x) for x in (tmp_path / "data" / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "sink_error" for e in events)
    assert not list(seg_dir.glob("*.mp4"))
    assert len(list(seg_dir.glob("*.partial"))) < 20, "a failed partial segment is removed"


def test_run_with_missing_source_reports_and_fails(tmp_path: Path) -> None:
    cfg = setup(tmp_path, source="missing.mp4")
    assert main(["run", "--config", str(cfg)]) == 1
    events = (tmp_path / "data" / "events.jsonl").read_text()
    assert "does not exist" in events


def test_mode_set_and_get(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path)
    assert main(["mode", "set", "privacy", "--config", str(cfg)]) == 0
    assert main(["mode", "get", "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["mode"] == "privacy"
    # A replay in privacy mode releases nothing.
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "v.mp4"), "--config", str(cfg), "--out", str(out), "--mode", "privacy",
                 "-q"]) == 0
    assert json.loads((out / "summary.json").read_text())["frames_out"] == 0
    assert main(["mode", "set", "auto", "--config", str(cfg)]) == 0
    assert os.path.exists(tmp_path / "data" / "state") and np is not None
