"""`privacy-agent clips list`: the hub's own index of its clips, their times and where they went.

Clips are sealed straight into an outbox (as `ClipSink` does) with a fake clock, so the times and
states are exact: one queued (its NAS is unmarked, so delivery fails), one delivered to two
directory sinks, one delivered and since deleted from its sink (vanished).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from clip_helpers import device_from, sink_dir

from agent.cli.main import main
from agent.clock import FakeClock
from agent.crypto import envelope as env
from agent.crypto.keys import HubIdentity, init_hub
from agent.storage.outbox import Outbox
from agent.storage.sinks.upload import DirectoryUploader

OWNER = device_from(2, "owner")


def seal(ob: Outbox, hub: HubIdentity, camera: str, dests: list[str], start_s: float, end_s: float) -> str:
    stream_id = env.stream_id_for(hub, camera)
    seq, prev = ob.chain_head(stream_id.hex())
    cid = os.urandom(16)
    fh, part = ob.open_part(stream_id.hex(), cid.hex())
    w = env.ClipWriter(fh, hub, [OWNER.public], stream_id, seq, prev, clip_id=cid)
    w.write(b"v" * 300)
    info = w.finish({"camera_id": camera})
    ob.commit(fh, part, info, camera, dests, start_wall_s=start_s, end_wall_s=end_s)
    return info.clip_id_hex


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: data\ncameras:\n  - id: porch\n    source: v.mp4\nsinks: []\n")
    return cfg


def test_queued_delivered_and_vanished_clips_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    hub = init_hub(data)
    nas, usb = sink_dir(tmp_path / "nas"), sink_dir(tmp_path / "usb")
    gone = sink_dir(tmp_path / "gone")
    offline = tmp_path / "offline"
    offline.mkdir()  # no marker: an unmounted NAS, so its clip stays queued
    ups = {u.name: u for u in (DirectoryUploader(p, hub.public) for p in (nas, usb, gone, offline))}
    n_nas, n_usb, n_gone, n_off = ups
    clock = FakeClock()
    ob = Outbox(data, clock)
    t0 = 1_780_000_000.0
    both = seal(ob, hub, "porch", [n_nas, n_usb], t0, t0 + 30)
    vanished = seal(ob, hub, "garden", [n_gone], t0 + 40, t0 + 70)
    queued = seal(ob, hub, "hall", [n_off], t0 + 80, t0 + 95.5)
    ob.drain(ups, force=True)
    for p in gone.rglob("*.epaclip"):
        p.unlink()
    assert ob.check_placements(ups) == 1
    # Listing works beside the writer, which still holds the data-dir lock.
    assert main(["clips", "list", "--config", str(write_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[-1]: ln for ln in out.splitlines() if ln.split() and len(ln.split()[-1]) == 32}
    assert lines[both].startswith("porch") and f"uploaded to {n_nas}, {n_usb}" in lines[both]
    assert lines[vanished].startswith("garden") and f"vanished from {n_gone}" in lines[vanished]
    assert lines[queued].startswith("hall") and f"queued for {n_off}" in lines[queued]
    assert "3 clip(s)" in out

    assert main(["clips", "list", "--config", str(tmp_path / "config.yaml"), "--json"]) == 0
    doc = {c["clip_id"]: c for c in json.loads(capsys.readouterr().out)}
    assert [doc[c]["camera_id"] for c in (both, vanished, queued)] == ["porch", "garden", "hall"]
    assert doc[queued]["start_wall_s"] == t0 + 80 and doc[queued]["end_wall_s"] == t0 + 95.5
    assert doc[queued]["queued_for"] == [n_off] and doc[queued]["placements"] == []
    assert {p["dest"] for p in doc[both]["placements"]} == {n_nas, n_usb}
    assert all(p["vanished_wall_s"] is None for p in doc[both]["placements"])
    [p] = doc[vanished]["placements"]
    assert p["dest"] == n_gone and p["vanished_wall_s"] is not None
    assert doc[both]["size_bytes"] > 300 and doc[both]["start_utc"].endswith("Z")
    ob.close()


def test_an_empty_hub_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    assert main(["clips", "list", "--config", str(cfg)]) == 0
    assert "no clips" in capsys.readouterr().out
    assert not (tmp_path / "data" / "outbox").exists()  # listing created nothing
    assert main(["clips", "list", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_an_index_from_an_older_version_keeps_working(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    hub = init_hub(data)
    ob = Outbox(data, FakeClock())
    cid = seal(ob, hub, "porch", ["nas"], 1.0, 2.0)
    ob.close()
    # Rebuild clip_index as the previous version created it: no start/end columns.
    db = sqlite3.connect(data / "outbox" / "outbox.db")
    db.executescript(
        "CREATE TABLE old AS SELECT clip_id, stream, seq, camera_id, size_bytes, sealed_wall_s FROM clip_index;"
        "DROP TABLE clip_index; ALTER TABLE old RENAME TO clip_index;"
    )
    db.close()
    cfg = write_config(tmp_path)
    # Read-only: listed without times, and the schema is left alone.
    assert main(["clips", "list", "--config", str(cfg), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["clip_id"] == cid and row["start_wall_s"] is None and row["queued_for"] == ["nas"]
    # A writer adds the columns and records the times of new clips.
    ob = Outbox(data, FakeClock())
    new = seal(ob, hub, "porch", ["nas"], 5.0, 9.0)
    ob.close()
    assert main(["clips", "list", "--config", str(cfg), "--json"]) == 0
    rows = {r["clip_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[new]["start_wall_s"] == 5.0 and rows[new]["end_wall_s"] == 9.0 and rows[cid]["end_wall_s"] is None


def test_clip_sink_indexes_the_times_it_seals_into_the_metadata(tmp_path: Path) -> None:
    from clip_helpers import moving_image, redacted

    from agent.storage.sinks.clips import ClipSink

    data = tmp_path / "data"
    hub = init_hub(data)
    up = DirectoryUploader(sink_dir(tmp_path / "nas"), hub.public)
    clock = FakeClock()
    sink = ClipSink(hub=hub, recipients=[OWNER.public], camera_id="porch", fps=10, segment_s=10,
                    outbox=Outbox(data, clock), uploaders={up.name: up}, clock=clock)
    start = clock.wall()
    for i in range(5):
        sink.write(redacted("porch", i, i / 10, moving_image(i)))
        clock.advance(0.1)
    sink.close()
    ob = Outbox(data, clock, exclusive=False)
    [row] = ob.list_clips()
    ob.close()
    [placed] = list((tmp_path / "nas").rglob("*.epaclip"))
    with open(placed, "rb") as f:
        opened = env.open_clip(f, OWNER, lambda _b: None, hub.public)
    assert row.start_wall_s == opened.metadata["start_wall_s"] == round(start, 3)
    assert row.end_wall_s == opened.metadata["end_wall_s"]
    assert row.end_wall_s is not None and row.end_wall_s > row.start_wall_s
    assert row.camera_id == "porch" and row.uploaded_to == (up.name,) and row.state == f"uploaded to {up.name}"
