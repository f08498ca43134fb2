"""Forward-secure epoch keys: once a device destroys an epoch's secret, no copy of any clip of that
epoch opens, for anyone holding every file there is; later clips still open; v1 clips still open.
Plus the epoch store's own rules (stable keys, versions, partial epochs, read-only, malformed)."""

from __future__ import annotations

import base64
import dataclasses
import errno
import json
import os
import shutil
import stat
import time
from pathlib import Path

import nacl.exceptions
import pytest
import test_upload_s3  # its S3 client helper; `s3_endpoint` comes from conftest
from nacl.public import PrivateKey, SealedBox

from agent.cli.main import main
from agent.crypto import envelope as env
from agent.crypto.keys import (
    DeviceIdentity,
    EpochList,
    EpochRecipient,
    EpochStore,
    HubIdentity,
    check_epoch_update,
    epoch_of,
    init_hub,
    load_device_identity,
    load_hub_identity,
    store_path,
    updated_roster,
    write_device_identity,
)
from agent.errors import (
    BadSignature,
    EpochError,
    ExitCode,
    MalformedEnvelope,
    PastRetention,
    TamperedClip,
    WrongRecipient,
)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, an epoch boundary
H = 3600


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@dataclasses.dataclass
class Household:
    root: Path
    hub: HubIdentity
    device: DeviceIdentity
    partner: DeviceIdentity
    identity_file: Path
    store: EpochStore


def _household(tmp_path: Path, now_s: float = T0, horizon_s: int = 12 * H) -> tuple[Household, EpochList]:
    data = tmp_path / "hubdata"
    hub = init_hub(data)
    hub = load_hub_identity(data)
    device = DeviceIdentity.generate("alice-phone")
    partner = DeviceIdentity.generate("bob-laptop")
    ident_file = tmp_path / "device" / "alice.key"
    ident_file.parent.mkdir(mode=0o700)
    write_device_identity(device, ident_file)
    store = EpochStore.create(store_path(ident_file), device)
    lst = store.generate(device, now_s, horizon_s=horizon_s)
    return Household(tmp_path, hub, device, partner, ident_file, store), lst


def _recipient(lst: EpochList, device: DeviceIdentity, start_s: float) -> EpochRecipient:
    found = lst.key_for(start_s)
    assert found is not None
    return EpochRecipient(device.public, found[0], found[1])


def _seal_series(h: Household, lst: EpochList, starts: list[float]) -> list[tuple[float, bytes, bytes]]:
    """One clip per start time (device on its epoch key, partner on its long-term key)."""
    sid = env.stream_id_for(h.hub, "porch")
    prev = env.ZERO_HASH
    out = []
    for seq, start in enumerate(starts):
        payload = os.urandom(1000 + seq)
        data, info = env.seal(payload, {"camera_id": "porch", "start_wall_s": start}, h.hub,
                              [_recipient(lst, h.device, start), h.partner.public], sid, seq, prev)
        prev = info.clip_hash
        out.append((start, payload, data))
    return out


