"""Generate or check the epa-clip test vectors, v1 and v2 (see docs/envelope-spec.md, "Vectors").

    python tests/vectors/gen_vectors.py --check   # deterministic parts are byte-identical, clips open
    python tests/vectors/gen_vectors.py --add     # write only what is not committed yet (keeps the rest)
    python tests/vectors/gen_vectors.py --write   # rewrite everything (new random clips)

The v1 clips are the old layout (no epoch in the stanza), written with `format_version=1` so that
readers keep opening them; the v2 clips wrap to the owner's epoch keys (`epochs.json`: epoch
secrets from fixed seeds and the owner-signed public list) and to long-term keys.

Keys derive from fixed seeds. Ed25519 is deterministic, so key files, key ids, the roster and
each committed clip's two signatures regenerate byte-identically. Clips also contain a secretstream
header and SealedBox ephemeral keys from libsodium's RNG, so `--write` produces different clips
that must still verify and decrypt to the same payloads.
These keys are public test keys: never use them for anything else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from agent.crypto import envelope as env
from agent.crypto.keys import (
    DeviceIdentity,
    EpochList,
    EpochRecipient,
    HubIdentity,
    Roster,
    canonical_json,
    updated_roster,
)
from agent.errors import AgentError, EnvelopeError, EpochError, PastRetention

HERE = Path(__file__).resolve().parent


def _seed(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32, person=b"epa1-vectors").digest()


def identities() -> tuple[HubIdentity, dict[str, DeviceIdentity]]:
    hub = HubIdentity.from_seed(_seed("hub"))
    devs = {
        name: DeviceIdentity.from_secrets(_seed(f"{name}-sign"), _seed(f"{name}-box"), name)
        for name in ("owner", "partner", "stranger")
    }
    return hub, devs


def payload(n: int) -> bytes:
    return bytes((i * 31 + 7) % 251 for i in range(n))


#: The owner's epoch keys in the vectors: hourly, from 2026-01-01T00:00Z, three epochs.
EPOCH_S = 3600
EPOCH_FIRST = 1_767_225_600 // EPOCH_S
EPOCH_COUNT = 3


def epoch_secrets() -> dict[int, PrivateKey]:
    return {e: PrivateKey(_seed(f"owner-epoch-{e}")) for e in range(EPOCH_FIRST, EPOCH_FIRST + EPOCH_COUNT)}


def epoch_list(hub: HubIdentity, owner: DeviceIdentity) -> EpochList:
    secrets = epoch_secrets()
    return EpochList.sign(owner, epoch_s=EPOCH_S, first=EPOCH_FIRST,
                          keys=[bytes(secrets[e].public_key) for e in sorted(secrets)], version=1,
                          created_ms=EPOCH_FIRST * EPOCH_S * 1000, hub=hub.key_id)


class VectorEpochs:
    """The owner's epoch secrets in memory (what an `EpochStore` answers), some maybe shredded."""

    def __init__(self, device: str, shredded: frozenset[int] = frozenset()) -> None:
        self.device = device
        self._shredded = shredded

    def secret_for(self, epoch: int) -> PrivateKey:
        if epoch in self._shredded:
            raise PastRetention(f"past retention: the key of epoch {epoch} was destroyed")
        try:
            return epoch_secrets()[epoch]
        except KeyError:
            raise EpochError(f"no key for epoch {epoch}") from None


def _recipients(c: dict[str, Any], hub: HubIdentity, devs: dict[str, DeviceIdentity]) -> list[Any]:
    """`recipients` by name; those in `epochs` get the owner's epoch key of that epoch."""
    lst = epoch_list(hub, devs["owner"])
    out: list[Any] = []
    for r in c["recipients"]:
        e = c.get("epochs", {}).get(r)
        if e is None:
            out.append(devs[r].public)
        else:
            out.append(EpochRecipient(devs[r].public, e, lst.key_for(e * EPOCH_S)[1]))  # type: ignore[index]
    return out


