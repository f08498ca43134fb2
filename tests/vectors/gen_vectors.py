"""Generate or check the epa-clip v1 test vectors (see docs/envelope-spec.md, "Vectors").

    python tests/vectors/gen_vectors.py --check   # deterministic parts are byte-identical, clips open
    python tests/vectors/gen_vectors.py --write   # rewrite everything (new random clips)

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

from agent.crypto import envelope as env
from agent.crypto.keys import DeviceIdentity, HubIdentity, Roster, canonical_json, updated_roster
from agent.errors import EnvelopeError

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


CLIPS: list[dict[str, Any]] = [
    {"file": "clip-small.epaclip", "camera": "hall", "seq": 0, "payload_len": 100,
     "recipients": ["owner"], "meta": {"camera_id": "hall", "camera_name": "Hallway", "labels": ["person"]}},
    {"file": "clip-multi.epaclip", "camera": "hall", "seq": 1, "payload_len": 65536 + 5,
     "recipients": ["owner", "partner"], "meta": {"camera_id": "hall", "labels": []}},
    {"file": "clip-empty.epaclip", "camera": "bedroom", "seq": 0, "payload_len": 0,
     "recipients": ["owner"], "meta": {"camera_id": "bedroom"}},
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
        "stream_ids": {c: env.stream_id_for(hub, c).hex() for c in ("hall", "bedroom")},
    }
    r1 = updated_roster(devs["owner"], None, add=[devs["partner"].public], hub_key_id=hub.key_id)
    return {
        "keys.json": json.dumps(keys, indent=2, sort_keys=True).encode() + b"\n",
        "roster.json": r1.encode(),
    }


def _negatives(small: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(small)
    flipped[env.HEADER_FIXED_BYTES + env.STANZA_BYTES + env.SIG_BYTES + 4 + 20] ^= 0x01  # inside chunk 0
    return {
        "truncated-at-end-marker": (small[: len(small) - env.TRAILER_BYTES - 4], "TruncatedClip"),
        "truncated-mid-chunk": (small[: env.HEADER_FIXED_BYTES + env.STANZA_BYTES + 64 + 30], "TruncatedClip"),
        "bit-flip-in-chunk": (bytes(flipped), "TamperedClip"),
        "data-after-end": (small + b"\x00", "TamperedClip"),
        "bad-magic": (b"EPA-CLIP" + small[8:], "MalformedEnvelope"),
        "header-field-edited": (small[:80] + bytes([small[80] ^ 1]) + small[81:], "BadSignature"),
    }


def write() -> None:
    for name, data in deterministic().items():
        (HERE / name).write_bytes(data)
    hub, devs = identities()
    prev: dict[str, bytes] = {}
    expected = []
    blobs: dict[str, bytes] = {}
    for c in CLIPS:
        sid = env.stream_id_for(hub, c["camera"])
        data, info = env.seal(
            payload(c["payload_len"]), c["meta"], hub, [devs[r].public for r in c["recipients"]], sid,
            c["seq"], prev.get(c["camera"], env.ZERO_HASH),
        )
        prev[c["camera"]] = info.clip_hash
        (HERE / c["file"]).write_bytes(data)
        blobs[c["file"]] = data
        expected.append({**c, "payload_sha256": hashlib.sha256(payload(c["payload_len"])).hexdigest(),
                         "clip_hash": info.clip_hash.hex(), "chunk_count": info.chunk_count,
                         "clip_id": info.clip_id_hex, "size_bytes": info.size_bytes})
    negatives = []
    for name, (data, err) in _negatives(blobs["clip-small.epaclip"]).items():
        (HERE / f"bad-{name}.epaclip").write_bytes(data)
        negatives.append({"file": f"bad-{name}.epaclip", "error": err, "open_as": "owner"})
    negatives.append({"file": "clip-small.epaclip", "error": "WrongRecipient", "open_as": "stranger"})
    doc = {"format": "epa-clip v1 vectors", "clips": expected, "negative": negatives}
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
    for c in doc["clips"]:
        data = (HERE / c["file"]).read_bytes()
        info = env.verify_clip(data, hub.public)
        infos.append(info)
        for who in c["recipients"]:
            out, opened = env.open_clip_bytes(data, devs[who], hub.public)
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
    regenerated = _negatives(small)
    for n in doc["negative"]:
        data = (HERE / n["file"]).read_bytes()
        key = n["file"][len("bad-") : -len(".epaclip")]
        if key in regenerated and regenerated[key][0] != data:
            problems.append(f"{n['file']} does not regenerate byte-identically")
        try:
            env.open_clip_bytes(data, devs[n["open_as"]], hub.public)
            problems.append(f"{n['file']}: opened, expected {n['error']}")
        except EnvelopeError as e:
            if type(e).__name__ != n["error"]:
                problems.append(f"{n['file']}: {type(e).__name__}, expected {n['error']}")
    if canonical_json({"b": 1, "a": [1, 2]}) != b'{"a":[1,2],"b":1}':
        problems.append("canonical JSON changed")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite all vectors")
    g.add_argument("--check", action="store_true", help="check committed vectors")
    args = ap.parse_args()
    if args.write:
        write()
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    print("vectors OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