def _every_file_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_shredded_epochs_never_open_with_every_file(tmp_path: Path, s3_endpoint: str) -> None:
    h, lst = _household(tmp_path)
    starts = [T0 + k * H + 600 for k in range(6)]  # one clip in each of six epochs
    clips = _seal_series(h, lst, starts)
    cloud, nas = tmp_path / "cloud", tmp_path / "nas"
    cloud.mkdir()
    nas.mkdir()
    s3 = test_upload_s3._client(s3_endpoint)
    s3.create_bucket(Bucket="kept-forever")
    for i, (_, _, data) in enumerate(clips):
        (cloud / f"{i}.epaclip").write_bytes(data)
        (nas / f"{i}.epaclip").write_bytes(data)
        s3.put_object(Bucket="kept-forever", Key=f"clips/{i}.epaclip", Body=data)  # an S3 copy (moto, real HTTP)
    e0 = epoch_of(T0, lst.epoch_s)
    doomed = {e: bytes(h.store.secret_for(e)) for e in range(e0, e0 + 3)}

    res = h.store.shred_before(T0 + 3 * H, now_s=T0 + 6 * H)
    assert res.destroyed == (e0, e0 + 1, e0 + 2)

    # The attacker holds EVERY file: the device identity and its store (re-read from disk), the
    # hub's data dir (signing and box keys), and every copy of every ciphertext.
    ident = load_device_identity(h.identity_file)
    store = EpochStore.load(store_path(h.identity_file))
    hub = load_hub_identity(tmp_path / "hubdata")
    candidates: list[PrivateKey] = [ident.box_secret, PrivateKey(bytes(hub.signing_key))]
    if hub.box_secret is not None:
        candidates.append(hub.box_secret)
    candidates += [store.secret_for(e) for e in store.live_epochs]
    assert store.live_epochs and min(store.live_epochs) == e0 + 3
    # No file anywhere keeps a destroyed secret, raw or encoded (the temporary file is gone too).
    everything = _every_file_bytes(tmp_path)
    for secret in doomed.values():
        assert secret not in everything and _b64(secret).encode() not in everything
    assert not list(tmp_path.rglob("*.tmp"))

    s3_copy = tmp_path / "from-s3"
    s3_copy.mkdir()
    for i in range(len(clips)):
        got = s3.get_object(Bucket="kept-forever", Key=f"clips/{i}.epaclip")["Body"].read()
        (s3_copy / f"{i}.epaclip").write_bytes(got)
    for copy in (cloud, nas, s3_copy):
        for i, (start, payload, _) in enumerate(clips):
            data = (copy / f"{i}.epaclip").read_bytes()
            e = epoch_of(start, lst.epoch_s)
            if e in doomed:
                with pytest.raises(PastRetention, match=r"past retention: the key of epoch \d+ .*destroyed on"):
                    env.open_clip_bytes(data, ident, hub.public, store)
                # Nor does any key the attacker has open the device's stanza directly.
                info = env.verify_clip(data, hub.public)
                stanza = next(s for s in info.header.stanzas if s.key_id == ident.key_id)
                assert stanza.epoch == e
                for k in candidates:
                    with pytest.raises(nacl.exceptions.CryptoError):
                        SealedBox(k).decrypt(stanza.sealed)
                # Pretending the stanza is a long-term one does not help either.
                as_longterm = dataclasses.replace(info.header, stanzas=(env.Stanza(ident.key_id, stanza.sealed),))
                with pytest.raises(TamperedClip):
                    env.unwrap_key(ident, as_longterm)
            else:
                out, opened = env.open_clip_bytes(data, ident, hub.public, store)
                assert out == payload and opened.metadata["start_wall_s"] == start
            # The partner's long-term stanza is unaffected by alice's shred.
            out, _ = env.open_clip_bytes(data, h.partner, hub.public)
            assert out == payload


def test_unwrap_key_without_a_store_or_the_wrong_store(tmp_path: Path) -> None:
    h, lst = _household(tmp_path)
    [(_, _, data)] = _seal_series(h, lst, [T0 + 60])
    info = env.verify_clip(data, h.hub.public)
    with pytest.raises(EpochError, match="epoch key store"):
        env.unwrap_key(h.device, info.header)
    other = DeviceIdentity.generate()
    with pytest.raises(EpochError, match="is for device"):
        env.unwrap_key(h.device, info.header, EpochStore.create(tmp_path / "other.epochs", other))
    with pytest.raises(WrongRecipient):
        env.unwrap_key(other, info.header)
    with pytest.raises(EpochError, match="never generated"):
        h.store.secret_for(epoch_of(T0, H) - 5)


def test_v1_clips_still_open(tmp_path: Path) -> None:
    h, _ = _household(tmp_path)
    sid = env.stream_id_for(h.hub, "hall")
    data, info = env.seal(b"old clip", {"camera_id": "hall"}, h.hub, [h.device.public], sid, format_version=1)
    assert data[8] == 1 and info.header.version == 1 and info.header.stanzas[0].epoch is None
    assert len(info.header.encode()) == env.HEADER_FIXED_BYTES + env.STANZA_V1_BYTES
    for store in (None, h.store):
        out, _ = env.open_clip_bytes(data, h.device, h.hub.public, store)
        assert out == b"old clip"
    # a v1 envelope cannot carry an epoch
    with pytest.raises(MalformedEnvelope):
        lst = h.store.current_list
        assert lst is not None
        env.seal(b"", {}, h.hub, [_recipient(lst, h.device, T0)], sid, format_version=1)


