"""No traceback reaches a user: usage errors, keys of the wrong kind, missing files, directories.

Each case checks the one-line message names the input and what is wrong, and the exit code
comes from `agent.errors.ExitCode`.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clip_helpers import device_from, hub_from, split

from agent.cli.main import build_parser, file_error_message, main
from agent.cli.parsing import verbosity
from agent.crypto import envelope as env
from agent.crypto import keys as K
from agent.errors import ExitCode

OWNER = device_from(2, "alice")
HUB = hub_from(1)


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n")
    return cfg


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    """alice (secret, 0600), alice.pub (0644), and a hub in tmp_path/data."""
    ident = tmp_path / "alice"
    pub = K.write_device_identity(OWNER, ident)
    K.init_hub(tmp_path / "data")
    return ident, pub


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


# --- mode set without a mode ----------------------------------------------------------------


def test_mode_set_without_a_mode_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Checked before the config is read: a missing config does not hide the usage error.
    for argv, msg in (
        (["mode", "set", "--config", str(tmp_path / "missing.yaml")], "mode set needs a mode: one of home, away"),
        (["mode", "get", "home", "--config", str(_config(tmp_path))], "mode get takes no mode"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == ExitCode.ERROR
        err = capsys.readouterr().err
        assert err.startswith("usage: privacy-agent mode") and msg in err


# --- keys of the wrong kind ---------------------------------------------------------------


def test_public_key_given_as_identity_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ident, pub = _keys(tmp_path)
    roster = str(tmp_path / "roster.json")
    for argv in (
        ["owner", "enroll", "--identity", str(pub), "--roster", roster],
        ["owner", "revoke", "--identity", str(pub), "--roster", roster, "--device", "0" * 16],
        ["requester", "request", "--identity", str(pub), "--hub", str(tmp_path / "data"), "--role", "vendor",
         "--purpose", "x", "--host", "127.0.0.1"],
    ):
        rc, _, err = _run(capsys, argv)
        assert rc == ExitCode.ERROR
        assert f"{pub} is a device public key (epa1pub:...)" in err and "secret identity file" in err
        assert "chmod" not in err  # the permission advice would be wrong for a .pub file
    rc, _, err = _run(capsys, ["owner", "enroll", "--identity", OWNER.public.encode(), "--roster", roster])
    assert rc == ExitCode.ERROR and "this is a device public key (epa1pub:...)" in err
    # The hub's own secret is not an owner identity either, and is named without being shown.
    hub_key = tmp_path / "data" / "keys" / "hub.key"
    rc, _, err = _run(capsys, ["owner", "enroll", "--identity", str(hub_key), "--roster", roster])
    assert rc == ExitCode.ERROR and "the hub's secret signing key (epa1hubsec:...)" in err
    assert hub_key.read_text().split("epa1hubsec:")[1].strip() not in err


def test_secret_given_where_a_public_key_is_expected_is_refused_unshown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ident, pub = _keys(tmp_path)
    secret = OWNER.encode_secret()
    hub_secret = (tmp_path / "data" / "keys" / "hub.key").read_text().splitlines()[-1].strip()
    roster = str(tmp_path / "roster.json")
    clip = tmp_path / "x.epaclip"
    clip.write_bytes(b"not a clip")
    cases = [
        (["owner", "enroll", "--identity", str(ident), "--roster", roster, "--add", str(ident)],
         f"{ident} is a secret identity file"),
        (["owner", "enroll", "--identity", str(ident), "--roster", roster, "--add", secret],
         "a secret device identity (epa1sec:...) value was given where a device public key"),
        (["owner", "revoke", "--identity", str(ident), "--roster", roster, "--device", secret],
         "secret"),
        (["verify", str(clip), "--hub", hub_secret], "the hub's secret signing key (epa1hubsec:...) value"),
        (["verify", str(clip), "--hub", str(tmp_path / "data" / "keys" / "hub.key")],
         "is a secret key file, not the hub public key: it holds the hub's secret signing key (epa1hubsec:...)"),
        (["verify", str(clip), "--hub", str(ident)], "it holds a secret device identity (epa1sec:...)"),
        (["verify", str(clip), "--hub", str(pub)], "holds a device public key, not the hub's"),
        (["owner", "enroll", "--identity", str(ident), "--roster", roster, "--hub", secret], "secret"),
    ]
    for argv, msg in cases:
        if argv[1] == "revoke":  # revoke needs a roster to start from
            assert main(["owner", "enroll", "--identity", str(ident), "--roster", roster]) == 0
        rc, out, err = _run(capsys, argv)
        assert rc == ExitCode.ERROR, argv
        assert msg in err, (argv, err)
        for value in (secret, hub_secret):
            body = value.split(":", 1)[1]
            assert body[:12] not in out + err, f"secret material echoed for {argv}"


# --- verify a directory ---------------------------------------------------------------------


def _seal_chain(folder: Path, camera: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    prev, paths = env.ZERO_HASH, []
    for seq in range(n):
        data, info = env.seal(b"video %d" % seq, {"camera_id": camera}, HUB, [OWNER.public],
                              env.stream_id_for(HUB, camera), seq, prev)
        prev = info.clip_hash
        p = folder / f"{camera}-{seq:04d}.epaclip"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_verify_a_directory_checks_every_clip_recursively(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nas = tmp_path / "nas"
    hall = _seal_chain(nas / "hall", "hall", 3)
    bed = _seal_chain(nas / "deep" / "bedroom", "bedroom", 2)
    (nas / "notes.txt").write_text("not a clip")
    hub = HUB.public.encode()
    rc, out, err = _run(capsys, ["verify", str(nas), "--hub", hub])
    assert rc == ExitCode.OK, err
    for p in hall + bed:
        assert f"{p}: OK" in out
    assert "5 clips OK; chain intact over 5 clips" in out
    # A tampered clip fails on its own line; the others are still checked, the exit is its code.
    parts = split(bed[0].read_bytes())
    parts.records[0] = bytes([parts.records[0][0] ^ 1]) + parts.records[0][1:]
    bed[0].write_bytes(parts.build())
    rc, out, err = _run(capsys, ["verify", str(nas), "--hub", hub])
    assert rc == ExitCode.TAMPERED_CLIP
    assert f"{bed[0]}: FAILED, tampered" in err
    assert all(f"{p}: OK" in out for p in hall + bed[1:])
    assert "5 clip(s) checked: 4 OK, 1 failed" in err
    # Failures of different kinds: FAILED.
    hall[1].write_bytes(hall[1].read_bytes()[:200])
    rc, _, err = _run(capsys, ["verify", str(nas / "hall"), str(bed[0]), "--hub", hub])
    assert rc == ExitCode.FAILED and "2 failed" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(capsys, ["verify", str(empty), "--hub", hub])
    assert rc == ExitCode.ERROR and f"{empty} is a directory with no .epaclip files" in err


# --- global options after the command -------------------------------------------------------


def test_verbose_is_accepted_before_and_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_config(tmp_path))
    p = build_parser()
    assert verbosity(p.parse_args(["doctor", "-v", "--config", cfg])) == 1
    assert verbosity(p.parse_args(["-v", "doctor", "--config", cfg])) == 1
    assert verbosity(p.parse_args(["-v", "doctor", "-vv", "--config", cfg])) == 3
    assert verbosity(p.parse_args(["owner", "enroll", "--verbose", "--identity", "a", "--roster", "r"])) == 1
    assert verbosity(p.parse_args(["doctor", "--config", cfg])) == 0
    # Both spellings run the command (doctor finds the missing x.mp4: FAILED, not a usage error).
    assert main(["doctor", "-v", "--config", cfg]) == ExitCode.FAILED
    assert main(["-v", "doctor", "--config", cfg]) == ExitCode.FAILED


def test_every_command_takes_verbose() -> None:
    def leaves(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, parser)]
        return [leaf for name, s in subs[0].choices.items() for leaf in leaves(s, f"{path} {name}")]

    found = leaves(build_parser(), "privacy-agent")
    assert len(found) > 25
    for path, parser in found:
        assert any("-v" in a.option_strings for a in parser._actions), f"{path} does not take -v"


# --- missing input files ----------------------------------------------------------------------


def test_missing_files_give_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ident, pub = _keys(tmp_path)
    cfg = str(_config(tmp_path))
    data = str(tmp_path / "data")
    m = tmp_path / "missing"
    clip = _seal_chain(tmp_path / "clips", "cam", 1)[0]
    commands = [
        ["check-config", f"{m}.yaml"],
        ["run", "--config", f"{m}.yaml"],
        ["mode", "get", "--config", f"{m}.yaml"],
        ["zones", "preview", "--config", cfg, "--camera", "cam", "--source", f"{m}.mp4", "--out", "p.png"],
        ["replay", f"{m}.mp4", "--config", cfg, "--out", str(tmp_path / "o")],
        ["keys", "show", "--data", str(m)],
        ["keys", "roster", "--data", data, "--install", f"{m}.json"],
        ["owner", "enroll", "--identity", f"{m}.key", "--roster", "r.json"],
        ["owner", "enroll", "--identity", str(ident), "--roster", "r.json", "--add", f"{m}.pub"],
        ["open", f"{m}.epaclip", "--identity", str(ident), "--out", "o.mp4"],
        ["verify", f"{m}.epaclip", "--hub", data],
        ["verify", str(clip), "--hub", f"{m}.pub"],
        ["requester", "open", str(clip), "--identity", str(ident), "--hub", data, "--grant", f"{m}.grant",
         "--out", "o.mp4"],
        ["audit", "verify", "--log", f"{m}.log", "--hub", data],
        ["outbox", "status", "--config", f"{m}.yaml"],
        ["eval", "--fixture", str(m)],
        ["fixtures", "sheet", "--fixture", str(m), "--out", "s.png"],
    ]
    for argv in commands:
        rc, _, err = _run(capsys, argv)
        assert rc != ExitCode.OK, argv
        assert rc in {int(c) for c in ExitCode}, argv
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("privacy-agent: error: ") and str(m) in lines[-1], (argv, err)


def test_file_errors_escaping_a_command_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever command lets an OSError about a file through, the top level names the path."""

    def command_raising(e: OSError) -> argparse.ArgumentParser:
        def func(_args: argparse.Namespace) -> int:
            raise e

        parser = argparse.ArgumentParser()
        parser.add_argument("-v", "--verbose", action="count", default=0)
        parser.set_defaults(func=func)
        return parser

    for e, msg in (
        (FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "a.json")),
         f"{tmp_path / 'a.json'} does not exist"),
        (FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "no" / "b")),
         f"{tmp_path / 'no' / 'b'}: directory {tmp_path / 'no'} does not exist"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "/root/x: permission denied"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", str(tmp_path)),
         f"{tmp_path} is a directory; a file is needed here"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/hosts/x"),
         "/etc/hosts/x: a part of this path is not a directory"),
        (OSError(errno.ENOSPC, "No space left on device", "/mnt/full/x"), "/mnt/full/x: No space left on device"),
    ):
        monkeypatch.setattr("agent.cli.main.build_parser", lambda _command=None, e=e: command_raising(e))
        rc, _, err = _run(capsys, [])
        assert rc == ExitCode.ERROR
        assert err == f"privacy-agent: error: {msg}\n"
    # An OSError that names no file is not a user's missing input: it stays visible as a bug.
    assert file_error_message(BrokenPipeError(errno.EPIPE, "Broken pipe")) is None
    monkeypatch.setattr("agent.cli.main.build_parser", lambda _command=None: command_raising(BrokenPipeError(errno.EPIPE, "x")))
    with pytest.raises(BrokenPipeError):
        main([])


def test_missing_grant_file_end_to_end_has_no_traceback(tmp_path: Path) -> None:
    """The one case found where a missing file reached the user as a traceback (requester open)."""
    ident, _ = _keys(tmp_path)
    clip = _seal_chain(tmp_path / "clips", "cam", 1)[0]
    grant = tmp_path / "nowhere" / "grant.json"
    exe = Path(sys.executable).parent / "privacy-agent"
    proc = subprocess.run(
        [str(exe), "requester", "open", str(clip), "--identity", str(ident), "--hub", str(tmp_path / "data"),
         "--grant", str(grant), "--out", str(tmp_path / "o.mp4")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == ExitCode.ERROR
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and str(grant) in err and "does not exist" in err
