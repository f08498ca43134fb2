"""Owner-signed deletion: the household's right to delete, as a pure part of the access state machine.

An owner device signs a `delete_request` naming a scope (cameras and a wall-time window, or clip
ids). The hub checks it like every owner message (roster owner, not revoked, signature, this hub,
current roster version, a device counter that only grows), records it FIRST (audit entry and
counter, fsynced by the caller), then deletes from its outbox and every sink and publishes a
hub-signed `delete_receipt` saying what was deleted where. Every household device that sees the
signed request shreds its epoch keys for the epochs wholly inside the window; for partial epochs
the deletion is from storage only, and the receipt says so.

Messages (docs/access-protocol.md, "Deletion"):
- `delete_request` (owner): `{type, v, hub, request_id, scope, counter, roster_version, signed_ms}`
  on `P/delete/request/<request_id>`, retained (devices that were offline still see it);
- `delete_receipt` (hub): `{type, v, hub, request_id, device, status: deleted|refused, reason,
  scope, deleted: [{clip, camera, start_ms, end_ms, places: [...]}], pending: [{clip, places}],
  storage_only: [[from_ms, to_ms], ...], issued_ms}` on `P/delete/receipt/<request_id>`, retained.

Pure: the caller finds and deletes the clips (agent.storage.deletion) and hands the outcome back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    Scope,
    exact_keys,
    hex_field,
    int_field,
    message_digest,
    sign_message,
)
from agent.crypto.keys import DEFAULT_EPOCH_S, DeviceIdentity, HubIdentity, Roster
from agent.errors import AccessError

_REQUEST_KEYS = ("type", "v", "hub", "request_id", "scope", "counter", "roster_version", "signed_ms")

#: Epoch length (s) the receipt uses to say which parts of a window are storage-only deletions
#: (the devices' default; each device shreds by its own epochs).
RECEIPT_EPOCH_S = DEFAULT_EPOCH_S


@dataclass(frozen=True, slots=True)
class DeleteOrder:
    """An authenticated, recorded deletion the hub must now carry out."""

    request_id: str
    device: str
    scope: Scope
    counter: int


def make_delete_request(owner: DeviceIdentity, hub_id: str, request_id: bytes, scope: Scope, counter: int,
                        roster_version: int, signed_ms: int) -> bytes:
    if len(request_id) != 16:
        raise AccessError("delete request id must be 16 random bytes")
    if scope.empty:
        raise AccessError("a deletion must name at least one camera or clip")
    body = {"type": "delete_request", "v": PROTOCOL_VERSION, "hub": hub_id, "request_id": request_id.hex(),
            "scope": scope.to_json(), "counter": counter, "roster_version": roster_version, "signed_ms": signed_ms}
    return sign_message("delete_request", body, owner.signing_key, owner.key_id)


def storage_only_ranges(scope: Scope, epoch_s: int = RECEIPT_EPOCH_S) -> list[list[int]]:
    """The parts of the window that are not whole epochs: there the deletion is from storage only
    (the epoch's key also protects clips outside the window, so it is not destroyed)."""
    lo, hi = scope.from_ms, scope.to_ms
    step = epoch_s * 1000
    first_whole = -(-lo // step) * step
    last_whole = (hi // step) * step
    if first_whole >= last_whole:
        return [[lo, hi]] if hi > lo else []
    out = []
    if lo < first_whole:
        out.append([lo, first_whole])
    if last_whole < hi:
        out.append([last_whole, hi])
    return out


def on_delete_request(state: HubState, data: bytes, *, hub: HubIdentity, now_mono_s: float, now_wall_ms: int,
                      known_cameras: frozenset[str] | None = None,
                      retained: bool = False) -> tuple[HubState, Result, DeleteOrder | None]:
    """Authenticate a delete request. The Result's audit entry and the consumed counter must be
    durable before the returned order is carried out (record, then act).

    `retained`: the broker's retained copy (requests stay retained so offline devices see them).
    After a hub restart it arrives again; its counter is already consumed, so it is a duplicate,
    not a refusal: no new audit entry, and no receipt that would replace the real one."""
    state, now = state.tick(now_mono_s)
    try:
        m, entry, b = authenticate_device_message(state.roster, data, "delete_request", _REQUEST_KEYS, hub.key_id)
        rid = hex_field(b["request_id"], 32, "delete_request: request_id")
        scope = Scope.from_json(b["scope"], "delete_request: scope")
        counter = int_field(b["counter"], "delete_request: counter", 1)
        rv = int_field(b["roster_version"], "delete_request: roster_version", 1)
        int_field(b["signed_ms"], "delete_request: signed_ms")
    except AccessError as e:
        # Forged or malformed: no answer (no amplification), but counted into the audited refusal
        # summary, so an attempt to delete the household's clips is on record.
        return _tallied(state, "unauthenticated_delete", now), Result("refused", str(e), authenticated=False), None
    digest = message_digest(m.raw)
    if digest in state.seen:
        return state, Result("duplicate", "delete request already processed"), None

    def refuse(reason: str) -> tuple[HubState, Result, None]:
        receipt = delete_receipt_message(hub, rid, m.signer, "refused", reason, scope, (), (), now_wall_ms)
        # Not retained: a replay of a carried-out request (same id) must never replace its real,
        # retained receipt on the broker.
        return state, Result("refused", reason, (Outbound("delete_receipt", rid, receipt, retain=False),),
                             (("access_refused", {"device": m.signer, "request_id": rid,
                                                  "reason": f"delete: {reason}"[:200]}),)), None

    if entry.role != "owner":
        return refuse(f"device {m.signer} is a {entry.role}, not an owner; only owners delete")
    if rv != state.roster.version:
        return refuse(f"stale roster: made against roster version {rv}, the hub has version {state.roster.version}")
    last = _last_counter(state, m.signer)
    if counter <= last and retained:
        return state, Result("duplicate", "retained delete request already carried out"), None
    if counter <= last:
        return refuse(f"counter {counter} is not greater than {last} (replayed or stale delete request)")
    if scope.empty:
        return refuse("the request names no camera and no clip")
    if known_cameras is not None and set(scope.cameras) - known_cameras:
        return refuse(f"unknown cameras: {sorted(set(scope.cameras) - known_cameras)}")
    state = _consume(state, m.signer, counter, digest)
    order = DeleteOrder(rid, m.signer, scope, counter)
    audit = (("delete_request", {"request_id": rid, "device": m.signer, "scope": scope.to_json(),
                                 "counter": counter}),)
    return state, Result("delete", "", (), audit), order


def delete_receipt_message(hub: HubIdentity, request_id: str, device: str, status: str, reason: str, scope: Scope,
                           deleted: Sequence[Mapping[str, Any]], pending: Sequence[Mapping[str, Any]],
                           issued_ms: int) -> bytes:
    body = {"request_id": request_id, "device": device, "status": status, "reason": reason[:500],
            "scope": scope.to_json(), "deleted": [dict(d) for d in deleted], "pending": [dict(p) for p in pending],
            "storage_only": storage_only_ranges(scope) if status == "deleted" else [], "issued_ms": issued_ms}
    return _hub_msg(hub, "delete_receipt", body)


@dataclass(frozen=True, slots=True)
class DeleteReceipt:
    request_id: str
    device: str
    status: str
    reason: str
    scope: Scope
    deleted: tuple[Mapping[str, Any], ...]
    pending: tuple[Mapping[str, Any], ...]
    storage_only: tuple[tuple[int, int], ...]
    issued_ms: int


def parse_delete_receipt(data: bytes, hub: Any) -> DeleteReceipt:
    from agent.access.client import parse_hub_message

    m = parse_hub_message(data, "delete_receipt", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "request_id", "device", "status", "reason", "scope", "deleted",
                                   "pending", "storage_only", "issued_ms"), "delete_receipt")
    if b["status"] not in ("deleted", "refused"):
        raise AccessError("delete_receipt: status must be deleted or refused")
    for k in ("deleted", "pending", "storage_only"):
        if not isinstance(b[k], list):
            raise AccessError(f"delete_receipt: {k} must be a list")
    if not all(isinstance(d, dict) for d in b["deleted"] + b["pending"]):
        raise AccessError("delete_receipt: entries must be objects")
    ranges = []
    for r in b["storage_only"]:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)):
            raise AccessError("delete_receipt: storage_only must be [from_ms, to_ms] pairs")
        ranges.append((r[0], r[1]))
    if not isinstance(b["reason"], str):
        raise AccessError("delete_receipt: reason must be text")
    return DeleteReceipt(hex_field(b["request_id"], 32, "delete_receipt: request_id"),
                         hex_field(b["device"], 16, "delete_receipt: device"), b["status"], b["reason"],
                         Scope.from_json(b["scope"], "delete_receipt: scope"), tuple(b["deleted"]),
                         tuple(b["pending"]), tuple(ranges), int_field(b["issued_ms"], "delete_receipt: issued_ms"))


def parse_delete_request(data: bytes, hub_id: str, roster: Roster) -> tuple[str, str, Scope]:
    """Device side: (request id, signing owner device, scope) of a delete request, verified against
    the roster the device holds, as the hub verifies it. Used to shred epochs on every household device."""
    m, entry, b = authenticate_device_message(roster, data, "delete_request", _REQUEST_KEYS, hub_id)
    if entry.role != "owner":
        raise AccessError(f"delete_request: {m.signer} is not an owner device of the roster")
    return hex_field(b["request_id"], 32, "request_id"), m.signer, Scope.from_json(b["scope"], "delete_request: scope")
