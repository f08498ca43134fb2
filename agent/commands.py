"""Core commands: check-config, zones preview, replay, run, mode.

Each handler takes parsed args and returns an exit code; user errors are
raised as AgentError and printed by `agent.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from agent.clock import SystemClock
from agent.config import LoadedConfig, load_config
from agent.datatypes import Action, Decision, Event, Mode
from agent.discover import add_discover_parser
from agent.errors import AgentError, SinkError, SourceError
from agent.events import EventLog
from agent.modes import ModeController, read_override, write_override
from agent.pipeline import CameraPipeline
from agent.replay import run_replay
from agent.runtime import build_analyzers, camera_policy, tune_process
from agent.sinks.factory import build_sinks, plaintext_sinks
from agent.sources import SourceOpener
from agent.zones import zone_mask

if TYPE_CHECKING:
    from agent.mqtt.service import HubMqtt

log = logging.getLogger(__name__)

_ZONE_COLOURS = [(0, 0, 255), (0, 200, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 0)]


# -- check-config ----------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cfg = loaded.config
    print(f"{args.config}: OK (sha256 {loaded.sha256[:16]})")
    for cam in cfg.cameras:
        zones = ", ".join(f"{z.name} ({z.action}, {z.style})" for z in cam.zones) or "no zones"
        print(f"  camera {cam.id}: source {cam.source}; {zones}")
    for warn in plaintext_sinks(loaded):
        print(f"  warning: {warn} writes plaintext (unencrypted) video")
    return 0


# -- zones preview -----------------------------------------------------------------


def _first_frame(loaded: LoadedConfig, source: str, fps: float | None) -> np.ndarray:
    src = SourceOpener(source, loaded.path.parent, fps)()
    try:
        img = src.read()
    finally:
        src.close()
    if img is None:
        raise SourceError(f"source {source}: no frame to draw on")
    return img


def render_zones(img: np.ndarray, zones: list[tuple[str, tuple, str]]) -> np.ndarray:
    """Draw zones (name, points, action) over a frame: translucent fill, outline, label."""
    h, w = img.shape[:2]
    out = img.copy()
    overlay = img.copy()
    for i, (_name, pts, _action) in enumerate(zones):
        colour = _ZONE_COLOURS[i % len(_ZONE_COLOURS)]
        m = zone_mask(pts, w, h)
        overlay[m > 0] = colour
        poly = np.array([[p.x_rel * w, p.y_rel * h] for p in pts], np.int32)
        cv2.polylines(out, [poly], True, colour, max(1, w // 400), cv2.LINE_AA)
    out = cv2.addWeighted(overlay, 0.35, out, 0.65, 0)
    scale = max(0.4, w / 1400)
    for i, (name, pts, action) in enumerate(zones):
        colour = _ZONE_COLOURS[i % len(_ZONE_COLOURS)]
        cx = int(sum(p.x_rel for p in pts) / len(pts) * w)
        cy = int(sum(p.y_rel for p in pts) / len(pts) * h)
        label = f"{name} [{action}]"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0 = max(0, min(w - tw - 4, cx - tw // 2))
        y0 = max(th + 4, min(h - 4, cy))
        cv2.rectangle(out, (x0 - 2, y0 - th - 4), (x0 + tw + 2, y0 + 4), (0, 0, 0), -1)
        cv2.putText(out, label, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out


def cmd_zones_preview(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cam = loaded.config.camera(args.camera)
    img = _first_frame(loaded, args.source or cam.source, cam.fps)
    policy = camera_policy(loaded, cam)
    zones = [(z.name, z.points, str(z.action)) for z in policy.zones]
    out = render_zones(img, zones)
    if not cv2.imwrite(str(args.out), out):
        raise SinkError(f"cannot write preview image {args.out} (unknown extension or unwritable directory)")
    print(f"wrote {args.out}: {len(zones)} zone(s) over a {img.shape[1]}x{img.shape[0]} frame from {cam.id}")
    return 0


# -- replay ------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cam_id = args.camera or loaded.config.cameras[0].id
    mode = Mode(args.mode) if args.mode else None
    summary = run_replay(args.source, loaded, cam_id, Path(args.out), progress=not args.quiet, mode=mode)
    print(
        f"replayed {summary['frames_in']} frames at {summary['fps']} fps: "
        f"{summary['passed']} passed, {summary['masked']} masked, {summary['withheld']} withheld "
        f"-> {args.out}/redacted.mp4 ({summary['frames_out']} frames)"
    )
    if summary["withhold_reasons"]:
        print("  withheld because: " + ", ".join(f"{k} x{v}" for k, v in summary["withhold_reasons"].items()))
    return 0


# -- run ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    tune_process()
    cfg = loaded.config
    clock = SystemClock()
    data_dir = loaded.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SinkError(f"data_dir {data_dir} cannot be created: {e.strerror or e}") from e
    events = EventLog(data_dir / "events.jsonl")
    for warn in plaintext_sinks(loaded):
        log.warning("%s writes PLAINTEXT video: for testing only, not for a real household", warn)
        print(f"warning: {warn} writes PLAINTEXT video (testing only)", file=sys.stderr)
    if not cfg.sinks:
        print("warning: no sinks configured: redacted output is discarded", file=sys.stderr)
    hub = _start_mqtt(loaded, events, clock)

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

    def stop(signum: int, _frame: object) -> None:
        for p, _ in pipes:
            p.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    results: dict[str, dict[str, int]] = {}

    def work(p: CameraPipeline, o: SourceOpener) -> None:
        s = p.run(o)
        results[p.camera_id] = {"frames_in": s.frames_in, "frames_out": s.frames_out, "withheld": s.withheld,
                                "masked": s.masked, "sink_errors": s.sink_errors}

    threads = [threading.Thread(target=work, args=po, name=f"cam-{po[0].camera_id}") for po in pipes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:
        if hub is not None:
            for cam_id, r in results.items():
                hub.reporter.counters(cam_id, r)
            hub.stop()
    for cam_id, r in results.items():
        print(f"{cam_id}: {r['frames_in']} frames in, {r['frames_out']} out, {r['masked']} masked, "
              f"{r['withheld']} withheld, {r['sink_errors']} sink errors")
    failed = [c.id for c in cams if c.id not in results or results[c.id]["frames_in"] == 0]
    bad_sinks = [c for c, r in results.items() if r["sink_errors"]]
    if failed:
        print(f"no frames processed for: {', '.join(failed)} (see {data_dir / 'events.jsonl'})", file=sys.stderr)
    return 1 if failed or bad_sinks else 0


_STATE = {Action.PASS: "clear", Action.MASK: "masked", Action.WITHHOLD: "withheld"}


def _start_mqtt(loaded: LoadedConfig, events: EventLog, clock: SystemClock) -> HubMqtt | None:
    """With an `mqtt:` section: connect in the background and feed it events and camera state.

    The broker being down never stops the cameras: events wait in the durable outbox.
    """
    if loaded.config.mqtt is None:
        return None
    from agent.mqtt.service import HubMqtt

    hub = HubMqtt.from_config(loaded, clock)
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


# -- mode --------------------------------------------------------------------------


def cmd_mode(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    data_dir = loaded.data_dir
    if args.action == "set":
        if args.mode == "auto":
            write_override(data_dir, None, "cli", SystemClock().wall())
            print("mode override cleared; the schedule decides")
        else:
            write_override(data_dir, Mode(args.mode), "cli", SystemClock().wall())
            print(f"mode set to {args.mode}")
        return 0
    try:
        override = read_override(data_dir)
    except AgentError as e:
        print(f"mode state unreadable ({e}); cameras use privacy mode", file=sys.stderr)
        return 1
    current = ModeController(loaded.config.modes, data_dir).current()
    print(json.dumps({"mode": str(current), "override": str(override) if override else None}))
    return 0


# -- registration ------------------------------------------------------------------


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config file and summarise it")
    p.add_argument("config", help="path to config.yaml")
    p.set_defaults(func=cmd_check_config)

    zones = sub.add_parser("zones", help="privacy-zone tools")
    zsub = zones.add_subparsers(dest="zones_command", metavar="ZONES_COMMAND")
    zones.set_defaults(func=lambda a: (zones.print_help(), 2)[1])
    pv = zsub.add_parser("preview", help="draw a camera's zones with their names over a frame from its source")
    pv.add_argument("--config", required=True)
    pv.add_argument("--camera", required=True)
    pv.add_argument("--source", help="draw over a frame from this source instead of the camera's")
    pv.add_argument("--out", required=True, help="output image (.png)")
    pv.set_defaults(func=cmd_zones_preview)
    for hook in ZONES_HOOKS:
        hook(zsub)

    r = sub.add_parser("replay", help="run a recorded source through a camera's privacy pipeline")
    r.add_argument("source", help="video file or image glob")
    r.add_argument("--config", required=True)
    r.add_argument("--camera", help="camera id whose zones and policy apply (default: the first)")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--mode", choices=[m.value for m in Mode], help="household mode (default: the config's)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_replay)

    rn = sub.add_parser("run", help="process the configured cameras (file sources to their end, live forever)")
    rn.add_argument("--config", required=True)
    rn.add_argument("--camera", action="append", help="only this camera (repeatable)")
    rn.set_defaults(func=cmd_run)

    m = sub.add_parser("mode", help="show or set the household mode (home, away, privacy, auto)")
    m.add_argument("action", choices=["get", "set"])
    m.add_argument("mode", nargs="?", choices=[*(x.value for x in Mode), "auto"])
    m.add_argument("--config", required=True)
    m.set_defaults(func=cmd_mode)


# Modules that add `zones` sub-commands (zone discovery).
ZONES_HOOKS: list[Callable[[argparse._SubParsersAction], None]] = [add_discover_parser]