def test_v2_header_layout_and_long_term_recipients(tmp_path: Path) -> None:
    h, lst = _household(tmp_path)
    sid = env.stream_id_for(h.hub, "hall")
    data, info = env.seal(b"x", {}, h.hub, [h.device.public], sid)
    assert data[8] == env.VERSION == 2
    assert data[env.HEADER_FIXED_BYTES + 8 : env.HEADER_FIXED_BYTES + 16] == b"\xff" * 8  # epoch: none
    assert info.header.stanzas[0].epoch is None
    out, _ = env.open_clip_bytes(data, h.device, h.hub.public)
    assert out == b"x"
    rec = _recipient(lst, h.device, T0 + 5)
    data, info = env.seal(b"y", {}, h.hub, [rec], sid)
    assert int.from_bytes(data[env.HEADER_FIXED_BYTES + 8 : env.HEADER_FIXED_BYTES + 16], "big") == rec.epoch
    # editing the epoch breaks the hub's header signature
    bad = bytearray(data)
    bad[env.HEADER_FIXED_BYTES + 15] ^= 1
    with pytest.raises(BadSignature):
        env.verify_clip(bytes(bad), h.hub.public)
    # the same device twice with two different keys is refused
    with pytest.raises(MalformedEnvelope, match="twice"):
        env.seal(b"", {}, h.hub, [rec, h.device.public], sid)


def test_generate_twice_keeps_keys_and_bumps_version(tmp_path: Path) -> None:
    h, first = _household(tmp_path, horizon_s=24 * H)
    second = h.store.generate(h.device, T0 + 10 * H + 5, horizon_s=24 * H)
    assert second.version == first.version + 1 == 2
    assert second.first == epoch_of(T0 + 10 * H, H) and second.last > first.last
    for e in range(second.first, first.last + 1):
        assert second.keys[e - second.first] == first.keys[e - first.first]
    assert check_epoch_update(first, second) is True
    # the lists verify against a roster holding the device
    roster = updated_roster(h.device, None, hub_key_id=h.hub.key_id)
    assert EpochList.decode(second.encode(), roster).keys == second.keys
    # the store on disk agrees (a fresh load generates nothing new for the overlap)
    third = EpochStore.load(h.store.path).generate(h.device, T0 + 10 * H + 5, horizon_s=24 * H)
    assert third.version == 3 and third.keys == second.keys
    assert stat.S_IMODE(h.store.path.stat().st_mode) == 0o600
    # the epoch length of a store with keys cannot change
    with pytest.raises(EpochError, match="cannot change"):
        h.store.generate(h.device, T0 + 11 * H, epoch_s=1800)
    with pytest.raises(EpochError, match="belongs to device"):
        h.store.generate(h.partner, T0 + 11 * H)


def test_changed_keys_or_rollback_are_refused(tmp_path: Path) -> None:
    h, first = _household(tmp_path)
    keys = list(first.keys)
    keys[3] = bytes(PrivateKey.generate().public_key)
    swapped = EpochList.sign(h.device, epoch_s=first.epoch_s, first=first.first, keys=keys,
                             version=first.version + 1, created_ms=first.created_ms + 1)
    with pytest.raises(EpochError, match="different key for epoch"):
        check_epoch_update(first, swapped)
    second = h.store.generate(h.device, T0 + H, horizon_s=12 * H)
    with pytest.raises(EpochError, match="older"):
        check_epoch_update(second, first)


def test_shred_range_keeps_partial_epochs(tmp_path: Path) -> None:
    h, _ = _household(tmp_path)
    e0 = epoch_of(T0, H)
    res = h.store.shred_range(T0 + 1800, T0 + 4 * H + 1800, now_s=T0 + 8 * H)
    assert res.destroyed == (e0 + 1, e0 + 2, e0 + 3)
    assert res.kept_partial == (e0, e0 + 4)
    h.store.secret_for(e0)
    h.store.secret_for(e0 + 4)
    with pytest.raises(PastRetention):
        h.store.secret_for(e0 + 2)
    # a range reaching into the future is cut at now: the running epoch is kept
    res = h.store.shred_range(T0 + 5 * H, T0 + 100 * H, now_s=T0 + 6 * H + 10)
    assert res.destroyed == (e0 + 5,) and res.kept_partial == (e0 + 6,)
    # the shred record survives a reload, in ranges
    again = EpochStore.load(h.store.path)
    assert [(r.first, r.last) for r in again.shredded] == [(e0 + 1, e0 + 3), (e0 + 5, e0 + 5)]
    assert again.destroyed_at(e0 + 2) == T0 + 8 * H
    with pytest.raises(EpochError, match="after now"):
        h.store.shred_before(T0 + 100 * H, now_s=T0 + 6 * H)
    # a list generated after the shred does not resurrect or re-key a destroyed epoch
    lst = again.generate(h.device, T0 + 6 * H + 10, horizon_s=12 * H)
    assert lst.first == e0 + 6