CLIPS: list[dict[str, Any]] = [
    {"file": "clip-small.epaclip", "camera": "hall", "seq": 0, "payload_len": 100,
     "recipients": ["owner"], "meta": {"camera_id": "hall", "camera_name": "Hallway", "labels": ["person"]}},
    {"file": "clip-multi.epaclip", "camera": "hall", "seq": 1, "payload_len": 65536 + 5,
     "recipients": ["owner", "partner"], "meta": {"camera_id": "hall", "labels": []}},
    {"file": "clip-empty.epaclip", "camera": "bedroom", "seq": 0, "payload_len": 0,
     "recipients": ["owner"], "meta": {"camera_id": "bedroom"}},
    # version 2: the owner's stanza names an epoch, the partner's is its long-term key
    {"file": "clip-v2-epoch.epaclip", "camera": "porch", "seq": 0, "payload_len": 300, "version": 2,
     "recipients": ["owner", "partner"], "epochs": {"owner": EPOCH_FIRST + 1},
     "meta": {"camera_id": "porch", "camera_name": "Porch", "labels": ["person"],
              "start_wall_s": (EPOCH_FIRST + 1) * EPOCH_S + 60}},
    {"file": "clip-v2-longterm.epaclip", "camera": "porch", "seq": 1, "payload_len": 65536 * 2 + 1, "version": 2,
     "recipients": ["owner"], "meta": {"camera_id": "porch", "labels": []}},
]


def deterministic() -> dict[str, bytes]:
    """Files whose bytes depend only on the seeds."""
    hub, devs = identities()
    keys = {
        "hub": {"seed": _seed("hub").hex(), "public": hub.public.encode(), "key_id": hub.key_id},
        "devices": {
            n: {"sign_seed": _seed(f"{n}-sign").hex(), "box_secret": _seed(f"{n}-box").hex(),
                "secret": d.encode_secret(), "public": d.public.encode(), "key_id": d.key_id}
            for n, d in devs.items()
        },
        "stream_ids": {c: env.stream_id_for(hub, c).hex() for c in ("hall", "bedroom", "porch")},
    }
    r1 = updated_roster(devs["owner"], None, add=[devs["partner"].public], hub_key_id=hub.key_id)
    epochs = {
        "device": devs["owner"].key_id, "epoch_s": EPOCH_S, "first": EPOCH_FIRST,
        "secrets": {str(e): bytes(k).hex() for e, k in sorted(epoch_secrets().items())},
        "list": json.loads(epoch_list(hub, devs["owner"]).encode()),
    }
    return {
        "keys.json": json.dumps(keys, indent=2, sort_keys=True).encode() + b"\n",
        "roster.json": r1.encode(),
        "epochs.json": json.dumps(epochs, indent=2, sort_keys=True).encode() + b"\n",
    }


def _negatives(small: bytes) -> dict[str, tuple[bytes, str]]:
    """Damaged copies of the v1 clip-small (its single stanza is the v1 size)."""
    flipped = bytearray(small)
    flipped[env.HEADER_FIXED_BYTES + env.STANZA_V1_BYTES + env.SIG_BYTES + 4 + 20] ^= 0x01  # inside chunk 0
    return {
        "truncated-at-end-marker": (small[: len(small) - env.TRAILER_BYTES - 4], "TruncatedClip"),
        "truncated-mid-chunk": (small[: env.HEADER_FIXED_BYTES + env.STANZA_V1_BYTES + 64 + 30], "TruncatedClip"),
        "bit-flip-in-chunk": (bytes(flipped), "TamperedClip"),
        "data-after-end": (small + b"\x00", "TamperedClip"),
        "bad-magic": (b"EPA-CLIP" + small[8:], "MalformedEnvelope"),
        "header-field-edited": (small[:80] + bytes([small[80] ^ 1]) + small[81:], "BadSignature"),
    }


def _v2_negatives(v2: bytes, owner_index: int) -> dict[str, tuple[bytes, str]]:
    """Damaged copies of clip-v2-epoch: the owner's stanza pointed at the next epoch."""
    at = env.HEADER_FIXED_BYTES + owner_index * env.STANZA_BYTES + env.KEY_ID_BYTES + env.EPOCH_BYTES - 1
    edited = bytearray(v2)
    edited[at] ^= 0x01
    return {"v2-epoch-edited": (bytes(edited), "BadSignature")}


