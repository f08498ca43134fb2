"""What the bench scripts share at their edge: argument types, and the way a failure ends.

Testers and installers run these scripts. A bad flag or a failed step ends with one line that
names it, never a traceback (a traceback minutes into a run says nothing about what to change).
The scripts run as `python bench/NAME.py`, so this folder is first on `sys.path`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

#: Smallest frame side the benches render or read (the detectors' input is 32-aligned).
MIN_SIDE_PX = 32


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"{text!r} must be {low} or more")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of whole numbers of 1 or more, e.g. camera counts 1,2,4."""
    values = [_int_at_least(part.strip(), 1) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one whole number")
    return values


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return v


def frame_size(text: str) -> tuple[int, int]:
    """`WxH`, e.g. 1280x720: even sides (H.264 4:2:0 needs them) of at least MIN_SIDE_PX."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame size WIDTHxHEIGHT (e.g. 1280x720)")
    wi, hi = int(w), int(h)
    if min(wi, hi) < MIN_SIDE_PX or wi % 2 or hi % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be even and at least {MIN_SIDE_PX} pixels")
    return wi, hi


def frame_sizes(text: str) -> list[tuple[int, int]]:
    """A comma-separated list of `frame_size`s, e.g. 1280x720,1920x1080."""
    sizes = [frame_size(part.strip()) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one frame size WIDTHxHEIGHT")
    return sizes


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _tail(output: bytes | str | None, lines: int = 6) -> str:
    if not output:
        return ""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return "\n".join("  " + ln for ln in text.strip().splitlines()[-lines:])


def run_main(main: Callable[[], int]) -> None:
    """Run a bench's `main` and exit with its code; a failed step or Ctrl-C ends in one message."""
    prog = sys.argv[0].rsplit("/", 1)[-1]
    try:
        code = main()
    except subprocess.CalledProcessError as e:
        cmd = e.cmd if isinstance(e.cmd, str) else " ".join(str(c) for c in e.cmd)
        print(f"{prog}: a step failed with exit status {e.returncode}: {cmd}", file=sys.stderr)
        detail = _tail(e.stderr) or _tail(e.stdout)
        if detail:
            print(detail, file=sys.stderr)
        code = 1
    except subprocess.TimeoutExpired as e:
        cmd = e.cmd if isinstance(e.cmd, str) else " ".join(str(c) for c in e.cmd)
        print(f"{prog}: a step took longer than {e.timeout:g} s and was stopped: {cmd}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code)
