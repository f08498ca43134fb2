"""Epoch key lists on the hub: installing (module and `keys epochs install`), refusals, sealing each
clip to the recipients' epoch keys for its start, the missing-key rule, the horizon warning,
`doctor` and the Home Assistant sensors."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from clip_helpers import device_from, moving_image, redacted, sink_dir
from nacl.public import PrivateKey

from agent.access.audit import LOG_FILE, audit_dir, read_entries
from agent.cli.main import main
from agent.clock import FakeClock
from agent.config import EpochKeySettings, load_config
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import (
    DeviceIdentity,
    EpochList,
    HubIdentity,
    epoch_horizons,
    epoch_list_path,
    epoch_of,
    init_hub,
    install_epoch_list,
    install_roster,
    load_epoch_lists,
    updated_roster,
    write_device_identity,
)
from agent.errors import EpochError, SinkError
from agent.storage.outbox import Outbox
from agent.storage.sinks.clips import ClipSink
from agent.storage.sinks.epochs import HOLD_REASON, EpochKeyring
from agent.storage.sinks.upload import DirectoryUploader
from agent.topics import Topics

OWNER = device_from(11, "alice")
PARTNER = device_from(12, "bob")
NANNY = device_from(13, "nanny")  # enrolled, then revoked
STRANGER = device_from(14, "stranger")  # never enrolled
EPOCH_S = 3600
WALL0 = 1_790_000_000.0
E0 = epoch_of(WALL0, EPOCH_S)


@dataclass
class World:
    data: Path
    hub: HubIdentity


def world(tmp_path: Path) -> World:
    data = tmp_path / "data"
    hub = init_hub(data)
    r1 = updated_roster(OWNER, None, add=[PARTNER.public, NANNY.public], hub_key_id=hub.key_id)
    install_roster(data, r1)
    install_roster(data, updated_roster(OWNER, r1, revoke=[NANNY.key_id]))
    return World(data, hub)


def roster_of(w: World):
    from agent.crypto.keys import load_roster

    return load_roster(w.data)


class Secrets:
    """A device's epoch secrets (what `agent.crypto.keys.EpochStore` keeps on the device)."""

    def __init__(self, device: DeviceIdentity, first: int, n: int) -> None:
        self._device = device.key_id
        self.first = first
        self.keys = [PrivateKey.generate() for _ in range(n)]

    @property
    def device(self) -> str:
        return self._device

    def secret_for(self, epoch: int) -> PrivateKey:
        if not self.first <= epoch < self.first + len(self.keys):
            raise EpochError(f"no secret for epoch {epoch}")
        return self.keys[epoch - self.first]


def make_list(dev: DeviceIdentity, first: int = E0 - 2, n: int = 48, version: int = 1,
              hub: str | None = None, secrets: Secrets | None = None) -> tuple[EpochList, Secrets]:
    s = secrets or Secrets(dev, first, n)
    keys = [k.public_key.encode() for k in s.keys[first - s.first:first - s.first + n]]
    return EpochList.sign(dev, epoch_s=EPOCH_S, first=first, keys=keys, version=version, created_ms=1, hub=hub), s


# --- installing --------------------------------------------------------------------------------


def test_install_is_private_idempotent_and_loads(tmp_path: Path) -> None:
    w = world(tmp_path)
    lst, _ = make_list(OWNER, hub=w.hub.key_id)
    got, changed = install_epoch_list(w.data, lst.encode(), roster_of(w))
    assert changed and got.device == OWNER.key_id
    p = epoch_list_path(w.data, OWNER.key_id)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert install_epoch_list(w.data, lst.encode(), roster_of(w))[1] is False  # the same list again
    assert set(load_epoch_lists(w.data, roster_of(w))) == {OWNER.key_id}
    # A newer version whose keys differ for installed epochs is refused (an extension with the same
    # keys is accepted: test_extension_with_the_same_keys_is_accepted).
    longer, _ = make_list(OWNER, n=96, version=2, secrets=Secrets(OWNER, E0 - 2, 96))
    with pytest.raises(EpochError, match="different key"):
        install_epoch_list(w.data, longer.encode(), roster_of(w))


