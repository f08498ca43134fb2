"""Test vectors for the access wire format (tests/vectors/access/vectors.json).

Run `python tests/mqtt/test_access_vectors.py` to regenerate after a deliberate format change;
the test fails whenever the code no longer produces (or accepts) exactly these bytes.
Ed25519 is deterministic, so signed messages are reproducible from the test seeds. The sealed
clip key in the decision is a fixed 108-byte blob (SealedBox is randomised; the hub never
opens it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from access_world import ALICE, HUB, PLUMBER, ROSTER_V1, T0_WALL_MS

from agent import access as A
from agent.access.audit import Checkpoint, entry_hash
from agent.crypto.keys import b64url_encode, canonical_json
from agent.errors import AccessError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "access" / "vectors.json"
SEALED = bytes(range(108))
CLIP = "0b" * 16


def build() -> dict[str, Any]:
    policy = A.AccessPolicy(challenge_ttl_s=600, grant_ttl_s=3600)
    scope = A.Scope.make(["porch"], [CLIP], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    req = A.make_request(PLUMBER, HUB.key_id, bytes([1]) * 16, "contractor", scope, "fix the porch light",
                         "job 12", T0_WALL_MS)
    state = A.new_state(HUB.key_id, ROSTER_V1)
    state, r1 = A.on_request(state, req, hub=HUB, policy=policy, now_mono_s=0.0, now_wall_ms=T0_WALL_MS,
                             challenge_id=bytes([2]) * 32)
    challenge = next(o.payload for o in r1.outbound if o.channel == "challenge")
    status = next(o.payload for o in r1.outbound if o.channel == "status")
    ch = A.parse_challenge(challenge, HUB.public)
    decision = A.make_decision(ALICE, ch, "approve", 1, 1, T0_WALL_MS + 1000, scope, (A.WrappedKey(CLIP, SEALED),))
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
    cp = Checkpoint.sign(HUB, 2, e2, T0_WALL_MS + 6)

    def v(name: str, msg_type: str, data: bytes, signer_pk: bytes, valid: bool, note: str = "") -> dict[str, Any]:
        return {"name": name, "type": msg_type, "valid": valid, "note": note,
                "signer_ed25519_pk_hex": signer_pk.hex(), "domain": A.sig_domain(msg_type).decode("ascii"),
                "message": data.decode("ascii")}

    hub_pk, alice_pk, plumber_pk = (bytes(HUB.signing_key.verify_key), bytes(ALICE.signing_key.verify_key),
                                    bytes(PLUMBER.signing_key.verify_key))
    return {
        "format": "epa1-access-vectors",
        "keys": {
            "note": "TEST KEYS ONLY. Ed25519 seeds and X25519 secrets as hex.",
            "hub_seed": bytes(HUB.signing_key).hex(), "hub_key_id": HUB.key_id,
            "alice_sign_seed": bytes(ALICE.signing_key).hex(), "alice_box_sk": bytes(ALICE.box_secret).hex(),
            "alice_key_id": ALICE.key_id,
            "plumber_sign_seed": bytes(PLUMBER.signing_key).hex(), "plumber_box_sk": bytes(PLUMBER.box_secret).hex(),
            "plumber_key_id": PLUMBER.key_id,
            "roster_v1": ROSTER_V1.encode().decode("ascii").strip(),
        },
        "request_hash": ch.request.hash,
        "messages": [
            v("request", "request", req, plumber_pk, True),
            v("challenge", "challenge", challenge, hub_pk, True, "challenge_id = 0x02 * 32, monotonic t=0"),
            v("status_challenged", "status", status, hub_pk, True),
            v("decision_approve", "decision", decision, alice_pk, True, "sealed key is a fixed test blob"),
            v("grant", "grant", grant, hub_pk, True),
            v("decision_deny", "decision", deny, alice_pk, True),
            v("mode_set", "mode_set", mode, alice_pk, True),
            v("type_confusion", "decision", confused, alice_pk, False,
              "a decision body signed under the mode_set domain"),
            v("challenge_as_decision", "decision", challenge, hub_pk, False, "body type is challenge"),
        ],
        "audit": {
            "entry_person": "epa1-audit-entry",
            "entries": [
                {"seq": 1, "kind": "boot", "wall_ms": T0_WALL_MS, "fields": {"version": "0.1.0"}, "prev": "0" * 64,
                 "hash": e1},
                {"seq": 2, "kind": "access_grant", "wall_ms": T0_WALL_MS + 5, "fields": {"request_id": "01" * 16},
                 "prev": e1, "hash": e2},
            ],
            "checkpoint": cp.encode().decode("ascii"),
        },
    }


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
    assert cp.head == stored["audit"]["entries"][-1]["hash"]
    for e in stored["audit"]["entries"]:
        assert entry_hash(e["seq"], e["kind"], e["wall_ms"], e["fields"], e["prev"]) == e["hash"]


if __name__ == "__main__":
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {VECTORS}")
