"""Storage faults that lost clips, hung the hub or failed silently, each reproduced for real.

Small tmpfs mounts stand in for a full disk, bind mounts for a NAS that is mounted and then
is not, child processes for a second hub process and for SIGKILL/SIGTERM. The tests run as
root, as CI does. Every test ends with the same questions: is every sealed clip delivered or
still queued (none lost), did none get quarantined or audited as tamper by mistake, and did
no plaintext reach storage?
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clip_helpers import Mount, device_from, fill, moving_image, plaintext_hits, redacted, sink_dir

from agent.cli.main import main
from agent.clock import FakeClock
from agent.core.datatypes import Event
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import HubIdentity, hub_public, init_hub
from agent.errors import DataDirBusy, ExitCode, MqttError, SinkError
from agent.mqtt.outbox import Outbox as EventOutbox
from agent.storage import lock
from agent.storage.outbox import PART_SUFFIX, Outbox
from agent.storage.queue import SqliteQueue
from agent.storage.sinks.clips import ClipSink
from agent.storage.sinks.upload import MARKER_FILE, DirectoryUploader, check_sink_dir

OWNER = device_from(2, "owner")
REPO = Path(__file__).resolve().parents[1]



# `mount` is the shared fixture in tests/conftest.py.


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


def seal_into(ob: Outbox, hub: HubIdentity, camera: str, payload: bytes, dests: list[str]) -> env.ClipInfo:
    stream_id = env.stream_id_for(hub, camera)
    seq, prev = ob.chain_head(stream_id.hex())
    cid = os.urandom(16)
    fh, part = ob.open_part(stream_id.hex(), cid.hex())
    w = env.ClipWriter(fh, hub, [OWNER.public], stream_id, seq, prev, clip_id=cid)
    w.write(payload)
    info = w.finish({"camera_id": camera})
    ob.commit(fh, part, info, camera, dests)
    return info


def delivered(root: Path, hub: HubIdentity) -> list[env.ClipInfo]:
    infos = [env.verify_clip(p.read_bytes(), hub.public) for p in sorted(root.rglob("*.epaclip"))]
    return sorted(infos, key=lambda i: i.header.seq)


# --- 1. a full sink is a delivery failure, never a verdict on the clip ------------------------


def test_full_sink_retries_and_never_quarantines(tmp_path: Path, mount: Mount) -> None:
    hub = init_hub(tmp_path / "data")
    nas = sink_dir(mount(tmp_path / "nas", size_kib=256))
    up = DirectoryUploader(nas, hub.public)
    clock, events = FakeClock(), EventLog()
    ob = Outbox(tmp_path / "data", clock, events, backoff_base_s=1.0, backoff_max_s=1.0)
    infos = [seal_into(ob, hub, "cam", os.urandom(60_000), [up.name]) for _ in range(8)]  # ~480 KiB > 256 KiB
    res = ob.drain({up.name: up})
    assert res.failed > 0 and res.rejected == 0 and res.uploaded + res.failed == 8
    assert "clip_rejected" not in events.kinds() and not (ob.quarantine_dir).exists()
    assert any("No space left" in str(e.details.get("error")) for e in events.events if e.kind == "upload_failed")
    assert not [p for p in nas.rglob("*") if p.name.endswith(".tmp")]  # no half-written copies
    # Space returns (the household moves old clips away): everything queued goes out intact.
    for p in nas.rglob("*.epaclip"):
        shutil.move(p, tmp_path / p.name)
    clock.advance(2)
    assert ob.drain({up.name: up}, force=True).remaining == 0
    got = {i.clip_id_hex for i in delivered(nas, hub)} | {p.stem.split("-")[1] for p in tmp_path.glob("*.epaclip")}
    assert got == {i.clip_id_hex for i in infos}


# --- 2. an unmounted NAS is never replaced by the local disk ----------------------------------


def test_unmounted_nas_keeps_clips_queued_until_it_is_back(tmp_path: Path, mount: Mount) -> None:
    hub = init_hub(tmp_path / "data")
    real = sink_dir(tmp_path / "nas-disk")  # the NAS's own storage, marked while mounted
    mnt = mount(tmp_path / "mnt", bind=real)
    up = DirectoryUploader(mnt, hub.public, require_mount=True)
    clock, events = FakeClock(), EventLog()
    ob = Outbox(tmp_path / "data", clock, events)
    first = seal_into(ob, hub, "cam", b"a" * 5000, [up.name])
    assert ob.drain({up.name: up}).uploaded == 1
    umount(mnt)  # the NAS goes away: `mnt` is an empty directory on the hub's disk again
    later = [seal_into(ob, hub, "cam", b"b" * 5000, [up.name]) for _ in range(3)]
    res = ob.drain({up.name: up}, force=True)
    assert res.uploaded == 0 and res.failed == 3 and res.remaining == 3
    assert list(mnt.iterdir()) == []  # nothing written into the bare mount point
    assert any("mount" in str(e.details["error"]) for e in events.events if e.kind == "upload_failed")
    mount(mnt, bind=real)  # remounted
    assert ob.drain({up.name: up}, force=True).remaining == 0
    assert [i.clip_id_hex for i in delivered(real, hub)] == [first.clip_id_hex, *(i.clip_id_hex for i in later)]


def test_directory_sink_needs_its_marker_and_never_creates_its_root(tmp_path: Path) -> None:
    hub = init_hub(tmp_path / "data")
    missing = tmp_path / "nas"
    up = DirectoryUploader(missing, hub.public)
    ob = Outbox(tmp_path / "data", FakeClock(), EventLog())
    seal_into(ob, hub, "cam", b"x" * 100, [up.name])
    assert ob.drain({up.name: up}).failed == 1
    assert not missing.exists()  # no `mkdir -p` of the sink's root
    missing.mkdir()  # an empty directory: could be an unmounted share
    with pytest.raises(SinkError, match="sink init"):
        check_sink_dir(missing, require_mount=False)
    assert ob.drain({up.name: up}, force=True).failed == 1 and list(missing.iterdir()) == []
    assert main(["sink", "init", str(missing)]) == 0
    assert (missing / MARKER_FILE).is_file()
    assert ob.drain({up.name: up}, force=True).remaining == 0
    with pytest.raises(SinkError, match="not a mount point"):
        check_sink_dir(missing, require_mount=True)
    assert main(["sink", "init", str(tmp_path / "nowhere")]) == ExitCode.ERROR


def test_doctor_fails_an_unmarked_sink_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clips").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{id: cam, source: v.mp4}]\nsinks: [{type: directory, path: clips}]\n")
    main(["doctor", "--config", str(cfg)])
    assert "[FAIL] sinks[0] marker" in capsys.readouterr().out
    assert main(["sink", "init", str(tmp_path / "clips")]) == 0
    capsys.readouterr()
    main(["doctor", "--config", str(cfg)])
    assert "[ok  ] sinks[0] marker" in capsys.readouterr().out


# --- 3. one process per data directory ---------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.clock import SystemClock
    from agent.storage.outbox import Outbox
    ob = Outbox(Path(sys.argv[1]), SystemClock())
    print("holding", flush=True)
    sys.stdin.read()
    """
)