def test_extension_with_the_same_keys_is_accepted(tmp_path: Path) -> None:
    w = world(tmp_path)
    s = Secrets(OWNER, E0 - 2, 96)
    v1, _ = make_list(OWNER, n=48, secrets=s)
    v2, _ = make_list(OWNER, n=96, version=2, secrets=s)
    assert install_epoch_list(w.data, v1.encode(), roster_of(w))[1]
    assert install_epoch_list(w.data, v2.encode(), roster_of(w))[1]
    assert load_epoch_lists(w.data, roster_of(w))[OWNER.key_id].version == 2


def _refusal_cases(w: World) -> dict[str, tuple[bytes, str]]:
    s = Secrets(OWNER, E0 - 2, 48)
    v3, _ = make_list(OWNER, version=3, secrets=s)
    install_epoch_list(w.data, v3.encode(), roster_of(w))
    other, _ = make_list(OWNER, version=4)  # same epochs, other keys
    older, _ = make_list(OWNER, version=2, secrets=s)
    wrong_hub, _ = make_list(PARTNER, hub="0" * 16)
    return {
        "revoked": (make_list(NANNY)[0].encode(), "revoked"),
        "stranger": (make_list(STRANGER)[0].encode(), "not in the roster"),
        "rollback": (older.encode(), "older than the installed"),
        "overlap": (other.encode(), "different key for epoch"),
        "malformed": (b'{"list": [1, 2', "not acceptable JSON"),
        "not a list": (b'{"roster": {}, "signature": ""}', "expected exactly"),
        "forged": (make_list(PARTNER)[0].encode().replace(b'"version":1', b'"version":7'), "signature does not verify"),
        "other hub": (wrong_hub.encode(), "not this hub"),
    }


def test_refusals_install_nothing(tmp_path: Path) -> None:
    w = world(tmp_path)
    cases = _refusal_cases(w)
    before = epoch_list_path(w.data, OWNER.key_id).read_bytes()
    for name, (data, msg) in cases.items():
        with pytest.raises(EpochError, match=msg):
            install_epoch_list(w.data, data, roster_of(w))
        assert epoch_list_path(w.data, OWNER.key_id).read_bytes() == before, name
    assert set(load_epoch_lists(w.data, roster_of(w))) == {OWNER.key_id}


def test_no_roster_refuses(tmp_path: Path) -> None:
    init_hub(tmp_path / "data")
    with pytest.raises(EpochError, match="no owner-signed roster"):
        install_epoch_list(tmp_path / "data", make_list(OWNER)[0].encode(), None)


def test_lists_of_revoked_devices_are_dropped(tmp_path: Path) -> None:
    w = world(tmp_path)
    install_epoch_list(w.data, make_list(PARTNER)[0].encode(), roster_of(w))
    assert PARTNER.key_id in load_epoch_lists(w.data, roster_of(w))
    install_roster(w.data, updated_roster(OWNER, roster_of(w), revoke=[PARTNER.key_id]))
    assert load_epoch_lists(w.data, roster_of(w)) == {}
    assert epoch_horizons(w.data, roster_of(w), WALL0) == {OWNER.key_id: None}


