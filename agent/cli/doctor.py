"""`privacy-agent doctor`: the installer's checks of a hub, each with what to fix.

Python and libraries, the H.264 encoder, ONNX Runtime telemetry (off, no device id left behind),
each camera's source, the storage (writable, free space, a marked sink directory, plaintext
sinks), the models, the hub's keys, the access state and each household device's epoch keys. Exit code
`FAILED` when any check fails, which `firmware_hooks boot-check` turns into a fault LED.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import LoadedConfig, load_config
from agent.errors import AgentError, ExitCode, SinkError
from agent.media.sources import SourceOpener, read_clean
from agent.storage.sinks.factory import plaintext_sinks

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    hint: str = ""


Check = Callable[[LoadedConfig | None], list[CheckResult]]


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
    try:
        import av

        ok = "libx264" in av.codecs_available or "h264_v4l2m2m" in av.codecs_available
        out.append(CheckResult("h264 encoder", "ok" if ok else "fail",
                               "libx264" if "libx264" in av.codecs_available else "hardware only",
                               "" if ok else "install a PyAV build with libx264"))
    except ImportError:
        pass
    return out


def check_sources(loaded: LoadedConfig | None) -> list[CheckResult]:
    if loaded is None:
        return []

    out = []
    for cam in loaded.config.cameras:
        opener = SourceOpener(cam.source, loaded.path.parent, cam.fps)
        if opener.live:
            out.append(CheckResult(f"camera {cam.id} source", "warn", f"{cam.source}: live source not probed",
                                   "run `privacy-agent run` and watch events for source_lost"))
            continue
        try:
            src = opener()
            try:
                img = read_clean(src)
            finally:
                src.close()
            if img is None:
                raise AgentError("no frames")
            out.append(CheckResult(f"camera {cam.id} source", "ok",
                                   f"{img.shape[1]}x{img.shape[0]} at {src.info.fps:g} fps"))
        except AgentError as e:
            out.append(CheckResult(f"camera {cam.id} source", "fail", str(e),
                                   "fix `source:` in the config or the file it points at"))
    return out


def check_storage(loaded: LoadedConfig | None) -> list[CheckResult]:
    if loaded is None:
        return []
    from agent.config import DirectorySinkConfig

    out = []
    dirs = [("data_dir", loaded.data_dir)]
    dirs += [(f"sinks[{i}]", loaded.resolve(s.path)) for i, s in enumerate(loaded.config.sinks)
             if isinstance(s, DirectorySinkConfig)]
    for name, d in dirs:
        probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
        if not os.access(probe, os.W_OK):
            out.append(CheckResult(f"{name} writable", "fail", f"{d} is not writable",
                                   f"create it and give the agent's user write access: {d}"))
            continue
        free = shutil.disk_usage(probe).free
        st = "ok" if free > 1 << 30 else "warn"
        out.append(CheckResult(f"{name} space", st, f"{d}: {free / (1 << 30):.1f} GiB free",
                               "" if st == "ok" else "free space or point it at a larger disk"))
    for i, s in enumerate(loaded.config.sinks):
        if isinstance(s, DirectorySinkConfig) and not s.plaintext:
            out.append(_check_sink_marker(f"sinks[{i}]", loaded.resolve(s.path), s.require_mount))
    for p in plaintext_sinks(loaded):
        out.append(CheckResult("plaintext sink", "warn", f"{p} writes unencrypted video",
                               "remove `plaintext: true` outside of testing"))
    if not loaded.config.sinks:
        out.append(CheckResult("sinks", "warn", "no sinks: redacted output is discarded",
                               "add a `sinks:` entry (directory or s3)"))
    return out


def _check_sink_marker(name: str, root: Path, require_mount: bool) -> CheckResult:
    from agent.storage.sinks.upload import check_sink_dir

    try:
        check_sink_dir(root, require_mount)
    except SinkError as e:
        return CheckResult(f"{name} marker", "fail", str(e),
                           f"mount the NAS, then run `privacy-agent sink init {root}` once")
    return CheckResult(f"{name} marker", "ok", f"{root} is a marked sink directory"
                       + (" on its own mount" if require_mount else ""))


def check_models(loaded: LoadedConfig | None) -> list[CheckResult]:
    """The models each camera's detection uses are installed and match their sha256."""
    from agent.analysis.factory import model_cache_path
    from agent.config import DetectionConfig, effective_detection
    from models.install import verify

    det = loaded.config.detection if loaded else DetectionConfig()
    wanted: dict[str, str] = {}
    cams = loaded.config.cameras if loaded else []
    for eff in [effective_detection(det, c.detection) for c in cams] or [det]:
        if eff.enabled and eff.faces.enabled:
            wanted[eff.faces.model] = "faces"
        if eff.enabled and eff.objects_active:
            wanted[eff.objects.model] = "objects"
    if not wanted:
        return [CheckResult("models", "warn", "detection is off for every camera",
                            "faces, persons and private objects are not protected")]
    cache = model_cache_path(det, loaded.path.parent if loaded else None)
    out = []
    for r in verify(sorted(wanted), cache=cache):
        out.append(CheckResult(f"model {r.name}", "ok" if r.ok else "fail",
                               str(r.path) if r.ok else r.problem,
                               "" if r.ok else f"privacy-agent models install {r.name} (offline: --from DIR); "
                               "until then that camera withholds every frame"))
    return out


