"""The hub's own disk fills up: the oldest queued ciphertext goes first (audited), never plaintext;
when nothing can be freed, frames are withheld with one event and recording resumes on its own.

All on real filesystems, as root (as CI runs): a small tmpfs is the data directory, and the
outbox's clips directory is bind-mounted read-only for the read-only case. The sink's destination
is unreachable throughout, so clips pile up in the outbox.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from clip_helpers import Mount, device_from, fill, redacted

from agent.access.audit import AuditLog, audit_dir, read_entries
from agent.access.recorder import EventRecorder
from agent.clock import FakeClock
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import HubIdentity, init_hub
from agent.storage.outbox import PART_SUFFIX, Outbox
from agent.storage.sinks.clips import ClipSink
from agent.storage.sinks.upload import DirectoryUploader
from agent.storage.space import MIB, RECHECK_S, STORAGE_FULL, STORAGE_READ_ONLY

OWNER = device_from(2, "owner")
# Signatures of plaintext media long enough that megabytes of ciphertext never match by chance.
PLAINTEXT = (b"ftypiso", b"ftypmp4", b"\xff\xd8\xff\xe0\x00\x10JFIF")



# `mount` is the shared fixture in tests/conftest.py.


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode},bind", str(path)], check=True, capture_output=True)


class Hub:
    """A clip sink on `data` with an audit log there, a destination that is never reachable, and a
    `step` that feeds it one frame the way the pipeline does (withheld while it holds)."""

    def __init__(self, tmp_path: Path, data: Path, *, min_free_bytes: int, width_px: int = 160) -> None:
        self.data = data
        self.hub: HubIdentity = init_hub(data)
        self.clock = FakeClock()
        self.events = EventLog()
        self.audit = AuditLog(audit_dir(data), self.clock, self.hub)
        self.events.subscribe(EventRecorder(self.audit))
        up = DirectoryUploader(tmp_path / "nas-that-is-not-there", self.hub.public)
        self.outbox = Outbox(data, self.clock, self.events)
        self.sink = ClipSink(hub=self.hub, recipients=[OWNER.public], camera_id="cam", fps=10, segment_s=1.0,
                             outbox=self.outbox, uploaders={up.name: up}, clock=self.clock, on_event=self.events,
                             min_free_bytes=min_free_bytes, audit=self.audit.append)
        self.i = 0
        self.rng = np.random.default_rng(7)
        self.width_px = width_px
        self.withheld: list[str] = []

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            t = self.i / 10
            hold = self.sink.hold_reason()
            if hold is None:
                w = self.width_px
                img = self.rng.integers(0, 256, (w * 3 // 4, w, 3), dtype=np.uint8)  # noise: big clips
                self.sink.write(redacted("cam", self.i, t, img))
            else:
                self.withheld.append(hold)
                self.sink.withheld("cam", self.i, t)
            self.i += 1
            self.clock.advance(0.1)

    def kinds(self, kind: str) -> list[dict[str, object]]:
        return [dict(e.details) for e in self.events.events if e.kind == kind]

    def audit_entries(self, kind: str) -> list[dict[str, object]]:
        entries, errors = read_entries(self.audit.path)
        assert errors == []
        return [dict(e.fields) for e in entries if e.kind == kind]

    def held(self) -> list[env.ClipInfo]:
        """The clips in the outbox, each verified and opened by its recipient, by seq."""
        infos = []
        for p in self.outbox.clips_dir.rglob("*.epaclip"):
            data = p.read_bytes()
            infos.append(env.verify_clip(data, self.hub.public))
            env.open_clip_bytes(data, OWNER, self.hub.public)
        return sorted(infos, key=lambda i: i.header.seq)

    def parts(self) -> list[Path]:
        return list(self.outbox.clips_dir.rglob(f"*{PART_SUFFIX}"))


def plaintext_hits(root: Path) -> list[str]:
    return [f"{p}: {m!r}" for p in root.rglob("*") if p.is_file() for m in PLAINTEXT if m in p.read_bytes()]


def evicted_seqs(h: Hub) -> list[int]:
    return [int(s) for ev in h.kinds("clips_evicted") for s in ev["seqs"]]  # type: ignore[attr-defined]


def test_full_disk_evicts_oldest_then_withholds_then_resumes(tmp_path: Path, mount: Mount,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    data = mount(tmp_path / "data", size_kib=8192)
    h = Hub(tmp_path, data, min_free_bytes=4 * MIB)  # keep 4 of 8 MiB free: a few MiB of clips fit
    h.step(300)  # 30 one-second segments of ~165 KB: far more than the disk holds
    assert h.kinds(STORAGE_FULL) == [] and h.withheld == []
    # The oldest went first: the evicted seqs are exactly 0..k-1, in order, and the rest is intact.
    gone = evicted_seqs(h)
    assert gone and gone == list(range(len(gone)))
    infos = h.held()
    seqs = [i.header.seq for i in infos]
    assert seqs == list(range(len(gone), len(gone) + len(seqs))) and len(seqs) >= 3
    assert env.check_chain(infos[1:]) == []  # the kept ones still chain (the head is explained below)
    # Audited first, by the one deletion executor, and gone from the index too.
    planned = h.audit_entries("clips_evicted")
    assert planned and all(e["phase"] == "planned" and e["reason"] == "evicted" and e["by"] == "full-disk"
                           for e in planned)
    assert sorted(int(c["seq"]) for e in planned for c in e["clips"]) == gone  # type: ignore[attr-defined]
    assert {c.seq for c in h.outbox.list_clips()} == set(seqs)
    # `verify --audit-log` explains the whole gap before the kept clips as DELETED, none MISSING.
    assert [q for a, b in env_gaps(h, infos) for q in range(a, b + 1)] == gone
    # Evicting kept the floor: at least 4 MiB free, and nothing plaintext anywhere.
    st = os.statvfs(data)
    assert st.f_bavail * st.f_frsize >= 4 * MIB
    assert plaintext_hits(data) == [] and len(h.parts()) == 1  # only the segment being written

    # The disk fills with something else: evicting every clip would not make room, so none is
    # evicted; the open segment is dropped and the camera is held, with one event.
    filler = fill(data)
    h.step(60)
    assert h.sink.hold_reason() == STORAGE_FULL
    assert len(h.kinds(STORAGE_FULL)) == 1 and len(h.withheld) > 40 and set(h.withheld) == {STORAGE_FULL}
    assert evicted_seqs(h) == gone and [i.header.seq for i in h.held()] == seqs
    assert not h.parts()

    # Space returns: recording resumes by itself and the next clip chains on.
    filler.unlink()
    h.clock.advance(RECHECK_S)
    before = len(h.sink.committed)
    h.step(25)
    assert len(h.kinds("storage_recovered")) == 1 and h.sink.hold_reason() is None
    assert len(h.sink.committed) > before
    h.sink.withheld("cam", h.i, h.i / 10 + 5)  # seal the open segment
    after = h.held()
    assert after[-1].header.seq > seqs[-1] and env.check_chain(after[1:]) == []
    assert plaintext_hits(data) == [] and not h.parts()
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere


def env_gaps(h: Hub, infos: list[env.ClipInfo]) -> list[tuple[int, int]]:
    """The chain gaps the audit log explains as deleted (`verify --audit-log`)."""
    from agent.storage.gaps import explain_gaps

    entries, _ = read_entries(h.audit.path)
    report = explain_gaps(infos, entries)
    assert not report.missing
    return [(g.first_seq, g.last_seq) for g in report.deleted]


def test_a_write_that_hits_enospc_evicts_and_retries(tmp_path: Path, mount: Mount) -> None:
    data = mount(tmp_path / "data", size_kib=6144)
    h = Hub(tmp_path, data, min_free_bytes=0, width_px=80)  # no floor: only the small reserve is kept
    h.step(600)  # small clips (~48 KB): some 3 MB
    n_small = len(h.sink.committed)
    # Something else takes the disk down to 400 KB free, and segments grow to ~560 KB: the next
    # one fails for lack of space halfway; the oldest clips make room and it is tried again.
    free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
    with open(data / "other", "wb") as f:
        f.write(b"\0" * (free - 400 * 1024))
    h.width_px = 320
    h.step(60)
    h.sink.withheld("cam", h.i, h.i / 10 + 5)  # seal the open segment
    triggers = [e["trigger"] for e in h.audit_entries("clips_evicted")]
    assert "no_space" in triggers
    gone = evicted_seqs(h)
    assert gone == list(range(len(gone)))
    assert len(h.sink.committed) >= n_small + 3  # large clips commit after making room
    assert h.kinds(STORAGE_FULL) == [] and not h.parts()
    infos = h.held()
    assert [i.header.seq for i in infos] == list(range(infos[0].header.seq, infos[-1].header.seq + 1))
    assert infos[-1].size_bytes > 400 * 1024
    assert plaintext_hits(data) == []


class Unclosed:
    """The clip sink as the pipeline sees it, left open when the pipeline ends (the test goes on)."""

    def __init__(self, sink: ClipSink) -> None:
        self.sink, self.name, self.plaintext = sink, sink.name, False

    def write(self, frame: object) -> None:
        self.sink.write(frame)  # type: ignore[arg-type]

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        self.sink.withheld(camera_id, index, t_s)

    def hold_reason(self) -> str | None:
        return self.sink.hold_reason()

    def close(self) -> None:
        return None


def test_read_only_outbox_withholds_then_resumes(tmp_path: Path, mount: Mount,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from test_pipeline import ListSource, OkAnalyzer, make

    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    h = Hub(tmp_path, data, min_free_bytes=0)
    h.step(15)
    h.sink.withheld("cam", 99, 5.0)  # the open segment is sealed: nothing is open for writing
    first = h.held()
    assert len(first) == 2 and not h.parts()
    clips = mount(h.outbox.clips_dir, bind=h.outbox.clips_dir)
    remount(clips, "ro")
    h.step(30)
    assert h.sink.hold_reason() == STORAGE_READ_ONLY and set(h.withheld) == {STORAGE_READ_ONLY}
    [ev] = h.kinds(STORAGE_READ_ONLY)
    assert "Read-only file system" in str(ev["error"])
    # Through the pipeline: every frame is withheld with the reason, and nothing crashes.
    pipe, pipe_events, decisions = make([OkAnalyzer()], [Unclosed(h.sink)], clock=h.clock)
    pipe.run(lambda: ListSource(20))
    assert all(d.reasons == (STORAGE_READ_ONLY,) for d, _ in decisions)
    assert pipe_events.kinds().count("withheld") == 1 and "sink_error" not in pipe_events.kinds()
    # Writable again: recording resumes on its own.
    remount(clips, "rw")
    h.clock.advance(RECHECK_S)
    h.step(25)
    assert len(h.kinds("storage_recovered")) == 1 and h.sink.hold_reason() is None
    h.sink.withheld("cam", h.i, h.i / 10 + 5)  # seal the open segment
    assert len(h.held()) > len(first) and not h.parts()
    assert not [r for r in caplog.records if r.exc_info]
