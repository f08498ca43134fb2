"""The homeowner's commands: `check-config`, `zones preview|discover` and `mode get|set`.

Each handler takes parsed args and returns an `ExitCode`; user errors are raised as `AgentError`
and printed by `agent.cli.main.main`. `zones preview` and `zones discover` draw over the frame as
it leaves the hub (`agent.media.preview.redacted_view`: the camera's policy and the pipeline's
own redaction), never over a raw frame, and write their files 0600, only where the homeowner asks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from agent.cli import camera
from agent.cli.configcheck import config_warnings
from agent.cli.parsing import command_group
from agent.clock import SystemClock
from agent.config import LoadedConfig, load_config
from agent.core.datatypes import Analysis
from agent.core.modes import ModeController, read_override, read_switch, write_override
from agent.core.policy import camera_policy, room_state
from agent.errors import AgentError, SinkError, SourceError
from agent.media.sources import SourceOpener, public_spec, read_clean
from agent.storage.sinks.factory import plaintext_sinks
from agent.vocab import Mode

if TYPE_CHECKING:
    pass

from agent.analysis.build import preview_detections
from agent.analysis.discover import discover, render_preview, with_proposals
from agent.analysis.scenestore import stored_scene_state
from agent.config.edit import merge_into_config, snippet_text, write_config_atomically
from agent.core.redact import RedactedFrame
from agent.errors import ExitCode
from agent.fsutil import PRIVATE_FILE_MODE, atomic_write, make_private_dirs
from agent.media.preview import (
    Withheld,
    camera_notes,
    preview_frame,
    preview_zones,
    redacted_view,
    render_zones,
)


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cfg = loaded.config
    print(f"{args.config}: OK (sha256 {loaded.sha256[:16]})")
    for cam in cfg.cameras:
        zones = ", ".join(f"{z.name} ({z.action}, {z.style})" for z in cam.zones) or "no zones"
        print(f"  camera {cam.id}: source {public_spec(cam.source)}; {zones}")
    warnings = [f"{w} writes plaintext (unencrypted) video" for w in plaintext_sinks(loaded)]
    warnings += config_warnings(loaded)
    for warn in warnings:
        print(f"  warning: {warn}")
    return ExitCode.FAILED if args.strict and warnings else ExitCode.OK


def _first_frame(loaded: LoadedConfig, source: str, fps: float | None) -> np.ndarray:
    src = SourceOpener(source, loaded.path.parent, fps)()
    try:
        img = read_clean(src)
    finally:
        src.close()
    if img is None:
        raise SourceError(f"source {source}: no frame to draw on")
    return img


def _preview_mode(loaded: LoadedConfig, chosen: str | None) -> Mode:
    """`--mode`, or the mode in force now (schedule and override; unreadable state: privacy)."""
    return Mode(chosen) if chosen else ModeController(loaded.config.modes, loaded.data_dir).current()


def _write_image(out_path: Path, img: np.ndarray) -> None:
    """Encode by the file's extension and write it 0600, atomically (never a torn picture)."""
    try:
        ok, png = cv2.imencode(out_path.suffix, img) if out_path.suffix else (False, None)
    except cv2.error:  # OpenCV raises, rather than returns False, for an extension it has no encoder for
        ok, png = False, None
    if not ok or png is None:
        raise SinkError(f"cannot write preview image {out_path}: give it an image extension such as .png")
    try:
        # 0600: a picture of the home, even redacted, is for its owner on the hub alone.
        atomic_write(out_path, png.tobytes(), mode=PRIVATE_FILE_MODE)
    except OSError as e:
        raise SinkError(f"cannot write preview image {out_path}: {e.strerror or e}") from None


def _what_it_shows(view: RedactedFrame | Withheld, mode: Mode) -> str:
    if isinstance(view, Withheld):
        return (f"the picture shows no pixel of the frame: in mode {mode} it is withheld as a whole "
                f"({', '.join(view.reasons)}), so only the zones are outlined on a grey canvas")
    return (f"the picture shows the frame as it leaves the hub in mode {mode}: mask zones filled as "
            "redacted, withhold zones outlined, and what the camera's detectors find on this frame "
            "(faces, people, private objects) masked as at run time")