def test_cli_install_and_refusals_are_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = world(tmp_path)
    good = tmp_path / "owner.epochs.json"
    good.write_bytes(make_list(OWNER)[0].encode())
    bad = tmp_path / "nanny.epochs.json"
    bad.write_bytes(make_list(NANNY)[0].encode())
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00garbage")
    assert main(["keys", "epochs", "install", "--data", str(w.data), str(good)]) == 0
    assert "installed" in capsys.readouterr().out
    assert main(["keys", "epochs", "install", "--data", str(w.data), str(good)]) == 0
    assert "already installed" in capsys.readouterr().out
    rc = main(["keys", "epochs", "install", "--data", str(w.data), str(bad), str(junk)])
    out, err = capsys.readouterr()
    assert rc != 0 and "revoked" in out and "not acceptable JSON" in out and "Traceback" not in out + err
    assert main(["keys", "epochs", "install", "--data", str(w.data), str(tmp_path / "missing.json")]) != 0
    assert "cannot read" in capsys.readouterr().out
    entries, problems = read_entries(audit_dir(w.data) / LOG_FILE)
    assert not problems
    inst = [e.fields for e in entries if e.kind == "epochs_installed"]
    assert inst == [{"device": OWNER.key_id, "version": 1, "first": E0 - 2, "last": E0 + 45}]
    refused = [e.fields for e in entries if e.kind == "epochs_refused"]
    assert [f["device"] for f in refused] == [NANNY.key_id, "?", "?"]
    assert "revoked" in refused[0]["reason"]
    assert set(load_epoch_lists(w.data, roster_of(w))) == {OWNER.key_id}


# --- sealing ----------------------------------------------------------------------------------


def make_sink(w: World, tmp_path: Path, clock: FakeClock, events: EventLog, missing: str = "longterm",
              warn_days: float = 7.0) -> tuple[ClipSink, Path, EpochKeyring]:
    dest = sink_dir(tmp_path / "nas")
    up = DirectoryUploader(dest, w.hub.public)
    ring = EpochKeyring(w.data, "bedroom", EpochKeySettings(missing_epoch_key=missing, epoch_warn_days=warn_days),
                        clock, events)
    sink = ClipSink(hub=w.hub, recipients=[OWNER.public, PARTNER.public], camera_id="bedroom", fps=10,
                    segment_s=2.0, outbox=Outbox(w.data, clock, events), uploaders={up.name: up}, clock=clock,
                    on_event=events, epoch_keys=ring)
    return sink, dest, ring


