"""Hypothesis fuzzing of the envelope parser and the key/roster decoders: only typed errors, never a forgery."""

from __future__ import annotations

from clip_helpers import device_from, hub_from
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.crypto import envelope as env
from agent.crypto.keys import DevicePublic, HubPublic, Roster, updated_roster
from agent.errors import EnvelopeError, InvalidKey, RosterError

HUB = hub_from(1)
OWNER = device_from(2)
PAYLOAD = b"fuzz payload " * 3
ENV, _ = env.seal(PAYLOAD, {"m": 1}, HUB, [OWNER.public], env.stream_id_for(HUB, "c"))
PREFIX = env.MAGIC + bytes([env.VERSION])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    for blob in (data, PREFIX + data, ENV[: env.HEADER_FIXED_BYTES] + data):
        try:
            env.verify_clip(blob)
        except EnvelopeError:
            pass
        else:
            raise AssertionError("random bytes verified")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(ENV) - 1), st.sampled_from(["flip", "delete", "insert"]),
                          st.integers(0, 255)), min_size=1, max_size=4))
def test_mutations_of_a_valid_clip(muts: list[tuple[int, str, int]]) -> None:
    data = bytearray(ENV)
    for pos, op, val in muts:
        pos = min(pos, len(data) - 1)
        if op == "flip":
            data[pos] ^= val or 1
        elif op == "delete":
            del data[pos]
        else:
            data.insert(pos, val)
    if bytes(data) == ENV:
        return
    try:
        env.open_clip_bytes(bytes(data), OWNER, HUB.public)
    except EnvelopeError:
        return
    raise AssertionError("a modified clip opened")


@FUZZ
@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_malformed_chunk_lengths(n: int, body: bytes) -> None:
    p = ENV[: env.HEADER_FIXED_BYTES + env.STANZA_BYTES + env.SIG_BYTES]
    try:
        env.verify_clip(p + n.to_bytes(4, "big") + body)
    except EnvelopeError:
        return
    raise AssertionError("malformed chunk verified")


@FUZZ
@given(st.text(max_size=200))
def test_public_value_decoders(text: str) -> None:
    for prefix in ("", "epa1pub:", "epa1hub:"):
        for decode in (DevicePublic.decode, HubPublic.decode):
            try:
                decode(prefix + text)
            except InvalidKey:
                pass


ROSTER = updated_roster(OWNER, None, add=[device_from(3).public]).encode()


@FUZZ
@given(st.integers(0, len(ROSTER) - 1), st.integers(1, 255))
def test_roster_mutations(pos: int, x: int) -> None:
    data = bytearray(ROSTER)
    data[pos] ^= x
    try:
        r = Roster.decode(bytes(data))
    except RosterError:
        return
    # JSON allows a few no-op-for-meaning edits (whitespace); the signed body must be unchanged
    assert r.body_bytes() == Roster.decode(ROSTER).body_bytes()
