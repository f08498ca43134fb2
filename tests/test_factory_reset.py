"""Factory reset: the end of the audit log is recorded, signed and published first; then nothing of
the hub is left readable in its data directory. Against a real `run` and a real Mosquitto."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clip_helpers import free_port
from hubkit import enrolled_hub, hub_password_file
from mosquitto import USERS, Broker, make_ca_and_server_cert
from videokit import walker_frames, write_video

from agent.access import merkle
from agent.access.audit import LOG_FILE, audit_dir, read_entries
from agent.access.checkpoint import Checkpoint
from agent.cli.main import main as cli_main
from agent.crypto.envelope import MAGIC
from agent.crypto.keys import HubIdentity, init_hub, load_hub_identity
from agent.errors import ExitCode
from agent.mqtt.client import Message, MqttClient
from agent.topics import Topics
from firmware_hooks.hooks import main
from firmware_hooks.lifecycle import RESET_DIR
from firmware_hooks.wipe import wipe_tree

REPO = Path(__file__).resolve().parents[1]
PREFIX = "epa-reset"
SQLITE_MAGIC = b"SQLite format 3\x00"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto", prefix=PREFIX)
    b.start()
    yield b
    b.stop()


def _mqtt_yaml(tmp_path: Path, host: str, port: int, ca: Path) -> str:
    pw = hub_password_file(tmp_path)
    return (f"mqtt:\n  host: {host}\n  port: {port}\n  ca_file: {ca}\n  username: hub\n  password_file: {pw}\n"
            f"  topic_prefix: {PREFIX}\n  reconnect_min_s: 0.05\n  reconnect_max_s: 0.2\n")


def _household(tmp_path: Path, mqtt: str) -> Path:
    """A hub with an owner, an encrypted directory sink inside the data dir, and a camera."""
    data = enrolled_hub(tmp_path)
    # The owner's epoch keys, installed on the hub: clips are sealed to them.
    epochs = tmp_path / "owner.epochs.json"
    assert cli_main(["owner", "epochs", "generate", "--identity", str(tmp_path / "owner.key"), "--horizon-days", "2",
                     "--hub", str(data), "--out", str(epochs)]) == 0
    assert cli_main(["keys", "epochs", "install", "--data", str(data), str(epochs)]) == 0
    (data / "nas").mkdir()
    assert cli_main(["sink", "init", str(data / "nas")]) == 0
    write_video(tmp_path / "v.mp4", walker_frames(150))  # 15 s: at least one sealed clip
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""\
data_dir: data
detection: {enabled: false}
recipients: [owner.key.pub]
cameras:
  - id: cam
    source: v.mp4
    zones:
      - name: left
        points: [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
sinks:
  - type: directory
    path: data/nas
    segment_s: 10
""" + mqtt)
    return cfg


def _run(cfg: Path) -> None:
    """`privacy-agent run` in a process of its own, as on a hub (it keeps the lock until it exits)."""
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _encodings(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret).rstrip(b"=")]


def _key_material(hub: HubIdentity) -> list[bytes]:
    assert hub.box_secret is not None
    raw = [bytes(hub.signing_key), bytes(hub.signing_key.verify_key), bytes(hub.box_secret),
           bytes(hub.box_secret.public_key)]
    return [e for k in raw for e in _encodings(k)]


