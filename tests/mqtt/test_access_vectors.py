"""Test vectors for the access wire format (tests/vectors/access/vectors.json).

Run `python tests/mqtt/test_access_vectors.py` to regenerate after a deliberate format change;
the test fails whenever the code no longer produces (or accepts) exactly these bytes.
Ed25519 is deterministic, so signed messages are reproducible from the test seeds. The
requester-sealed clip key is a fixed 108-byte blob (the hub never opens it); the release seal
around it (to the hub's box key) is a real libsodium sealed box made with a fixed ephemeral key
(`deterministic_seal`), so the hub opens it exactly as it opens an owner device's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nacl.bindings
import nacl.encoding
import nacl.hash
from access_world import ALICE, HUB, PLUMBER, ROSTER_V1, T0_WALL_MS

from agent import access as A
from agent.access import merkle
from agent.access.audit import AuditEntry, Checkpoint, entry_hash
from agent.crypto.keys import b64url_encode, canonical_json
from agent.errors import AccessError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "access" / "vectors.json"
SEALED = bytes(range(108))
CLIP = "0b" * 16


EPHEMERAL_SK = bytes([0x42]) * 32
CLIP_META = A.ClipMeta(CLIP, "porch", T0_WALL_MS - 1_800_000, T0_WALL_MS - 1_770_000)


def deterministic_seal(recipient_pk: bytes, message: bytes) -> bytes:
    """crypto_box_seal with a FIXED ephemeral key (vectors only; real seals use a fresh one):
    epk || crypto_box(message, nonce = BLAKE2b-192(epk || pk), esk, pk)."""
    epk = nacl.bindings.crypto_scalarmult_base(EPHEMERAL_SK)
    nonce = nacl.hash.blake2b(epk + recipient_pk, digest_size=24, encoder=nacl.encoding.RawEncoder)
    return epk + nacl.bindings.crypto_box(message, nonce, recipient_pk, EPHEMERAL_SK)


def build() -> dict[str, Any]:
    policy = A.AccessPolicy(challenge_ttl_s=600, grant_ttl_s=3600)
    scope = A.Scope.make(["porch"], [CLIP], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    req = A.make_request(PLUMBER, HUB.key_id, bytes([1]) * 16, "contractor", scope, "fix the porch light",
                         "job 12", T0_WALL_MS)
    state = A.new_state(HUB.key_id, ROSTER_V1)
    state, r1 = A.on_request(state, req, hub=HUB, policy=policy, now_mono_s=0.0, now_wall_ms=T0_WALL_MS,
                             challenge_id=bytes([2]) * 32, clip_index={CLIP: CLIP_META})
    challenge = next(o.payload for o in r1.outbound if o.channel == "challenge")
    status = next(o.payload for o in r1.outbound if o.channel == "status")
    ch = A.parse_challenge(challenge, HUB.public)
    release_plain = A.RELEASE_LABEL + bytes.fromhex(ch.challenge_id) + bytes.fromhex(CLIP) + SEALED
    released = A.WrappedKey(CLIP, deterministic_seal(bytes(HUB.box_public), release_plain))
    assert A.open_release(HUB.box_secret, ch.challenge_id, released).sealed == SEALED  # type: ignore[arg-type]
    decision = A.make_decision(ALICE, ch, "approve", 1, 1, T0_WALL_MS + 1000, scope, (released,))
    state, r2 = A.on_decision(state, decision, hub=HUB, policy=policy, now_mono_s=1.0, now_wall_ms=T0_WALL_MS + 2000)
    assert r2.status == "granted", r2.reason
    grant = next(o.payload for o in r2.outbound if o.channel == "grant")
    deny = A.make_decision(ALICE, ch, "deny", 2, 1, T0_WALL_MS + 1000)
    mode = A.make_mode_set(ALICE, HUB.key_id, "away", 3, 1, T0_WALL_MS)
    body = dict(json.loads(decision)["body"])
    confused_sig = ALICE.signing_key.sign(A.sig_domain("mode_set") + canonical_json(body)).signature
    confused = canonical_json({"body": body, "sig": b64url_encode(confused_sig), "signer": ALICE.key_id})
    e1 = entry_hash(1, "boot", T0_WALL_MS, {"version": "0.1.0"}, "0" * 64)
    e2 = entry_hash(2, "access_grant", T0_WALL_MS + 5, {"request_id": "01" * 16}, e1)
    lines = [AuditEntry(1, "boot", T0_WALL_MS, {"version": "0.1.0"}, "0" * 64, e1).line()[:-1],
             AuditEntry(2, "access_grant", T0_WALL_MS + 5, {"request_id": "01" * 16}, e1, e2).line()[:-1]]
    root = merkle.root([merkle.leaf_hash(x) for x in lines]).hex()
    cp = Checkpoint.sign(HUB, 2, root, T0_WALL_MS + 6)
    mode_state = A.mode_state_message(HUB, "away", switch_on=False, roster_version=1, seq=T0_WALL_MS,
                                      issued_ms=T0_WALL_MS)
    camera_state = A.camera_state_message(HUB, "porch", "masked", seq=T0_WALL_MS, issued_ms=T0_WALL_MS)
    _, r3 = A.on_mode_set(state, mode, hub=HUB, now_mono_s=2.0, now_wall_ms=T0_WALL_MS + 3000)
    mode_result = next(o.payload for o in r3.outbound if o.channel == "mode_result")
    relearn = A.make_relearn(ALICE, HUB.key_id, "porch", bytes([3]) * 16, 4, 1, T0_WALL_MS)
    _, r4, order = A.on_relearn(state, relearn, hub=HUB, now_mono_s=3.0, now_wall_ms=T0_WALL_MS + 4000)
    assert r4.status == "relearn" and order is not None, r4.reason
    relearn_result = A.relearn_result_message(HUB, order.request_id, order.device, order.camera, order.counter,
                                              "applied", "", T0_WALL_MS + 4000)

    def v(name: str, msg_type: str, data: bytes, signer_pk: bytes, valid: bool, note: str = "") -> dict[str, Any]:
        return {"name": name, "type": msg_type, "valid": valid, "note": note,
                "signer_ed25519_pk_hex": signer_pk.hex(), "domain": A.sig_domain(msg_type).decode("ascii"),
                "message": data.decode("ascii")}

    hub_pk, alice_pk, plumber_pk = (bytes(HUB.signing_key.verify_key), bytes(ALICE.signing_key.verify_key),
                                    bytes(PLUMBER.signing_key.verify_key))
    return {
        "format": "epa2-access-vectors",
        "keys": {
            "note": "TEST KEYS ONLY. Ed25519 seeds and X25519 secrets as hex.",
            "hub_seed": bytes(HUB.signing_key).hex(), "hub_key_id": HUB.key_id,
            "hub_box_sk": bytes(HUB.box_secret or b"").hex(), "hub_box_pk": bytes(HUB.box_public).hex(),
            "alice_sign_seed": bytes(ALICE.signing_key).hex(), "alice_box_sk": bytes(ALICE.box_secret).hex(),
            "alice_key_id": ALICE.key_id,
            "plumber_sign_seed": bytes(PLUMBER.signing_key).hex(), "plumber_box_sk": bytes(PLUMBER.box_secret).hex(),
            "plumber_key_id": PLUMBER.key_id,
            "roster_v1": ROSTER_V1.encode().decode("ascii").strip(),
        },
        "request_hash": ch.request.hash,
        "release": {
            "note": "decision keys[i].sealed = crypto_box_seal(hub_box_pk, label || challenge_id || clip_id || "
                    "requester_stanza); this one uses the fixed ephemeral secret below",
            "label_hex": A.RELEASE_LABEL.hex(), "ephemeral_sk_hex": EPHEMERAL_SK.hex(),
            "requester_stanza_hex": SEALED.hex(), "sealed_hex": released.sealed.hex(),
        },
        "messages": [
            v("request", "request", req, plumber_pk, True),
            v("challenge", "challenge", challenge, hub_pk, True, "challenge_id = 0x02 * 32, monotonic t=0"),
            v("status_challenged", "status", status, hub_pk, True),
            v("decision_approve", "decision", decision, alice_pk, True, "sealed key is a fixed test blob"),
            v("grant", "grant", grant, hub_pk, True),
            v("decision_deny", "decision", deny, alice_pk, True),
            v("mode_set", "mode_set", mode, alice_pk, True),
            v("mode_result", "mode_result", mode_result, hub_pk, True),
            v("mode_state", "mode_state", mode_state, hub_pk, True),
            v("camera_state", "camera_state", camera_state, hub_pk, True),
            v("relearn", "relearn", relearn, alice_pk, True, "request_id = 0x03 * 16"),
            v("relearn_result", "relearn_result", relearn_result, hub_pk, True),
            v("type_confusion", "decision", confused, alice_pk, False,
              "a decision body signed under the mode_set domain"),
            v("challenge_as_decision", "decision", challenge, hub_pk, False, "body type is challenge"),
            v("version_1", "request", _as_v1(req), plumber_pk, False, "protocol version 1 is refused"),
        ],
        "audit": {
            "entry_person": "epa1-audit-entry",
            "entries": [
                {"seq": 1, "kind": "boot", "wall_ms": T0_WALL_MS, "fields": {"version": "0.1.0"}, "prev": "0" * 64,
                 "hash": e1},
                {"seq": 2, "kind": "access_grant", "wall_ms": T0_WALL_MS + 5, "fields": {"request_id": "01" * 16},
                 "prev": e1, "hash": e2},
            ],
            "merkle": "RFC 6962: leaf = SHA-256(0x00 || entry line without newline)",
            "root": root,
            "checkpoint": cp.encode().decode("utf-8"),
        },
    }


def _as_v1(req: bytes) -> bytes:
    body = dict(json.loads(req)["body"])
    body["v"] = 1
    return A.sign_message("request", body, PLUMBER.signing_key, PLUMBER.key_id)


def _verify(vec: dict[str, Any]) -> bool:
    from nacl.signing import VerifyKey

    data = vec["message"].encode("ascii")
    try:
        m = A.parse_message(data, vec["type"])
        A.verify_signed(m, vec["type"], VerifyKey(bytes.fromhex(vec["signer_ed25519_pk_hex"])), vec["name"])
    except AccessError:
        return False
    return True


def test_vectors_are_reproduced_exactly() -> None:
    stored = json.loads(VECTORS.read_text())
    assert stored == build(), "wire format changed: regenerate tests/vectors/access/vectors.json deliberately"


def test_vectors_verify_as_labelled() -> None:
    stored = json.loads(VECTORS.read_text())
    for vec in stored["messages"]:
        assert _verify(vec) == vec["valid"], vec["name"]
    from access_world import HUB as H

    cp = Checkpoint.decode(stored["audit"]["checkpoint"], H.public)
    assert cp.root == stored["audit"]["root"]
    for e in stored["audit"]["entries"]:
        assert entry_hash(e["seq"], e["kind"], e["wall_ms"], e["fields"], e["prev"]) == e["hash"]


if __name__ == "__main__":
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTORS}")
