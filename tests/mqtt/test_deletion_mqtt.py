"""The right to delete, end to end: an owner's signed deletion over the real Mosquitto removes the
clips from every sink and the hub's index, the hub answers with a signed receipt, the owner
device destroys its epoch keys for the window, and then no copy of those clips opens anywhere,
while later clips still do."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clip_helpers import sink_dir
from conftest import PREFIX
from mosquitto import Broker
from test_access_cli import _pwfile

from agent.access.recorder import EventRecorder, open_hub_audit
from agent.cli.main import main
from agent.clock import SystemClock
from agent.config import load_config
from agent.crypto.envelope import seal
from agent.crypto.keys import (
    EpochRecipient,
    install_epoch_list,
    load_device_identity,
    load_hub_identity,
    load_roster,
)
from agent.crypto.keys.epochstore import EpochStore, store_path
from agent.errors import ExitCode
from agent.mqtt.service import HubMqtt
from agent.storage.outbox import Outbox
from agent.storage.retention import encrypted_uploaders

pytestmark = pytest.mark.mqtt
HOUR = 3600


@pytest.fixture
def house(broker: Broker, tmp_path: Path) -> Iterator[dict[str, object]]:
    data, keys, nas = tmp_path / "data", tmp_path / "keys", sink_dir(tmp_path / "nas")
    keys.mkdir()
    assert main(["keys", "init", "--data", str(data)]) == 0
    for n in ("alice", "teen"):
        assert main(["owner", "keygen", "--out", str(keys / f"{n}.key"), "--name", f"{n}-phone"]) == 0
    assert main(["owner", "enroll", "--identity", str(keys / "alice.key"), "--roster", str(keys / "roster.json"),
                 "--add", str(keys / "teen.key.pub"), "--hub", str(data), "--install", str(data)]) == 0
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
cameras:
  - id: porch
    source: {tmp_path / 'porch.mp4'}
sinks:
  - type: directory
    path: {nas}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {_pwfile(tmp_path, 'hub')}
  topic_prefix: {PREFIX}
  client_id: hub-delete-test
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
""")
    loaded = load_config(cfg)
    alice = load_device_identity(keys / "alice.key")
    # Alice's epoch keys start three hours ago (hourly epochs), so past epochs can be shredded.
    now = time.time()
    store = EpochStore.create(store_path(keys / "alice.key"), alice)
    lst = store.generate(alice, now - 3 * HOUR, horizon_s=2 * 86_400, hub=load_hub_identity(data).key_id)
    install_epoch_list(data, lst.encode(), load_roster(data))
    hub = load_hub_identity(data)
    audit = open_hub_audit(data, SystemClock())
    assert audit is not None
    ob = Outbox(data, SystemClock(), EventRecorder(audit))  # as `run` does: clip reports reach the audit log
    ups = encrypted_uploaders(loaded)
    clips: dict[str, str] = {}
    e0 = int((now - 3 * HOUR) // HOUR)
    for name, start in (("old", (e0 + 0.25) * HOUR), ("newer", (e0 + 2.25) * HOUR)):
        key = lst.key_for(start)
        assert key is not None
        stream = bytes(16)
        seq, prev = ob.chain_head(stream.hex())
        data_bytes, info = seal(b"\x00\x00\x00\x18ftypisom" + bytes(2000),
                                {"camera_id": "porch", "start_wall_s": start, "end_wall_s": start + 30},
                                hub, [EpochRecipient(alice.public, *key)], stream, seq, prev)
        fh, part = ob.open_part(stream.hex(), info.clip_id_hex)
        fh.write(data_bytes)
        ob.commit(fh, part, info, "porch", list(ups), start_wall_s=start, end_wall_s=start + 30)
        clips[name] = info.clip_id_hex
    assert ob.drain(ups).remaining == 0
    ob.close()
    audit.close()
    cloud = tmp_path / "cloud"  # what somebody kept: a copy of every ciphertext
    shutil.copytree(nas, cloud, ignore=shutil.ignore_patterns(".epa-sink"))
    svc = HubMqtt.from_config(loaded)
    svc.start()
    assert svc.client.wait_connected(10)
    conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--ca-file", str(broker.ca_file), "--prefix", PREFIX,
            "--username", "owner", "--password-file", str(_pwfile(tmp_path, "owner"))]
    yield {"data": data, "keys": keys, "nas": nas, "cloud": cloud, "clips": clips, "e0": e0, "conn": conn,
           "tmp": tmp_path}
    svc.stop(flush_s=1)