def feed(sink: ClipSink, clock: FakeClock, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        sink.write(redacted("bedroom", i, i / 10, moving_image(i)))
        clock.advance(0.1)


def test_clips_are_sealed_to_the_epoch_key_of_their_start(tmp_path: Path) -> None:
    w = world(tmp_path)
    clock = FakeClock(wall_s=(E0 + 1) * EPOCH_S - 1.5)  # the first clip starts in epoch E0, the second in E0 + 1
    lst, secrets = make_list(OWNER)
    install_epoch_list(w.data, lst.encode(), roster_of(w))
    events = EventLog()
    sink, dest, _ = make_sink(w, tmp_path, clock, events)
    feed(sink, clock, 40)
    sink.close()
    clips = sorted(dest.rglob("*.epaclip"))
    assert len(clips) == 2
    epochs = []
    for c in clips:
        data = c.read_bytes()
        info = env.verify_clip(data, w.hub.public)
        st = {s.key_id: s for s in info.header.stanzas}
        assert st[PARTNER.key_id].epoch is None  # no list: its long-term key
        epochs.append(st[OWNER.key_id].epoch)
        video, opened = env.open_clip_bytes(data, OWNER, w.hub.public, epochs=secrets)
        assert video and opened.metadata["frames"] > 0
        assert epoch_of(opened.metadata["start_wall_s"], EPOCH_S) == st[OWNER.key_id].epoch
        with pytest.raises(EpochError):
            env.open_clip_bytes(data, OWNER, w.hub.public)  # the long-term key alone does not open it
        assert env.open_clip_bytes(data, PARTNER, w.hub.public)[0] == video
    assert sorted(epochs) == [E0, E0 + 1]
    missing = [e for e in events.events if e.kind == "epoch_key_missing"]
    assert len(missing) == 1 and missing[0].details == {"device": PARTNER.key_id, "policy": "longterm"}


def test_withhold_seals_nothing_and_holds_the_camera(tmp_path: Path) -> None:
    w = world(tmp_path)
    clock = FakeClock(wall_s=WALL0)
    install_epoch_list(w.data, make_list(OWNER)[0].encode(), roster_of(w))
    events = EventLog()
    sink, dest, ring = make_sink(w, tmp_path, clock, events, missing="withhold")
    assert sink.hold_reason() == HOLD_REASON
    with pytest.raises(SinkError, match="no epoch key for device"):
        sink.write(redacted("bedroom", 0, 0.0, moving_image(0)))
    assert not list((w.data / "outbox").rglob("*.part")) and not list(dest.rglob("*.epaclip"))
    kinds = [(e.kind, e.details.get("device")) for e in events.events]
    assert kinds.count(("epoch_key_missing", PARTNER.key_id)) == 1
    # The partner's list arrives: frames flow again within the recheck time.
    install_epoch_list(w.data, make_list(PARTNER)[0].encode(), roster_of(w))
    clock.advance(3)
    assert sink.hold_reason() is None
    feed(sink, clock, 5, start=1)
    sink.close()
    assert len(list(dest.rglob("*.epaclip"))) == 1
    assert ring.lists().keys() == {OWNER.key_id, PARTNER.key_id}


def test_withhold_without_any_list_holds(tmp_path: Path) -> None:
    w = world(tmp_path)
    clock = FakeClock(wall_s=WALL0)
    sink, _, _ = make_sink(w, tmp_path, clock, EventLog(), missing="withhold")
    assert sink.hold_reason() == HOLD_REASON


def test_pipeline_withholds_while_a_sink_holds() -> None:
    from test_pipeline import ListSource, OkAnalyzer, RecordingSink

    from agent.core.pipeline import CameraPipeline
    from agent.core.policy import CameraPolicy
    from agent.vocab import Mode

    class Holding(RecordingSink):
        asked = 0

        def hold_reason(self) -> str | None:
            self.asked += 1
            return HOLD_REASON if self.asked <= 3 else None

    class Broken(RecordingSink):
        def hold_reason(self) -> str | None:
            raise RuntimeError("cannot tell")

    sink = Holding()
    events = EventLog()
    p = CameraPipeline(CameraPolicy("cam", ()), [OkAnalyzer()], [sink], lambda: Mode.HOME, events,
                       clock=FakeClock())
    stats = p.run(lambda: ListSource(6))
    assert stats.withheld == 3 and stats.reasons == {HOLD_REASON: 3} and len(sink.frames) == 3
    assert "withheld" in events.kinds()
    broken = Broken()
    p = CameraPipeline(CameraPolicy("cam", ()), [OkAnalyzer()], [broken], lambda: Mode.HOME, EventLog(),
                       clock=FakeClock())
    stats = p.run(lambda: ListSource(4))
    assert stats.withheld == 4 and not broken.frames and stats.reasons == {"sink_hold_error": 4}


def test_horizon_warning_at_most_hourly(tmp_path: Path) -> None:
    w = world(tmp_path)
    clock = FakeClock(wall_s=WALL0)
    # Three days of keys left for the owner, plenty for the partner.
    install_epoch_list(w.data, make_list(OWNER, first=E0, n=72)[0].encode(), roster_of(w))
    install_epoch_list(w.data, make_list(PARTNER, first=E0, n=24 * 30)[0].encode(), roster_of(w))
    events = EventLog()
    ring = EpochKeyring(w.data, "bedroom", EpochKeySettings(), clock, events)
    devices = [OWNER.public, PARTNER.public]
    ring.recipients(devices, clock.wall())
    ring.recipients(devices, clock.wall())
    near = [e for e in events.events if e.kind == "epoch_horizon_near"]
    assert len(near) == 1 and near[0].details["device"] == OWNER.key_id
    assert 2.9 < float(near[0].details["days_left"]) <= 3.0
    clock.advance(3601)
    ring.recipients(devices, clock.wall())
    assert len([e for e in events.events if e.kind == "epoch_horizon_near"]) == 2
    quiet = EventLog()
    EpochKeyring(w.data, "x", EpochKeySettings(epoch_warn_days=0), clock, quiet).recipients(devices, clock.wall())
    assert "epoch_horizon_near" not in quiet.kinds()


def test_build_clip_sinks_uses_the_retention_setting(tmp_path: Path) -> None:
    from agent.storage.sinks.clips import build_clip_sinks

    w = world(tmp_path)
    write_device_identity(OWNER, tmp_path / "owner.key")
    sink_dir(tmp_path / "nas")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data_dir: ./data\nretention: {missing_epoch_key: withhold}\ncameras:\n"
                   "  - id: hall\n    source: v.mp4\nsinks:\n  - type: directory\n    path: ./nas\n")
    [sink] = build_clip_sinks(load_config(cfg), "hall", 10, EventLog(), FakeClock(wall_s=WALL0))
    assert sink.hold_reason() == HOLD_REASON
    install_epoch_list(w.data, make_list(OWNER)[0].encode(), roster_of(w))
    install_epoch_list(w.data, make_list(PARTNER)[0].encode(), roster_of(w))
    [sink] = build_clip_sinks(load_config(cfg), "hall", 10, EventLog(), FakeClock(wall_s=WALL0))
    assert sink.hold_reason() is None