def _clip_samples(root: Path) -> list[bytes]:
    """32-byte runs of ciphertext from every sealed clip under `root`."""
    out = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if data.startswith(MAGIC):
                out += [data[i:i + 32] for i in range(200, len(data) - 32, max(4096, len(data) // 64))]
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _unchanged(root: Path, before: dict[str, bytes]) -> bool:
    """Nothing but the lock file's note (who last held it) differs from `before`."""
    now, lock = _files(root), {"agent.lock"}
    return set(now) - lock == set(before) - lock and all(now[k] == before[k] for k in set(now) - lock)


def _lock_held_elsewhere(data: Path) -> subprocess.Popen[str]:
    """Another process holding the data-dir lock, as `run` would."""
    code = ("import sys; from pathlib import Path; from agent.storage.lock import acquire; "
            f"acquire(Path({str(data)!r}), 'run'); print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.mqtt
def test_factory_reset_after_a_real_run_leaves_nothing_readable(
        tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _household(tmp_path, _mqtt_yaml(tmp_path, broker.host, broker.port, broker.ca_file))
    _run(cfg)
    data = tmp_path / "data"
    hub = load_hub_identity(data)
    secrets = _key_material(hub)
    clips = _clip_samples(data)
    assert clips and list((data / "nas").rglob("*.epaclip")), "the run sealed no clip"
    before = _files(data)
    assert any(k.startswith("keys/epochs/") for k in before)  # the installed epoch key list
    assert any(v.startswith(SQLITE_MAGIC) for v in before.values())  # the outbox, the index...
    assert any(s in v for v in before.values() for s in secrets)  # ...and the keys are there to find
    log_raw = (audit_dir(data) / LOG_FILE).read_bytes()
    entries, problems = read_entries(audit_dir(data) / LOG_FILE)
    assert not problems and entries

    # Refused without --yes, and while another process holds the data dir: nothing changes.
    capsys.readouterr()
    assert main(["factory-reset", "--config", str(cfg)]) == ExitCode.ERROR
    assert "pass --yes" in capsys.readouterr().err
    holder = _lock_held_elsewhere(data)
    try:
        assert main(["factory-reset", "--config", str(cfg), "--yes"]) == ExitCode.BUSY
        err = capsys.readouterr().err
        assert "in use by pid" in err and "(run," in err and "Traceback" not in err
    finally:
        holder.communicate("")
    assert _unchanged(data, before)

    # What the owners' devices see on the broker: the retained checkpoint.
    got: list[Message] = []
    arrived = threading.Event()

    def on_cp(m: Message) -> None:
        got.append(m)
        arrived.set()

    spy = MqttClient(broker.host, broker.port, client_id="spy-reset", topics=Topics(PREFIX), username="spy",
                     password=USERS["spy"], ca_file=broker.ca_file)
    spy.start()
    try:
        capsys.readouterr()
        assert main(["factory-reset", "--config", str(cfg), "--yes"]) == ExitCode.OK
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        spy.subscribe(Topics(PREFIX).audit_checkpoint, on_cp)  # retained: arrives after the fact
        assert arrived.wait(10)
    finally:
        spy.stop()

    # The final checkpoint verifies under the old hub key and covers the factory_reset entry.
    cp = Checkpoint.decode(got[-1].payload, hub.public)
    entry_line, note = out.out.split("\n", 1)
    assert note.startswith(f"epa-audit/{hub.key_id}\n") and "final checkpoint published" in out.out
    # The entry printed extends the old log: the whole chain, with it last, verifies.
    (tmp_path / "log-with-reset.jsonl").write_bytes(log_raw + entry_line.encode() + b"\n")
    chained, problems = read_entries(tmp_path / "log-with-reset.jsonl")
    assert not problems and len(chained) == len(entries) + 1
    entry = chained[-1]
    assert entry.kind == "factory_reset" and entry.seq == len(entries) + 1 and entry.prev == entries[-1].hash
    leaves = [merkle.leaf_hash(ln) for ln in log_raw.split(b"\n")[:-1]] + [merkle.leaf_hash(entry_line.encode())]
    assert cp.size == entry.seq and cp.root == merkle.root(leaves).hex()
    # What is kept for the owners: the same checkpoint, entry and leaf hashes; nothing else.
    kept = data / RESET_DIR
    assert Checkpoint.decode((kept / "checkpoint").read_bytes(), hub.public) == cp
    assert (kept / "entry.json").read_text() == entry_line + "\n"
    assert (kept / "leaves").read_text().split() == [h.hex() for h in leaves]
    after = _files(data)
    assert set(after) == {"agent.lock", f"{RESET_DIR}/checkpoint", f"{RESET_DIR}/entry.json", f"{RESET_DIR}/leaves"}
    assert [p for p in data.rglob("*") if p.is_dir()] == [kept]
    for name, content in after.items():
        for s in secrets:
            assert s not in content, f"{name} holds the old hub's key material"
        assert not content.startswith(MAGIC), f"{name} is a sealed clip"
        assert not content.startswith(SQLITE_MAGIC), f"{name} is a database"
        for run in clips:
            assert run not in content, f"{name} holds ciphertext of an old clip"
    # The hub has no identity now: it must be set up again before it records anything encrypted.
    assert not (data / "keys").exists()


def _small_hub(tmp_path: Path, mqtt: str) -> tuple[Path, HubIdentity]:
    data = tmp_path / "data"
    init_hub(data)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n" + mqtt)
    return cfg, load_hub_identity(data)


def test_an_unreachable_broker_stops_the_reset_unless_offline(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tls").mkdir()
    ca, _, _ = make_ca_and_server_cert(tmp_path / "tls")
    cfg, hub = _small_hub(tmp_path, _mqtt_yaml(tmp_path, "127.0.0.1", free_port(), ca))  # nobody listens
    data = tmp_path / "data"
    before = _files(data)
    capsys.readouterr()
    assert main(["factory-reset", "--config", str(cfg), "--yes"]) == ExitCode.NO_ANSWER
    err = capsys.readouterr().err
    assert "cannot connect to MQTT broker" in err and "nothing was changed" in err and err.count("\n") == 1
    assert _unchanged(data, before)  # not even an audit entry: nothing changed
    assert main(["factory-reset", "--config", str(cfg), "--yes", "--offline"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "final checkpoint NOT published" in out
    cp = Checkpoint.decode((data / RESET_DIR / "checkpoint").read_bytes(), hub.public)
    assert cp.size == 1 and f"{cp.size}\n" in out
    assert set(_files(data)) == {"agent.lock", f"{RESET_DIR}/checkpoint", f"{RESET_DIR}/entry.json",
                                 f"{RESET_DIR}/leaves"}


def test_a_hub_without_an_identity_is_wiped_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n")
    (tmp_path / "data" / "state").mkdir(parents=True)
    (tmp_path / "data" / "state" / "mode.json").write_text('{"mode": "away"}')
    assert main(["factory-reset", "--config", str(cfg), "--yes"]) == ExitCode.OK
    assert "final checkpoint none (no hub identity)" in capsys.readouterr().out
    assert set(_files(tmp_path / "data")) == {"agent.lock"}


def test_wipe_overwrites_before_unlinking_and_never_follows_a_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "keys").mkdir(parents=True)
    outside.mkdir()
    secret = root / "keys" / "hub.key"
    secret.write_bytes(b"epa1hubsec:" + b"k" * 43 + b"\n")
    clip = root / "outbox" / "c.epaclip"
    clip.parent.mkdir()
    clip.write_bytes(MAGIC + b"\x02" + b"c" * 500)
    # Hard links outside the tree see what happened to the inode once the names inside are gone.
    os.link(secret, outside / "secret-inode")
    os.link(clip, outside / "clip-inode")
    theirs = outside / "theirs.txt"
    theirs.write_text("not the hub's")
    (root / "link-to-file").symlink_to(theirs)
    (root / "link-to-dir").symlink_to(outside)
    (root / "keep.me").write_text("x")
    os.mkfifo(root / "fifo")
    report = wipe_tree(root, keep={root / "keep.me"})
    assert not report.failed, report.failed
    assert sorted(p.name for p in root.iterdir()) == ["keep.me"]
    overwritten = (outside / "secret-inode").read_bytes()
    assert len(overwritten) == 55 and b"epa1hubsec:" not in overwritten and b"kkkk" not in overwritten
    assert (outside / "clip-inode").read_bytes().startswith(MAGIC)  # ciphertext: removed, not overwritten
    assert theirs.read_text() == "not the hub's" and sorted(p.name for p in outside.iterdir()) == [
        "clip-inode", "secret-inode", "theirs.txt"]
    assert report.overwritten == 1 and report.removed == 5  # the key, the clip, two links, the fifo
