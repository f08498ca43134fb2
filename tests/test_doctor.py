"""`doctor` says what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest
from videokit import walker_frames, write_video

from agent.cli.main import main


def test_doctor_healthy_plaintext_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_video(tmp_path / "v.mp4", walker_frames(3))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{id: cam, source: v.mp4}]\n"
                   "sinks: [{type: directory, path: out, plaintext: true}]\n")
    assert main(["doctor", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "[ok  ] model yunet_s_dynamic" in out and "[ok  ] camera cam source" in out
    assert "[WARN] plaintext sink" in out


def test_doctor_reports_each_problem_with_a_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPA_MODEL_CACHE", str(tmp_path / "empty-cache"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{id: cam, source: missing.mp4}]\n"
                   "sinks: [{type: directory, path: clips}]\n")
    assert main(["doctor", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] camera cam source" in out and "does not exist" in out
    assert "[FAIL] model yunet_s_dynamic" in out and "privacy-agent models install yunet_s_dynamic" in out
    assert "[FAIL] hub identity" in out and "privacy-agent keys init" in out


def test_doctor_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{id: cam, source: x.mp4, colour: red}]\n")
    assert main(["doctor", "--config", str(cfg)]) == 1
    assert "unknown key 'colour'" in capsys.readouterr().out