def test_retention_days_applies_automatically(tmp_path: Path) -> None:
    h, _ = _household(tmp_path, horizon_s=3 * 86_400)
    e0 = epoch_of(T0, H)
    res = h.store.set_retention(1, now_s=T0 + 86_400 + 2 * H)
    assert res.destroyed == (e0, e0 + 1)
    assert EpochStore.load(h.store.path).retention_days == 1
    assert h.store.auto_shred(T0 + 86_400 + 2 * H).destroyed == ()
    assert h.store.auto_shred(T0 + 86_400 + 3 * H).destroyed == (e0 + 2,)
    h.store.set_retention(None, now_s=T0 + 2 * 86_400)
    assert h.store.auto_shred(T0 + 3 * 86_400).destroyed == ()


def test_concurrent_writers_never_undo_a_shred(tmp_path: Path) -> None:
    """Two handles on one store: a stale one that generates must not write back a shredded secret."""
    h, _ = _household(tmp_path)
    stale = EpochStore.load(h.store.path)
    e0 = epoch_of(T0, H)
    h.store.shred_before(T0 + 2 * H, now_s=T0 + 2 * H)
    stale.generate(h.device, T0 + 2 * H, horizon_s=12 * H)
    again = EpochStore.load(h.store.path)
    with pytest.raises(PastRetention):
        again.secret_for(e0)
    with pytest.raises(PastRetention):
        stale.secret_for(e0)


def test_read_only_store_is_refused_and_nothing_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = _household(tmp_path)
    path = h.store.path
    before = path.read_bytes()
    e0 = epoch_of(T0, H)
    os.chmod(path.parent, 0o500)
    try:
        if os.access(path.parent, os.W_OK):  # root ignores modes: make the directory refuse writes
            real_open = os.open

            def refusing_open(p, flags, *a, **kw):  # type: ignore[no-untyped-def]
                if str(p).endswith(".tmp") and flags & os.O_CREAT:
                    raise OSError(errno.EROFS, "Read-only file system", str(p))
                return real_open(p, flags, *a, **kw)

            monkeypatch.setattr(os, "open", refusing_open)
        with pytest.raises(EpochError, match=rf"cannot write epoch key store {path}.*nothing was changed"):
            h.store.shred_before(T0 + 3 * H, now_s=T0 + 4 * H)
        with pytest.raises(EpochError, match="cannot write epoch key store"):
            h.store.generate(h.device, T0 + 4 * H, horizon_s=24 * H)
    finally:
        monkeypatch.undo()
        os.chmod(path.parent, 0o700)
    assert path.read_bytes() == before
    h.store.secret_for(e0)  # the in-memory store did not change either
    assert EpochStore.load(path).secret_for(e0) == h.store.secret_for(e0)


@pytest.mark.parametrize("content", [
    b"", b"{", b"[]", b'{"format": "other"}', b"\xff\xfe", b"[" * 5000,
])
def test_malformed_store_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "x.key.epochs"
    p.write_bytes(content)
    p.chmod(0o600)
    with pytest.raises(EpochError, match=str(p)):
        EpochStore.load(p)


def test_store_field_damage_and_modes(tmp_path: Path) -> None:
    h, _ = _household(tmp_path)
    good = json.loads(h.store.path.read_text())
    damaged = []
    for key, value in (("epoch_s", "3600"), ("device", "zz"), ("secrets", {"1": "!!"}), ("secrets", {"x": "AA"}),
                       ("shredded", [{"first": 2, "last": 1, "at_s": 0}]), ("retention_days", -1),
                       ("list", {"list": {}, "signature": ""})):
        doc = dict(good)
        doc[key] = value
        damaged.append(doc)
    for doc in damaged:
        h.store.path.write_text(json.dumps(doc))
        with pytest.raises(EpochError, match="epoch key store"):
            EpochStore.load(h.store.path)
    h.store.path.write_text(json.dumps(good))
    h.store.path.chmod(0o644)
    with pytest.raises(EpochError, match="must be 0600"):
        EpochStore.load(h.store.path)
    with pytest.raises(EpochError, match="does not exist"):
        EpochStore.load(tmp_path / "missing.epochs")
    with pytest.raises(EpochError, match="already exists"):
        EpochStore.create(h.store.path, h.device)


