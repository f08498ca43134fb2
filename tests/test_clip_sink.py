"""The encrypted clip sink end to end: segments, chain, metadata, no plaintext on disk, CLI tools."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from clip_helpers import device_from, moving_image, plaintext_hits, redacted, sink_dir

from agent.cli.main import main
from agent.clock import FakeClock
from agent.config import load_config
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import (
    hub_public,
    init_hub,
    install_roster,
    load_hub_identity,
    updated_roster,
    write_device_identity,
)
from agent.errors import PrivacyViolation, SinkError
from agent.storage.outbox import Outbox
from agent.storage.sinks.clips import ClipSink, build_clip_sinks
from agent.storage.sinks.upload import DirectoryUploader

OWNER = device_from(2, "owner")
PARTNER = device_from(3, "partner")
NANNY = device_from(4, "nanny")


def make_sink(tmp_path: Path, clock: FakeClock, *, segment_s: float = 2.0, dest: Path | None = None,
              events: EventLog | None = None) -> tuple[ClipSink, Path]:
    data = tmp_path / "data"
    hub = init_hub(data) if not (data / "keys").exists() else load_hub_identity(data)
    dest = dest or sink_dir(tmp_path / "nas")
    up = DirectoryUploader(dest, hub.public)
    sink = ClipSink(
        hub=hub, recipients=[OWNER.public, PARTNER.public], camera_id="bedroom", fps=10, segment_s=segment_s,
        outbox=Outbox(data, clock, events), uploaders={up.name: up}, clock=clock, on_event=events,
        camera_name="Bedroom",
    )
    return sink, dest


def feed(sink: ClipSink, n: int, start: int = 0, *, masked: bool = True) -> None:
    for i in range(start, start + n):
        sink.write(redacted("bedroom", i, i / 10, moving_image(i), masked=masked))


def clips_in(dest: Path) -> list[Path]:
    return sorted(dest.rglob("*.epaclip"))


def decode_frames(mp4: bytes, tmp_path: Path) -> int:
    p = tmp_path / "decoded.mp4"
    p.write_bytes(mp4)
    cap = cv2.VideoCapture(str(p))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    p.unlink()
    return n


def test_segments_chain_metadata_and_no_plaintext(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog()
    sink, dest = make_sink(tmp_path, clock, events=events)
    feed(sink, 50)  # 5 s at 10 fps, 2 s segments -> 20 + 20 + 10 frames
    sink.close()
    files = clips_in(dest)
    assert len(files) == 3
    hub = hub_public(tmp_path / "data")
    infos = [env.verify_clip(f.read_bytes(), hub) for f in files]
    assert [i.header.seq for i in infos] == [0, 1, 2]
    assert env.check_chain(infos) == []
    counts = []
    for f in files:
        video, opened = env.open_clip_bytes(f.read_bytes(), PARTNER, hub)
        meta = opened.metadata
        assert meta["camera_name"] == "Bedroom" and meta["labels"] == ["face"]
        assert meta["masked_regions"] == ["bed-zone", "face"]
        thumb = cv2.imdecode(np.frombuffer(base64.b64decode(meta["thumbnail_jpeg_b64"]), np.uint8), cv2.IMREAD_COLOR)
        assert thumb is not None and thumb.shape[1] <= 160
        assert video[4:8] == b"ftyp"
        counts.append(decode_frames(video, tmp_path))
        assert counts[-1] == meta["frames"]
    assert counts == [20, 20, 10]
    # Nothing plaintext anywhere the hub or the NAS keeps data; the camera name is not in clear.
    assert plaintext_hits(tmp_path / "data", dest) == []
    for f in files:
        assert b"Bedroom" not in f.read_bytes() and b"bedroom" not in f.read_bytes()
    assert events.kinds().count("clip_uploaded") == 3
    assert Outbox(tmp_path / "data", clock).pending_count() == 0


def test_chain_continues_across_restarts(tmp_path: Path) -> None:
    clock = FakeClock()
    sink, dest = make_sink(tmp_path, clock)
    feed(sink, 10)
    sink.close()
    sink2, _ = make_sink(tmp_path, clock)
    feed(sink2, 10, start=100)
    sink2.close()
    infos = [env.verify_clip(f.read_bytes()) for f in clips_in(dest)]
    assert sorted(i.header.seq for i in infos) == [0, 1]
    assert env.check_chain(infos) == []


def test_cuts_on_withheld_time_and_resolution_change(tmp_path: Path) -> None:
    clock = FakeClock()
    sink, dest = make_sink(tmp_path, clock)
    feed(sink, 5)
    sink.withheld("bedroom", 30, 3.0)  # 3 s after the segment start: cut
    assert len(clips_in(dest)) == 1
    sink.write(redacted("bedroom", 31, 3.1, moving_image(31)))
    sink.write(redacted("bedroom", 32, 3.2, moving_image(32, w=80, h=60)))  # new size: new clip
    sink.close()
    assert len(clips_in(dest)) == 3


def test_refuses_raw_frames(tmp_path: Path) -> None:
    from agent.core.datatypes import Frame

    sink, _ = make_sink(tmp_path, FakeClock())
    with pytest.raises(PrivacyViolation):
        sink.write(Frame("bedroom", 0, 0.0, 0.0, moving_image(0)))  # type: ignore[arg-type]


def test_unwritable_destination_keeps_clip_in_outbox_then_delivers(tmp_path: Path) -> None:
    clock = FakeClock()
    events = EventLog()
    blocked = tmp_path / "nas"
    blocked.write_text("a file where the NAS directory should be")
    sink, _ = make_sink(tmp_path, clock, dest=blocked, events=events)
    feed(sink, 10)
    with pytest.raises(SinkError, match="remain in the outbox"):
        sink.close()
    assert "upload_failed" in events.kinds()
    ob = Outbox(tmp_path / "data", clock)
    assert ob.pending_count() == 1
    parked = list((tmp_path / "data" / "outbox" / "clips").rglob("*.epaclip"))
    assert len(parked) == 1
    parked_bytes = parked[0].read_bytes()
    blocked.unlink()
    sink2, dest = make_sink(tmp_path, clock)
    assert sink2.flush_outbox() == 0
    [delivered] = clips_in(dest)
    assert delivered.read_bytes() == parked_bytes
    assert not parked[0].exists()
    env.open_clip_bytes(delivered.read_bytes(), OWNER)


def test_full_disk_at_destination_is_a_sink_error_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sink, dest = make_sink(tmp_path, clock)
    real_open = open

    def full_open(path, mode="r", *a, **k):  # type: ignore[no-untyped-def]
        if "w" in mode and str(dest) in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("agent.storage.sinks.upload.open", full_open, raising=False)
    feed(sink, 10)
    with pytest.raises(SinkError):
        sink.close()
    assert not list(dest.rglob("*.tmp")) and not clips_in(dest)
    monkeypatch.undo()
    assert sink.flush_outbox() == 0
    assert len(clips_in(dest)) == 1


def _setup_config(tmp_path: Path, *, roster: bool) -> Path:
    data = tmp_path / "data"
    init_hub(data)
    for ident, name in ((OWNER, "owner"), (PARTNER, "partner"), (NANNY, "nanny")):
        write_device_identity(ident, tmp_path / f"{name}.key")
    if roster:
        r = updated_roster(OWNER, None, add=[PARTNER.public, NANNY.public])
        install_roster(data, updated_roster(OWNER, r, revoke=[NANNY.key_id]))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data_dir: ./data\n"
        "recipients: [owner.key.pub, partner.key.pub, nanny.key.pub]\n"
        "cameras:\n"
        "  - id: hall\n    source: v.mp4\n"
        "  - id: bedroom\n    name: Our bedroom\n    source: v.mp4\n    recipients: [owner.key.pub]\n"
        "sinks:\n  - type: directory\n    path: ./nas\n    segment_s: 10\n"
    )
    sink_dir(tmp_path / "nas")
    return cfg


def test_per_camera_recipients_and_revocation_from_config(tmp_path: Path) -> None:
    cfg = _setup_config(tmp_path, roster=True)
    loaded = load_config(cfg)
    clock = FakeClock()
    [hall] = build_clip_sinks(loaded, "hall", 10, EventLog(), clock)
    [bed] = build_clip_sinks(loaded, "bedroom", 10, EventLog(), clock)
    assert {d.key_id for d in hall._recipients} == {OWNER.key_id, PARTNER.key_id}  # nanny revoked
    assert [d.key_id for d in bed._recipients] == [OWNER.key_id]
    assert hall.stream_id != bed.stream_id


def _write_video(path: Path, n: int) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(n):
        vw.write(moving_image(i, 96, 64))
    vw.release()


def test_run_then_open_and_verify_with_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _setup_config(tmp_path, roster=False)
    _write_video(tmp_path / "v.mp4", 120)  # 12 s at 10 fps -> 2 clips per camera
    assert main(["run", "--config", str(cfg)]) == 0
    nas = tmp_path / "nas"
    files = clips_in(nas)
    assert len(files) == 4
    assert plaintext_hits(tmp_path / "data", nas) == []
    assert not list((tmp_path / "data" / "outbox" / "clips").rglob("*.epaclip*"))
    hub = str(tmp_path / "data" / "keys" / "hub.pub")
    capsys.readouterr()
    assert main(["verify", *map(str, files), "--hub", hub]) == 0
    assert "chain intact" in capsys.readouterr().out
    bedroom = [f for f in files if env.verify_clip(f.read_bytes()).header.recipient_ids == (OWNER.key_id,)]
    assert len(bedroom) == 2
    out = tmp_path / "clip.mp4"
    assert main(["open", str(bedroom[0]), "--identity", str(tmp_path / "owner.key"), "--out", str(out),
                 "--hub", hub, "--meta", str(tmp_path / "m.json")]) == 0
    assert decode_frames(out.read_bytes(), tmp_path) == 100
    assert json.loads((tmp_path / "m.json").read_text())["camera_name"] == "Our bedroom"

    # Wrong recipient, tampered, truncated: distinct messages and exit codes, no output file.
    codes = {}
    bad = tmp_path / "bad.epaclip"
    data = bedroom[0].read_bytes()
    for name, blob, ident in (
        ("wrong", data, "partner.key"),
        ("tampered", data[:3000] + bytes([data[3000] ^ 1]) + data[3001:], "owner.key"),
        ("truncated", data[: len(data) // 2], "owner.key"),
    ):
        bad.write_bytes(blob)
        target = tmp_path / f"{name}.mp4"
        capsys.readouterr()
        codes[name] = main(["open", str(bad), "--identity", str(tmp_path / ident), "--out", str(target)])
        err = capsys.readouterr().err
        assert name.replace("wrong", "wrong recipient") in err
        assert not target.exists() and not (tmp_path / f"{name}.mp4.part").exists()
    assert len(set(codes.values())) == 3 and 0 not in codes.values()
    # verify needs no secret: deleting a clip breaks the chain
    capsys.readouterr()
    hall = [f for f in files if f not in bedroom]
    assert main(["verify", str(hall[0]), str(bedroom[0]), str(bedroom[1]), "--hub", hub]) == 0
    os.unlink(bedroom[1])  # a deleted clip in the middle of the chain
    _write_video(tmp_path / "v.mp4", 60)
    assert main(["run", "--config", str(cfg), "--camera", "bedroom"]) == 0
    remaining = [f for f in clips_in(nas) if env.verify_clip(f.read_bytes()).header.recipient_ids == (OWNER.key_id,)]
    assert len(remaining) == 2
    assert main(["verify", *map(str, remaining), "--hub", hub]) != 0
    assert "missing" in capsys.readouterr().err
