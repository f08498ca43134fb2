"""Access-protocol wire messages: signing domains, canonical bodies, and strict parsers.

Every message is `{"body": {...}, "sig": b64url(64 bytes), "signer": key id}` with
`sig = Ed25519(b"epa/v2/access/<type>\\0" || canonical_json(body))` (docs/access-protocol.md,
vectors in tests/vectors/access/). The verifier always uses the domain of the type it EXPECTS,
so no message can be presented as another type. Parsers accept exactly the documented keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nacl.encoding
import nacl.exceptions
import nacl.hash
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from agent.crypto.keys import (
    REQUESTER_ROLES,
    DevicePublic,
    Roster,
    b64url_decode,
    b64url_encode,
    canonical_json,
)
from agent.errors import AccessError, AgentError, InvalidKey
from agent.jsonlimits import loads_bounded

# Version 2: keys are released by the hub (sealed to its box key inside a decision), challenges
# carry the hub's clip index for the scope and the owners' word on the requester, and the mode and
# camera state are hub-signed. Version 1 messages are refused (their signature domain differs too).
PROTOCOL_VERSION = 2


#: Deepest JSON nesting any access message needs (a challenge embeds a request: about 5).
MAX_JSON_DEPTH = 16


MAX_MESSAGE_BYTES = 256 * 1024


MAX_TEXT_CHARS = 500


MAX_SCOPE_ITEMS = 256


SEALED_KEY_BYTES = 108  # SealedBox(label || clip_id || K): see agent.crypto.envelope.format.WRAP_SEALED_BYTES


#: The outer seal of a released key: SealedBox(hub box key, RELEASE_LABEL || challenge id (32) ||
#: clip id (16) || the 108-byte stanza sealed to the requester). Binding the challenge and the clip
#: means an outer seal cannot be moved to another challenge or another clip.
RELEASE_LABEL = b"epa/v2/release\x00"
HUB_SEALED_BYTES = 48 + len(RELEASE_LABEL) + 32 + 16 + SEALED_KEY_BYTES  # SealedBox adds 32 (key) + 16 (tag)


CLOSED_MEMORY = 4096  # closed challenges / seen messages remembered (oldest forgotten first)


TYPES: tuple[str, ...] = ("request", "challenge", "decision", "grant", "denial", "status", "mode_set",
                          "mode_state", "mode_result", "camera_state", "delete_request", "delete_receipt",
                          "relearn", "relearn_result")


#: What the hub says about a requester in a challenge: enrolled by the owners in the roster (its
#: name and role are theirs) or unverified (name and role are only what the request claims).
REQUESTER_STATUSES: tuple[str, ...] = ("enrolled", "unverified")


MODES: tuple[str, ...] = ("home", "away", "privacy")


_HEX_RE = re.compile(r"^[0-9a-f]+$")


KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


_CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def sig_domain(msg_type: str) -> bytes:
    if msg_type not in TYPES:
        raise AccessError(f"unknown message type {msg_type!r}")
    return b"epa/v2/access/" + msg_type.encode("ascii") + b"\x00"


def _b64d(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise AccessError(f"{what}: not base64url without padding")
    try:
        return b64url_decode(text, what)
    except InvalidKey as e:
        raise AccessError(str(e)) from None


def _hash_hex(data: bytes, person: bytes) -> str:
    return nacl.hash.blake2b(data, digest_size=32, person=person, encoder=nacl.encoding.HexEncoder).decode()


def request_hash(body: Mapping[str, Any]) -> str:
    """BLAKE2b-256 of the canonical request body: what challenges and decisions bind to."""
    return _hash_hex(canonical_json(dict(body)), b"epa1-access-req")


def message_digest(data: bytes) -> str:
    """Identity of one signed message on the wire (to recognise an exact redelivery)."""
    return _hash_hex(data, b"epa1-access-msg")


@dataclass(frozen=True, slots=True)
class Signed:
    """A parsed (not yet verified) message."""

    body: Mapping[str, Any]
    sig: bytes
    signer: str
    raw: bytes = field(repr=False)

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


def sign_message(msg_type: str, body: Mapping[str, Any], key: SigningKey, signer: str) -> bytes:
    b = dict(body)
    if b.get("type") != msg_type:
        raise AccessError(f"body type {b.get('type')!r} does not match message type {msg_type!r}")
    sig = key.sign(sig_domain(msg_type) + canonical_json(b)).signature
    return canonical_json({"body": b, "sig": b64url_encode(sig), "signer": signer})


def parse_message(data: bytes, expected_type: str) -> Signed:
    """Shape checks only; the caller verifies the signature with the key it trusts."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_MESSAGE_BYTES:
        raise AccessError(f"{expected_type}: message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        # Size and nesting are bounded BEFORE the parser runs: a deeply nested payload would
        # otherwise raise RecursionError out of json.loads.
        doc = loads_bounded(bytes(data), max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_JSON_DEPTH,
                            what=f"{expected_type} message")
    except ValueError as e:
        raise AccessError(f"{expected_type}: not acceptable JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) != {"body", "sig", "signer"}:
        raise AccessError(f"{expected_type}: expected exactly the keys body, sig, signer")
    body, sig_s, signer = doc["body"], doc["sig"], doc["signer"]
    if not isinstance(body, dict) or not isinstance(signer, str):
        raise AccessError(f"{expected_type}: malformed message")
    if body.get("type") != expected_type:
        # Type confusion: a message of another type is refused before any other use.
        raise AccessError(f"expected a {expected_type!r} message, got {body.get('type')!r}")
    if body.get("v") != PROTOCOL_VERSION:
        raise AccessError(f"{expected_type}: unsupported protocol version {body.get('v')!r}")
    sig = _b64d(sig_s, f"{expected_type}: sig")
    if len(sig) != 64:
        raise AccessError(f"{expected_type}: signature must be 64 bytes")
    if canonical_json(doc) != bytes(data).rstrip(b"\n"):
        raise AccessError(f"{expected_type}: message is not in canonical JSON form")
    return Signed(MappingProxyType(body), sig, signer, bytes(data))


def verify_signed(msg: Signed, expected_type: str, key: VerifyKey, what: str) -> None:
    try:
        key.verify(sig_domain(expected_type) + canonical_json(dict(msg.body)), msg.sig)
    except nacl.exceptions.BadSignatureError:
        raise AccessError(f"{what}: signature does not verify") from None


def exact_keys(d: Any, keys: Iterable[str], what: str) -> Mapping[str, Any]:
    ks = set(keys)
    if not isinstance(d, dict) or set(d) != ks:
        raise AccessError(f"{what}: expected exactly the keys {sorted(ks)}")
    return d


def int_field(v: Any, what: str, lo: int = 0, hi: int = 2**53) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
        raise AccessError(f"{what}: must be an integer in {lo}..{hi}")
    return v


def hex_field(v: Any, n_chars: int, what: str) -> str:
    if not isinstance(v, str) or len(v) != n_chars or not _HEX_RE.match(v):
        raise AccessError(f"{what}: must be {n_chars} lower-case hex digits")
    return v


def text_field(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT_CHARS or any(ord(c) < 0x20 for c in v):
        raise AccessError(f"{what}: must be text of at most {MAX_TEXT_CHARS} characters without control characters")
    return v


def camera_field(v: Any, what: str) -> str:
    if not isinstance(v, str) or not _CAMERA_RE.match(v):
        raise AccessError(f"{what}: not a camera id")
    return v


def choice_field(v: Any, options: Sequence[str], what: str) -> str:
    if v not in options:
        raise AccessError(f"{what}: {v!r} is not one of {', '.join(options)}")
    return str(v)


@dataclass(frozen=True, slots=True)
class Scope:
    """What is asked for or granted: cameras, recorded clips (by id) and a wall-time window (ms)."""

    cameras: tuple[str, ...]
    clips: tuple[str, ...]
    from_ms: int
    to_ms: int

    def __post_init__(self) -> None:
        if list(self.cameras) != sorted(set(self.cameras)) or list(self.clips) != sorted(set(self.clips)):
            raise AccessError("scope: cameras and clips must be sorted without duplicates")
        if len(self.cameras) > MAX_SCOPE_ITEMS or len(self.clips) > MAX_SCOPE_ITEMS:
            raise AccessError(f"scope: at most {MAX_SCOPE_ITEMS} cameras and {MAX_SCOPE_ITEMS} clips")
        for c in self.cameras:
            if not isinstance(c, str) or not _CAMERA_RE.match(c):
                raise AccessError(f"scope: camera id {c!r} is malformed")
        for c in self.clips:
            hex_field(c, 32, "scope: clip id")
        int_field(self.from_ms, "scope: from_ms")
        int_field(self.to_ms, "scope: to_ms")
        if self.from_ms > self.to_ms:
            raise AccessError("scope: from_ms is after to_ms")

    @staticmethod
    def make(cameras: Iterable[str] = (), clips: Iterable[str] = (), from_ms: int = 0, to_ms: int = 0) -> Scope:
        return Scope(tuple(sorted(set(cameras))), tuple(sorted(set(clips))), from_ms, to_ms)

    def to_json(self) -> dict[str, Any]:
        return {"cameras": list(self.cameras), "clips": list(self.clips), "from_ms": self.from_ms, "to_ms": self.to_ms}

    @staticmethod
    def from_json(d: Any, what: str = "scope") -> Scope:
        d = exact_keys(d, ("cameras", "clips", "from_ms", "to_ms"), what)
        if not isinstance(d["cameras"], list) or not isinstance(d["clips"], list):
            raise AccessError(f"{what}: cameras and clips must be lists")
        return Scope(tuple(d["cameras"]), tuple(d["clips"]), d["from_ms"], d["to_ms"])

    @property
    def empty(self) -> bool:
        return not self.cameras and not self.clips

    def escalation(self, wider: Scope) -> str | None:
        """Why this scope is NOT within `wider`, or None if it only narrows."""
        extra_cams = set(self.cameras) - set(wider.cameras)
        if extra_cams:
            return f"approval adds cameras that were not requested: {sorted(extra_cams)}"
        extra_clips = set(self.clips) - set(wider.clips)
        if extra_clips:
            return f"approval adds clips that were not requested: {sorted(extra_clips)}"
        if self.from_ms < wider.from_ms or self.to_ms > wider.to_ms:
            return "approval widens the requested time window"
        return None

    def intersect(self, other: Scope) -> Scope:
        lo, hi = max(self.from_ms, other.from_ms), min(self.to_ms, other.to_ms)
        if lo > hi:
            lo = hi = 0
            return Scope((), (), lo, hi)
        return Scope(
            tuple(sorted(set(self.cameras) & set(other.cameras))),
            tuple(sorted(set(self.clips) & set(other.clips))),
            lo,
            hi,
        )


@dataclass(frozen=True, slots=True)
class Request:
    body: Mapping[str, Any] = field(repr=False)
    raw: bytes = field(repr=False)
    request_id: str
    requester: DevicePublic
    role: str
    scope: Scope
    purpose: str
    legal_ref: str
    hash: str


_REQUEST_KEYS = ("type", "v", "hub", "request_id", "requester", "role", "scope", "purpose", "legal_ref", "created_ms")


def parse_request(data: bytes, hub_id: str) -> Request:
    """Parse and verify a requester-signed request (self-signed: its key travels inside)."""
    m = parse_message(data, "request")
    b = exact_keys(dict(m.body), _REQUEST_KEYS, "request")
    if b["hub"] != hub_id:
        raise AccessError(f"request is for hub {b['hub']!r}, not this hub {hub_id}")
    rid = hex_field(b["request_id"], 32, "request: request_id")
    if not isinstance(b["requester"], str):
        raise AccessError("request: requester must be an epa1pub: value")
    try:
        dev = DevicePublic.decode(b["requester"], "request: requester")
    except AgentError as e:
        raise AccessError(str(e)) from None
    if m.signer != dev.key_id:
        raise AccessError("request: signer does not match the requester key")
    verify_signed(m, "request", dev.sign_pk, "request")
    role = choice_field(b["role"], REQUESTER_ROLES, "request: role")
    scope = Scope.from_json(b["scope"], "request: scope")
    if scope.empty:
        raise AccessError("request: scope names no camera and no clip")
    int_field(b["created_ms"], "request: created_ms")
    return Request(m.body, m.raw, rid, dev, role, scope, text_field(b["purpose"], "request: purpose"),
                   text_field(b["legal_ref"], "request: legal_ref"), request_hash(m.body))


@dataclass(frozen=True, slots=True)
class ClipMeta:
    """What the hub's own clip index says about one clip: its camera and wall-time span (ms).

    The hub binds requests and approvals to it, and owners see it instead of hex ids."""

    clip: str
    camera: str
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        hex_field(self.clip, 32, "clip id")
        if not isinstance(self.camera, str) or not _CAMERA_RE.match(self.camera):
            raise AccessError(f"clip {self.clip}: camera id {self.camera!r} is malformed")
        int_field(self.start_ms, f"clip {self.clip}: start_ms")
        int_field(self.end_ms, f"clip {self.clip}: end_ms")
        if self.start_ms > self.end_ms:
            raise AccessError(f"clip {self.clip}: starts after it ends")

    def outside(self, scope: Scope) -> str | None:
        """Why this clip is NOT within `scope` (its cameras and its whole time window), or None."""
        if self.camera not in scope.cameras:
            return f"clip {self.clip} is from camera {self.camera!r}, which the scope does not name"
        if self.start_ms < scope.from_ms or self.end_ms > scope.to_ms:
            return f"clip {self.clip} ({self.start_ms}..{self.end_ms} ms) is not inside the scope's time window"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"clip": self.clip, "camera": self.camera, "start_ms": self.start_ms, "end_ms": self.end_ms}

    @staticmethod
    def from_json(d: Any, what: str) -> ClipMeta:
        d = exact_keys(d, ("clip", "camera", "start_ms", "end_ms"), what)
        return ClipMeta(d["clip"], d["camera"], d["start_ms"], d["end_ms"])


@dataclass(frozen=True, slots=True)
class WrappedKey:
    clip: str
    sealed: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"clip": self.clip, "sealed": b64url_encode(self.sealed)}


def seal_release(hub_box: PublicKey, challenge_id: str, inner: WrappedKey) -> WrappedKey:
    """Owner side: seal a requester-wrapped key to the hub box key, bound to challenge and clip."""
    if len(inner.sealed) != SEALED_KEY_BYTES:
        raise AccessError(f"a requester-wrapped key must be {SEALED_KEY_BYTES} bytes")
    msg = RELEASE_LABEL + bytes.fromhex(challenge_id) + bytes.fromhex(inner.clip) + inner.sealed
    return WrappedKey(inner.clip, SealedBox(hub_box).encrypt(msg))


def open_release(hub_box: PrivateKey, challenge_id: str, outer: WrappedKey) -> WrappedKey:
    """Hub side: the requester-wrapped key inside an owner's outer seal (still sealed to the
    requester: the hub cannot open it). Refuses a seal made for another challenge or clip."""
    try:
        msg = SealedBox(hub_box).decrypt(outer.sealed)
    except nacl.exceptions.CryptoError:
        raise AccessError(f"the key for clip {outer.clip} is not sealed to this hub's box key") from None
    head = RELEASE_LABEL + bytes.fromhex(challenge_id) + bytes.fromhex(outer.clip)
    if len(msg) != len(head) + SEALED_KEY_BYTES or not msg.startswith(head):
        raise AccessError(f"the key for clip {outer.clip} was sealed for another challenge or clip")
    return WrappedKey(outer.clip, msg[len(head):])


def parse_keys(v: Any, what: str, size: int = SEALED_KEY_BYTES) -> tuple[WrappedKey, ...]:
    if not isinstance(v, list) or len(v) > MAX_SCOPE_ITEMS:
        raise AccessError(f"{what}: must be a list of at most {MAX_SCOPE_ITEMS} wrapped keys")
    out = []
    for i, k in enumerate(v):
        k = exact_keys(k, ("clip", "sealed"), f"{what}[{i}]")
        sealed = _b64d(k["sealed"], f"{what}[{i}].sealed")
        if len(sealed) != size:
            raise AccessError(f"{what}[{i}]: a wrapped key must be {size} bytes")
        out.append(WrappedKey(hex_field(k["clip"], 32, f"{what}[{i}].clip"), sealed))
    clips = [k.clip for k in out]
    if clips != sorted(set(clips)):
        raise AccessError(f"{what}: keys must be sorted by clip id, one per clip")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Decision:
    signer: str
    challenge_id: str
    request_id: str
    request_hash: str
    requester: str
    verdict: str
    scope: Scope | None
    keys: tuple[WrappedKey, ...]
    counter: int
    roster_version: int
    digest: str


_DECISION_KEYS = ("type", "v", "hub", "challenge_id", "request_id", "request_hash", "requester", "verdict",
                  "scope", "keys", "counter", "roster_version", "signed_ms")


def parse_decision(data: bytes, hub_id: str, roster: Roster) -> Decision:
    """Parse and authenticate an owner decision against the roster (no state checks yet)."""
    m = parse_message(data, "decision")
    if not isinstance(m.signer, str) or not KEY_ID_RE.match(m.signer):
        raise AccessError("decision: signer must be a device key id")
    if roster.is_revoked(m.signer):
        raise AccessError(f"decision: device {m.signer} is revoked in roster version {roster.version}")
    entry = roster.find(m.signer)
    if entry is None:
        raise AccessError(f"decision: device {m.signer} is not in the roster (version {roster.version})")
    if entry.role != "owner":
        raise AccessError(f"decision: device {m.signer} is a {entry.role}, not an owner; only owners decide")
    verify_signed(m, "decision", entry.device.sign_pk, "decision")
    b = exact_keys(dict(m.body), _DECISION_KEYS, "decision")
    if b["hub"] != hub_id:
        raise AccessError(f"decision is for hub {b['hub']!r}, not this hub {hub_id}")
    verdict = choice_field(b["verdict"], ("approve", "deny"), "decision: verdict")
    scope = None if b["scope"] is None else Scope.from_json(b["scope"], "decision: scope")
    if verdict == "approve" and scope is None:
        raise AccessError("decision: an approval must name its scope")
    int_field(b["signed_ms"], "decision: signed_ms")
    return Decision(
        m.signer,
        hex_field(b["challenge_id"], 64, "decision: challenge_id"),
        hex_field(b["request_id"], 32, "decision: request_id"),
        hex_field(b["request_hash"], 64, "decision: request_hash"),
        hex_field(b["requester"], 16, "decision: requester"),
        verdict,
        scope,
        parse_keys(b["keys"], "decision: keys", HUB_SEALED_BYTES),
        int_field(b["counter"], "decision: counter", 1),
        int_field(b["roster_version"], "decision: roster_version", 1),
        message_digest(m.raw),
    )
