"""Retention and deletion that is real: expiry removes a clip from the outbox, a real directory
sink and S3 (moto's server over HTTP), the hub's index and the queued MQTT events, records it
first in the audit log, finishes later when a destination is unreachable, and `verify` tells
DELETED clips from MISSING ones.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from clip_helpers import device_from, free_port, sink_dir

from agent.access.audit import AuditLog, audit_dir, read_entries
from agent.cli.main import main
from agent.clock import FakeClock, SystemClock
from agent.config import parse_config_text
from agent.crypto import envelope as env
from agent.crypto.keys import HubIdentity, init_hub
from agent.errors import ConfigError, ExitCode
from agent.mqtt.outbox import Outbox as EventOutbox
from agent.storage.deletion import delete_clips, expire, find_clips, pending_deletions
from agent.storage.gaps import explain_gaps
from agent.storage.outbox import Outbox
from agent.storage.sinks.upload import DirectoryUploader, S3Uploader

OWNER = device_from(2, "owner")
AK, SK = "AKIDTESTEPA", "secret-test-key"
DAY = 86_400.0
S3_NAME = "s3:household"


# `s3_endpoint` (a moto server over real HTTP) is the shared fixture in tests/conftest.py.


def _s3(endpoint: str, bucket: str, hub: HubIdentity) -> S3Uploader:
    return S3Uploader(bucket, hub.public, endpoint=endpoint, prefix="hub1/", access_key_id=AK,
                      secret_access_key=SK, name=S3_NAME, timeout_s=2.0)


def _keys(endpoint: str, bucket: str) -> set[str]:
    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=AK,
                     aws_secret_access_key=SK)
    return {o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _bucket(endpoint: str, name: str) -> str:
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=AK,
                 aws_secret_access_key=SK).create_bucket(Bucket=name)
    return name


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.hub = init_hub(self.data)
        self.clock = FakeClock()
        self.nas = sink_dir(tmp_path / "nas")
        self.dir_up = DirectoryUploader(self.nas, self.hub.public)
        self.ob = Outbox(self.data, self.clock)
        self.audit = AuditLog(audit_dir(self.data), self.clock, self.hub)
        self.events = EventOutbox(self.data / "mqtt" / "outbox.sqlite", self.clock)

    def seal(self, camera: str, dests: list[str], end_s: float) -> env.ClipInfo:
        stream_id = env.stream_id_for(self.hub, camera)
        seq, prev = self.ob.chain_head(stream_id.hex())
        cid = os.urandom(16)
        fh, part = self.ob.open_part(stream_id.hex(), cid.hex())
        w = env.ClipWriter(fh, self.hub, [OWNER.public], stream_id, seq, prev, clip_id=cid)
        w.write(b"v" * 500)
        info = w.finish({"camera_id": camera})
        self.ob.commit(fh, part, info, camera, dests, start_wall_s=end_s - 10, end_wall_s=end_s)
        self.events.put_event("P/events", "clip_sealed", camera, clip_id=info.clip_id_hex, seq=info.header.seq)
        return info

    def entries(self, *kinds: str) -> list[Any]:
        entries, problems = read_entries(self.audit.path)
        assert problems == []
        return [e for e in entries if e.kind in kinds]

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        db = sqlite3.connect(self.data / "outbox" / "outbox.db")
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def close(self) -> None:
        self.ob.close()
        self.audit.close()
        self.events.close()


@pytest.fixture
def hub_env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()


def _obj(info: env.ClipInfo) -> str:
    from agent.storage.outbox import object_name_for

    return object_name_for(info)


def test_expiry_deletes_everywhere_and_writes_one_entry(hub_env: Env, s3_endpoint: str) -> None:
    e = hub_env
    bucket = _bucket(s3_endpoint, "expiry-all")
    s3 = _s3(s3_endpoint, bucket, e.hub)
    ups = {e.dir_up.name: e.dir_up, s3.name: s3}
    now = e.clock.wall()
    old = [e.seal("porch", list(ups), now - 10 * DAY), e.seal("porch", list(ups), now - 9 * DAY)]
    keep = e.seal("porch", list(ups), now - 1 * DAY)
    bedroom = e.seal("bedroom", list(ups), now - 3 * DAY)  # its own, shorter period
    assert e.ob.drain(ups).uploaded == 8
    queued = e.seal("porch", [e.dir_up.name], now - 8 * DAY)  # never delivered: only in the outbox
    gone = [*old, bedroom, queued]
    assert len(_keys(s3_endpoint, bucket)) == 4 and e.events.pending() == 5

    res = expire(e.ob, ups, lambda cam: 2 if cam == "bedroom" else 7, now, e.audit.append, events=e.events)

    assert {c.clip_id for c in res.expired} == {i.clip_id_hex for i in gone}
    rep = res.report
    assert rep is not None and not rep.pending and rep.events_removed == 4
    by_id = {c.clip_id: c for c in rep.clips}
    assert {p.label: p.outcome for p in by_id[old[0].clip_id_hex].places} == \
        {"hub": "absent", e.dir_up.name: "deleted", S3_NAME: "deleted"}  # delivered: the outbox had let it go
    assert {p.label: p.outcome for p in by_id[queued.clip_id_hex].places} == {"hub": "deleted", e.dir_up.name: "absent"}
    assert by_id[bedroom.clip_id_hex].camera_id == "bedroom" and by_id[bedroom.clip_id_hex].seq == 0
    # Destinations: only the kept clip is left, in the directory and in the bucket.
    assert sorted(p.relative_to(e.nas).as_posix() for p in e.nas.rglob("*.epaclip")) == [_obj(keep)]
    assert _keys(s3_endpoint, bucket) == {"hub1/" + _obj(keep)}
    assert list((e.data / "outbox" / "clips").rglob("*.epaclip")) == []
    # Derived data: index rows, placements, queue rows, queued events; the chain head stays.
    assert [c.clip_id for c in e.ob.list_clips()] == [keep.clip_id_hex]
    for table in ("clip_index", "placements", "deliveries", "clips", "pending_deletions"):
        ids = {r[0] for r in e.rows(f"SELECT clip_id FROM {table}")}
        assert not ids & {i.clip_id_hex for i in gone}, table
    assert e.events.pending() == 1
    stream = env.stream_id_for(e.hub, "porch").hex()
    assert e.ob.chain_head(stream)[0] == 4  # the next porch clip still chains on
    # One `clips_expired` entry (before anything was deleted) and the outcome.
    [planned] = e.entries("clips_expired")
    f = planned.fields
    assert f["count"] == 4 and f["per_camera"] == {"porch": 3, "bedroom": 1} and f["by"] == "retention"
    assert {(c["clip_id"], c["stream"], c["seq"]) for c in f["clips"]} == \
        {(i.clip_id_hex, i.header.stream_id.hex(), i.header.seq) for i in gone}
    [done] = e.entries("clips_deleted")
    assert done.seq > planned.seq and done.fields["phase"] == "done" and done.fields["failed"] == 0
    assert "v" * 20 not in str(f) + str(done.fields)  # ids and counts, never content
    # Nothing more to do: a second pass writes nothing.
    again = expire(e.ob, ups, lambda cam: 7, now, e.audit.append, events=e.events)
    assert again.report is None and len(e.entries("clips_expired", "clips_deleted")) == 2


def test_unreachable_s3_leaves_a_pending_deletion_that_completes_later(hub_env: Env, s3_endpoint: str) -> None:
    e = hub_env
    bucket = _bucket(s3_endpoint, "expiry-later")
    s3 = _s3(s3_endpoint, bucket, e.hub)
    now = e.clock.wall()
    infos = [e.seal("porch", [e.dir_up.name, S3_NAME], now - 30 * DAY) for _ in range(2)]
    assert e.ob.drain({e.dir_up.name: e.dir_up, S3_NAME: s3}).uploaded == 4
    dead = S3Uploader(bucket, e.hub.public, endpoint=f"http://127.0.0.1:{free_port()}", prefix="hub1/",
                      access_key_id=AK, secret_access_key=SK, name=S3_NAME, timeout_s=1.0)

    res = expire(e.ob, {e.dir_up.name: e.dir_up, S3_NAME: dead}, lambda cam: 7, now, e.audit.append)

    rep = res.report
    assert rep is not None and len(rep.pending) == 2 and rep.count("failed") == 2
    fails = [p for c in rep.clips for p in c.places if p.outcome == "failed"]
    assert all(p.dest == S3_NAME and p.error for p in fails)
    assert "earlier in this pass" in (fails[1].error or "")  # a dead destination is tried once per pass
    assert list(e.nas.rglob("*.epaclip")) == [] and e.ob.list_clips() == []  # gone from the hub and the NAS
    assert len(_keys(s3_endpoint, bucket)) == 2  # still in the bucket ...
    assert sorted(p[0] for p in pending_deletions(e.ob)) == sorted(i.clip_id_hex for i in infos)
    deleted, pending = rep.receipt_entries()
    assert deleted == [] and all(p["places"] == [S3_NAME] for p in pending)
    # ... until a later pass reaches it (a fresh outbox, as after a restart).
    e.ob.close()
    e.ob = Outbox(e.data, e.clock)
    later = expire(e.ob, {e.dir_up.name: e.dir_up, S3_NAME: s3}, lambda cam: 7, now + 600, e.audit.append)
    assert later.report is None and later.retried is not None
    assert later.retried.count("deleted") == 2 and not later.retried.pending
    assert _keys(s3_endpoint, bucket) == set() and pending_deletions(e.ob) == []
    [retried] = [x for x in e.entries("clips_deleted") if x.fields["phase"] == "retried"]
    assert retried.fields["deleted"] == 2


def test_owner_deletion_finds_by_camera_and_window_and_unknown_ids(hub_env: Env) -> None:
    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    now = e.clock.wall()
    a = e.seal("porch", list(ups), now - 300)
    b = e.seal("porch", list(ups), now - 200)
    c = e.seal("hall", list(ups), now - 200)
    e.ob.drain(ups)
    found = find_clips(e.ob, camera="porch", from_s=now - 250, to_s=now)
    assert [x.clip_id for x in found] == [b.clip_id_hex]
    assert {x.clip_id for x in find_clips(e.ob, clip_ids=[a.clip_id_hex, c.clip_id_hex])} == \
        {a.clip_id_hex, c.clip_id_hex}
    calls: list[tuple[str, dict[str, Any]]] = []

    def audit(kind: str, fields: Any) -> None:
        # Record, then act: when the plan is recorded, nothing is deleted yet.
        if fields.get("phase") == "planned":
            assert len(list(e.nas.rglob("*.epaclip"))) == 3
        calls.append((kind, dict(fields)))

    rep = delete_clips(e.ob, ups, [b.clip_id_hex, "f" * 32, "../etc"], reason="owner", by="dev1234", now_s=now,
                       audit=audit, events=e.events)
    assert [k for k, _ in calls] == ["clips_deleted", "clips_deleted"]
    assert calls[0][1]["by"] == "dev1234" and calls[0][1]["reason"] == "owner"
    assert set(rep.unknown) == {"../etc", "f" * 32} and [x.clip_id for x in rep.clips] == [b.clip_id_hex]
    assert len(list(e.nas.rglob("*.epaclip"))) == 2
    assert e.ob.drain(ups, force=True).uploaded == 0  # never uploaded again


def test_audit_failure_deletes_nothing(hub_env: Env) -> None:
    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    info = e.seal("porch", list(ups), e.clock.wall() - 30 * DAY)
    e.ob.drain(ups)

    def broken(kind: str, fields: Any) -> None:
        from agent.errors import AuditError

        raise AuditError("disk full")

    with pytest.raises(Exception, match="disk full"):
        expire(e.ob, ups, lambda cam: 7, e.clock.wall(), broken)
    assert [c.clip_id for c in e.ob.list_clips()] == [info.clip_id_hex]
    assert len(list(e.nas.rglob("*.epaclip"))) == 1


def test_unmounted_nas_is_a_failure_not_already_absent(hub_env: Env, tmp_path: Path) -> None:
    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    e.seal("porch", list(ups), e.clock.wall() - 30 * DAY)
    e.ob.drain(ups)
    (e.nas / ".epa-sink").rename(tmp_path / "marker")  # the share is not there: an empty mount point
    rep = expire(e.ob, ups, lambda cam: 7, e.clock.wall(), e.audit.append).report
    assert rep is not None and rep.count("failed") == 1 and rep.count("absent") == 1  # the hub's copy: absent
    (tmp_path / "marker").rename(e.nas / ".epa-sink")
    later = expire(e.ob, ups, lambda cam: 7, e.clock.wall(), e.audit.append)
    assert later.retried is not None and later.retried.count("deleted") == 1
    assert list(e.nas.rglob("*.epaclip")) == []


def test_verify_says_deleted_for_recorded_deletions_and_missing_otherwise(
    hub_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    now = e.clock.wall()
    # The audit log records chain starts (as the event recorder does in `run`).
    infos = [e.seal("porch", list(ups), now - (10 - i) * DAY) for i in range(6)]
    e.audit.append("clip_stream_start", {"stream": infos[0].header.stream_id.hex(), "clip_id": infos[0].clip_id_hex,
                                         "seq": 0})
    e.ob.drain(ups)
    # Expiry takes clips 0 and 1 (older than 8.5 days); the owner deletes clip 3.
    expire(e.ob, ups, lambda cam: 8, now - 0.5 * DAY, e.audit.append)
    delete_clips(e.ob, ups, [infos[3].clip_id_hex], reason="owner", by="devkey42", now_s=now, audit=e.audit.append)
    log = str(e.audit.path)
    hub_pub = str(e.data)

    assert main(["verify", str(e.nas), "--hub", hub_pub, "--audit-log", log]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "clips 0..1 DELETED (expired by retention" in out
    assert "clip 3 DELETED (owner by devkey42" in out
    assert "3 clips OK; chain intact over 3 clips; 3 DELETED clip(s) explained by the audit log" in out

    # A clip removed any other way is MISSING, and only that fails.
    (e.nas / _obj(infos[4])).unlink()
    assert main(["verify", str(e.nas), "--hub", hub_pub, "--audit-log", log]) == ExitCode.TAMPERED_CLIP
    cap = capsys.readouterr()
    assert "clip 4 MISSING (no deletion recorded in the audit log)" in cap.err
    assert "clip 3 DELETED" in cap.out and "Traceback" not in cap.err

    # Without the log every gap is a problem, as before.
    assert main(["verify", str(e.nas), "--hub", hub_pub]) == ExitCode.TAMPERED_CLIP
    capsys.readouterr()


def test_explain_gaps_pure() -> None:
    from dataclasses import dataclass

    @dataclass
    class E:
        seq: int
        kind: str
        wall_ms: int
        fields: dict[str, Any]

    class H:
        def __init__(self, seq: int) -> None:
            self.stream_id, self.seq = b"\x01" * 16, seq

    class I:  # noqa: E742 - a stand-in ClipInfo
        def __init__(self, seq: int) -> None:
            self.header, self.clip_id_hex = H(seq), f"{seq:032x}"

    sid = (b"\x01" * 16).hex()
    entries = [
        E(1, "clip_stream_start", 0, {"stream": sid, "clip_id": f"{0:032x}"}),
        E(2, "clips_expired", 5000, {"phase": "planned", "reason": "expired", "by": "retention",
                                    "clips": [{"clip_id": f"{s:032x}", "stream": sid, "seq": s} for s in (0, 1)]}),
        # An outcome entry is not a record of intent; a planned one is.
        E(3, "clips_deleted", 6000, {"phase": "done", "clips": [{"clip_id": "x", "stream": sid, "seq": 5}]}),
        E(4, "clips_deleted", 7000, {"phase": "planned", "reason": "owner", "by": "d",
                                    "clips": [{"clip_id": f"{9:032x}", "stream": sid, "seq": 9}]}),
    ]
    rep = explain_gaps([I(3), I(4), I(6)], entries)  # type: ignore[list-item]
    got = [(g.first_seq, g.last_seq, g.status) for g in rep.gaps]
    assert got == [(0, 1, "DELETED"), (2, 2, "MISSING"), (5, 5, "MISSING"), (9, 9, "DELETED")]
    assert rep.unstarted == () and [g.first_seq for g in rep.missing] == [2, 5]


def _config(tmp_path: Path, body: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: data\ncameras:\n  - id: porch\n    source: v.mp4\n    retention_days: 3\n"
                   "  - id: hall\n    source: v.mp4\n"
                   f"sinks:\n  - type: directory\n    path: nas\nretention:\n  days: 30\n{body}")
    return cfg


def test_clips_expire_cli_dry_run_then_real(hub_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    import time

    now = time.time()  # the command uses the system clock
    old = e.seal("porch", list(ups), now - 5 * DAY)
    young = e.seal("hall", list(ups), now - 5 * DAY)  # hall keeps 30 days
    e.ob.drain(ups)
    e.close()
    cfg = _config(tmp_path)
    assert main(["clips", "expire", "--config", str(cfg), "--dry-run"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "porch: 3 day(s), hall: 30 day(s)" in out and f"would delete {old.clip_id_hex}" in out
    assert young.clip_id_hex not in out and len(list(e.nas.rglob("*.epaclip"))) == 2
    assert main(["clips", "expire", "--config", str(cfg)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"deleted {old.clip_id_hex}" in out and "1 clip(s) expired: 1 copies deleted" in out
    assert [p.name for p in e.nas.rglob("*.epaclip")] == [_obj(young).split("/")[1]]
    entries, _ = read_entries(e.audit.path)
    assert [x.kind for x in entries if x.kind.startswith("clips_")] == ["clips_expired", "clips_deleted"]
    e.ob = Outbox(e.data, e.clock)  # reopened for the fixture's close
    e.audit = AuditLog(audit_dir(e.data), e.clock, e.hub)
    e.events = EventOutbox(e.data / "mqtt" / "outbox.sqlite", e.clock)


def test_clips_expire_beside_a_running_hub_says_busy(hub_env: Env, tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = _config(tmp_path)
    # This process holds the data-dir lock (the fixture's outbox), as a running `run` would.
    p = subprocess.run([sys.executable, "-m", "agent", "clips", "expire", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == ExitCode.BUSY, p.stderr
    assert "error:" in p.stderr and "Traceback" not in p.stderr


def test_retention_config_validation_names_the_key_and_line() -> None:
    base = "cameras:\n  - id: porch\n    source: v.mp4\n"
    cfg = parse_config_text(base)
    assert cfg.retention.days is None and cfg.retention_days_for("porch") is None  # keeps for ever
    for bad, where in (
        ("retention:\n  days: 0\n", "retention.days: Input should be greater than or equal to 1 (config.yaml:5)"),
        ("retention:\n  days: true\n", "retention.days: Input should be a valid integer (config.yaml:5)"),
        ("retention:\n  days: 30\n  dayz: 3\n", "retention.dayz: unknown key 'dayz' (config.yaml:6)"),
    ):
        with pytest.raises(ConfigError) as ei:
            parse_config_text(base + bad)
        assert where in str(ei.value)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.retention_days: .*\(config.yaml:4\)"):
        parse_config_text(base + "    retention_days: -1\n")
    cfg = parse_config_text(base + "    retention_days: 2\n  - id: hall\n    source: v.mp4\nretention:\n  days: 14\n")
    assert (cfg.retention_days_for("porch"), cfg.retention_days_for("hall"), cfg.retention_days_for("gone")) == \
        (2, 14, 14)


def test_a_clip_deleted_during_a_drain_is_not_uploaded_again(hub_env: Env) -> None:
    e = hub_env
    first = e.seal("porch", [e.dir_up.name], e.clock.wall())
    second = e.seal("porch", [e.dir_up.name], e.clock.wall())

    class DeletingUploader:
        """Uploads the first clip and, meanwhile, an owner deletes the second (already read by the drain)."""

        name = e.dir_up.name

        def put(self, object_name: str, path: Path) -> None:
            e.dir_up.put(object_name, path)
            if first.clip_id_hex in object_name:
                delete_clips(e.ob, {self.name: e.dir_up}, [second.clip_id_hex], reason="owner", by="dev",
                             now_s=e.clock.wall(), audit=e.audit.append)

    res = e.ob.drain({e.dir_up.name: DeletingUploader()})
    assert res.uploaded == 1 and res.remaining == 0
    assert [p.relative_to(e.nas).as_posix() for p in e.nas.rglob("*.epaclip")] == [_obj(first)]


def test_s3_delete_is_idempotent(hub_env: Env, s3_endpoint: str) -> None:
    e = hub_env
    s3 = _s3(s3_endpoint, _bucket(s3_endpoint, "idempotent"), e.hub)
    info = e.seal("porch", [S3_NAME], e.clock.wall())
    assert e.ob.drain({S3_NAME: s3}).uploaded == 1
    assert s3.delete(_obj(info)) is True and s3.delete(_obj(info)) is False
    with pytest.raises(Exception, match="unexpected object name"):
        s3.delete("../../etc/passwd")


def test_expiry_ticker_runs_at_start(hub_env: Env, tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.storage.retention import ExpiryTicker

    e = hub_env
    ups = {e.dir_up.name: e.dir_up}
    import time

    e.seal("porch", list(ups), time.time() - 5 * DAY)
    e.ob.drain(ups)
    loaded = load_config(_config(tmp_path))
    done: list[str] = []

    def audit(kind: str, fields: Any) -> None:
        e.audit.append(kind, fields)
        done.append(kind)

    ticker = ExpiryTicker.start_for(loaded, SystemClock(), audit, every_s=3600)
    assert ticker is not None
    deadline = time.monotonic() + 20
    while "clips_deleted" not in done and time.monotonic() < deadline:
        time.sleep(0.02)
    ticker.stop()
    assert done == ["clips_expired", "clips_deleted"] and list(e.nas.rglob("*.epaclip")) == []
    assert ExpiryTicker.start_for(loaded, e.clock, None) is None  # no hub identity: nothing to expire


def test_hub_only_eviction_keeps_what_already_reached_a_destination(tmp_path: Path) -> None:
    """A full hub disk evicts the hub's own copy only: a clip delivered to the NAS but still
    queued for a second, unreachable destination stays on the NAS and in the index."""
    e = Env(tmp_path)
    gone = DirectoryUploader(tmp_path / "not-mounted", e.hub.public, name="directory:second")
    try:
        info = e.seal("porch", [e.dir_up.name, gone.name], 1000.0)
        e.ob.drain({e.dir_up.name: e.dir_up, gone.name: gone})
        assert list(e.nas.rglob("*.epaclip"))
        delete_clips(e.ob, {e.dir_up.name: e.dir_up, gone.name: gone}, [info.clip_id_hex], reason="evicted",
                     by="full-disk", now_s=2000.0, audit=e.audit.append, hub_only=True)
        assert list(e.nas.rglob("*.epaclip"))  # the delivered copy is kept
        assert info.clip_id_hex in {c.clip_id for c in e.ob.list_clips()}
        assert not list((e.data / "outbox").rglob(f"{info.clip_id_hex}.epaclip"))  # the hub's copy went
        assert e.entries("clips_evicted")
    finally:
        e.close()
