"""The installer's commands: `run`, `models list|install|verify`, `hub serve` and `sink init`
(`doctor` is `agent.cli.doctor`).

Each handler takes parsed args and returns an `ExitCode`; user errors are raised as `AgentError`
and printed by `agent.cli.main.main`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.access.audit import AuditLog
from agent.access.recorder import EventRecorder, open_hub_audit, record_boot
from agent.analysis.build import build_analyzers
from agent.analysis.scenestore import RelearnWatcher
from agent.cli.parsing import command_group
from agent.clock import SystemClock
from agent.config import LoadedConfig, load_config
from agent.core.datatypes import Decision, Event
from agent.core.events import EventLog
from agent.core.indicator import start_indicator
from agent.core.modes import ModeController
from agent.core.pipeline import CameraPipeline
from agent.core.policy import camera_policy
from agent.core.process import HeapTrimmer, tune_process
from agent.errors import AgentError, ExitCode, SinkError, SourceError
from agent.fsutil import make_private_dirs
from agent.media.encoders import start_encoder
from agent.media.sources import SourceOpener
from agent.mqtt.health import service_monitor
from agent.storage.lock import DataDirLock
from agent.storage.retention import ExpiryTicker
from agent.storage.sinks.factory import build_sinks, plaintext_sinks
from agent.vocab import Action, Mode
from agent.web.service import start_web
from models.install import add_arguments

if TYPE_CHECKING:
    from agent.mqtt.service import HubMqtt

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    for cam_id in args.camera or []:
        loaded.config.camera(cam_id)  # an unknown id is an error naming the known ones, as in `replay`
    data_dir = loaded.data_dir
    try:
        make_private_dirs(data_dir)  # 0700; the lock below tightens what an older version left
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
    record = audit.append if audit is not None else None  # what the sinks, page and expiry audit with
    encoder = start_encoder(cfg.video.encoder, events, clock.monotonic())  # once per run; explicit + broken: stops
    # Said once, on stderr, where the person who started `run` looks (and systemd's journal
    # keeps it); a log line as well would only say the same thing twice.
    for warn in plaintext_sinks(loaded):
        print(f"warning: {warn} writes PLAINTEXT video: for testing only, not for a real household",
              file=sys.stderr)
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
                # The pipeline opens the file again and reports this very error as its
                # `source_error`; reporting the probe as well would say it twice.
                log.debug("probe of camera %s failed: %s", cam.id, e)
        policy = camera_policy(loaded, cam)
        pipes.append((
            CameraPipeline(
                policy,
                build_analyzers(loaded, cam, policy, clock, events, keep_scene=True),
                build_sinks(loaded, cam.id, fps, events, clock, audit=record,
                            purger=lambda: hub.outbox if hub is not None else None, encoder=encoder),
                modes.current,
                events,
                clock=clock,
                analysis_timeout_s=cfg.analysis.timeout_s,
                max_lag_s=cfg.analysis.max_lag_s,
                on_decision=_state_publisher(hub, cam.id) if hub is not None else None,
            ),
            opener,
        ))

    # Relearn requests (`camera relearn`, an owner's signed MQTT request): those made while `run`
    # was not running are honoured before the first frame, later ones between frames.
    relearn = RelearnWatcher(data_dir, {p.camera_id: p for p, _ in pipes},
                             record,
                             lambda cam, msg: events(Event("scene_problem", cam, msg, clock.monotonic(), {})))
    relearn.poll_once()
    relearn.start()
    indicator = start_indicator(cfg.hardware, [p for p, _ in pipes], hub.access if hub is not None else None, events, clock)
    web = start_web(loaded, [p for p, _ in pipes], modes.current, events, clock,  # None unless web.enabled
                    lambda: getattr(getattr(hub, "access", None), "state", None),
                    audit=record)
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
                                "masked": s.masked, "sink_errors": s.sink_errors, "stored": p.stored_frames(),
                                "reasons": dict(s.reasons)}

    threads = [threading.Thread(target=work, args=po, name=f"cam-{po[0].camera_id}", daemon=True) for po in pipes]
    # Retention: expiry at start and every 10 minutes, finishing deletions a sink could not take yet.
    expiry = ExpiryTicker.start_for(loaded, clock, record,
                                    events=lambda: hub.outbox if hub is not None else None)
    monitor = service_monitor(loaded, pipes, threads, hub, events, clock, encoder.codec)
    trimmer = HeapTrimmer()
    try:
        for t in threads:
            t.start()
        trimmer.start()  # frees what the frames leave behind in the heap, every 2 s
        monitor.start()  # READY=1, then the watchdog fed from the pipelines' health
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if stopping and time.monotonic() - stopping[0] > STOP_GRACE_S:
                    break
    finally:
        monitor.stop()  # STOPPING=1
        trimmer.stop()
        relearn.stop()
        if expiry is not None:
            expiry.stop()
        if indicator is not None:
            indicator.stop()  # off: nothing is recorded any more
        if web is not None:
            web.stop()
        busy = [t.name for t in threads if t.is_alive()]
        if hub is not None:
            for cam_id, r in results.items():
                hub.reporter.counters(cam_id, {k: v for k, v in r.items() if k not in ("stored", "reasons")})
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
    print_summary(results, queued_clips(data_dir))
    failed = [c.id for c in cams if c.id not in results or results[c.id]["frames_in"] == 0]
    bad_sinks = [c for c, r in results.items() if r["sink_errors"]]
    if failed:
        print(f"no frames processed for: {', '.join(failed)} (see {data_dir / 'events.jsonl'})", file=sys.stderr)
    return ExitCode.FAILED if failed or bad_sinks else ExitCode.OK


#: Withhold reasons named per camera in the summary; the rest are counted in the event file.
TOP_REASONS = 3


def print_summary(results: dict[str, dict[str, Any]], queued: dict[str, list[str]] | str | None) -> None:
    """Per camera, what a newcomer asks after a run: how much was held back and why, what was
    stored where, and what is still waiting to be delivered.

    The first line of each camera keeps its old `cam: N frames in, M out, ...` form (scripts read
    it); the details follow, indented. `queued` is `queued_clips`' answer.
    """
    for cam_id, r in results.items():
        print(f"{cam_id}: {r['frames_in']} frames in, {r['frames_out']} out, {r['masked']} masked, "
              f"{r['withheld']} withheld, {r['sink_errors']} sink errors")
        reasons = sorted(r.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if reasons:
            top = ", ".join(f"{k} ({v})" for k, v in reasons[:TOP_REASONS])
            more = len(reasons) - TOP_REASONS
            print(f"  withheld for: {top}" + (f" and {more} other reason(s)" if more > 0 else ""))
        stored = r.get("stored", {})
        if stored:
            print("  stored: " + ", ".join(
                f"{n} frames in {name}" if n is not None else f"{name} (does not count its frames)"
                for name, n in stored.items()))
        else:
            print("  stored: nothing (no sinks)")
        if isinstance(queued, dict):
            dests = queued.get(cam_id, [])
            if dests:
                where = ", ".join(f"{dests.count(d)} for {d}" for d in sorted(set(dests)))
                print(f"  queued: {len(dests)} clip(s) still in the outbox ({where}); "
                      "the next run or `privacy-agent outbox flush` delivers them")
            else:
                print("  queued: nothing waiting in the outbox")
        elif isinstance(queued, str):
            print(f"  queued: unknown ({queued})")


def queued_clips(data_dir: Path) -> dict[str, list[str]] | str | None:
    """Per camera, one destination name per clip delivery still waiting in the outbox.

    None when this data dir has no outbox (no encrypted sink ever ran): nothing can be queued,
    and opening one would create it. A string says why the outbox could not be read; the run
    itself went fine, so the summary says so instead of failing.
    """
    from agent.storage.outbox import OUTBOX_DIRNAME, Outbox

    if not (data_dir / OUTBOX_DIRNAME / "outbox.db").exists():
        return None
    try:
        # Read-only: it needs no lock (this process holds the data dir's anyway) and never
        # recovers or migrates anything on the way out.
        box = Outbox(data_dir, SystemClock(), exclusive=False)
        try:
            clips = box.list_clips()
        finally:
            box.close()
    except SinkError as e:
        return str(e)
    out: dict[str, list[str]] = {}
    for c in clips:
        out.setdefault(c.camera_id, []).extend(c.queued_for)
    return out


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
    rn.add_argument("--config", required=True, help="the hub's config file (YAML)")
    rn.add_argument("--camera", action="append", help="only this camera (repeatable)")
    rn.set_defaults(func=cmd_run)


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
    _register_models(sub)
    _register_hub(sub)
    _register_sink(sub)

