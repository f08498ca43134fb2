"""The installer's commands: `run`, `doctor`, `models list|install|verify` and `hub serve`.

Each handler takes parsed args and returns an `ExitCode`; user errors are raised as `AgentError`
and printed by `agent.cli.main.main`. `doctor` says what to fix for every check that fails, and
its exit code (`FAILED`) drives the firmware's fault LED through `boot-check`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.access.audit import AuditLog
from agent.access.recorder import EventRecorder, open_hub_audit, record_boot
from agent.analysis.build import build_analyzers
from agent.cli.parsing import command_group
from agent.clock import SystemClock
from agent.config import LoadedConfig, load_config
from agent.core.datatypes import Decision, Event
from agent.core.events import EventLog
from agent.core.modes import ModeController
from agent.core.pipeline import CameraPipeline
from agent.core.policy import camera_policy
from agent.core.process import tune_process
from agent.errors import AgentError, ExitCode, SinkError, SourceError
from agent.media.sources import SourceOpener, read_clean
from agent.storage.lock import DataDirLock
from agent.storage.sinks.factory import build_sinks, plaintext_sinks
from agent.vocab import Action, Mode
from models.install import add_arguments

if TYPE_CHECKING:
    from agent.mqtt.service import HubMqtt

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    data_dir = loaded.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SinkError(f"data_dir {data_dir} cannot be created: {e.strerror or e}") from e
    # For the whole run: a second `run`, an `outbox flush` or `hub serve` on the same data dir
    # would recover (delete) the segments this one is still writing.
    with DataDirLock(data_dir, "run"):
        return _run(args, loaded)


#: Seconds between SIGTERM and the end of the process, whatever is still in flight (an upload,
#: a stuck camera read). What is sealed is safe in the outbox; the open segment is lost, as in
#: a power cut. systemd's default stop timeout is far longer.
STOP_GRACE_S = 5.0


def _run(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    tune_process()
    cfg = loaded.config
    clock = SystemClock()
    data_dir = loaded.data_dir
    events = EventLog(data_dir / "events.jsonl")
    audit = open_hub_audit(data_dir, clock)
    if audit is not None:
        events.subscribe(EventRecorder(audit))
    for warn in plaintext_sinks(loaded):
        log.warning("%s writes PLAINTEXT video: for testing only, not for a real household", warn)
        print(f"warning: {warn} writes PLAINTEXT video (testing only)", file=sys.stderr)
    if not cfg.sinks:
        print("warning: no sinks configured: redacted output is discarded", file=sys.stderr)
    hub = _start_mqtt(loaded, events, clock, audit)
    if audit is not None and hub is None:
        record_boot(audit, __version__, loaded.sha256)

    def mode_changed(mode: Mode, why: str) -> None:
        events(Event("mode_changed", None, f"household mode is {mode} ({why})", clock.monotonic(),
                     {"mode": str(mode), "source": why}))
        if hub is not None:
            hub.access.publish_mode(str(mode))

    modes = ModeController(cfg.modes, data_dir, clock, on_change=mode_changed)
    cams = [c for c in cfg.cameras if not args.camera or c.id in args.camera]
    pipes: list[tuple[CameraPipeline, SourceOpener]] = []
    for cam in cams:
        opener = SourceOpener(cam.source, loaded.path.parent, cam.fps)
        fps = cam.fps or 10.0
        if not opener.live:
            try:
                probe = opener()
                fps = probe.info.fps
                probe.close()
            except SourceError as e:
                events(_event(clock, "source_error", cam.id, str(e)))
        policy = camera_policy(loaded, cam)
        pipes.append((
            CameraPipeline(
                policy,
                build_analyzers(loaded, cam, policy, clock, events),
                build_sinks(loaded, cam.id, fps, events, clock),
                modes.current,
                events,
                clock=clock,
                analysis_timeout_s=cfg.analysis.timeout_s,
                max_lag_s=cfg.analysis.max_lag_s,
                on_decision=_state_publisher(hub, cam.id) if hub is not None else None,
            ),
            opener,
        ))

    stopping: list[float] = []  # monotonic time of the first stop signal

    def stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            print(f"stopping ({signal.Signals(signum).name}): sealing open clips, uploads wait for the next run",
                  file=sys.stderr)
        for p, _ in pipes:
            p.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    results: dict[str, dict[str, Any]] = {}

    def work(p: CameraPipeline, o: SourceOpener) -> None:
        s = p.run(o)
        results[p.camera_id] = {"frames_in": s.frames_in, "frames_out": s.frames_out, "withheld": s.withheld,
                                "masked": s.masked, "sink_errors": s.sink_errors, "stored": p.stored_frames()}

    threads = [threading.Thread(target=work, args=po, name=f"cam-{po[0].camera_id}", daemon=True) for po in pipes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if stopping and time.monotonic() - stopping[0] > STOP_GRACE_S:
                    break
    finally:
        busy = [t.name for t in threads if t.is_alive()]
        if hub is not None:
            for cam_id, r in results.items():
                hub.reporter.counters(cam_id, {k: v for k, v in r.items() if k != "stored"})
            left = STOP_GRACE_S - (time.monotonic() - stopping[0]) if stopping else 5.0
            hub.stop(flush_s=max(0.0, min(5.0, left)))
        if audit is not None and not busy:
            audit.close()
    if busy:
        # A stage is stuck past the grace period (an upload to a dead server, a camera that
        # stopped answering). Exiting now is what a crash would do, and the outbox survives
        # crashes by design; waiting longer would make SIGTERM useless.
        print(f"stopped with work in flight ({', '.join(busy)}); sealed clips stay in {data_dir / 'outbox'}",
              file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(ExitCode.FAILED)
    for cam_id, r in results.items():
        stored = ", ".join(f"{n}: {v}" for n, v in r["stored"].items() if v is not None)
        print(f"{cam_id}: {r['frames_in']} frames in, {r['frames_out']} out, {r['masked']} masked, "
              f"{r['withheld']} withheld, {r['sink_errors']} sink errors"
              + (f"; stored {stored}" if stored else ""))
    failed = [c.id for c in cams if c.id not in results or results[c.id]["frames_in"] == 0]
    bad_sinks = [c for c, r in results.items() if r["sink_errors"]]
    if failed:
        print(f"no frames processed for: {', '.join(failed)} (see {data_dir / 'events.jsonl'})", file=sys.stderr)
    return ExitCode.FAILED if failed or bad_sinks else ExitCode.OK


_STATE = {Action.PASS: "clear", Action.MASK: "masked", Action.WITHHOLD: "withheld"}


def _start_mqtt(loaded: LoadedConfig, events: EventLog, clock: SystemClock, audit: AuditLog | None) -> HubMqtt | None:
    """With an `mqtt:` section: connect in the background and feed it events and camera state.

    The broker being down never stops the cameras: events wait in the durable outbox.
    """
    if loaded.config.mqtt is None:
        return None
    from agent.mqtt.service import HubMqtt

    hub = HubMqtt.from_config(loaded, clock, audit)
    hub.record_boot()
    events.subscribe(hub.on_event)
    hub.start()
    return hub


def _state_publisher(hub: HubMqtt, camera_id: str) -> Callable[[Decision, int | None], None]:
    def on_decision(d: Decision, _out_index: int | None) -> None:
        try:
            hub.reporter.camera_state(camera_id, _STATE[d.action])
        except AgentError as e:
            log.warning("cannot publish camera state: %s", e)

    return on_decision


def _event(clock: SystemClock, kind: str, cam: str, msg: str) -> Event:
    return Event(kind, cam, msg, clock.monotonic())



def _register_run(sub: argparse._SubParsersAction) -> None:
    rn = sub.add_parser("run", help="process the configured cameras (file sources to their end, live forever)")
    rn.add_argument("--config", required=True)
    rn.add_argument("--camera", action="append", help="only this camera (repeatable)")
    rn.set_defaults(func=cmd_run)

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
    from agent.media.sources import SourceOpener

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
    from agent.storage.sinks.factory import plaintext_sinks

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


# Other modules append checks here (MQTT).
CHECKS: list[Check] = [check_python, check_sources, check_storage, check_models, check_keys]


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


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return ExitCode.ERROR


def _register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list, install and verify detector models",
        description="Detector models live in a cache ($EPA_MODEL_CACHE or ~/.cache/edge-privacy-agent/models) "
        "and are checked against models/MANIFEST.tsv (sha256) on install and on every load.",
    )
    add_arguments(p)
    p.set_defaults(func=lambda args: _help(p))


def cmd_hub_serve(args: argparse.Namespace) -> int:
    from agent.mqtt.service import serve

    return serve(args.config, run_for_s=args.run_for)


def cmd_sink_init(args: argparse.Namespace) -> int:
    from agent.storage.sinks.upload import init_sink_dir, is_mount_point

    root = Path(args.path).expanduser()
    marker, created = init_sink_dir(root)
    mount = root.resolve()
    while not is_mount_point(mount):
        mount = mount.parent
    print(f"{root}: {'marked' if created else 'already marked'} as a sink directory ({marker.name}); "
          f"it is on the filesystem mounted at {mount}")
    if str(mount) == "/":
        print("note: that is the root filesystem. If this should be a NAS, mount it and run this again "
              "in the mounted directory (and set `require_mount: true`).")
    return ExitCode.OK



def _register_hub(sub: argparse._SubParsersAction) -> None:
    hsub = command_group(sub, "hub", "the hub's MQTT side")
    p = hsub.add_parser("serve", help="connect to the broker and answer access requests and mode changes")
    p.add_argument("--config", required=True, help="config file with an `mqtt:` section")
    p.add_argument("--run-for", type=float, help="stop after this many seconds (tests, demos)")
    p.set_defaults(func=cmd_hub_serve)


def _register_sink(sub: argparse._SubParsersAction) -> None:
    ssub = command_group(sub, "sink", "prepare a directory sink (local disk or NAS)")
    p = ssub.add_parser("init", help="mark an existing directory as this hub's sink (run with the NAS mounted)",
                        description="Encrypted clips are delivered only into a directory that carries this "
                        "marker, so an unmounted NAS (an empty directory on the hub's disk) never receives them.")
    p.add_argument("path", help="the directory of a `type: directory` sink (must exist)")
    p.set_defaults(func=cmd_sink_init)


def register_cli(sub: argparse._SubParsersAction) -> None:
    _register_run(sub)
    _register_doctor(sub)
    _register_models(sub)
    _register_hub(sub)
    _register_sink(sub)
