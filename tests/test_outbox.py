"""The durable outbox: backoff on an injected clock, crash recovery, the pre-upload gate, kill -9."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clip_helpers import device_from, hub_from, sink_dir

from agent.clock import FakeClock
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import HubIdentity, hub_public, init_hub
from agent.errors import EnvelopeError, SinkError
from agent.storage.outbox import Outbox, object_name_for
from agent.storage.sinks.upload import MARKER_FILE, DirectoryUploader

OWNER = device_from(2, "owner")
REPO = Path(__file__).resolve().parents[1]


class FlakyUploader:
    def __init__(self, inner: DirectoryUploader, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0
        self.name = inner.name

    def put(self, object_name: str, path: Path) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("NAS offline")
        self.inner.put(object_name, path)


def seal_into(ob: Outbox, hub: HubIdentity, camera: str, payload: bytes, dests: list[str]) -> env.ClipInfo:
    stream_id = env.stream_id_for(hub, camera)
    stream = stream_id.hex()
    seq, prev = ob.chain_head(stream)
    cid = os.urandom(16)
    fh, part = ob.open_part(stream, cid.hex())
    w = env.ClipWriter(fh, hub, [OWNER.public], stream_id, seq, prev, clip_id=cid)
    w.write(payload)
    info = w.finish({"camera_id": camera})
    ob.commit(fh, part, info, camera, dests)
    return info


def test_retry_with_exponential_backoff_on_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog()
    hub = init_hub(tmp_path / "data")
    up = FlakyUploader(DirectoryUploader(sink_dir(tmp_path / "nas"), hub.public), failures=3)
    ob = Outbox(tmp_path / "data", clock, events, backoff_base_s=2.0, backoff_max_s=5.0)
    seal_into(ob, hub, "cam", b"x" * 1000, [up.name])
    ups = {up.name: up}
    assert ob.drain(ups).failed == 1  # attempt 1 fails: retry in 2 s
    assert ob.drain(ups).failed == 0 and up.calls == 1  # not due yet
    clock.advance(1.9)
    ob.drain(ups)
    assert up.calls == 1
    clock.advance(0.2)
    assert ob.drain(ups).failed == 1 and up.calls == 2  # attempt 2 fails: retry in 4 s
    clock.advance(3.9)
    ob.drain(ups)
    assert up.calls == 2
    clock.advance(0.2)
    ob.drain(ups)  # attempt 3 fails: 8 s capped at 5 s
    clock.advance(5.0)
    res = ob.drain(ups)
    assert (res.uploaded, res.remaining, up.calls) == (1, 0, 4)
    assert events.kinds().count("upload_failed") == 3
    retries = [e.details["retry_in_s"] for e in events.events if e.kind == "upload_failed"]
    assert retries == [2.0, 4.0, 5.0]


def test_pre_upload_gate_refuses_clip_not_signed_by_this_hub(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog()
    hub = init_hub(tmp_path / "data")
    up = DirectoryUploader(sink_dir(tmp_path / "nas"), hub.public)
    ob = Outbox(tmp_path / "data", clock, events)
    seal_into(ob, hub_from(9), "cam", b"forged", [up.name])  # signed by another key
    good = seal_into(ob, hub, "cam2", b"good", [up.name])
    res = ob.drain({up.name: up})
    assert (res.uploaded, res.rejected, res.remaining) == (1, 1, 0)
    uploaded = list((tmp_path / "nas").rglob("*.epaclip"))
    assert [p.name for p in uploaded] == [object_name_for(good).split("/")[1]]
    assert len(list((tmp_path / "data" / "outbox" / "quarantine").iterdir())) == 1
    assert "clip_rejected" in events.kinds()
    # the gate also refuses garbage and a truncated clip handed to the uploader directly
    junk = tmp_path / "junk.epaclip"
    junk.write_bytes(b"epa-clip" + os.urandom(300))
    with pytest.raises(EnvelopeError):
        up.put(object_name_for(good), junk)
    data = (tmp_path / "nas" / object_name_for(good)).read_bytes()
    junk.write_bytes(data[:-10])
    with pytest.raises(EnvelopeError):
        up.put(object_name_for(good).replace("000000000000", "000000000009"), junk)
    assert not list((tmp_path / "nas").rglob("*.tmp"))


def test_recovery_after_crash_between_steps(tmp_path: Path) -> None:
    clock = FakeClock()
    hub = init_hub(tmp_path / "data")
    ob = Outbox(tmp_path / "data", clock)
    stream_id = env.stream_id_for(hub, "cam")
    stream = stream_id.hex()
    # (a) crash after the commit transaction, before the rename: the .part is complete
    cid = os.urandom(16)
    fh, part = ob.open_part(stream, cid.hex())
    w = env.ClipWriter(fh, hub, [OWNER.public], stream_id, 0, env.ZERO_HASH, clip_id=cid)
    w.write(b"a" * 100)
    info = w.finish({})
    real_replace = os.replace
    try:
        os.replace = lambda *a: (_ for _ in ()).throw(OSError(5, "simulated crash"))  # type: ignore[assignment]
        with pytest.raises(SinkError):
            ob.commit(fh, part, info, "cam", ["d"])
    finally:
        os.replace = real_replace  # type: ignore[assignment]
    assert part.exists()
    # (b) crash while a segment was still being written: a .part without a row
    fh2, part2 = ob.open_part(stream, os.urandom(16).hex())
    fh2.write(b"partial ciphertext")
    fh2.close()
    ob.close()
    ob2 = Outbox(tmp_path / "data", clock)
    ob2.recover()
    assert not part.exists() and part.with_name(cid.hex() + ".epaclip").exists()
    assert not part2.exists()
    assert ob2.pending() == [(cid.hex(), "d", 0)]
    assert ob2.chain_head(stream) == (1, info.clip_hash)


CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from agent.crypto import envelope as env
    from agent.clock import SystemClock
    from agent.crypto.keys import load_hub_identity, DeviceIdentity
    from agent.storage.outbox import Outbox
    from agent.storage.sinks.upload import DirectoryUploader

    data, nas, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    owner = DeviceIdentity.from_secrets(bytes([2]) * 32, bytes([102]) * 32, "owner")
    hub = load_hub_identity(data)
    up = DirectoryUploader(nas, hub.public)
    ob = Outbox(data, SystemClock())
    sid = env.stream_id_for(hub, "cam")
    stream = sid.hex()
    ob.recover()
    ob.drain({up.name: up}, stream, force=True)
    while True:
        seq, prev = ob.chain_head(stream)
        if seq >= total:
            break
        cid = os.urandom(16)
        fh, part = ob.open_part(stream, cid.hex())
        w = env.ClipWriter(fh, hub, [owner.public], sid, seq, prev, clip_id=cid)
        payload = (b"clip %d " % seq) * 40000
        for i in range(0, len(payload), 50000):
            w.write(payload[i:i + 50000])
        ob.commit(fh, part, w.finish({"seq": seq}), "cam", [up.name])
        print("committed", seq, flush=True)
        ob.drain({up.name: up}, stream, force=True)
        print("drained", seq, flush=True)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    data, nas, total = tmp_path / "data", sink_dir(tmp_path / "nas"), 10
    init_hub(data)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env_vars = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(script), str(data), str(nas), str(total)]
    # Kill at different moments: right after a commit, right after a drain, mid-work.
    for wait_for in ("committed 1", "drained 3", "committed 6"):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env_vars, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == wait_for:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(args, capture_output=True, env=env_vars, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted(nas.rglob("*"))
    clips = [p for p in files if p.is_file() and p.name != MARKER_FILE]
    assert all(p.suffix == ".epaclip" and not p.name.startswith(".") for p in clips), files
    hub = hub_public(data)
    infos = [env.verify_clip(p.read_bytes(), hub) for p in clips]
    assert sorted(i.header.seq for i in infos) == list(range(total))  # each once, none missing
    assert env.check_chain(infos) == []
    for p, info in zip(clips, infos, strict=True):
        out = io.BytesIO()
        with open(p, "rb") as f:
            env.open_clip(f, OWNER, out.write, hub)
        assert out.getvalue() == (b"clip %d " % info.header.seq) * 40000
    ob = Outbox(data, FakeClock())
    assert ob.pending_count() == 0
    assert not [p for p in (data / "outbox" / "clips").rglob("*") if p.is_file()]