# --- the command line -------------------------------------------------------------------------


def _iso(wall_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall_s))


def test_cli_generate_shred_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    h, lst = _household(tmp_path, now_s=now - 10 * 86_400, horizon_s=4 * 86_400)
    old, newer = now - 9.5 * 86_400, now - 7.5 * 86_400
    clips = _seal_series(h, lst, [old, newer])
    paths = []
    for i, (_, _, data) in enumerate(clips):
        p = tmp_path / f"c{i}.epaclip"
        p.write_bytes(data)
        paths.append(p)
    hubpub = tmp_path / "hubdata"
    ident = str(h.identity_file)
    capsys.readouterr()

    # open works for both before the shred
    for i, p in enumerate(paths):
        assert main(["open", str(p), "--identity", ident, "--hub", str(hubpub), "--out", str(tmp_path / f"o{i}")]) == 0
    assert (tmp_path / "o0").read_bytes() == clips[0][1]

    assert main(["owner", "shred", "--identity", ident, "--before", _iso(now - 9 * 86_400)]) == 0
    out = capsys.readouterr().out
    assert "destroyed the keys of" in out and "can no longer be opened by anyone" in out

    rc = main(["open", str(paths[0]), "--identity", ident, "--hub", str(hubpub), "--out", str(tmp_path / "x0")])
    err = capsys.readouterr().err
    assert rc == ExitCode.PAST_RETENTION == 15
    assert "past retention: its key was destroyed on" in err and "Traceback" not in err
    assert not (tmp_path / "x0").exists() and not (tmp_path / "x0.part").exists()
    assert main(["open", str(paths[1]), "--identity", ident, "--hub", str(hubpub), "--out", str(tmp_path / "x1")]) == 0

    # retention: set now, applied now; later commands apply it too
    assert main(["owner", "shred", "--identity", ident, "--retention-days", "8"]) == 0
    out = capsys.readouterr().out
    assert "retention set to 8 days" in out
    EpochStore.load(store_path(h.identity_file)).set_retention(7, now_s=now - 86_400)  # older "now": no effect yet
    rc = main(["open", str(paths[1]), "--identity", ident, "--out", str(tmp_path / "x2")])
    captured = capsys.readouterr()
    assert rc == 15 and "retention (7 days): destroyed" in captured.out
    assert "past retention: its key was destroyed on" in captured.err

    # show is readable
    assert main(["owner", "epochs", "show", "--identity", ident]) == 0
    out = capsys.readouterr().out
    assert "destroyed on" in out and "retention: 7 days" in out


def test_cli_generate_writes_list_and_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device = DeviceIdentity.generate("carol")
    ident = tmp_path / "carol.key"
    write_device_identity(device, ident)
    init_hub(tmp_path / "hub")
    out = tmp_path / "carol.epochs.json"
    args = ["owner", "epochs", "generate", "--identity", str(ident), "--horizon-days", "3", "--epoch-minutes", "30",
            "--hub", str(tmp_path / "hub"), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "covers" in text and "runs out" in text and "public list written" in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(store_path(ident).stat().st_mode) == 0o600
    roster = updated_roster(device, None)
    first = EpochList.decode(out.read_bytes(), roster)
    assert first.epoch_s == 1800 and first.version == 1 and first.hub is not None
    assert first.first == epoch_of(time.time(), 1800) or first.first == epoch_of(time.time(), 1800) - 1
    assert main(args[:-2] + ["--out", str(out)]) == 0
    second = EpochList.decode(out.read_bytes(), roster)
    assert second.version == 2 and check_epoch_update(first, second)
    # a damaged store: a clear error, exit code, no traceback
    store_path(ident).write_text("{not json")
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "epoch key store" in err and "Traceback" not in err
    # open of an epoch clip without any store says where the store should be
    store_path(ident).unlink()
    hub = load_hub_identity(tmp_path / "hub")
    rec = EpochRecipient(device.public, first.first, first.key_for(first.first * 1800)[1])  # type: ignore[index]
    data, _ = env.seal(b"z", {}, hub, [rec], env.stream_id_for(hub, "c"))
    (tmp_path / "c.epaclip").write_bytes(data)
    rc = main(["open", str(tmp_path / "c.epaclip"), "--identity", str(ident), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert rc != 0 and "no epoch key store at" in err and "Traceback" not in err
    shutil.rmtree(tmp_path / "hub")
