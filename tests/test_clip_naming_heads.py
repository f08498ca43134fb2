"""One naming rule for clip files, and chain heads recorded in the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
from clip_helpers import device_from, sink_dir
from videokit import walker_frames, write_video

from agent.access.audit import AuditLog, read_entries, stream_heads
from agent.cli.main import main
from agent.clock import FakeClock
from agent.crypto.envelope import check_chain, check_heads, seal
from agent.crypto.keys import DeviceIdentity, HubIdentity, init_hub, write_device_identity
from agent.storage.index import clip_id_of, local_name, object_name

CID = "0f" * 16
OWNER = device_from(2, "owner")
CONFIG = """\
data_dir: data
detection: {enabled: false}
recipients: [owner.key.pub]
cameras:
  - id: cam
    source: v.mp4
sinks:
  - type: directory
    path: ./nas
    segment_s: 10
"""


def test_one_naming_rule_reads_both_forms() -> None:
    """Finding 14: the directory sink writes `<seq>-<clip_id>.epaclip`; `owner approve --clips-dir`
    looked for `<clip_id>.epaclip` and never found it."""
    dest = object_name("aa" * 16, 7, CID)
    assert dest == f"{'aa' * 16}/000000000007-{CID}.epaclip"
    assert clip_id_of(Path(dest).name) == CID
    assert clip_id_of(local_name(CID)) == CID
    for bad in (f"{CID}.epaclip.part", f"x-{CID}.epaclip", f"{CID[:-1]}.epaclip", "notes.txt", f"{CID.upper()}.epaclip"):
        assert clip_id_of(bad) is None, bad


def _chain(n: int) -> list:  # type: ignore[type-arg]
    hub = HubIdentity.generate()
    owner = DeviceIdentity.generate("o")
    infos, prev = [], b"\x00" * 32
    for seq in range(n):
        _, info = seal(b"x" * 100, {"camera_id": "porch"}, hub, [owner.public], b"\x01" * 16, seq, prev)
        infos.append(info)
        prev = info.clip_hash
    return infos


def test_deleted_first_clips_show_against_the_recorded_head(tmp_path: Path) -> None:
    """Finding 9: deleting the first clips of a chain went unreported (the rest still chains)."""
    infos = _chain(4)
    log = AuditLog(tmp_path / "audit", FakeClock())
    log.append("clip_stream_start", {"stream": infos[0].header.stream_id.hex(), "clip_id": infos[0].clip_id_hex,
                                     "seq": 0, "camera": "porch"})
    heads = stream_heads(read_entries(log.path)[0])
    survivors = infos[2:]
    assert check_chain(survivors) == []  # by itself the chain looks intact
    problems = check_heads(survivors, heads)
    assert problems and "first clip" in problems[0] and "deleted" in problems[0]
    assert check_heads(infos, heads) == []
    assert "records no start" in check_heads(infos, {})[0]


def test_verify_with_the_audit_log_reports_deleted_first_clips(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: `run` writes a chain of clips to a directory sink and records its head; the first
    clip is deleted from the NAS; `verify --audit-log` says so (plain `verify` cannot)."""
    init_hub(tmp_path / "data")
    write_device_identity(OWNER, tmp_path / "owner.key")
    sink_dir(tmp_path / "nas")
    write_video(tmp_path / "v.mp4", walker_frames(400))  # 40 s at 10 fps, 10 s segments: several clips
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    assert main(["run", "--config", str(cfg)]) == 0
    clips = sorted((tmp_path / "nas").rglob("*.epaclip"))
    assert len(clips) >= 3
    log = tmp_path / "data" / "audit" / "log.jsonl"
    common = ["verify", str(tmp_path / "nas"), "--hub", str(tmp_path / "data")]
    assert main([*common, "--audit-log", str(log)]) == 0
    clips[0].unlink()  # `000000000000-<id>.epaclip`: the head of the chain
    assert main(common) == 0  # the rest still chains
    capsys.readouterr()
    assert main([*common, "--audit-log", str(log)]) != 0
    assert "clip 0 MISSING" in capsys.readouterr().err  # the head, against the recorded chain start
