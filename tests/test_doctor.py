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


def test_doctor_says_telemetry_is_off_and_no_device_id_is_left(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok  ] onnxruntime telemetry" in out and "ORT_DISABLE_TELEMETRY=1" in out and "no device id" in out
    assert "onnxruntime device id" not in out


@pytest.mark.parametrize("base", ["home", "xdg"])
def test_doctor_reports_a_device_id_left_by_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "home" / ".cache" if base == "home" else tmp_path / "xdg"
    left = cache / "Microsoft" / "DeveloperTools" / ".onnxruntime"
    left.mkdir(parents=True)
    (left / "deviceid").write_text("0b8f6c2e-0000-4000-8000-000000000000")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[WARN] onnxruntime device id" in out and str(left) in out and "deviceid" in out
    assert f"fix: delete it: rm -rf '{left}'" in out
    assert "[ok  ] onnxruntime telemetry" in out and "no device id" not in out


def test_doctor_fails_when_telemetry_is_not_disabled(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "0")  # what a wrapper resetting it would leave
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] onnxruntime telemetry" in out and "is '0'" in out and "send telemetry to Microsoft" in out


def test_doctor_fails_when_the_access_counters_are_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With a roster installed and the counter state gone, the hub refuses to start: doctor says
    so and how to recover."""
    from agent.access.state import state_path
    from agent.crypto.keys import DeviceIdentity, write_device_identity

    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    owner = DeviceIdentity.generate("o")
    write_device_identity(owner, tmp_path / "o.key")
    assert main(["owner", "enroll", "--identity", str(tmp_path / "o.key"), "--roster", str(tmp_path / "r.json"),
                 "--install", str(data)]) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {data}\ncameras:\n  - id: cam\n    source: {tmp_path / 'v.mp4'}\n")
    capsys.readouterr()
    main(["doctor", "--config", str(cfg)])
    assert "access counters" in capsys.readouterr().out
    state_path(data).unlink()
    assert main(["doctor", "--config", str(cfg)]) != 0
    out = capsys.readouterr().out
    assert "reset-access-state" in out and "missing" in out