def _open(house: dict[str, object], clip_file: Path, out: str) -> int:
    keys, tmp = Path(str(house["keys"])), Path(str(house["tmp"]))
    return main(["open", str(clip_file), "--identity", str(keys / "alice.key"), "--hub", str(house["data"]),
                 "--out", str(tmp / out)])


def test_an_owner_deletion_removes_every_copy_from_use(house: dict[str, object],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data, keys, nas, cloud = (Path(str(house[k])) for k in ("data", "keys", "nas", "cloud"))
    clips: dict[str, str] = house["clips"]  # type: ignore[assignment]
    e0: int = house["e0"]  # type: ignore[assignment]
    conn: list[str] = house["conn"]  # type: ignore[assignment]
    # A member may not delete: a signed refusal, nothing deleted.
    capsys.readouterr()
    rc = main(["owner", "delete", "--identity", str(keys / "teen.key"), "--hub", str(data), "--camera", "porch",
               "--from", str(e0 * HOUR * 1000), "--to", str((e0 + 1) * HOUR * 1000), "--wait", "10",
               "--receipt-out", str(Path(str(house["tmp"])) / "refusal.json"), *conn])
    assert rc == ExitCode.REFUSED and "not an owner" in capsys.readouterr().err
    assert len(list(nas.rglob("*.epaclip"))) == 2
    # Alice deletes the first hour (one whole epoch): the hub deletes, signs a receipt, and her
    # device destroys that epoch's key.
    receipt = Path(str(house["tmp"])) / "receipt.json"
    rc = main(["owner", "delete", "--identity", str(keys / "alice.key"), "--hub", str(data), "--camera", "porch",
               "--from", str(e0 * HOUR * 1000), "--to", str((e0 + 1) * HOUR * 1000), "--wait", "15",
               "--receipt-out", str(receipt), *conn])
    out = capsys.readouterr().out
    assert rc == ExitCode.OK, out
    assert "hub deleted 1 clip(s)" in out and "destroyed 1 epoch key(s)" in out
    left = list(nas.rglob("*.epaclip"))
    assert [p.name.endswith(f"{clips['newer']}.epaclip") for p in left] == [True]
    # Derived data: the hub's index no longer knows the clip; the audit log has the fact only.
    ob = Outbox(data, SystemClock(), exclusive=False)
    try:
        assert clips["old"] not in {c.clip_id for c in ob.list_clips()}
    finally:
        ob.close()
    kinds = [json.loads(x)["kind"] for x in (data / "audit" / "log.jsonl").read_text().splitlines()]
    assert "delete_request" in kinds and "clips_deleted" in kinds
    # Holding every file: the kept copy of the deleted clip opens for nobody; the later one opens.
    old_copy = next(cloud.rglob(f"*{clips['old']}.epaclip"))
    new_copy = next(cloud.rglob(f"*{clips['newer']}.epaclip"))
    capsys.readouterr()
    assert _open(house, old_copy, "old.mp4") == ExitCode.PAST_RETENTION
    err = capsys.readouterr().err
    assert "past retention" in err and "Traceback" not in err
    assert _open(house, new_copy, "new.mp4") == ExitCode.OK
    assert len(list(nas.rglob("*.epaclip"))) == 1
    # The gap it leaves is explained as DELETED, by the audit log or by the signed receipt.
    capsys.readouterr()
    assert main(["verify", str(nas), "--hub", str(data), "--audit-log", str(data / "audit" / "log.jsonl")]) == 0
    assert "DELETED" in capsys.readouterr().out
    assert (receipt.stat().st_mode & 0o777) == 0o600
    assert main(["verify", str(cloud), "--hub", str(data), "--receipt", str(receipt)]) == 0
    # Another household device applies the signed deletion it finds on the broker (retained).
    capsys.readouterr()
    assert main(["owner", "deletions", "sync", "--identity", str(keys / "teen.key"), "--hub", str(data),
                 "--roster", str(keys / "roster.json"), *conn]) == 0
    assert "1 signed deletion(s) applied" in capsys.readouterr().out
