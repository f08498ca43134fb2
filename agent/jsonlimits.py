"""Bounded JSON parsing for untrusted input (MQTT payloads, wire messages, files from a NAS).

`json.loads` recurses once per nested array or object, so a few kilobytes of `[[[[...` raise
`RecursionError` (or, with a raised recursion limit, crash the interpreter) instead of a
`ValueError` the caller handles. `loads_bounded` checks the size, then scans the text once for
nesting depth, and only then hands it to `json.loads`: input over either limit is refused with a
`JsonLimitError` (a `ValueError`, and an `AgentError`) that names what was being parsed and the
limit, before the recursive parser sees a byte of it.

Invariants:
- The scan is linear in the input and does not recurse: brackets inside strings (escapes
  included) do not count, so a long string of `[` is harmless and any JSON within both limits
  parses exactly as `json.loads` would parse it.
- Never raises anything but `ValueError` (`JsonLimitError`, `json.JSONDecodeError`,
  `UnicodeDecodeError`) for bad input; a `RecursionError` from `json.loads` is turned into a
  `JsonLimitError` as a second line of defence.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.errors import JsonLimitError

__all__ = ["JsonLimitError", "loads_bounded", "nesting_depth"]

# A complete JSON string (escapes skipped whole), a bracket, or a quote that opens a string that
# never ends. The string pattern is the unrolled `"(?:[^"\\]|\\.)*"`: no backtracking.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.S)


def nesting_depth(text: str, limit: int | None = None) -> int:
    """The deepest nesting of arrays and objects in `text`, outside strings.

    With `limit`, stops scanning as soon as the depth exceeds it (and returns that depth).
    Malformed text gives a number too (json.loads then rejects it); an unterminated string ends
    the scan, since nothing after its opening quote is structure.
    """
    depth = deepest = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c[0] == '"':
            if len(c) == 1:
                break
            continue
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    break
        elif depth:
            depth -= 1
    return deepest


def _byte_size(data: bytes | str, max_bytes: int) -> int:
    if isinstance(data, bytes | bytearray):
        return len(data)
    if len(data) > max_bytes or data.isascii():
        return len(data)  # a char is at least one byte: already over, or exact
    return len(data.encode("utf-8", "surrogatepass"))


def loads_bounded(data: bytes | str, *, max_bytes: int, max_depth: int = 32, what: str) -> Any:
    """`json.loads(data)`, refusing input over `max_bytes` (UTF-8 bytes) or nested deeper than
    `max_depth` arrays/objects with `JsonLimitError` (a ValueError) naming `what` and the limit.

    Other bad JSON raises what `json.loads` raises (`json.JSONDecodeError`, `UnicodeDecodeError`:
    both ValueErrors).
    """
    size = _byte_size(data, max_bytes)
    if size > max_bytes:
        raise JsonLimitError(f"{what}: {size} bytes of JSON, over the limit of {max_bytes} bytes")
    if isinstance(data, bytes | bytearray):
        # What json.loads does with bytes (UTF-8, -16 or -32, detected), so both see the same text.
        text = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
    else:
        text = data
    if nesting_depth(text, max_depth) > max_depth:
        raise JsonLimitError(f"{what}: JSON nests arrays/objects deeper than the limit of {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:
        # Not reachable within the depth limit above; kept in case a caller passes a huge one.
        raise JsonLimitError(f"{what}: JSON nested too deeply to parse (limit {max_depth})") from None
