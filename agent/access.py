"""The access flow as a pure state machine: request -> challenge -> decision(s) -> grant.

Wire format (docs/access-protocol.md, vectors in tests/vectors/access/): every message is the
canonical JSON object `{"body": {...}, "sig": b64url(64 bytes), "signer": key id}` where
`sig = Ed25519(b"epa/v1/access/<type>\\0" || canonical_json(body))` and `body["type"]` is that
type. The verifier always uses the domain of the type it EXPECTS, so a challenge, grant or
mode change can never be presented as an approval (type confusion), whatever its body says.

Roles:
- a requester (vendor, contractor, police, household member) signs a `request` with its own
  device key (the public key travels in the request);
- the hub answers with a signed `challenge` (32 random bytes, TTL, request hash, the full
  signed request), retained for owner devices while it is open;
- an owner device (role `owner` in the owner-signed roster) signs a `decision`: deny, or approve
  a scope that may only NARROW the request, with a strictly increasing counter, the roster
  version it saw, and - for recorded clips - the clip keys it re-wrapped to the requester's
  key (the hub holds no key that opens a clip, by design, so it cannot do this itself);
- the hub checks and publishes a signed `grant` (or `denial`), and `status` notices.

Hub checks on a decision, all of them before anything is granted or recorded as approved:
signer is an owner in the current roster (not revoked); the signature verifies under the
`decision` domain; the decision names this hub, this challenge, this request hash and this
requester; the challenge is open and unexpired on the MONOTONIC clock (a clock that steps back
does not revive it: time is the high-water mark of every `now` seen, and an expired challenge
is closed for good); the roster version is the current one; the device counter is strictly
greater than any seen from that device; the scope only narrows and every approved clip carries
exactly one wrapped key for the requester; the policy's number of distinct owner devices is
reached. A replayed or redelivered (QoS 1) decision therefore yields exactly one grant.

Invariants: pure functions over frozen dataclasses; randomness (challenge ids) and time are
passed in; nothing here touches the network or the filesystem. Messages never carry clip
keys in clear: only SealedBox stanzas to the requester's key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import nacl.encoding
import nacl.exceptions
import nacl.hash
from nacl.signing import SigningKey, VerifyKey

from agent.errors import AccessError, AgentError, InvalidKey
from agent.keys import (
    DeviceIdentity,
    DevicePublic,
    HubIdentity,
    HubPublic,
    Roster,
    b64url_decode,
    b64url_encode,
    canonical_json,
)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_TEXT_CHARS = 500
MAX_SCOPE_ITEMS = 256
SEALED_KEY_BYTES = 108  # SealedBox(label || clip_id || K): see agent.envelope.WRAP_SEALED_BYTES
CLOSED_MEMORY = 4096  # closed challenges / seen messages remembered (oldest forgotten first)

TYPES: tuple[str, ...] = ("request", "challenge", "decision", "grant", "denial", "status", "mode_set")
REQUESTER_ROLES: tuple[str, ...] = ("vendor", "contractor", "police", "household")
MODES: tuple[str, ...] = ("home", "away", "privacy")

_HEX_RE = re.compile(r"^[0-9a-f]+$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def sig_domain(msg_type: str) -> bytes:
    if msg_type not in TYPES:
        raise AccessError(f"unknown message type {msg_type!r}")
    return b"epa/v1/access/" + msg_type.encode("ascii") + b"\x00"


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


# --- envelope -----------------------------------------------------------------------


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
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise AccessError(f"{expected_type}: not JSON") from None
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


# --- field helpers ------------------------------------------------------------------


def _exact_keys(d: Any, keys: Iterable[str], what: str) -> Mapping[str, Any]:
    ks = set(keys)
    if not isinstance(d, dict) or set(d) != ks:
        raise AccessError(f"{what}: expected exactly the keys {sorted(ks)}")
    return d


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**53) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
        raise AccessError(f"{what}: must be an integer in {lo}..{hi}")
    return v


def _hex(v: Any, n_chars: int, what: str) -> str:
    if not isinstance(v, str) or len(v) != n_chars or not _HEX_RE.match(v):
        raise AccessError(f"{what}: must be {n_chars} lower-case hex digits")
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT_CHARS or any(ord(c) < 0x20 for c in v):
        raise AccessError(f"{what}: must be text of at most {MAX_TEXT_CHARS} characters without control characters")
    return v


def _choice(v: Any, options: Sequence[str], what: str) -> str:
    if v not in options:
        raise AccessError(f"{what}: {v!r} is not one of {', '.join(options)}")
    return str(v)


# --- scope -------------------------------------------------------------------------


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
            _hex(c, 32, "scope: clip id")
        _int(self.from_ms, "scope: from_ms")
        _int(self.to_ms, "scope: to_ms")
        if self.from_ms > self.to_ms:
            raise AccessError("scope: from_ms is after to_ms")

    @staticmethod
    def make(cameras: Iterable[str] = (), clips: Iterable[str] = (), from_ms: int = 0, to_ms: int = 0) -> Scope:
        return Scope(tuple(sorted(set(cameras))), tuple(sorted(set(clips))), from_ms, to_ms)

    def to_json(self) -> dict[str, Any]:
        return {"cameras": list(self.cameras), "clips": list(self.clips), "from_ms": self.from_ms, "to_ms": self.to_ms}

    @staticmethod
    def from_json(d: Any, what: str = "scope") -> Scope:
        d = _exact_keys(d, ("cameras", "clips", "from_ms", "to_ms"), what)
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


# --- parsed messages ----------------------------------------------------------------


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
    b = _exact_keys(dict(m.body), _REQUEST_KEYS, "request")
    if b["hub"] != hub_id:
        raise AccessError(f"request is for hub {b['hub']!r}, not this hub {hub_id}")
    rid = _hex(b["request_id"], 32, "request: request_id")
    if not isinstance(b["requester"], str):
        raise AccessError("request: requester must be an epa1pub: value")
    try:
        dev = DevicePublic.decode(b["requester"], "request: requester")
    except AgentError as e:
        raise AccessError(str(e)) from None
    if m.signer != dev.key_id:
        raise AccessError("request: signer does not match the requester key")
    verify_signed(m, "request", dev.sign_pk, "request")
    role = _choice(b["role"], REQUESTER_ROLES, "request: role")
    scope = Scope.from_json(b["scope"], "request: scope")
    if scope.empty:
        raise AccessError("request: scope names no camera and no clip")
    _int(b["created_ms"], "request: created_ms")
    return Request(m.body, m.raw, rid, dev, role, scope, _text(b["purpose"], "request: purpose"),
                   _text(b["legal_ref"], "request: legal_ref"), request_hash(m.body))


@dataclass(frozen=True, slots=True)
class WrappedKey:
    clip: str
    sealed: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"clip": self.clip, "sealed": b64url_encode(self.sealed)}


def _parse_keys(v: Any, what: str) -> tuple[WrappedKey, ...]:
    if not isinstance(v, list) or len(v) > MAX_SCOPE_ITEMS:
        raise AccessError(f"{what}: must be a list of at most {MAX_SCOPE_ITEMS} wrapped keys")
    out = []
    for i, k in enumerate(v):
        k = _exact_keys(k, ("clip", "sealed"), f"{what}[{i}]")
        sealed = _b64d(k["sealed"], f"{what}[{i}].sealed")
        if len(sealed) != SEALED_KEY_BYTES:
            raise AccessError(f"{what}[{i}]: a wrapped key must be {SEALED_KEY_BYTES} bytes")
        out.append(WrappedKey(_hex(k["clip"], 32, f"{what}[{i}].clip"), sealed))
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
    if not isinstance(m.signer, str) or not _KEY_ID_RE.match(m.signer):
        raise AccessError("decision: signer must be a device key id")
    if roster.is_revoked(m.signer):
        raise AccessError(f"decision: device {m.signer} is revoked in roster version {roster.version}")
    entry = roster.find(m.signer)
    if entry is None:
        raise AccessError(f"decision: device {m.signer} is not in the roster (version {roster.version})")
    if entry.role != "owner":
        raise AccessError(f"decision: device {m.signer} is a {entry.role}, not an owner; only owners decide")
    verify_signed(m, "decision", entry.device.sign_pk, "decision")
    b = _exact_keys(dict(m.body), _DECISION_KEYS, "decision")
    if b["hub"] != hub_id:
        raise AccessError(f"decision is for hub {b['hub']!r}, not this hub {hub_id}")
    verdict = _choice(b["verdict"], ("approve", "deny"), "decision: verdict")
    scope = None if b["scope"] is None else Scope.from_json(b["scope"], "decision: scope")
    if verdict == "approve" and scope is None:
        raise AccessError("decision: an approval must name its scope")
    _int(b["signed_ms"], "decision: signed_ms")
    return Decision(
        m.signer,
        _hex(b["challenge_id"], 64, "decision: challenge_id"),
        _hex(b["request_id"], 32, "decision: request_id"),
        _hex(b["request_hash"], 64, "decision: request_hash"),
        _hex(b["requester"], 16, "decision: requester"),
        verdict,
        scope,
        _parse_keys(b["keys"], "decision: keys"),
        _int(b["counter"], "decision: counter", 1),
        _int(b["roster_version"], "decision: roster_version", 1),
        message_digest(m.raw),
    )


# --- hub state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    challenge_ttl_s: float = 600.0
    grant_ttl_s: int = 86_400
    two_owner_roles: frozenset[str] = frozenset({"vendor", "police"})
    max_pending: int = 32

    def approvals_needed(self, role: str) -> int:
        return 2 if role in self.two_owner_roles else 1

    @staticmethod
    def from_config(cfg: Any) -> AccessPolicy:
        """From `agent.mqtt.config.AccessPolicyConfig`."""
        return AccessPolicy(float(cfg.challenge_ttl_s), int(cfg.grant_ttl_s), frozenset(cfg.two_owner_roles),
                            int(cfg.max_pending))


@dataclass(frozen=True, slots=True)
class Approval:
    device: str
    scope: Scope
    keys: tuple[WrappedKey, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    challenge_id: str
    request: Request
    expires_mono_s: float
    needed: int
    roster_version: int
    challenge_raw: bytes = field(repr=False)
    approvals: tuple[Approval, ...] = ()


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _bounded(d: dict[str, Any]) -> dict[str, Any]:
    while len(d) > CLOSED_MEMORY:
        del d[next(iter(d))]
    return d


@dataclass(frozen=True, slots=True)
class HubState:
    hub_id: str
    roster: Roster
    pending: Mapping[str, Pending] = field(default_factory=lambda: MappingProxyType({}))
    closed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # challenge id -> outcome
    by_request: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # request hash -> challenge id
    counters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # device -> last counter
    seen: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # message digest -> result
    high_mono_s: float = float("-inf")

    def tick(self, now_mono_s: float) -> tuple[HubState, float]:
        """Time never goes back for the state machine: use the high-water mark."""
        now = max(now_mono_s, self.high_mono_s)
        return (self if now == self.high_mono_s else replace(self, high_mono_s=now)), now


@dataclass(frozen=True, slots=True)
class Outbound:
    """Something the hub publishes. `channel` is mapped to a topic by agent.mqtt.hub."""

    channel: str  # challenge | challenge_clear | grant | status | mode_state
    key: str  # challenge id (challenge*) or request id (grant, status); "" for mode_state
    payload: bytes = field(repr=False)
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    status: str  # challenged | approved | granted | denied | expired | refused | duplicate | mode_set
    reason: str = ""
    outbound: tuple[Outbound, ...] = ()
    audit: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    mode: str | None = None
    challenge_id: str | None = None
    authenticated: bool = True


def _hub_msg(hub: HubIdentity, msg_type: str, body: dict[str, Any]) -> bytes:
    return sign_message(msg_type, {"type": msg_type, "v": PROTOCOL_VERSION, "hub": hub.key_id, **body},
                        hub.signing_key, hub.key_id)


def _status(hub: HubIdentity, request_id: str, challenge_id: str | None, status: str, reason: str,
            now_wall_ms: int) -> Outbound:
    body = {"request_id": request_id, "challenge_id": challenge_id, "status": status, "reason": reason,
            "issued_ms": now_wall_ms}
    return Outbound("status", request_id, _hub_msg(hub, "status", body))


def with_roster(state: HubState, roster: Roster) -> HubState:
    """Install a newer roster (the caller checked it with keys.check_roster_update)."""
    if roster.version < state.roster.version:
        raise AccessError(f"roster version {roster.version} is older than {state.roster.version}")
    return replace(state, roster=roster)


def on_request(
    state: HubState,
    data: bytes,
    *,
    hub: HubIdentity,
    policy: AccessPolicy,
    now_mono_s: float,
    now_wall_ms: int,
    challenge_id: bytes,
    known_cameras: frozenset[str] | None = None,
) -> tuple[HubState, Result]:
    """A request arrived: verify it and open a challenge for the owner devices."""
    state, now = state.tick(now_mono_s)
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms)
    try:
        req = parse_request(data, hub.key_id)
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False)
    if req.hash in state.by_request:
        # The same signed request again (QoS 1 redelivery or replay): no second challenge.
        return state, Result("duplicate", "request already challenged", challenge_id=state.by_request[req.hash])
    audit_req = ("access_request", {
        "request_id": req.request_id, "request_hash": req.hash, "requester": req.requester.key_id,
        "requester_name": req.requester.name, "role": req.role, "scope": req.scope.to_json(),
        "purpose": req.purpose, "legal_ref": req.legal_ref,
    })
    if known_cameras is not None:
        unknown = sorted(set(req.scope.cameras) - known_cameras)
        if unknown:
            reason = f"request names cameras this hub does not have: {unknown}"
            return state, Result("refused", reason, (_status(hub, req.request_id, None, "refused", reason, now_wall_ms),),
                                 (audit_req, ("access_refused", {"request_id": req.request_id, "reason": reason})))
    if len(state.pending) >= policy.max_pending:
        reason = f"too many open challenges ({policy.max_pending}); try again later"
        return state, Result("refused", reason, (_status(hub, req.request_id, None, "refused", reason, now_wall_ms),),
                             (audit_req, ("access_refused", {"request_id": req.request_id, "reason": reason})))
    if len(challenge_id) != 32:
        raise AccessError("challenge id must be 32 random bytes")
    cid = challenge_id.hex()
    if cid in state.pending or cid in state.closed:
        raise AccessError("challenge id collision (the random source is broken)")
    needed = policy.approvals_needed(req.role)
    ttl = int(policy.challenge_ttl_s)
    raw = _hub_msg(hub, "challenge", {
        "challenge_id": cid, "request_id": req.request_id, "request_hash": req.hash,
        "request": json.loads(req.raw), "ttl_s": ttl, "approvals_needed": needed,
        "roster_version": state.roster.version, "issued_ms": now_wall_ms,
    })
    p = Pending(cid, req, now + policy.challenge_ttl_s, needed, state.roster.version, raw)
    state = replace(
        state,
        pending=_frozen({**state.pending, cid: p}),
        by_request=_frozen(_bounded({**state.by_request, req.hash: cid})),
    )
    out = (
        Outbound("challenge", cid, raw, retain=True),
        _status(hub, req.request_id, cid, "challenged", f"waiting for {needed} owner approval(s)", now_wall_ms),
    )
    aud = (audit_req, ("access_challenge", {"request_id": req.request_id, "challenge_id": cid,
                                             "ttl_s": ttl, "approvals_needed": needed,
                                             "roster_version": state.roster.version}))
    return state, Result("challenged", "", expired.outbound + out, expired.audit + aud, challenge_id=cid)


def _close(state: HubState, cid: str, outcome: str) -> HubState:
    pending = dict(state.pending)
    pending.pop(cid, None)
    return replace(state, pending=_frozen(pending), closed=_frozen(_bounded({**state.closed, cid: outcome})))


def expire(state: HubState, *, now_mono_s: float, hub: HubIdentity, now_wall_ms: int) -> tuple[HubState, Result]:
    """Close every challenge whose TTL ran out on the monotonic clock."""
    state, now = state.tick(now_mono_s)
    out: list[Outbound] = []
    aud: list[tuple[str, Mapping[str, Any]]] = []
    for cid, p in list(state.pending.items()):
        if now >= p.expires_mono_s:
            state = _close(state, cid, "expired")
            out.append(Outbound("challenge_clear", cid, b"", retain=True))
            out.append(_status(hub, p.request.request_id, cid, "expired", "no decision before the challenge expired",
                               now_wall_ms))
            aud.append(("access_expiry", {"request_id": p.request.request_id, "challenge_id": cid,
                                          "approvals": [a.device for a in p.approvals]}))
    return state, Result("expired" if out else "noop", "", tuple(out), tuple(aud))


def _refuse(state: HubState, d: Decision | None, reason: str, hub: HubIdentity, now_wall_ms: int,
            request_id: str | None = None) -> tuple[HubState, Result]:
    fields: dict[str, Any] = {"reason": reason}
    out: tuple[Outbound, ...] = ()
    if d is not None:
        fields.update({"device": d.signer, "challenge_id": d.challenge_id, "request_id": d.request_id})
        rid = request_id or d.request_id
        out = (_status(hub, rid, d.challenge_id, "refused", reason, now_wall_ms),)
        state = replace(state, seen=_frozen(_bounded({**state.seen, d.digest: "refused"})))
    return state, Result("refused", reason, out, (("access_refused", fields),) if d is not None else (),
                         challenge_id=d.challenge_id if d else None, authenticated=d is not None)


def on_decision(
    state: HubState,
    data: bytes,
    *,
    hub: HubIdentity,
    policy: AccessPolicy,
    now_mono_s: float,
    now_wall_ms: int,
) -> tuple[HubState, Result]:
    """An owner decision arrived: run every hub check, then grant, deny or wait for more."""
    state, now = state.tick(now_mono_s)
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms)
    try:
        d = parse_decision(data, hub.key_id, state.roster)
    except AccessError as e:
        # Unauthenticated (forged, revoked, malformed, wrong type): refused without any output
        # an outsider could use to make the hub publish or write on its behalf.
        return state, Result("refused", str(e), expired.outbound, expired.audit, authenticated=False)
    if d.digest in state.seen:
        # The exact same message again: QoS 1 redelivery or a replay. Idempotent.
        return state, Result("duplicate", "decision already processed", expired.outbound, expired.audit,
                             challenge_id=d.challenge_id)

    def refuse(reason: str) -> tuple[HubState, Result]:
        s, r = _refuse(state, d, reason, hub, now_wall_ms)
        return s, replace(r, outbound=expired.outbound + r.outbound, audit=expired.audit + r.audit)

    closed = state.closed.get(d.challenge_id)
    if closed is not None:
        return refuse(f"challenge {d.challenge_id[:16]}… is closed ({closed}); it cannot be used again")
    p = state.pending.get(d.challenge_id)
    if p is None:
        return refuse("unknown challenge (never issued by this hub, or issued before a restart)")
    if d.request_hash != p.request.hash or d.request_id != p.request.request_id:
        return refuse("decision is bound to another request")
    if d.requester != p.request.requester.key_id:
        return refuse("decision is bound to another requester")
    if d.roster_version != state.roster.version:
        return refuse(f"decision was made against roster version {d.roster_version}; "
                      f"the hub has version {state.roster.version}")
    last = state.counters.get(d.signer, 0)
    if d.counter <= last:
        return refuse(f"counter {d.counter} is not greater than {last} (replayed or stale decision)")
    # From here the decision is authentic and fresh: consume the counter whatever happens next.
    state = replace(state, counters=_frozen({**state.counters, d.signer: d.counter}),
                    seen=_frozen(_bounded({**state.seen, d.digest: "processed"})))
    rid, cid = p.request.request_id, p.challenge_id

    if d.verdict == "deny":
        state = _close(state, cid, "denied")
        denial = _hub_msg(hub, "denial", {"challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
                                          "requester": p.request.requester.key_id, "by": d.signer,
                                          "issued_ms": now_wall_ms})
        return state, Result(
            "denied", f"denied by {d.signer}",
            expired.outbound + (Outbound("challenge_clear", cid, b"", retain=True), Outbound("grant", rid, denial)),
            expired.audit + (("access_denial", {"request_id": rid, "challenge_id": cid, "device": d.signer}),),
            challenge_id=cid,
        )

    assert d.scope is not None
    why = d.scope.escalation(p.request.scope)
    if why is not None:
        return refuse(why)
    if d.scope.empty:
        return refuse("an approval must keep at least one camera or clip; send a denial instead")
    key_clips = [k.clip for k in d.keys]
    if set(key_clips) != set(d.scope.clips):
        missing = sorted(set(d.scope.clips) - set(key_clips))
        extra = sorted(set(key_clips) - set(d.scope.clips))
        return refuse(f"wrapped keys must match the approved clips exactly (missing {missing}, extra {extra})")
    if any(a.device == d.signer for a in p.approvals):
        return refuse(f"device {d.signer} already approved this challenge; another owner device must approve")
    approvals = p.approvals + (Approval(d.signer, d.scope, d.keys),)
    aud_appr = ("access_approval", {"request_id": rid, "challenge_id": cid, "device": d.signer,
                                    "scope": d.scope.to_json(), "approvals": len(approvals), "needed": p.needed})
    if len(approvals) < p.needed:
        state = replace(state, pending=_frozen({**state.pending, cid: replace(p, approvals=approvals)}))
        reason = f"{len(approvals)} of {p.needed} owner approvals"
        return state, Result("approved", reason,
                             expired.outbound + (_status(hub, rid, cid, "approved", reason, now_wall_ms),),
                             expired.audit + (aud_appr,), challenge_id=cid)

    scope = approvals[0].scope
    for a in approvals[1:]:
        scope = scope.intersect(a.scope)
    state = _close(state, cid, "granted" if not scope.empty else "denied")
    clear = Outbound("challenge_clear", cid, b"", retain=True)
    if scope.empty:
        reason = "the owner approvals have nothing in common"
        denial = _hub_msg(hub, "denial", {"challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
                                          "requester": p.request.requester.key_id, "by": None,
                                          "issued_ms": now_wall_ms})
        return state, Result("denied", reason, expired.outbound + (clear, Outbound("grant", rid, denial)),
                             expired.audit + (aud_appr, ("access_denial", {"request_id": rid, "challenge_id": cid,
                                                                           "reason": reason})),
                             challenge_id=cid)
    keys: dict[str, WrappedKey] = {}
    for a in approvals:
        for k in a.keys:
            if k.clip in scope.clips:
                keys.setdefault(k.clip, k)
    grant_body = {
        "challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
        "requester": p.request.requester.key_id, "scope": scope.to_json(),
        "keys": [keys[c].to_json() for c in sorted(keys)],
        "approvers": sorted(a.device for a in approvals),
        "issued_ms": now_wall_ms, "expires_ms": now_wall_ms + policy.grant_ttl_s * 1000,
    }
    grant = _hub_msg(hub, "grant", grant_body)
    aud_grant = ("access_grant", {"request_id": rid, "challenge_id": cid, "requester": p.request.requester.key_id,
                                  "scope": scope.to_json(), "approvers": grant_body["approvers"],
                                  "clips": sorted(keys), "grant_hash": message_digest(grant)})
    return state, Result("granted", "", expired.outbound + (clear, Outbound("grant", rid, grant)),
                         expired.audit + (aud_appr, aud_grant), challenge_id=cid)


# --- mode changes ------------------------------------------------------------------------

_MODE_KEYS = ("type", "v", "hub", "mode", "counter", "roster_version", "signed_ms")


def on_mode_set(
    state: HubState, data: bytes, *, hub: HubIdentity, now_mono_s: float, now_wall_ms: int
) -> tuple[HubState, Result]:
    """A signed mode change: only an owner device of the current roster may change the mode."""
    state, _ = state.tick(now_mono_s)
    try:
        m = parse_message(data, "mode_set")
        if state.roster.is_revoked(m.signer):
            raise AccessError(f"mode_set: device {m.signer} is revoked")
        entry = state.roster.find(m.signer)
        if entry is None or entry.role != "owner":
            raise AccessError(f"mode_set: device {m.signer!r} is not an owner in the roster")
        verify_signed(m, "mode_set", entry.device.sign_pk, "mode_set")
        b = _exact_keys(dict(m.body), _MODE_KEYS, "mode_set")
        if b["hub"] != hub.key_id:
            raise AccessError(f"mode_set is for hub {b['hub']!r}, not this hub")
        mode = _choice(b["mode"], MODES, "mode_set: mode")
        counter = _int(b["counter"], "mode_set: counter", 1)
        rv = _int(b["roster_version"], "mode_set: roster_version", 1)
        _int(b["signed_ms"], "mode_set: signed_ms")
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False)
    digest = message_digest(m.raw)
    if digest in state.seen:
        return state, Result("duplicate", "mode change already processed")
    if rv != state.roster.version:
        return state, Result("refused", f"mode_set made against roster version {rv}, hub has {state.roster.version}",
                             audit=(("access_refused", {"device": m.signer, "reason": "stale roster (mode_set)"}),))
    last = state.counters.get(m.signer, 0)
    if counter <= last:
        return state, Result("refused", f"counter {counter} is not greater than {last} (replayed mode change)",
                             audit=(("access_refused", {"device": m.signer, "reason": "replayed mode_set"}),))
    state = replace(state, counters=_frozen({**state.counters, m.signer: counter}),
                    seen=_frozen(_bounded({**state.seen, digest: "processed"})))
    return state, Result("mode_set", "", (Outbound("mode_state", "", mode.encode(), retain=True),),
                         (("mode_change", {"mode": mode, "by": m.signer, "via": "mqtt"}),), mode=mode)


# --- client side (owner devices and requesters) --------------------------------------------


def make_request(
    requester: DeviceIdentity, hub_id: str, request_id: bytes, role: str, scope: Scope,
    purpose: str, legal_ref: str, created_ms: int,
) -> bytes:
    if len(request_id) != 16:
        raise AccessError("request id must be 16 random bytes")
    body = {
        "type": "request", "v": PROTOCOL_VERSION, "hub": hub_id, "request_id": request_id.hex(),
        "requester": requester.public.encode(), "role": _choice(role, REQUESTER_ROLES, "role"),
        "scope": scope.to_json(), "purpose": _text(purpose, "purpose"), "legal_ref": _text(legal_ref, "legal_ref"),
        "created_ms": created_ms,
    }
    return sign_message("request", body, requester.signing_key, requester.key_id)


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge_id: str
    request: Request
    ttl_s: int
    approvals_needed: int
    roster_version: int
    issued_ms: int


def parse_hub_message(data: bytes, msg_type: str, hub: HubPublic) -> Signed:
    """Any hub-signed message (challenge, grant, denial, status), verified under the pinned hub key."""
    m = parse_message(data, msg_type)
    if m.signer != hub.key_id or m.body.get("hub") != hub.key_id:
        raise AccessError(f"{msg_type}: not from hub {hub.key_id}")
    verify_signed(m, msg_type, hub.verify_key, msg_type)
    return m


def parse_challenge(data: bytes, hub: HubPublic) -> Challenge:
    """Owner side: verify the hub's challenge and the requester's signature inside it."""
    m = parse_hub_message(data, "challenge", hub)
    b = _exact_keys(dict(m.body), ("type", "v", "hub", "challenge_id", "request_id", "request_hash", "request",
                                   "ttl_s", "approvals_needed", "roster_version", "issued_ms"), "challenge")
    req = parse_request(canonical_json(b["request"]), hub.key_id)
    if req.hash != b["request_hash"] or req.request_id != b["request_id"]:
        raise AccessError("challenge: request hash does not match the request it carries")
    return Challenge(_hex(b["challenge_id"], 64, "challenge: challenge_id"), req, _int(b["ttl_s"], "ttl_s"),
                     _int(b["approvals_needed"], "approvals_needed", 1, 16),
                     _int(b["roster_version"], "roster_version", 1), _int(b["issued_ms"], "issued_ms"))


def make_decision(
    owner: DeviceIdentity, challenge: Challenge, verdict: str, counter: int, roster_version: int,
    signed_ms: int, scope: Scope | None = None, keys: Sequence[WrappedKey] = (),
) -> bytes:
    """Owner side. `scope` defaults to the requested scope; it may only narrow it."""
    if verdict == "approve":
        scope = scope or challenge.request.scope
        why = scope.escalation(challenge.request.scope)
        if why is not None:
            raise AccessError(why)
    body = {
        "type": "decision", "v": PROTOCOL_VERSION, "hub": challenge.request.body["hub"],
        "challenge_id": challenge.challenge_id, "request_id": challenge.request.request_id,
        "request_hash": challenge.request.hash, "requester": challenge.request.requester.key_id,
        "verdict": _choice(verdict, ("approve", "deny"), "verdict"),
        "scope": scope.to_json() if (verdict == "approve" and scope is not None) else None,
        "keys": [k.to_json() for k in sorted(keys, key=lambda k: k.clip)] if verdict == "approve" else [],
        "counter": counter, "roster_version": roster_version, "signed_ms": signed_ms,
    }
    return sign_message("decision", body, owner.signing_key, owner.key_id)


def make_mode_set(owner: DeviceIdentity, hub_id: str, mode: str, counter: int, roster_version: int,
                  signed_ms: int) -> bytes:
    body = {"type": "mode_set", "v": PROTOCOL_VERSION, "hub": hub_id, "mode": _choice(mode, MODES, "mode"),
            "counter": counter, "roster_version": roster_version, "signed_ms": signed_ms}
    return sign_message("mode_set", body, owner.signing_key, owner.key_id)


@dataclass(frozen=True, slots=True)
class Grant:
    challenge_id: str
    request_id: str
    request_hash: str
    requester: str
    scope: Scope
    keys: tuple[WrappedKey, ...]
    approvers: tuple[str, ...]
    issued_ms: int
    expires_ms: int


def parse_grant(data: bytes, hub: HubPublic) -> Grant:
    """Requester side: a hub-signed grant. A `denial` raises AccessError saying so."""
    try:
        body = json.loads(data).get("body", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise AccessError("grant: not JSON") from None
    if isinstance(body, dict) and body.get("type") == "denial":
        parse_hub_message(data, "denial", hub)
        raise AccessError(f"request {body.get('request_id')} was denied")
    m = parse_hub_message(data, "grant", hub)
    b = _exact_keys(dict(m.body), ("type", "v", "hub", "challenge_id", "request_id", "request_hash", "requester",
                                   "scope", "keys", "approvers", "issued_ms", "expires_ms"), "grant")
    if not isinstance(b["approvers"], list) or not all(isinstance(a, str) and _KEY_ID_RE.match(a)
                                                        for a in b["approvers"]):
        raise AccessError("grant: approvers must be device key ids")
    return Grant(_hex(b["challenge_id"], 64, "grant: challenge_id"), _hex(b["request_id"], 32, "grant: request_id"),
                 _hex(b["request_hash"], 64, "grant: request_hash"), _hex(b["requester"], 16, "grant: requester"),
                 Scope.from_json(b["scope"], "grant: scope"), _parse_keys(b["keys"], "grant: keys"),
                 tuple(b["approvers"]), _int(b["issued_ms"], "grant: issued_ms"),
                 _int(b["expires_ms"], "grant: expires_ms"))


def new_state(hub_id: str, roster: Roster, counters: Mapping[str, int] | None = None) -> HubState:
    return HubState(hub_id, roster, counters=_frozen(dict(counters or {})))