# --- doctor and Home Assistant ------------------------------------------------------------------


def test_doctor_lists_each_devices_horizon(tmp_path: Path) -> None:
    import time

    from agent.cli.doctor import check_epochs

    w = world(tmp_path)
    sink_dir(tmp_path / "nas")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data_dir: ./data\ncameras:\n  - id: hall\n    source: v.mp4\n"
                   "sinks:\n  - type: directory\n    path: ./nas\n")
    now_e = epoch_of(time.time(), EPOCH_S)
    install_epoch_list(w.data, make_list(OWNER, first=now_e - 1, n=48)[0].encode(), roster_of(w))
    res = {r.name: r for r in check_epochs(load_config(cfg))}
    assert res["epoch keys alice"].status == "warn" and "runs out in" in res["epoch keys alice"].detail
    assert res["epoch keys bob"].status == "warn" and "no installed epoch key list" in res["epoch keys bob"].detail
    install_epoch_list(w.data, make_list(PARTNER, first=now_e - 1, n=24 * 30)[0].encode(), roster_of(w))
    res = {r.name: r for r in check_epochs(load_config(cfg))}
    assert res["epoch keys bob"].status == "ok"
    cfg.write_text(cfg.read_text() + "retention: {missing_epoch_key: withhold, epoch_warn_days: 1}\n")
    res = {r.name: r for r in check_epochs(load_config(cfg))}
    assert res["epoch keys alice"].status == "ok" and res["epoch keys bob"].status == "ok"
    epoch_list_path(w.data, PARTNER.key_id).unlink()
    assert {r.name: r for r in check_epochs(load_config(cfg))}["epoch keys bob"].status == "fail"


def test_discovery_has_an_epoch_sensor_per_household_device() -> None:
    from agent.mqtt.discovery import discovery_payload

    t = Topics("epa-unit")
    doc = discovery_payload(t, "0" * 16, [("porch", "Porch")], [(OWNER.key_id, "alice"), (PARTNER.key_id, "bob")])
    c = doc["components"][f"epochs_{OWNER.key_id}"]
    assert c["state_topic"] == t.epochs_left and c["entity_category"] == "diagnostic"
    assert c["name"] == "alice epoch keys left (days)" and OWNER.key_id in c["value_template"]
    ids = [v["unique_id"] for v in doc["components"].values()]
    assert len(ids) == len(set(ids))
    assert json.dumps(doc).count("epochs_left") == 2
