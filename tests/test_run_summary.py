"""What `run` tells the person who started it: the per-camera summary, each warning once, quiet logs.

The summary's first line per camera keeps its `cam: N frames in, M out, ...` form; the indented
lines after it name the top withhold reasons, the frames each sink stored and the clip
deliveries still queued in the outbox. A corrupt video ends with our one-line error on stderr,
never FFmpeg's own log lines.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clip_helpers import device_from
from videokit import walker_frames, write_video

from agent.cli.installer import print_summary
from agent.cli.main import main
from agent.crypto.keys import init_hub, write_device_identity

REPO = Path(__file__).resolve().parents[1]
OWNER = device_from(2, "owner")

CONFIG = """\
data_dir: data
detection: {{enabled: false}}
cameras:
  - id: cam
    source: v.mp4
    zones:
      - name: left
        points: [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
      - name: door
        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 1.0], [0.7, 1.0]]
        action: withhold
        hold_s: 0.5
{sinks}
"""


def _config(tmp_path: Path, sinks: str, frames: int = 40) -> Path:
    write_video(tmp_path / "v.mp4", walker_frames(frames))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(sinks=sinks))
    return cfg


def _camera_block(out: str, cam: str = "cam") -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{cam}: "))
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return lines[start:end]


def test_plaintext_run_summary_names_reasons_and_stored_frames_and_warns_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(tmp_path, "sinks: [{type: directory, path: segs, plaintext: true, segment_s: 1}]")
    with caplog.at_level(logging.INFO):
        assert main(["run", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    block = _camera_block(out)
    first = block[0]
    assert first.startswith("cam: 40 frames in, ") and " out, " in first and " withheld, " in first
    withheld = int(first.split(" masked, ")[1].split(" withheld")[0])
    released = int(first.split(" frames in, ")[1].split(" out")[0])
    assert withheld > 0
    # The door zone is why frames were held back, with its count.
    [why] = [line for line in block if line.startswith("  withheld for: ")]
    assert "zone:door" in why or "door" in why, why
    # The directory sink stored exactly the released frames.
    [stored] = [line for line in block if line.startswith("  stored: ")]
    assert f" {released} frames in " in stored
    # No encrypted sink ran: no outbox, so no queued line (and no outbox was created for it).
    assert not any(line.startswith("  queued: ") for line in block)
    assert not (tmp_path / "data" / "outbox").exists()
    # The plaintext warning is said once, on stderr, and not logged a second time.
    assert err.count("PLAINTEXT") == 1, err
    assert not [r for r in caplog.records if "PLAINTEXT" in r.getMessage()]
    # A mode change is routine: INFO, never a WARNING on every run.
    modes = [r for r in caplog.records if "mode_changed" in r.getMessage()]
    assert modes and all(r.levelno == logging.INFO for r in modes)


def test_encrypted_run_summary_counts_what_is_still_queued(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init_hub(tmp_path / "data")
    write_device_identity(OWNER, tmp_path / "owner.key")
    # The NAS directory has no sink marker (as if the NAS were not mounted): every delivery
    # fails and is retried later, so the sealed clips stay in the outbox.
    (tmp_path / "nas").mkdir()
    cfg = _config(tmp_path, "recipients: [owner.key.pub]\n"
                            "sinks:\n  - type: directory\n    path: ./nas\n    segment_s: 10\n", frames=120)
    code = main(["run", "--config", str(cfg)])
    out, err = capsys.readouterr()
    block = _camera_block(out)
    # Undelivered clips are sink errors: `run` says so with its exit code as well.
    assert code == 1 and not block[0].endswith(" 0 sink errors"), (code, out, err)
    [queued] = [line for line in block if line.startswith("  queued: ")]
    n = int(queued.split("queued: ")[1].split(" ")[0])
    assert n >= 2, queued
    assert "outbox flush" in queued
    assert len(list((tmp_path / "data" / "outbox" / "clips").rglob("*.epaclip"))) == n
    assert any(line.startswith("  stored: ") for line in block)


def test_summary_lists_the_top_reasons_and_counts_the_rest() -> None:
    def show(queued: dict[str, list[str]] | str | None) -> list[str]:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            print_summary({"porch": {"frames_in": 10, "frames_out": 4, "masked": 1, "withheld": 6,
                                     "sink_errors": 0, "stored": {"clips": 4, "legacy": None},
                                     "reasons": {"zone:door": 5, "lag": 1, "warmup": 2, "tamper:covered": 1}}},
                          queued)
        return buf.getvalue().splitlines()

    lines = show({"porch": ["nas", "nas", "s3"]})
    assert lines[0] == "porch: 10 frames in, 4 out, 1 masked, 6 withheld, 0 sink errors"
    # Most frequent first; ties by name; the fourth is counted, not named.
    assert lines[1] == "  withheld for: zone:door (5), warmup (2), lag (1) and 1 other reason(s)"
    assert lines[2] == "  stored: 4 frames in clips, legacy (does not count its frames)"
    assert lines[3].startswith("  queued: 3 clip(s) still in the outbox (2 for nas, 1 for s3); ")
    assert show({})[3] == "  queued: nothing waiting in the outbox"
    assert show("cannot read the clip index")[3] == "  queued: unknown (cannot read the clip index)"
    assert len(show(None)) == 3


def test_corrupt_video_says_so_once_in_our_words_without_ffmpeg_noise(tmp_path: Path) -> None:
    write_video(tmp_path / "good.mp4", walker_frames(20))
    # Its first 3000 bytes: an MP4 whose index (the moov atom, written last) is missing.
    (tmp_path / "v.mp4").write_bytes((tmp_path / "good.mp4").read_bytes()[:3000])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(sinks="sinks: []"))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr
    assert "cannot open or decode" in err and "v.mp4" in err
    assert err.count("cannot open or decode") == 1, err  # the probe and the pipeline do not both say it
    assert "moov atom" not in err and " @ 0x" not in err, err
    assert "Traceback" not in err


def test_opencv_ffmpeg_is_quiet_once_sources_are_imported(tmp_path: Path) -> None:
    """Live sources and the lab's video reader go through OpenCV's own FFmpeg: quiet too."""
    write_video(tmp_path / "good.mp4", walker_frames(20))
    (tmp_path / "v.mp4").write_bytes((tmp_path / "good.mp4").read_bytes()[:3000])
    code = ("import agent.media.sources, cv2, sys; "
            f"sys.exit(0 if not cv2.VideoCapture({str(tmp_path / 'v.mp4')!r}).isOpened() else 3)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"})
    assert proc.returncode == 0, proc.stderr
    assert "moov atom" not in proc.stderr, proc.stderr
