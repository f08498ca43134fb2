"""Doctor checks of the hub itself: Python and libraries, the H.264 encoder, ONNX Runtime
telemetry (off, no device id left behind) and the clock.

The clock matters for consent: signed requests, grants and checkpoints carry wall times, so a
clock that is years behind makes fresh messages look old, and one that went back past the
newest audit entry would let an old message look new.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.cli.doctor.result import CheckResult
from agent.config import LoadedConfig

_CORE_MODULES = (
    ("cv2", "opencv-python-headless"), ("numpy", "numpy"), ("onnxruntime", "onnxruntime"),
    ("paho.mqtt", "paho-mqtt"), ("nacl", "pynacl"), ("pydantic", "pydantic"), ("av", "av"),
    ("ruamel.yaml", "ruamel.yaml"),
)


def check_python(_: LoadedConfig | None) -> list[CheckResult]:
    out = []
    v = sys.version_info
    out.append(CheckResult("python", "ok" if v >= (3, 11) else "fail", f"{v.major}.{v.minor}.{v.micro}",
                           "" if v >= (3, 11) else "install Python 3.11 or later"))
    for mod, pkg in _CORE_MODULES:
        try:
            m = importlib.import_module(mod)
            out.append(CheckResult(f"import {mod}", "ok", str(getattr(m, "__version__", "present"))))
        except ImportError as e:
            out.append(CheckResult(f"import {mod}", "fail", str(e), f"pip install {pkg}"))
    return out


def ort_telemetry_dirs() -> list[Path]:
    """Where ONNX Runtime's 1DS telemetry keeps its device id: `$XDG_CACHE_HOME`, else `~/.cache`."""
    bases = []
    if os.environ.get("XDG_CACHE_HOME"):
        bases.append(Path(os.environ["XDG_CACHE_HOME"]))
    try:
        bases.append(Path.home() / ".cache")
    except RuntimeError:  # no HOME and no passwd entry: nothing to look at there
        pass
    dirs = [b / "Microsoft" / "DeveloperTools" / ".onnxruntime" for b in bases]
    return list(dict.fromkeys(dirs))


def check_telemetry(_: LoadedConfig | None) -> list[CheckResult]:
    """The hub never phones home: ONNX Runtime telemetry is off and no device id is left behind."""
    from agent import ORT_TELEMETRY_ENV

    out = []
    value = os.environ.get(ORT_TELEMETRY_ENV)
    if value != "1":
        out.append(CheckResult(
            "onnxruntime telemetry", "fail",
            f"{ORT_TELEMETRY_ENV} is {value!r} in this process, not '1': ONNX Runtime may create "
            "a device id and send telemetry to Microsoft",
            "the agent sets it on import; find what resets it (a wrapper script, a plugin) and remove that"))
    left = [d for d in ort_telemetry_dirs() if d.exists()]
    for d in left:
        try:
            names = ", ".join(sorted(p.name for p in d.iterdir())) if d.is_dir() else "not a directory"
        except OSError as e:
            names = f"unreadable: {e.strerror or e}"
        out.append(CheckResult(
            "onnxruntime device id", "warn",
            f"{d} exists ({names or 'empty'}): a device id and queued telemetry left by an earlier "
            "ONNX Runtime run with telemetry on",
            f"delete it: rm -rf '{d}'; if it comes back, another program runs ONNX Runtime as this "
            "user without ORT_DISABLE_TELEMETRY=1"))
    if value == "1":
        out.insert(0, CheckResult("onnxruntime telemetry", "ok", f"disabled ({ORT_TELEMETRY_ENV}=1)"
                                  + ("" if left else "; no device id from earlier runs")))
    return out


def check_encoder(loaded: LoadedConfig | None) -> list[CheckResult]:
    """The H.264 encoder `run` will use and why (`video.encoder`, with the same probe as at start)."""
    from agent.media.encoders import EncoderUnavailable, select_encoder

    setting = loaded.config.video.encoder if loaded is not None else "auto"
    try:
        choice = select_encoder(setting)
    except EncoderUnavailable as e:
        return [CheckResult("h264 encoder", "fail", str(e),
                            "set `video.encoder: auto` (hardware if it works, else libx264), or fix what the "
                            "message names (the V4L2 device, a PyAV build with libx264)")]
    return [CheckResult("h264 encoder", "ok", f"{choice.codec}: {choice.reason}")]


#: No hub's clock can be earlier than this: the date of this version's code. A Raspberry Pi has no
#: battery-backed clock; until NTP answers it runs from 1970 or from the last fake-hwclock save.
CLOCK_FLOOR = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

#: A newest audit entry this far in the future of the clock means the clock went back.
CLOCK_SLACK_S = 300.0


def ntp_synchronized() -> bool | None:
    """systemd's view (`timedatectl show -p NTPSynchronized --value`); None where it cannot say."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                             text=True, timeout=3, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


def newest_audit_wall_s(data_dir: Path) -> float | None:
    """Wall time of the hub's newest audit entry (its last complete line), or None."""
    from agent.access.audit import LOG_FILE, audit_dir
    from agent.jsonlimits import loads_bounded

    path = audit_dir(data_dir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    lines = [ln for ln in tail.split(b"\n")[:-1] if ln.strip()]  # the last one may be torn
    for ln in reversed(lines):
        try:
            doc = loads_bounded(ln, max_bytes=65536, max_depth=8, what="audit entry")
            return float(doc["wall_ms"]) / 1000
        except (ValueError, KeyError, TypeError):
            continue
    return None


def check_clock(loaded: LoadedConfig | None, *, now: Callable[[], float] = time.time,
                synced: Callable[[], bool | None] = ntp_synchronized) -> list[CheckResult]:
    """The clock is not before `CLOCK_FLOOR`, not before the newest audit entry, and NTP says it
    is synchronised (a warning where it says it is not)."""
    t = now()
    shown = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    fix_time = "enable time sync (`timedatectl set-ntp true`, or chrony/ntpd) and let it reach an NTP server"
    if t < CLOCK_FLOOR.timestamp():
        return [CheckResult("clock", "fail", f"the clock says {shown}, before this version was made "
                            f"({CLOCK_FLOOR:%Y-%m-%d}): signed requests and grants would be judged wrongly",
                            fix_time)]
    out: list[CheckResult] = []
    newest = newest_audit_wall_s(loaded.data_dir) if loaded is not None else None
    if newest is not None and newest - t > CLOCK_SLACK_S:
        when = dt.datetime.fromtimestamp(newest, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append(CheckResult("clock", "fail", f"the clock says {shown}, earlier than the newest audit entry "
                               f"({when}): the clock went back, so old messages could look new", fix_time))
    state = synced()
    if state is False:
        out.append(CheckResult("clock sync", "warn", "timedatectl: NTPSynchronized=no; the clock may drift",
                               fix_time))
    if not out:
        out.append(CheckResult("clock", "ok", shown + ("; NTP synchronised" if state else "")))
    return out