def test_a_second_process_is_refused_and_deletes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    init_hub(data)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {data}\ncameras: [{{id: cam, source: v.mp4}}]\nsinks: []\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        # A segment the holder is "writing": no row yet. Recovery by anyone else would delete it.
        writing = data / "outbox" / "clips" / ("ab" * 16) / ("cd" * 16 + PART_SUFFIX)
        writing.parent.mkdir(parents=True)
        writing.write_bytes(b"ciphertext in progress")
        assert main(["outbox", "flush", "--config", str(cfg)]) == ExitCode.BUSY
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "outbox" in err
        assert main(["run", "--config", str(cfg)]) == ExitCode.BUSY
        assert writing.exists()
        assert main(["outbox", "status", "--config", str(cfg)]) == 0  # read-only next to the holder
        with pytest.raises(DataDirBusy):
            Outbox(data, FakeClock())
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait(10)
    assert main(["outbox", "flush", "--config", str(cfg)]) == 0
    assert not writing.exists()  # now recovery may clean up the unfinished segment
    assert not lock.held(data)


# --- 4. outbox bookkeeping that fails does not kill or hang the pipeline -----------------------


def test_rollback_after_a_failed_commit_keeps_the_original_error(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER);", synchronous="FULL")
    with pytest.raises(sqlite3.OperationalError, match="disk is full"), q.transaction() as db:
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("COMMIT")  # the transaction is over, as after a COMMIT that failed for real
        raise sqlite3.OperationalError("database or disk is full")
    q.execute("INSERT INTO t VALUES (2)")
    assert q.scalar("SELECT COUNT(*) FROM t") == 2


