"""`check-config` warns (key path and YAML line) about what validates but cannot work: a missing
source file, a source that is not a video, an image glob that matches nothing, a recipient that
does not parse, and an encrypted sink with a camera nobody could open the clips of."""

from __future__ import annotations

from pathlib import Path

import pytest
from videokit import walker_frames, write_video

from agent.cli.main import main
from agent.crypto.keys import DeviceIdentity, write_device_identity


def run(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n" + body)
    code = main(["check-config", *extra, str(cfg)])
    out = capsys.readouterr().out
    return code, [ln.strip() for ln in out.splitlines() if ln.strip().startswith("warning:")]


def test_a_clean_config_has_no_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_video(tmp_path / "v.mp4", walker_frames(3))
    owner = DeviceIdentity.generate("o")
    write_device_identity(owner, tmp_path / "o.key")
    code, warns = run(tmp_path, f"""\
recipients: [o.key.pub, {owner.public.encode()}]
cameras:
  - id: cam
    source: v.mp4
sinks: [{{type: directory, path: clips}}]
""", capsys, "--strict")
    assert (code, warns) == (0, [])


def test_missing_source_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, warns = run(tmp_path, "cameras:\n  - id: cam\n    source: nosuch.mp4\n", capsys)
    assert code == 0
    assert warns == [f"warning: cameras[0].source: source file {tmp_path / 'nosuch.mp4'} does not exist "
                     "(config.yaml:4)"]


def test_a_source_that_is_not_a_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    code, warns = run(tmp_path, "cameras:\n  - id: cam\n    source: notes.mp4\n", capsys)
    assert len(warns) == 1 and warns[0].startswith("warning: cameras[0].source: ")
    assert "is not a video that can be read" in warns[0] and warns[0].endswith("(config.yaml:4)")


def test_an_image_glob_that_matches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, warns = run(tmp_path, "cameras:\n  - id: cam\n    source: 'frames/*.png'\n", capsys)
    assert len(warns) == 1 and "glob matches no files" in warns[0] and "(config.yaml:4)" in warns[0]


def test_a_live_source_is_not_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, warns = run(tmp_path, "cameras:\n  - id: cam\n    source: rtsp://192.0.2.1/stream\n", capsys)
    assert warns == []


def test_recipients_that_do_not_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_video(tmp_path / "v.mp4", walker_frames(3))
    _, warns = run(tmp_path, """\
recipients:
  - epa1pub:notakey
cameras:
  - id: cam
    source: v.mp4
    recipients: [gone.key.pub]
""", capsys)
    assert warns[0].startswith("warning: recipients[0]: recipient 'epa1pub:notakey' does not parse: ")
    assert warns[0].endswith("(config.yaml:3)")
    assert warns[1].startswith("warning: cameras[0].recipients[0]: recipient 'gone.key.pub' cannot be read: ")
    assert "does not exist" in warns[1] and warns[1].endswith("(config.yaml:7)")


def test_an_encrypted_sink_with_no_recipients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_video(tmp_path / "v.mp4", walker_frames(3))
    body = """\
cameras:
  - id: cam
    source: v.mp4
sinks:
  - type: directory
    path: segs
    plaintext: true
  - type: directory
    path: clips
"""
    code, warns = run(tmp_path, body, capsys, "--strict")
    assert code == 1
    assert warns[0].startswith("warning: sinks[0] (directory: segs) writes plaintext")
    assert warns[1].startswith("warning: sinks[1]: encrypted, but camera 'cam' has no recipients")
    assert warns[1].endswith("(config.yaml:9)")
    # A roster installed in data_dir supplies them.
    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    owner = DeviceIdentity.generate("o")
    write_device_identity(owner, tmp_path / "o.key")
    assert main(["owner", "enroll", "--identity", str(tmp_path / "o.key"), "--roster", str(tmp_path / "r.json"),
                 "--install", str(data)]) == 0
    capsys.readouterr()
    _, warns = run(tmp_path, body, capsys)
    assert len(warns) == 1 and "plaintext" in warns[0]


def test_shedding_that_would_start_after_frames_are_withheld_for_lag(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    body = ("cameras:\n  - id: cam\n    source: rtsp://192.0.2.1/stream\n"
            "analysis:\n  max_lag_s: 1.0\n"
            "detection:\n  under_load:\n    behind_s: 0.5\n")
    code, warns = run(tmp_path, body, capsys, "--strict")
    assert code != 0
    assert len(warns) == 1 and warns[0].startswith("warning: detection.under_load.behind_s: 0.5 s is not under 0.5 s")
    assert warns[0].endswith("(config.yaml:9)")
    # Turned off, or under the catch-up point, nothing to say.
    assert run(tmp_path, body.replace("behind_s: 0.5", "behind_s: 0.4"), capsys)[1] == []
    assert run(tmp_path, body + "    enabled: false\n", capsys)[1] == []
