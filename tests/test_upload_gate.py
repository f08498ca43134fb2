"""The pre-upload gate: only a complete clip envelope signed by this hub passes; every other file is
denied with its own exit code and a one-line reason."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from clip_helpers import U32, device_from, hub_from, split
from videokit import walker_frames, write_video

from agent.crypto import envelope as env
from agent.crypto.keys import init_hub, load_hub_identity
from agent.errors import ExitCode
from firmware_hooks.gate import GATE_CODES, check_file
from firmware_hooks.hooks import main

OWNER = device_from(2, "owner")
# Several full 64 KiB chunks and a short last one: truncation and tampering land inside the chunks.
PAYLOAD = os.urandom(3 * env.CHUNK_BYTES + 1234)


@pytest.fixture
def hub_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A hub data dir (its own identity) and a config pointing at it."""
    data = tmp_path / "data"
    init_hub(data)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n")
    return data, cfg


def _clip(tmp_path: Path, data: Path, name: str = "a.epaclip") -> Path:
    hub = load_hub_identity(data)
    raw, _ = env.seal(PAYLOAD, {"camera_id": "cam"}, hub, [OWNER.public], env.stream_id_for(hub, "cam"))
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def _gate(capsys: pytest.CaptureFixture[str], path: Path, cfg: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["upload-gate", str(path), "--config", str(cfg)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


def test_a_clip_of_this_hub_passes(tmp_path: Path, hub_dir: tuple[Path, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = hub_dir
    clip = _clip(tmp_path, data)
    rc, out, err = _gate(capsys, clip, cfg)
    assert rc == ExitCode.OK, err
    hub = load_hub_identity(data)
    assert out.startswith(f"pass {clip} clip=") and f"hub={hub.key_id}" in out and err == ""
    # --hub-pub with a copy of hub.pub, for an uploader running as another user.
    pub = tmp_path / "hub.pub"
    pub.write_text((data / "keys" / "hub.pub").read_text())
    assert main(["upload-gate", str(clip), "--hub-pub", str(pub)]) == ExitCode.OK


def test_every_other_file_is_denied_with_its_own_code(tmp_path: Path, hub_dir: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = hub_dir
    good = _clip(tmp_path, data).read_bytes()
    parts = split(good)
    cases: dict[str, tuple[bytes | None, ExitCode, str]] = {}
    mp4 = tmp_path / "plain.mp4"
    write_video(mp4, walker_frames(5))
    cases["plain.mp4"] = (None, ExitCode.MALFORMED_CLIP, "not an epa-clip envelope")
    other = hub_from(7)
    theirs, _ = env.seal(PAYLOAD, {"camera_id": "cam"}, other, [OWNER.public], env.stream_id_for(other, "cam"))
    cases["theirs.epaclip"] = (theirs, ExitCode.BAD_SIGNATURE, "not by the expected hub")
    cases["cut.epaclip"] = (good[: len(good) // 2], ExitCode.TRUNCATED_CLIP, "clip ends at byte")
    cases["no-trailer.epaclip"] = (parts.build(with_end=False), ExitCode.TRUNCATED_CLIP, "clip ends at byte")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    cases["flipped.epaclip"] = (bytes(flipped), ExitCode.TAMPERED_CLIP, "ciphertext does not match")
    cases["trailing.epaclip"] = (good + b"extra", ExitCode.TAMPERED_CLIP, "unexpected bytes after the end")
    dropped = parts.records[:1] + parts.records[2:]
    cases["dropped.epaclip"] = (
        parts.header + parts.hsig + b"".join(U32.pack(len(r)) + r for r in dropped)
        + U32.pack(0) + U32.pack(parts.count) + parts.ct_hash + parts.tsig,
        ExitCode.TAMPERED_CLIP, "chunks")
    forged = bytearray(good)
    forged[-1] ^= 1  # the trailer signature
    cases["forged.epaclip"] = (bytes(forged), ExitCode.BAD_SIGNATURE, "trailer signature does not verify")
    cases["empty"] = (b"", ExitCode.MALFORMED_CLIP, "not an epa-clip envelope")
    cases["short.bin"] = (b"\x00\x00\x00\x18ftypmp42", ExitCode.MALFORMED_CLIP, "not an epa-clip envelope")
    cases["header-only.epaclip"] = (good[:40], ExitCode.TRUNCATED_CLIP, "inside the header")
    for name, (content, code, reason) in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        rc, out, err = _gate(capsys, p, cfg)
        assert (rc, out) == (code, ""), (name, rc, err)
        assert err.startswith(f"upload-gate: deny: {p}: ") and reason in err and err.count("\n") == 1, (name, err)


def test_not_a_regular_file_is_denied(tmp_path: Path, hub_dir: tuple[Path, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, cfg = hub_dir
    clip = _clip(tmp_path, data)
    link = tmp_path / "link.epaclip"
    link.symlink_to(clip)
    unreadable = tmp_path / "unreadable.epaclip"
    unreadable.write_bytes(clip.read_bytes())
    unreadable.chmod(0o000)
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        cases = {link: "is a symlink", tmp_path: "is a directory", tmp_path / "missing": "cannot be opened",
                 sock_path: "cannot be opened", fifo: "not a regular file", Path("/dev/null"): "not a regular file"}
        if os.geteuid() != 0:  # root reads a 0000 file; the check is the same open either way
            cases[unreadable] = "cannot be opened"
        for p, reason in cases.items():
            rc, out, err = _gate(capsys, p, cfg)
            assert rc == ExitCode.ERROR and out == "" and reason in err, (p, err)
    finally:
        sock.close()


def test_without_the_hubs_key_everything_is_denied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "a.epaclip"
    hub = hub_from(3)
    clip.write_bytes(env.seal(PAYLOAD, {}, hub, [OWNER.public], env.stream_id_for(hub, "c"))[0])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n")  # no `keys init`
    rc, out, err = _gate(capsys, clip, cfg)
    assert rc == ExitCode.ERROR and out == "" and "cannot load the hub's public key" in err
    assert main(["upload-gate", str(clip), "--hub-pub", "epa1hub:nonsense"]) == ExitCode.ERROR


def test_the_gate_reads_in_bounded_memory(tmp_path: Path, hub_dir: tuple[Path, Path]) -> None:
    """A large clip is checked through a stream that never hands out more than a chunk at a time."""
    data, _ = hub_dir
    hub = load_hub_identity(data)
    big = tmp_path / "big.epaclip"
    with big.open("wb") as f:
        w = env.ClipWriter(f, hub, [OWNER.public], env.stream_id_for(hub, "cam"), 0, env.ZERO_HASH)
        block = os.urandom(env.CHUNK_BYTES)
        for _ in range(160):  # 10 MiB
            w.write(block)
        w.finish({"camera_id": "cam"})
    import io

    biggest = [0]
    real_fdopen = os.fdopen

    class Spy(io.BufferedReader):
        def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
            got = super().read(n)
            biggest[0] = max(biggest[0], len(got))
            return got

    def fdopen(fd: int, *a: object, **k: object) -> io.BufferedReader:
        raw = real_fdopen(fd, "rb", buffering=0, closefd=False)
        return Spy(raw, 1 << 16)  # type: ignore[arg-type]

    from firmware_hooks import gate

    mp = pytest.MonkeyPatch()
    mp.setattr(gate.os, "fdopen", fdopen)
    try:
        v = check_file(big, hub.public)
    finally:
        mp.undo()
    assert v.passed, v.reason
    assert 0 < biggest[0] <= env.FULL_RECORD_CT + 4, biggest[0]


def test_gate_codes_are_the_envelope_codes() -> None:
    assert set(GATE_CODES) == {ExitCode.OK, ExitCode.ERROR, ExitCode.MALFORMED_CLIP, ExitCode.BAD_SIGNATURE,
                               ExitCode.TAMPERED_CLIP, ExitCode.TRUNCATED_CLIP}


def test_the_command_prints_one_line_and_nothing_else(tmp_path: Path, hub_dir: tuple[Path, Path]) -> None:
    """As the uploader runs it: a process of its own; the config's warnings stay off its stderr."""
    import subprocess
    import sys

    data, cfg = hub_dir
    cfg.write_text("data_dir: data\ndetection: {enabled: false}\ncameras: [{id: cam, source: x.mp4}]\n")
    clip = _clip(tmp_path, data)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    repo = Path(__file__).resolve().parents[1]
    for f, code, stream in ((clip, 0, "stdout"), (plain, ExitCode.MALFORMED_CLIP, "stderr")):
        p = subprocess.run([sys.executable, "-m", "firmware_hooks", "upload-gate", str(f), "--config", str(cfg)],
                           cwd=repo, capture_output=True, text=True, timeout=60)
        assert p.returncode == code, p.stderr
        out = p.stdout if stream == "stdout" else p.stderr
        other = p.stderr if stream == "stdout" else p.stdout
        assert out.count("\n") == 1 and other == "", (out, other)