def test_a_full_outbox_database_is_a_sink_error_then_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = init_hub(tmp_path / "data")
    nas = sink_dir(tmp_path / "nas")
    clock, events = FakeClock(), EventLog()
    up = DirectoryUploader(nas, hub.public)
    ob = Outbox(tmp_path / "data", clock, events)
    sink = ClipSink(hub=hub, recipients=[OWNER.public], camera_id="cam", fps=10, segment_s=1.0, outbox=ob,
                    uploaders={up.name: up}, clock=clock, on_event=events)
    real_write = SqliteQueue.write
    full = threading.Event()

    def write(self: SqliteQueue, statements: Callable[[sqlite3.Connection], object]) -> object:
        if full.is_set():
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(self, statements)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteQueue, "write", write)
    for i in range(12):
        sink.write(redacted("cam", i, i / 10, moving_image(i)))
    full.set()
    with pytest.raises(SinkError, match="outbox database"):
        for i in range(12, 24):
            sink.write(redacted("cam", i, i / 10, moving_image(i)))
    assert not list((ob.clips_dir).rglob(f"*{PART_SUFFIX}"))  # the refused segment left nothing
    full.clear()  # space returns: the next clip commits and everything goes out
    for i in range(24, 40):
        sink.write(redacted("cam", i, i / 10, moving_image(i)))
    sink.close()
    infos = delivered(nas, hub)
    assert len(infos) >= 2 and env.check_chain(infos) == []  # no gap: the refused clip never took a seq
    assert plaintext_hits(nas) == []


class DyingSink:
    """A sink whose thread dies (an error that is not an Exception escapes it)."""

    name, plaintext = "dying", False

    def write(self, frame: object) -> None:
        raise SystemExit("sink thread killed")

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        return None

    def close(self) -> None:
        return None


def test_a_dead_sink_stage_withholds_and_never_blocks() -> None:
    from test_pipeline import ListSource, OkAnalyzer, make

    pipe, events, decisions = make([OkAnalyzer()], [DyingSink()])
    done = threading.Event()
    t = threading.Thread(target=lambda: (pipe.run(lambda: ListSource(40)), done.set()), daemon=True)
    t.start()
    assert done.wait(20), "the pipeline blocked on a dead sink stage"
    assert "sink_failed" in events.kinds()
    assert pipe.stats.frames_in == 40 and pipe.stats.reasons.get("sink_failed", 0) > 0
    # Nothing after the stage died was counted as released.
    assert all(d.action.value == "withhold" for d, _ in decisions[-5:])


