"""`doctor`'s checks of sinks, the clock, the data dir's modes and the encoder: each failure
with its fix. Real filesystems (tmpfs and bind mounts from the `mount` fixture), a clock injected."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli.doctor import (
    CheckResult,
    check_clock,
    check_data_dir_modes,
    check_storage,
    run_checks,
)
from agent.cli.doctor.system import CLOCK_FLOOR
from agent.cli.main import main
from agent.config import load_config


def loaded_with(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ncameras: [{{id: cam, source: v.mp4}}]\n" + body)
    return load_config(cfg)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_a_missing_nas_path_fails_with_the_fix(tmp_path: Path) -> None:
    nas = tmp_path / "mnt" / "nas"
    r = by_name(check_storage(loaded_with(tmp_path, f"sinks: [{{type: directory, path: {nas}, require_mount: true}}]\n")))
    assert r["sinks[0] path"].status == "fail" and "does not exist" in r["sinks[0] path"].detail
    assert r["sinks[0] path"].hint == f"mount the NAS at {nas}, then privacy-agent sink init {nas}"
    assert not any(x.status == "ok" and x.name.startswith("sinks[0]") for x in r.values())


def test_an_unmounted_nas_directory_fails_and_a_mounted_one_passes(tmp_path: Path,
                                                                  mount: Callable[..., Path]) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    loaded = loaded_with(tmp_path, f"sinks: [{{type: directory, path: {nas}, require_mount: true}}]\n")
    r = by_name(check_storage(loaded))
    assert r["sinks[0] mount"].status == "fail" and "not a mount point" in r["sinks[0] mount"].detail
    assert "mount the NAS" in r["sinks[0] mount"].hint
    mount(nas, size_kib=1024)
    assert main(["sink", "init", str(nas)]) == 0
    r = by_name(check_storage(loaded))
    assert {n: x.status for n, x in r.items() if n.startswith("sinks[0]")} == {
        "sinks[0] mount": "ok", "sinks[0] writable": "ok", "sinks[0] marker": "ok", "sinks[0] space": "warn"}
    assert not list(nas.glob(".epa-doctor-*"))  # the write probe cleans up


def test_a_nas_looking_path_that_is_not_mounted_is_a_warning(tmp_path: Path) -> None:
    from agent.cli.doctor import storage

    d = tmp_path / "clips"
    d.mkdir()
    assert main(["sink", "init", str(d)]) == 0
    loaded = loaded_with(tmp_path, f"sinks: [{{type: directory, path: {d}}}]\n")
    assert "sinks[0] mount" not in by_name(check_storage(loaded))
    old = storage._NAS_ROOTS
    storage._NAS_ROOTS = (str(tmp_path) + "/",)
    try:
        r = by_name(check_storage(loaded))
    finally:
        storage._NAS_ROOTS = old
    assert r["sinks[0] mount"].status == "warn" and "require_mount: true" in r["sinks[0] mount"].hint


def test_an_unwritable_sink_fails_by_a_real_write(tmp_path: Path, mount: Callable[..., Path]) -> None:
    d = mount(tmp_path / "ro", size_kib=512)
    assert main(["sink", "init", str(d)]) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)
    r = by_name(check_storage(loaded_with(tmp_path, f"sinks: [{{type: directory, path: {d}}}]\n")))
    assert r["sinks[0] writable"].status == "fail" and "Read-only" in r["sinks[0] writable"].detail
    assert "write access" in r["sinks[0] writable"].hint


def test_a_sink_path_that_is_a_file_or_unmarked(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    d = tmp_path / "empty"
    d.mkdir()
    r = by_name(check_storage(loaded_with(
        tmp_path, f"sinks: [{{type: directory, path: {f}}}, {{type: directory, path: {d}}}]\n")))
    assert r["sinks[0] path"].status == "fail" and "not a directory" in r["sinks[0] path"].detail
    assert r["sinks[1] marker"].status == "fail" and f"privacy-agent sink init {d}" in r["sinks[1] marker"].hint


CLOCK_OK = dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp()


def test_clock_before_the_floor_fails(tmp_path: Path) -> None:
    (r,) = check_clock(None, now=lambda: 86_400.0, synced=lambda: None)
    assert r.status == "fail" and "1970-01-02" in r.detail and "timedatectl set-ntp true" in r.hint
    (r,) = check_clock(None, now=lambda: CLOCK_OK, synced=lambda: True)
    assert r.status == "ok" and "NTP synchronised" in r.detail
    assert CLOCK_FLOOR.timestamp() < CLOCK_OK


def test_clock_behind_the_newest_audit_entry_fails(tmp_path: Path) -> None:
    loaded = loaded_with(tmp_path, "")
    log = tmp_path / "data" / "audit" / "log.jsonl"
    log.parent.mkdir(parents=True)
    entry = {"seq": 1, "kind": "boot", "wall_ms": int((CLOCK_OK + 86_400) * 1000), "fields": {}, "prev": "0", "hash": "x"}
    log.write_text(json.dumps(entry) + "\n" + '{"seq": 2, "torn')
    (r,) = check_clock(loaded, now=lambda: CLOCK_OK, synced=lambda: None)
    assert r.status == "fail" and "went back" in r.detail and r.hint
    assert check_clock(loaded, now=lambda: CLOCK_OK + 86_400, synced=lambda: None)[0].status == "ok"


def test_clock_not_synchronised_is_a_warning(tmp_path: Path) -> None:
    (r,) = check_clock(None, now=lambda: CLOCK_OK, synced=lambda: False)
    assert r.status == "warn" and "NTPSynchronized=no" in r.detail and r.hint


def test_data_dir_modes(tmp_path: Path) -> None:
    loaded = loaded_with(tmp_path, "")
    data = tmp_path / "data"
    (data / "state").mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    (data / "events.jsonl").write_text("")
    (data / "events.jsonl").chmod(0o600)
    assert check_data_dir_modes(loaded)[0].status == "ok"
    (data / "events.jsonl").chmod(0o644)
    (data / "state").chmod(0o755)
    (r,) = check_data_dir_modes(loaded)
    assert r.status == "fail" and "events.jsonl (0644)" in r.detail and "state (0755)" in r.detail
    assert r.hint.startswith(f"chmod -R go-rwx {data}")
    subprocess.run(["chmod", "-R", "go-rwx", str(data)], check=True)
    assert check_data_dir_modes(loaded)[0].status == "ok"


def test_doctor_names_the_encoder_and_fails_an_explicit_one_that_cannot_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.media import encoders

    def no_device(codec: str) -> None:
        if codec == encoders.HARDWARE:
            raise encoders.EncoderProbeFailed("no V4L2 device (/dev/video*)")

    monkeypatch.setattr(encoders, "probe_encode", no_device)
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok  ] h264 encoder" in out and "libx264: auto: h264_v4l2m2m not usable (no V4L2 device" in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("video: {encoder: h264_v4l2m2m}\ncameras: [{id: cam, source: v.mp4}]\n")
    assert main(["doctor", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] h264 encoder" in out and "video.encoder: h264_v4l2m2m cannot be used" in out
    assert "fix: set `video.encoder: auto`" in out


def test_every_warning_and_failure_has_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config with something wrong almost everywhere: every non-ok result says what to do."""
    monkeypatch.setenv("EPA_MODEL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.jsonl").write_text("")
    # Explicit modes: an earlier test in this process may have left the umask at 077.
    data.chmod(0o755)
    (data / "events.jsonl").chmod(0o644)
    (tmp_path / "mnt").mkdir()
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o644)
    loaded = loaded_with(tmp_path, f"""\
sinks:
  - {{type: directory, path: {tmp_path / 'mnt' / 'nas'}, require_mount: true}}
  - {{type: directory, path: {tmp_path / 'mnt'}}}
  - {{type: directory, path: out, plaintext: true}}
  - {{type: s3, bucket: nosuch, endpoint: "http://127.0.0.1:9", credentials_file: missing.creds}}
mqtt: {{host: 127.0.0.1, port: 9, username: hub, password_file: {pw}}}
recipients: [epa1pub:notakey]
""")
    results = run_checks(loaded)
    bad = [r for r in results if r.status != "ok"]
    assert len(bad) >= 8
    for r in bad:
        assert r.hint.strip() and "\n" not in r.hint, r
    names = {r.name for r in bad}
    assert {"sinks[0] path", "sinks[1] marker", "plaintext sink", "sinks[3] credentials", "mqtt broker",
            "data_dir modes", "hub identity"} <= names