def _owner_index(devs: dict[str, DeviceIdentity], c: dict[str, Any]) -> int:
    return sorted(devs[r].key_id for r in c["recipients"]).index(devs["owner"].key_id)


#: Opening clip-v2-epoch as the owner: with the epoch shredded, or without any epoch secrets.
EPOCH_CASES = [
    {"file": "clip-v2-epoch.epaclip", "open_as": "owner", "shredded": [EPOCH_FIRST + 1], "error": "PastRetention"},
    {"file": "clip-v2-epoch.epaclip", "open_as": "owner", "no_store": True, "error": "EpochError"},
    {"file": "clip-v2-epoch.epaclip", "open_as": "partner", "shredded": [EPOCH_FIRST + 1], "error": None},
]


def write(keep_existing: bool = False) -> None:
    """Write every vector; with `keep_existing`, only those not committed yet (the committed
    clips, and the negatives derived from them, stay byte for byte)."""
    for name, data in deterministic().items():
        (HERE / name).write_bytes(data)
    hub, devs = identities()
    prev: dict[str, bytes] = {}
    expected = []
    blobs: dict[str, bytes] = {}
    for c in CLIPS:
        sid = env.stream_id_for(hub, c["camera"])
        path = HERE / c["file"]
        if keep_existing and path.exists():
            data = path.read_bytes()
            info = env.verify_clip(data, hub.public)
        else:
            data, info = env.seal(
                payload(c["payload_len"]), c["meta"], hub, _recipients(c, hub, devs), sid,
                c["seq"], prev.get(c["camera"], env.ZERO_HASH), format_version=c.get("version", 1),
            )
            path.write_bytes(data)
        prev[c["camera"]] = info.clip_hash
        blobs[c["file"]] = data
        expected.append({**c, "payload_sha256": hashlib.sha256(payload(c["payload_len"])).hexdigest(),
                         "clip_hash": info.clip_hash.hex(), "chunk_count": info.chunk_count,
                         "clip_id": info.clip_id_hex, "size_bytes": info.size_bytes})
    negatives = []
    v2c = next(c for c in CLIPS if c["file"] == "clip-v2-epoch.epaclip")
    bad = {**_negatives(blobs["clip-small.epaclip"]),
           **_v2_negatives(blobs["clip-v2-epoch.epaclip"], _owner_index(devs, v2c))}
    for name, (data, err) in bad.items():
        (HERE / f"bad-{name}.epaclip").write_bytes(data)
        negatives.append({"file": f"bad-{name}.epaclip", "error": err, "open_as": "owner"})
    negatives.append({"file": "clip-small.epaclip", "error": "WrongRecipient", "open_as": "stranger"})
    doc = {"format": "epa-clip v1 and v2 vectors", "clips": expected, "negative": negatives,
           "epoch_cases": EPOCH_CASES}
    (HERE / "clips.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def check() -> list[str]:
    """Problems with the committed vectors (empty list: all good)."""
    problems = []
    for name, data in deterministic().items():
        if (HERE / name).read_bytes() != data:
            problems.append(f"{name} does not regenerate byte-identically")
    hub, devs = identities()
    roster = Roster.decode((HERE / "roster.json").read_bytes())
    if roster.encode() != (HERE / "roster.json").read_bytes():
        problems.append("roster.json is not canonical")
    doc = json.loads((HERE / "clips.json").read_text())
    infos = []
    owner_epochs = VectorEpochs(devs["owner"].key_id)
    for c in doc["clips"]:
        data = (HERE / c["file"]).read_bytes()
        info = env.verify_clip(data, hub.public)
        infos.append(info)
        if info.header.version != c.get("version", 1):
            problems.append(f"{c['file']}: header version {info.header.version}, expected {c.get('version', 1)}")
        want_epochs = {devs[r].key_id: c.get("epochs", {}).get(r) for r in c["recipients"]}
        if {s.key_id: s.epoch for s in info.header.stanzas} != want_epochs:
            problems.append(f"{c['file']}: stanza epochs differ")
        for who in c["recipients"]:
            out, opened = env.open_clip_bytes(data, devs[who], hub.public, owner_epochs if who == "owner" else None)
            if hashlib.sha256(out).hexdigest() != c["payload_sha256"] or out != payload(c["payload_len"]):
                problems.append(f"{c['file']}: payload differs for {who}")
            if dict(opened.metadata) != c["meta"]:
                problems.append(f"{c['file']}: metadata differs")
        if info.clip_hash.hex() != c["clip_hash"] or info.chunk_count != c["chunk_count"]:
            problems.append(f"{c['file']}: clip hash or chunk count differs")
        h = info.header
        if (h.seq, h.stream_id, h.clip_id.hex()) != (c["seq"], env.stream_id_for(hub, c["camera"]), c["clip_id"]):
            problems.append(f"{c['file']}: header fields differ")
        # deterministic signatures: re-signing the committed header/trailer gives the same bytes
        hsig = hub.signing_key.sign(env.HEADER_SIG_DOMAIN + info.header_digest).signature
        tsig = hub.signing_key.sign(env.TRAILER_SIG_DOMAIN + info.trailer_digest).signature
        if (hsig, tsig) != (info.header_sig, info.trailer_sig):
            problems.append(f"{c['file']}: signatures do not regenerate byte-identically")
        if h.encode() != data[: len(h.encode())]:
            problems.append(f"{c['file']}: header re-encodes differently")
    if env.check_chain(infos):
        problems.append("chain broken: " + "; ".join(env.check_chain(infos)))
    small = (HERE / "clip-small.epaclip").read_bytes()
    v2c = next(c for c in CLIPS if c["file"] == "clip-v2-epoch.epaclip")
    regenerated = {**_negatives(small),
                   **_v2_negatives((HERE / v2c["file"]).read_bytes(), _owner_index(devs, v2c))}
    for n in doc["negative"]:
        data = (HERE / n["file"]).read_bytes()
        key = n["file"][len("bad-") : -len(".epaclip")]
        if key in regenerated and regenerated[key][0] != data:
            problems.append(f"{n['file']} does not regenerate byte-identically")
        try:
            env.open_clip_bytes(data, devs[n["open_as"]], hub.public, owner_epochs)
            problems.append(f"{n['file']}: opened, expected {n['error']}")
        except EnvelopeError as e:
            if type(e).__name__ != n["error"]:
                problems.append(f"{n['file']}: {type(e).__name__}, expected {n['error']}")
    if doc.get("epoch_cases") != EPOCH_CASES:
        problems.append("clips.json epoch_cases differ from the generator's")
    for ec in EPOCH_CASES:
        data = (HERE / ec["file"]).read_bytes()
        who = ec["open_as"]
        store = None if ec.get("no_store") else VectorEpochs(devs[who].key_id, frozenset(ec.get("shredded", [])))
        try:
            env.open_clip_bytes(data, devs[who], hub.public, store)
            if ec["error"] is not None:
                problems.append(f"{ec['file']} as {who}: opened, expected {ec['error']}")
        except AgentError as e:
            if type(e).__name__ != ec["error"]:
                problems.append(f"{ec['file']} as {who}: {type(e).__name__}, expected {ec['error']}")
    lst = EpochList.decode(json.dumps(json.loads((HERE / "epochs.json").read_text())["list"]), roster)
    if lst.encode() != epoch_list(hub, devs["owner"]).encode():
        problems.append("epochs.json list does not verify or regenerate")
    if canonical_json({"b": 1, "a": [1, 2]}) != b'{"a":[1,2],"b":1}':
        problems.append("canonical JSON changed")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite all vectors")
    g.add_argument("--add", action="store_true", help="write only vectors not committed yet; keep the rest")
    g.add_argument("--check", action="store_true", help="check committed vectors")
    args = ap.parse_args()
    if args.write or args.add:
        write(keep_existing=args.add)
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    print("vectors OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