def cmd_zones_preview(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cam = loaded.config.camera(args.camera)
    img = _first_frame(loaded, args.source or cam.source, cam.fps)
    policy = camera_policy(loaded, cam)
    mode = _preview_mode(loaded, args.mode)
    zones = preview_zones(policy, mode)
    # The camera's detectors run on this frame too: a face in the picture is masked as it would be.
    detected = preview_detections(loaded, cam, policy, preview_frame(policy, img), SystemClock())
    view = redacted_view(img, policy, mode, detected)
    notes = camera_notes(cam.id, scene=stored_scene_state(loaded.data_dir, cam.id),
                         private_room=room_state(policy, detected or Analysis()))
    out, _layout = render_zones(view, zones, notes)
    out_path = Path(args.out)
    _write_image(out_path, out)
    print(f"wrote {out_path} (mode 0600): {len(zones)} zone(s) over a {img.shape[1]}x{img.shape[0]} frame "
          f"from {cam.id}; {_what_it_shows(view, mode)}; grid lines every 0.1 give [x, y] points "
          "(0..1, origin top-left)")
    for note in notes:
        print(f"  {note}")
    return ExitCode.OK


MODE_CHOICES = (*(x.value for x in Mode), "auto")


def cmd_mode(args: argparse.Namespace) -> int:
    """`mode get|set`. While the physical privacy switch is on, `set` to anything but privacy
    raises `PrivacySwitchOn` (exit REFUSED) from `write_override`: the switch wins."""
    loaded = load_config(args.config)
    data_dir = loaded.data_dir
    if args.action == "set":
        if args.mode == "auto":
            write_override(data_dir, None, "cli", SystemClock().wall())
            print("mode override cleared; the schedule decides")
        else:
            write_override(data_dir, Mode(args.mode), "cli", SystemClock().wall())
            print(f"mode set to {args.mode}")
        return ExitCode.OK
    try:
        switch = read_switch(data_dir)
        override = read_override(data_dir)
    except AgentError as e:
        print(f"mode state unreadable ({e}); cameras use privacy mode", file=sys.stderr)
        return ExitCode.FAILED
    current = ModeController(loaded.config.modes, data_dir).current()
    print(json.dumps({"mode": str(current), "override": str(override) if override else None,
                      "privacy_switch": switch}))
    if switch:
        print("the physical privacy switch is on: privacy mode until it is turned off", file=sys.stderr)
    return ExitCode.OK


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config file and summarise it")
    p.add_argument("config", help="path to config.yaml")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings, not only errors")
    p.set_defaults(func=cmd_check_config)

    zsub = command_group(sub, "zones", "privacy-zone tools")
    pv = zsub.add_parser(
        "preview",
        help="draw a camera's zones over a frame from its source, redacted as it leaves the hub",
        description="Draws the camera's zones over its first frame as it leaves the hub: mask zones filled "
        "by the pipeline's own redaction (solid, pixelate or blur), withhold zones outlined, every zone "
        "outlined and named in its colour, a legend (name: action, style) and a light grid every 0.1 "
        "labelled along the top (x) and left (y) edges, to read [x, y] points (0..1, origin top-left) for "
        "`points:`. A mode that withholds every frame shows none of it. No raw pixel of a zone is drawn; "
        "the picture is written only to --out (mode 0600) and sent nowhere.",
    )
    pv.add_argument("--config", required=True, help="path to config.yaml")
    pv.add_argument("--camera", required=True, help="camera id")
    pv.add_argument("--source", help="draw over a frame from this source instead of the camera's")
    pv.add_argument("--out", required=True, help="output image (.png; written with mode 0600)")
    pv.add_argument("--mode", choices=[x.value for x in Mode],
                    help="show the zones as they act in this mode (default: the mode in force now)")
    pv.set_defaults(func=cmd_zones_preview)
    add_discover_parser(zsub)

    m = sub.add_parser("mode", help="show or set the household mode (home, away, privacy, auto)",
                       description="While the physical privacy switch is on the mode is privacy, and "
                       "`set` to anything else is refused (exit 4).")
    m.add_argument("action", choices=["get", "set"],
                   help="get: print the current mode, any override and the privacy switch as JSON; "
                   "set: override the mode")
    m.add_argument("mode", nargs="?", choices=MODE_CHOICES,
                   help="with set: the mode to hold until changed, or auto to clear the override and "
                   "follow the schedule")
    m.add_argument("--config", required=True, help="path to config.yaml")

    def mode_command(args: argparse.Namespace) -> int:
        # Usage errors, reported like argparse's own (usage line, exit 2), before the config is read.
        if args.action == "set" and args.mode is None:
            m.error(f"mode set needs a mode: one of {', '.join(MODE_CHOICES)}")
        if args.action == "get" and args.mode is not None:
            m.error(f"mode get takes no mode (to change it: mode set {args.mode})")
        return cmd_mode(args)

    m.set_defaults(func=mode_command)
    camera.register(sub)


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise AgentError("--apply needs confirmation: run it in a terminal, or add --yes")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def cmd_zones_discover(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    proposals, skipped, first, action, existing = discover(loaded, args.camera, args.source, args.frames, args.min_frames)
    mode = _preview_mode(loaded, args.mode)
    # The preview is the frame as it would leave the hub with the proposals applied.
    cam = loaded.config.camera(args.camera)
    proposed = with_proposals(camera_policy(loaded, cam), proposals, action)
    detected = preview_detections(loaded, cam, proposed, preview_frame(proposed, first), SystemClock())
    view = redacted_view(first, proposed, mode, detected)
    out_dir = Path(args.out_dir)
    snippet = out_dir / f"zones-{args.camera}.yaml"
    preview = out_dir / f"zones-{args.camera}.png"
    try:
        make_private_dirs(out_dir)
        atomic_write(snippet, snippet_text(args.camera, [p.as_zone() for p in proposals], action).encode(),
                     PRIVATE_FILE_MODE)
    except OSError as e:
        raise SinkError(f"cannot write {snippet}: {e.strerror or e}") from None
    _write_image(preview, render_preview(view, proposals, skipped, existing))
    for p in proposals:
        print(f"proposed zone {p.name!r}: {p.label} seen in {p.frames_seen}/{p.frames_sampled} frames, "
              f"points {p.points()}")
    for s in skipped:
        print(f"not proposed: {s.label} ({s.reason})")
    applied = "; the proposals are drawn as if applied" if proposals else ""
    print(f"wrote {snippet} and {preview} (mode 0600); {_what_it_shows(view, mode)}{applied}")
    if not args.apply:
        return ExitCode.OK
    if not proposals:
        print("nothing to apply")
        return ExitCode.OK
    if not args.yes and not _confirm(f"Add {len(proposals)} zone(s) to camera {args.camera!r} in {args.config}?"):
        print("not applied")
        return ExitCode.FAILED
    merged = merge_into_config(loaded.path, args.camera, [p.as_zone() for p in proposals], action)
    backup = write_config_atomically(loaded.path, merged)
    print(f"added {len(proposals)} zone(s) to {loaded.path} (previous version in {backup})")
    return ExitCode.OK


def add_discover_parser(zones_sub: argparse._SubParsersAction) -> None:
    """Add `discover` under the `zones` command group (called by `register_cli`)."""
    d = zones_sub.add_parser(
        "discover",
        help="detect private objects (bed, toilet, sink, ...) and propose zones for them",
        description="Samples frames from a camera, detects the private objects listed in "
        "detection.private_objects.labels and proposes one zone per object. Writes zones-<camera>.yaml "
        "and zones-<camera>.png (both mode 0600); --apply adds the zones to the config (comments kept, .bak "
        "written). The picture shows the frame as it would leave the hub with the proposals applied: mask "
        "zones filled by the pipeline's own redaction, withhold zones outlined; no raw pixel of a zone.",
    )
    d.add_argument("--config", required=True, help="path to config.yaml")
    d.add_argument("--camera", required=True, help="camera id")
    d.add_argument("--source", help="sample this source instead of the camera's")
    d.add_argument("--frames", type=int, default=8, help="frames to sample (default 8)")
    d.add_argument("--min-frames", type=int, default=None,
                   help="propose an object only if seen in at least this many sampled frames (default: a quarter)")
    d.add_argument("--out-dir", default=".", help="where to write the snippet and preview (default: .)")
    d.add_argument("--mode", choices=[x.value for x in Mode],
                   help="draw the preview as the zones act in this mode (default: the mode in force now)")
    d.add_argument("--apply", action="store_true", help="add the proposed zones to the config file")
    d.add_argument("--yes", action="store_true", help="with --apply: do not ask for confirmation")
    d.set_defaults(func=cmd_zones_discover)
