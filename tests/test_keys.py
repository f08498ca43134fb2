"""Household keys: files and permissions, validation, roster signing, rollback and revocation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from clip_helpers import device_from, hub_from

from agent.cli.main import main
from agent.crypto import keys as K
from agent.errors import InvalidKey, KeyFileError, RosterError, RosterRollback

OWNER = device_from(2, "owner")
PARTNER = device_from(3, "partner")
NANNY = device_from(4, "nanny")

# Low-order X25519 points (libsodium's blacklist): a SealedBox to one leaks K to anyone.
LOW_ORDER_X25519 = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def test_keygen_files_modes_and_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "owner.key"
    pub = K.write_device_identity(OWNER, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert pub == tmp_path / "owner.key.pub"
    ident = K.load_device_identity(out)
    assert ident.key_id == OWNER.key_id and ident.public.name == "owner"
    assert K.load_device_public(str(pub)).key_id == OWNER.key_id
    assert K.load_device_public(OWNER.public.encode()) == K.load_device_public(pub)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        K.write_device_identity(OWNER, out)
    with pytest.raises(KeyFileError, match="secret identity"):
        K.load_device_public(out)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_loose_permissions_are_refused_naming_file_and_mode(tmp_path: Path, mode: int) -> None:
    out = tmp_path / "owner.key"
    K.write_device_identity(OWNER, out)
    os.chmod(out, mode)
    if mode & 0o077:
        with pytest.raises(KeyFileError) as e:
            K.load_device_identity(out)
        assert str(out) in str(e.value) and f"{mode:04o}" in str(e.value)
    else:
        K.load_device_identity(out)  # 0700 has no group/other bits: allowed


def test_hub_init_refuses_to_replace_and_checks_mode(tmp_path: Path) -> None:
    hub = K.init_hub(tmp_path)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert K.load_hub_identity(tmp_path).key_id == hub.key_id == K.hub_public(tmp_path).key_id
    with pytest.raises(KeyFileError, match="already exists"):
        K.init_hub(tmp_path)
    os.chmod(tmp_path / "keys" / "hub.key", 0o644)
    with pytest.raises(KeyFileError, match="0644"):
        K.load_hub_identity(tmp_path)
    with pytest.raises(KeyFileError, match="keys init"):
        K.load_hub_identity(tmp_path / "nowhere")
    assert K.load_hub_public(str(tmp_path)).key_id == hub.key_id
    assert K.load_hub_public(hub.public.encode()).key_id == hub.key_id


def test_key_ids_are_short_hashes_of_the_public_keys() -> None:
    assert len(OWNER.key_id) == 16 and OWNER.key_id == K.device_key_id(
        bytes(OWNER.public.sign_pk), bytes(OWNER.public.box_pk)
    )
    with pytest.raises(InvalidKey, match="key id"):
        K.DevicePublic("0" * 16, OWNER.public.sign_pk, OWNER.public.box_pk, "x")


@pytest.mark.parametrize("pk", LOW_ORDER_X25519)
def test_low_order_x25519_keys_are_rejected(pk: bytes) -> None:
    with pytest.raises(InvalidKey, match="low order"):
        K.validate_x25519_public(pk, "test")
    with pytest.raises(InvalidKey):
        K.DevicePublic.from_keys(bytes(OWNER.public.sign_pk), pk)


def test_small_order_ed25519_keys_are_rejected() -> None:
    identity_point = bytes([1]) + bytes(31)
    with pytest.raises(InvalidKey):
        K.validate_ed25519_public(identity_point, "test")
    with pytest.raises(InvalidKey):
        K.validate_ed25519_public(b"\x00" * 31, "test")


@pytest.mark.parametrize(
    "value",
    [
        "epa1pub:",
        "epa1pub:AAAA",
        "epa1pub:" + "A" * 86 + "=",
        "epa2pub:" + OWNER.public.encode()[8:],
        OWNER.public.encode() + "!",
        OWNER.public.encode()[:-1] + "B",  # non-canonical trailing bits / different name byte
        "epa1pub:" + K.b64url_encode(bytes(OWNER.public.sign_pk) + bytes(OWNER.public.box_pk) + b"\xff"),
        "epa1pub:" + K.b64url_encode(bytes(OWNER.public.sign_pk) + bytes(OWNER.public.box_pk) + b"x" * 65),
    ],
)
def test_malformed_public_values(value: str) -> None:
    try:
        d = K.DevicePublic.decode(value)
    except InvalidKey:
        return
    # the only accepted mutation is one that decodes to a different, still valid, name
    assert d.key_id == OWNER.key_id and d.name != OWNER.public.name


def test_roster_sign_decode_and_rules(tmp_path: Path) -> None:
    r1 = K.updated_roster(OWNER, None, add=[PARTNER.public])
    assert r1.version == 1 and {d.key_id for d in r1.devices} == {OWNER.key_id, PARTNER.key_id}
    assert K.Roster.decode(r1.encode()) == r1
    assert K.install_roster(tmp_path, r1) is True
    assert K.install_roster(tmp_path, r1) is False  # redelivery is a no-op
    r2 = K.updated_roster(OWNER, r1, add=[NANNY.public])
    assert K.install_roster(tmp_path, r2)
    with pytest.raises(RosterRollback, match="older"):
        K.install_roster(tmp_path, r1)
    # same version, other content
    other2 = K.sign_roster(OWNER, 2, [K.RosterEntry(OWNER.public, "owner")])
    with pytest.raises(RosterRollback, match="reuses"):
        K.install_roster(tmp_path, other2)
    # a member cannot sign the next roster
    hijack = K.sign_roster(PARTNER, 3, [K.RosterEntry(PARTNER.public, "owner")])
    with pytest.raises(RosterError, match="not an owner in the installed roster"):
        K.install_roster(tmp_path, hijack)
    assert K.load_roster(tmp_path) == r2


def test_roster_tampering_is_detected() -> None:
    r = K.updated_roster(OWNER, None, add=[PARTNER.public])
    doc = json.loads(r.encode())
    doc["roster"]["version"] = 7
    with pytest.raises(RosterError, match="signature"):
        K.Roster.decode(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    doc = json.loads(r.encode())
    doc["roster"]["devices"][0]["role"] = "owner"
    doc["roster"]["devices"][1]["role"] = "owner"
    with pytest.raises(RosterError):
        K.Roster.decode(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    with pytest.raises(RosterError):
        K.Roster.decode(b"not json")
    with pytest.raises(RosterError):
        K.Roster.decode(json.dumps({"roster": {}, "signature": ""}))


def test_roster_bound_to_another_hub_is_refused(tmp_path: Path) -> None:
    K.init_hub(tmp_path)
    other = hub_from(9)
    r = K.updated_roster(OWNER, None, hub_key_id=other.key_id)
    with pytest.raises(RosterError, match="not this hub"):
        K.install_roster(tmp_path, r)
    ok = K.updated_roster(OWNER, None, hub_key_id=K.hub_public(tmp_path).key_id)
    assert K.install_roster(tmp_path, ok)


def test_revocation_excludes_device_from_new_clips(tmp_path: Path) -> None:
    r1 = K.updated_roster(OWNER, None, add=[PARTNER.public, NANNY.public])
    every = K.resolve_recipients([], None, r1)
    assert {d.key_id for d in every} == {OWNER.key_id, PARTNER.key_id, NANNY.key_id}
    r2 = K.updated_roster(OWNER, r1, revoke=[NANNY.key_id])
    assert NANNY.key_id in r2.revoked and r2.find(NANNY.key_id) is None
    # config still names the nanny: revoked devices are dropped, the rest stay
    cfg = [OWNER.public.encode(), NANNY.public.encode()]
    assert [d.key_id for d in K.resolve_recipients(cfg, None, r2)] == [OWNER.key_id]
    # re-adding a revoked device is ignored: revocation is permanent
    r3 = K.updated_roster(OWNER, r2, add=[NANNY.public])
    assert r3.find(NANNY.key_id) is None
    with pytest.raises(RosterError, match="cannot revoke itself"):
        K.updated_roster(OWNER, r3, revoke=[OWNER.key_id])


def test_recipient_not_in_roster_is_refused() -> None:
    r = K.updated_roster(OWNER, None)
    with pytest.raises(RosterError, match="not in the owner-signed roster"):
        K.resolve_recipients([PARTNER.public.encode()], None, r)
    # without a roster, the config list is used as is
    assert len(K.resolve_recipients([PARTNER.public.encode()], None, None)) == 1


def test_cli_keys_owner_enroll_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path
    assert main(["keys", "init", "--data", str(d / "data")]) == 0
    assert main(["keys", "init", "--data", str(d / "data")]) != 0
    assert main(["owner", "keygen", "--out", str(d / "o.key"), "--name", "alice"]) == 0
    assert main(["owner", "keygen", "--out", str(d / "t.key")]) == 0
    assert stat.S_IMODE((d / "o.key").stat().st_mode) == 0o600
    roster = str(d / "roster.json")
    assert main(["owner", "enroll", "--identity", str(d / "o.key"), "--roster", roster,
                 "--add", str(d / "t.key.pub"), "--hub", str(d / "data"), "--install", str(d / "data")]) == 0
    assert main(["owner", "revoke", "--identity", str(d / "o.key"), "--roster", roster,
                 "--device", str(d / "t.key.pub"), "--install", str(d / "data")]) == 0
    r = K.load_roster(d / "data")
    assert r is not None and r.version == 2 and len(r.revoked) == 1
    os.chmod(d / "o.key", 0o644)
    capsys.readouterr()
    assert main(["owner", "enroll", "--identity", str(d / "o.key"), "--roster", roster]) != 0
    err = capsys.readouterr().err
    assert "o.key" in err and "0644" in err