def check_keys(loaded: LoadedConfig | None) -> list[CheckResult]:
    """Hub identity present with safe permissions; every camera has recipients that load."""
    if loaded is None:
        return []
    from agent.config import DirectorySinkConfig
    from agent.crypto.keys import load_hub_identity
    from agent.storage.sinks.clips import camera_recipients

    encrypted = [s for s in loaded.config.sinks if not (isinstance(s, DirectorySinkConfig) and s.plaintext)]
    if not encrypted:
        return []
    out = []
    try:
        hub = load_hub_identity(loaded.data_dir)
        out.append(CheckResult("hub identity", "ok", f"key id {hub.public.key_id}"))
    except AgentError as e:
        out.append(CheckResult("hub identity", "fail", str(e),
                               f"privacy-agent keys init --data {loaded.data_dir}"))
    for cam in loaded.config.cameras:
        try:
            rec = camera_recipients(loaded, cam.id)
            out.append(CheckResult(f"camera {cam.id} recipients", "ok" if rec else "fail",
                                   ", ".join(r.key_id for r in rec) or "none",
                                   "" if rec else "add `recipients:` or enroll devices in the roster"))
        except AgentError as e:
            out.append(CheckResult(f"camera {cam.id} recipients", "fail", str(e),
                                   "fix `recipients:` (paths to .pub files or epa1pub: values)"))
    return out


def check_access(loaded: LoadedConfig | None) -> list[CheckResult]:
    """With a roster installed, the access counters must be there (the hub refuses to start
    without them) and requesters should be enrolled (unenrolled ones need two owners)."""
    if loaded is None:
        return []
    from agent.access.state import load_state, state_path
    from agent.crypto.keys import load_roster

    try:
        roster = load_roster(loaded.data_dir)
    except AgentError as e:
        return [CheckResult("roster", "fail", str(e), "install a roster again: privacy-agent keys roster")]
    if roster is None:
        return []
    out = [CheckResult("roster", "ok", f"version {roster.version}: {len(roster.owners())} owner device(s), "
                       f"{len(roster.requesters)} enrolled requester(s)")]
    try:
        c = load_state(state_path(loaded.data_dir), roster_installed=True)
        out.append(CheckResult("access counters", "ok", f"{len(c.by_device)} device(s) on record"))
    except AgentError as e:
        out.append(CheckResult("access counters", "fail", str(e).split(". ")[0],
                               f"if you know why they are gone: privacy-agent keys reset-access-state "
                               f"--data {loaded.data_dir}"))
    if loaded.config.mqtt is not None and not roster.requesters:
        out.append(CheckResult("requesters", "warn", "no requester is enrolled: every request is UNVERIFIED "
                               "and needs two owner approvals",
                               "owner enroll --add-requester PUB --requester-role ROLE"))
    return out


