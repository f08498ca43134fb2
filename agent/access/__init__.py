"""The access protocol: how a requester gets a clip only with the owners' signed consent.

Modules: `wire` (signed messages and their strict parsers), `machine` (the hub's pure state
machine), `client` (what requesters and owner devices build and check), `audit` (the hub's
tamper-evident, signed audit log). Code outside the package imports the protocol from
`agent.access` and the log from `agent.access.audit`.

Invariants: the protocol is pure functions over frozen dataclasses; randomness and time are
passed in; messages never carry clip keys in clear, only SealedBox stanzas to the requester's key.
"""

from agent.access.client import (
    Challenge,
    Grant,
    make_decision,
    make_mode_set,
    make_request,
    parse_challenge,
    parse_grant,
    parse_hub_message,
)
from agent.access.machine import (
    AccessPolicy,
    Approval,
    HubState,
    Outbound,
    Pending,
    Result,
    expire,
    new_state,
    on_decision,
    on_mode_set,
    on_request,
    with_roster,
)
from agent.access.wire import (
    CLOSED_MEMORY,
    MAX_MESSAGE_BYTES,
    MAX_SCOPE_ITEMS,
    MAX_TEXT_CHARS,
    MODES,
    PROTOCOL_VERSION,
    REQUESTER_ROLES,
    SEALED_KEY_BYTES,
    TYPES,
    Decision,
    Request,
    Scope,
    Signed,
    WrappedKey,
    message_digest,
    parse_decision,
    parse_message,
    parse_request,
    request_hash,
    sig_domain,
    sign_message,
    verify_signed,
)

__all__ = [
    "AccessPolicy",
    "Approval",
    "CLOSED_MEMORY",
    "Challenge",
    "Decision",
    "Grant",
    "HubState",
    "MAX_MESSAGE_BYTES",
    "MAX_SCOPE_ITEMS",
    "MAX_TEXT_CHARS",
    "MODES",
    "Outbound",
    "PROTOCOL_VERSION",
    "Pending",
    "REQUESTER_ROLES",
    "Request",
    "Result",
    "SEALED_KEY_BYTES",
    "Scope",
    "Signed",
    "TYPES",
    "WrappedKey",
    "expire",
    "make_decision",
    "make_mode_set",
    "make_request",
    "message_digest",
    "new_state",
    "on_decision",
    "on_mode_set",
    "on_request",
    "parse_challenge",
    "parse_decision",
    "parse_grant",
    "parse_hub_message",
    "parse_message",
    "parse_request",
    "request_hash",
    "sig_domain",
    "sign_message",
    "verify_signed",
    "with_roster",
]