def test_sigterm_stops_run_within_seconds(tmp_path: Path) -> None:
    """A live camera that never answers and a reconnect backoff: SIGTERM still ends `run` fast."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndetection: {{enabled: false}}\n"
                   "cameras: [{id: cam, source: 'rtsp://127.0.0.1:9/none'}]\nsinks: []\n")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "data" / "events.jsonl"
    deadline = time.monotonic() + 30
    while not (events.exists() and "source_error" in events.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert time.monotonic() - t0 < 8.0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


# --- 5. no silent event loss ------------------------------------------------------------------


def test_event_log_counts_what_a_full_disk_lost_and_resumes(tmp_path: Path, mount: Mount) -> None:
    disk = mount(tmp_path / "disk", size_kib=64)
    log_path = disk / "events.jsonl"
    seen: list[Event] = []
    events = EventLog(log_path)
    events.subscribe(seen.append)
    events(Event("info", None, "before", 1.0))
    filler = fill(disk)
    for i in range(300):  # more than the last partly used page of the file can take
        events(Event("withheld", "cam", f"while full {i}", 2.0 + i))
    filler.unlink()
    events(Event("info", None, "after", 900.0))
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]  # every line parses: none torn
    written = sum(1 for x in lines if x["message"].startswith("while full"))
    lost = 300 - written
    assert lost > 0
    assert [x["kind"] for x in lines][-2:] == ["events_lost", "info"] and lines[-2]["details"]["count"] == lost
    assert [e.kind for e in seen][-1] == "events_lost" and seen[-1].details["count"] == lost
    assert events.total == 302 + 1  # the events, plus the report of the loss


def test_mqtt_outbox_counts_events_it_could_not_queue(tmp_path: Path, mount: Mount) -> None:
    disk = mount(tmp_path / "disk", size_kib=256)
    ob = EventOutbox(disk / "outbox.sqlite", FakeClock())
    ob.put_event("p/events", "info", None, n=0)
    filler = fill(disk)
    lost = 0
    for i in range(200):  # until the database itself cannot grow
        try:
            ob.put_event("p/events", "withheld", "cam", n=i, pad="x" * 2000)
        except MqttError:
            lost += 1
            if lost == 5:
                break
    assert lost > 0
    filler.unlink()
    ob.put_event("p/events", "info", None, n=1)
    assert ob.recovered_loss == lost
    row = ob._q.rows("SELECT seq, body FROM outbox ORDER BY seq DESC LIMIT 1")[0]
    assert json.loads(ob._payload(row[0], row[1]))["dropped_total"] >= lost
    ob.close()


# --- 6. every path that delivers a clip records it -------------------------------------------


def test_outbox_flush_audits_a_clip_sealed_by_a_process_that_died(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hub = init_hub(data)
    nas = sink_dir(tmp_path / "nas")
    (tmp_path / "owner.key.pub").write_text(OWNER.public.encode() + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {data}\nrecipients: [owner.key.pub]\ncameras: [{{id: cam, source: v.mp4}}]\n"
                   f"sinks: [{{type: directory, path: {nas}, segment_s: 10}}]\n")
    up = DirectoryUploader(nas, hub.public)
    ob = Outbox(data, FakeClock())  # like a run killed right after the commit: nobody heard of it
    info = seal_into(ob, hub, "cam", b"z" * 3000, [up.name])
    ob.close()
    assert main(["outbox", "flush", "--config", str(cfg)]) == 0
    entries = [json.loads(x) for x in (data / "audit" / "log.jsonl").read_text().splitlines()]
    mine = [(e["kind"], e["fields"].get("clip_id")) for e in entries]
    assert ("clip_created", info.clip_id_hex) in mine and ("clip_uploaded", info.clip_id_hex) in mine
    assert main(["audit", "verify", "--data", str(data)]) == 0
    assert hub_public(data).key_id


# --- 7. memory is bounded -------------------------------------------------------------------------


def test_event_log_memory_is_bounded() -> None:
    events = EventLog(keep=100)
    for i in range(1000):
        events(Event("withheld" if i % 2 else "released", "cam", "x", float(i)))
    assert len(events.events) == 100 and events.total == 1000
    assert events.counts["withheld"] == 500 and events.kinds()[-1] == "withheld"


# --- also: a sink directory removed during a run is reported ------------------------------------


def test_removed_sink_directory_is_reported(tmp_path: Path) -> None:
    hub = init_hub(tmp_path / "data")
    nas = sink_dir(tmp_path / "nas")
    up = DirectoryUploader(nas, hub.public)
    events = EventLog()
    ob = Outbox(tmp_path / "data", FakeClock(), events)
    seal_into(ob, hub, "cam", b"q" * 100, [up.name])
    assert ob.drain({up.name: up}).uploaded == 1
    shutil.rmtree(nas)
    seal_into(ob, hub, "cam", b"r" * 100, [up.name])
    assert ob.drain({up.name: up}).failed == 1
    [ev] = [e for e in events.events if e.kind == "upload_failed"]
    assert "does not exist" in ev.details["error"]
    assert not nas.exists()


def test_clips_deleted_from_a_sink_are_found_by_the_index_and_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hub = init_hub(data)
    nas = sink_dir(tmp_path / "nas")
    up = DirectoryUploader(nas, hub.public)
    events = EventLog()
    ob = Outbox(data, FakeClock(), events)
    infos = [seal_into(ob, hub, "cam", b"v" * 200, [up.name]) for _ in range(3)]
    assert ob.drain({up.name: up}).uploaded == 3
    for p in nas.rglob("*.epaclip"):  # `rm -rf nas/*`: the marker (a dotfile) survives
        p.unlink()
    assert ob.check_placements({up.name: up}) == 3
    gone = [e for e in events.events if e.kind == "clip_vanished"]
    assert sorted(e.details["clip_id"] for e in gone) == sorted(i.clip_id_hex for i in infos)
    assert ob.check_placements({up.name: up}) == 0  # each reported once
    # A NAS that is merely unmounted says nothing about its clips: no false alarm.
    (nas / MARKER_FILE).unlink()
    seal_into(ob, hub, "cam", b"w" * 200, [up.name])
    assert ob.drain({up.name: up}, force=True).failed == 1
    assert len([e for e in events.events if e.kind == "clip_vanished"]) == 3
    from agent.access.audit import AuditLog, audit_dir, read_entries
    from agent.access.recorder import EventRecorder

    audit = AuditLog(audit_dir(data), FakeClock(), hub)
    for e in gone:
        EventRecorder(audit)(e)
    audit.close()
    entries, _ = read_entries(audit.path)
    assert [x.kind for x in entries][-3:] == ["clip_vanished"] * 3