def check_epochs(loaded: LoadedConfig | None) -> list[CheckResult]:
    """Each household device's installed epoch key list: how long it still covers. Missing or
    run out: a warning (clips go to the long-term key), a failure under
    `retention.missing_epoch_key: withhold` (the cameras withhold); running out soon: a warning."""
    if loaded is None:
        return []
    import datetime as dt

    from agent.config import DirectorySinkConfig
    from agent.crypto.keys import load_epoch_lists, load_roster

    if all(isinstance(s, DirectorySinkConfig) and s.plaintext for s in loaded.config.sinks):
        return []
    settings = loaded.config.retention
    bad = "fail" if settings.missing_epoch_key == "withhold" else "warn"
    effect = ("the cameras withhold their frames" if bad == "fail"
              else "clips are sealed to its long-term key and cannot be shredded")
    hint = ("on the device: privacy-agent owner epochs generate, then owner epochs publish "
            f"(or privacy-agent keys epochs install --data {loaded.data_dir} LIST)")
    try:
        roster = load_roster(loaded.data_dir)
    except AgentError:
        return []  # check_access reports the roster
    if roster is None:
        return [CheckResult("epoch keys", bad, f"no roster is installed, so no epoch key list can be: {effect}",
                            "install a roster (privacy-agent keys roster), then the devices' epoch key lists")]
    lists = load_epoch_lists(loaded.data_dir, roster)
    now = time.time()
    out = []
    for d in roster.devices:
        name = f"epoch keys {d.name or d.key_id}"
        lst = lists.get(d.key_id)
        if lst is None:
            out.append(CheckResult(name, bad, f"device {d.key_id} has no installed epoch key list: {effect}", hint))
            continue
        left_d = (lst.horizon_end_s - now) / 86_400
        until = dt.datetime.fromtimestamp(lst.horizon_end_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        detail = f"version {lst.version}, keys until {until}"
        if left_d <= 0:
            out.append(CheckResult(name, bad, f"{detail}: ran out {-left_d:.1f} days ago; {effect}", hint))
        elif lst.key_for(now) is None:
            out.append(CheckResult(name, bad, f"{detail}: no key for now (the list starts later); {effect}", hint))
        elif left_d <= settings.epoch_warn_days:
            out.append(CheckResult(name, "warn", f"{detail}: runs out in {left_d:.1f} days", hint))
        else:
            out.append(CheckResult(name, "ok", f"{detail} ({left_d:.0f} days)"))
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


# Other modules append checks here (MQTT).
CHECKS: list[Check] = [check_python, check_telemetry, check_sources, check_storage, check_models, check_keys,
                       check_access, check_epochs]


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def run_checks(loaded: LoadedConfig | None) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in CHECKS:
        try:
            results.extend(check(loaded))
        except Exception as e:  # noqa: BLE001 - a broken check is reported, not fatal
            results.append(CheckResult(getattr(check, "__name__", "check"), "fail", f"check crashed: {e!r}"))
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    loaded: LoadedConfig | None = None
    results: list[CheckResult] = []
    if args.config:
        try:
            loaded = load_config(args.config)
            results.append(CheckResult("config", "ok", f"{args.config} (sha256 {loaded.sha256[:16]})"))
        except AgentError as e:
            results.append(CheckResult("config", "fail", str(e), "run `privacy-agent check-config FILE`"))
    results += run_checks(loaded)
    width = max(len(r.name) for r in results)
    for r in results:
        line = f"[{_MARK[r.status]}] {r.name:<{width}}  {r.detail}"
        if r.hint and r.status != "ok":
            line += f"\n       {'':<{width}}  fix: {r.hint}"
        print(line)
    fails = sum(r.status == "fail" for r in results)
    warns = sum(r.status == "warn" for r in results)
    print(f"\n{len(results)} checks: {fails} failed, {warns} warnings")
    return ExitCode.FAILED if fails else ExitCode.OK


def _register_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this hub's installation and config, and say what to fix")
    p.add_argument("--config", help="config file to check as well")
    p.set_defaults(func=cmd_doctor)

