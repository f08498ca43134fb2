"""Owner-signed relearn: an owner device tells the hub that a camera's new view is right.

A camera that the tamper check saw moved stays withheld, across restarts, until its owner says
so (`agent.analysis.tamper`). On the hub that is `privacy-agent camera relearn`; from an owner
device it is this message. The hub checks it like every owner message (roster owner, not
revoked, signature under the `relearn` domain, this hub, current roster version, a device counter
that only grows, so a replay is refused), records it FIRST (audit entry `camera_relearned` and
the consumed counter, fsynced by the caller), then asks the camera to relearn, then answers with
a hub-signed `relearn_result`. A member device is answered but tallied (it cannot grow the audit
log); a forged or unknown key gets no answer (no amplification).

Messages (docs/access-protocol.md, "Relearn"):
- `relearn` (owner): `{type, v, hub, camera, request_id, counter, roster_version, signed_ms}` on
  `P/relearn/request`, not retained (a relearn is for the view of the moment it was asked);
- `relearn_result` (hub): `{type, v, hub, request_id, device, camera, counter, status:
  applied|refused, reason, issued_ms}` on `P/relearn/result/<device key id>`.

Pure: the caller makes the result durable and carries the relearn out.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.access.client import parse_hub_message
from agent.access.machine import (
    HubState,
    Outbound,
    Result,
    _consume,
    _hub_msg,
    _last_counter,
    _tallied,
    authenticate_device_message,
)
from agent.access.wire import (
    PROTOCOL_VERSION,
    camera_field,
    choice_field,
    exact_keys,
    hex_field,
    int_field,
    message_digest,
    sign_message,
    text_field,
)
from agent.crypto.keys import DeviceIdentity, HubIdentity, HubPublic
from agent.errors import AccessError

_KEYS = ("type", "v", "hub", "camera", "request_id", "counter", "roster_version", "signed_ms")
_RESULT_KEYS = ("type", "v", "hub", "request_id", "device", "camera", "counter", "status", "reason", "issued_ms")


@dataclass(frozen=True, slots=True)
class RelearnOrder:
    """An authenticated, recorded relearn the hub must now carry out."""

    camera: str
    device: str
    request_id: str
    counter: int


def make_relearn(owner: DeviceIdentity, hub_id: str, camera: str, request_id: bytes, counter: int,
                 roster_version: int, signed_ms: int) -> bytes:
    if len(request_id) != 16:
        raise AccessError("relearn request id must be 16 random bytes")
    body = {"type": "relearn", "v": PROTOCOL_VERSION, "hub": hub_id, "camera": camera_field(camera, "relearn: camera"),
            "request_id": request_id.hex(), "counter": counter, "roster_version": roster_version,
            "signed_ms": signed_ms}
    return sign_message("relearn", body, owner.signing_key, owner.key_id)


def relearn_result_message(hub: HubIdentity, request_id: str, device: str, camera: str, counter: int, status: str,
                           reason: str, issued_ms: int) -> bytes:
    return _hub_msg(hub, "relearn_result", {"request_id": request_id, "device": device, "camera": camera,
                                            "counter": counter, "status": status, "reason": reason[:500],
                                            "issued_ms": issued_ms})


def on_relearn(state: HubState, data: bytes, *, hub: HubIdentity, now_mono_s: float, now_wall_ms: int,
               known_cameras: frozenset[str] | None = None) -> tuple[HubState, Result, RelearnOrder | None]:
    """Authenticate a relearn. The Result's audit entry and the consumed counter must be durable
    before the returned order is carried out (record, then act); the result message to publish
    then is `relearn_result_message(..., "applied", ...)` (the caller's, once it acted)."""
    state, now = state.tick(now_mono_s)
    try:
        m, entry, b = authenticate_device_message(state.roster, data, "relearn", _KEYS, hub.key_id)
        camera = camera_field(b["camera"], "relearn: camera")
        rid = hex_field(b["request_id"], 32, "relearn: request_id")
        counter = int_field(b["counter"], "relearn: counter", 1)
        rv = int_field(b["roster_version"], "relearn: roster_version", 1)
        int_field(b["signed_ms"], "relearn: signed_ms")
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False), None
    digest = message_digest(m.raw)
    if digest in state.seen:
        return state, Result("duplicate", "relearn already processed"), None

    def answer(reason: str) -> Outbound:
        return Outbound("relearn_result", m.signer, relearn_result_message(hub, rid, m.signer, camera, counter,
                                                                           "refused", reason, now_wall_ms))

    def refuse(reason: str) -> tuple[HubState, Result, None]:
        return state, Result("refused", reason, (answer(reason),),
                             (("access_refused", {"device": m.signer, "camera": camera,
                                                  "reason": f"relearn: {reason}"[:200]}),)), None

    if entry.role != "owner":
        # Answered, but tallied rather than audited one by one (a stolen member device cannot grow
        # the audit log); only the owners say a camera's new view is right.
        reason = f"device {m.signer} is a {entry.role}, not an owner; only owners relearn a camera"
        return _tallied(state, "member_relearn", now), Result("refused", reason, (answer(reason),)), None
    if rv != state.roster.version:
        return refuse(f"stale roster: made against roster version {rv}, the hub has version {state.roster.version}")
    last = _last_counter(state, m.signer)
    if counter <= last:
        return refuse(f"counter {counter} is not greater than {last} (replayed relearn)")
    if known_cameras is not None and camera not in known_cameras:
        return refuse(f"this hub has no camera {camera!r}")
    state = _consume(state, m.signer, counter, digest)
    audit = (("camera_relearned", {"camera": camera, "by": m.signer, "via": "mqtt", "request_id": rid,
                                   "counter": counter}),)
    return state, Result("relearn", "", (), audit), RelearnOrder(camera, m.signer, rid, counter)


@dataclass(frozen=True, slots=True)
class RelearnResult:
    """The hub's signed answer to one device's relearn (`P/relearn/result/<device>`)."""

    request_id: str
    device: str
    camera: str
    counter: int
    status: str  # applied | refused
    reason: str
    issued_ms: int


def parse_relearn_result(data: bytes, hub: HubPublic) -> RelearnResult:
    m = parse_hub_message(data, "relearn_result", hub)
    b = exact_keys(dict(m.body), _RESULT_KEYS, "relearn_result")
    return RelearnResult(hex_field(b["request_id"], 32, "relearn_result: request_id"),
                         hex_field(b["device"], 16, "relearn_result: device"),
                         camera_field(b["camera"], "relearn_result: camera"),
                         int_field(b["counter"], "relearn_result: counter"),
                         choice_field(b["status"], ("applied", "refused"), "relearn_result: status"),
                         text_field(b["reason"], "relearn_result: reason"),
                         int_field(b["issued_ms"], "relearn_result: issued_ms"))
