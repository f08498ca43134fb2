"""Bounded JSON: deep nesting and oversized input are refused before json.loads recurses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AgentError, JsonLimitError
from agent.jsonlimits import loads_bounded, nesting_depth

DEEP = 100_000


@pytest.mark.parametrize("text", [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    '{"a":[' * (DEEP // 2) + "]}" * (DEEP // 2),
    "[" * DEEP,  # not even well-formed: still refused on depth, not a RecursionError
])
def test_deep_nesting_is_refused_fast_before_json_loads(text: str) -> None:
    with pytest.raises(RecursionError):
        json.loads(text)  # what the limit protects against
    start = time.perf_counter()
    with pytest.raises(JsonLimitError) as e:
        loads_bounded(text, max_bytes=10 * DEEP, what="test payload")
    assert time.perf_counter() - start < 0.5
    msg = str(e.value)
    assert "test payload" in msg and "32" in msg
    # Catchable both as ValueError (what parsers already catch) and as an AgentError.
    assert isinstance(e.value, ValueError) and isinstance(e.value, AgentError)


def test_depth_limit_is_exact() -> None:
    assert loads_bounded("[" * 5 + "]" * 5, max_bytes=100, max_depth=5, what="x") == [[[[[]]]]]
    with pytest.raises(JsonLimitError, match="limit of 5 levels"):
        loads_bounded("[" * 6 + "]" * 6, max_bytes=100, max_depth=5, what="x")
    # Siblings do not add up: depth is the deepest path, not the number of containers.
    assert loads_bounded("[[1],[2],[3],{\"a\":[4]}]", max_bytes=100, max_depth=3, what="x")[3] == {"a": [4]}


def test_brackets_inside_strings_do_not_count() -> None:
    tricky = json.dumps({"s": "[[[[{{{{" * 1000, "escaped": 'a\\"[[[[\\\\', "u": "\\u005b" * 50, "k[": ["]]]"]})
    assert nesting_depth(tricky) == 2
    assert loads_bounded(tricky, max_bytes=len(tricky), max_depth=2, what="x") == json.loads(tricky)
    # An escaped quote does not end the string, an escaped backslash before a quote does.
    assert nesting_depth(r'["\"[[[", "\\", [1]]') == 2


def test_size_limit_counts_utf8_bytes() -> None:
    assert loads_bounded(b'{"a": 1}', max_bytes=8, what="x") == {"a": 1}
    with pytest.raises(JsonLimitError, match=r"x: 9 bytes of JSON, over the limit of 8 bytes"):
        loads_bounded(b'{"a": 12}', max_bytes=8, what="x")
    text = json.dumps("\u00e9\u00e9", ensure_ascii=False)  # 4 characters, 6 bytes
    assert loads_bounded(text, max_bytes=6, what="x") == "\u00e9\u00e9"
    with pytest.raises(JsonLimitError):
        loads_bounded(text, max_bytes=5, what="x")


def test_ordinary_json_and_errors_are_unchanged() -> None:
    doc = {"v": 1, "list": [1, 2.5, None, True, "x"], "nested": {"a": {"b": []}}}
    for data in (json.dumps(doc), json.dumps(doc).encode(), json.dumps(doc).encode("utf-16")):
        assert loads_bounded(data, max_bytes=1000, what="x") == doc
    with pytest.raises(json.JSONDecodeError):
        loads_bounded("{not json", max_bytes=100, what="x")
    with pytest.raises(ValueError):
        loads_bounded(b'"\xff"', max_bytes=100, what="x")
    with pytest.raises(ValueError):
        loads_bounded('"unterminated [[[[', max_bytes=100, max_depth=1, what="x")


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9')),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=20,
))
def test_within_limits_parses_like_json_loads(doc: object) -> None:
    text = json.dumps(doc)
    assert loads_bounded(text, max_bytes=len(text.encode()), max_depth=64, what="x") == json.loads(text)


# --- the parsers of untrusted input that use it ------------------------------------------


def test_untrusted_json_readers_refuse_deep_nesting_with_their_own_errors(tmp_path: Path) -> None:
    from clip_helpers import device_from, hub_from

    from agent.crypto import envelope as env
    from agent.errors import FixtureError, MalformedEnvelope, SinkError
    from agent.lab.decisions import parse_decisions, read_json_object
    from agent.storage.sinks.upload import MARKER_FILE, check_sink_dir

    bomb = "[" * DEEP + "]" * DEEP
    truth = tmp_path / "truth.json"
    truth.write_text(bomb)
    with pytest.raises(FixtureError, match="deeper than the limit"):
        read_json_object(truth, "make a fixture")
    with pytest.raises(FixtureError, match=r"d.jsonl:2: JSON nests"):
        parse_decisions('{"frame": 0, "action": "pass"}\n' + bomb, "d.jsonl")
    # A sink marker lives on the NAS: anyone with write access there could plant one.
    (tmp_path / MARKER_FILE).write_text('{"format": ' + bomb + "}")
    with pytest.raises(SinkError, match="sink marker"):
        check_sink_dir(tmp_path, require_mount=False)
    # Clip metadata nested past the limit (sealed by a hub, opened far away): malformed, not a crash.
    hub, owner = hub_from(1), device_from(2)
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    data, _ = env.seal(b"video", {"camera_id": "cam", "x": deep}, hub, [owner.public], env.stream_id_for(hub, "cam"))
    with pytest.raises(MalformedEnvelope, match="clip metadata"):
        env.open_clip_bytes(data, owner, hub.public)
