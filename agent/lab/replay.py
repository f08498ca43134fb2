"""Replay a recorded source through a camera's privacy pipeline, for testers.

Writes to the output directory exactly what would leave the hub, in
plaintext for inspection:
- `redacted.mp4`: released frames only, in order (H.264).
- `decisions.jsonl`: one line per input frame (`frame`, `t_s`, `action`,
  `reasons`, `regions`, `out_index`).
- `summary.json`: counts, throughput, the config hash and `busy_withhold_zones`
  (withhold zones that withheld more than half of the frames: drawn over a busy area).
- `events.jsonl`: everything the pipeline reported.

A replay that fails removes the files it wrote and the directories it created, and only those:
a failed run leaves no empty or half-written `--out` folder behind, and never touches what was
in an existing folder before.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from agent.analysis.build import build_analyzers
from agent.clock import Clock, SystemClock
from agent.config import LoadedConfig
from agent.core.datatypes import Decision
from agent.core.events import EventLog
from agent.core.modes import ModeController
from agent.core.pipeline import CameraPipeline
from agent.core.policy import camera_policy, own_reason
from agent.core.process import tune_process
from agent.core.redact import RedactedFrame, require_redacted
from agent.errors import SinkError, SourceError
from agent.media.sources import SourceOpener
from agent.media.video import VideoEncoder
from agent.vocab import Action, Mode

log = logging.getLogger(__name__)


# The files a replay writes into its output directory (and removes again if it fails).
OUTPUT_FILES = ("redacted.mp4", "decisions.jsonl", "summary.json", "events.jsonl")


# A withhold zone that withholds more than this share of the frames is probably drawn
# over a busy area (a doorway, a walkway): the homeowner gets almost no video.
BUSY_ZONE_SHARE = 0.5


def withhold_zone(reason: str) -> str | None:
    """The zone named by a withhold reason `zone:NAME:WHY` (NAME may hold ':'), else None. The
    frame before one withheld by a zone is withheld for it too, as `ahead:zone:NAME:WHY`."""
    reason = own_reason(reason)
    if not reason.startswith("zone:") or reason.count(":") < 2:
        return None
    return reason[len("zone:") : reason.rindex(":")]


def busy_withhold_zones(zone_frames: Counter[str], frames_in: int) -> dict[str, int]:
    """Zones that withheld more than BUSY_ZONE_SHARE of the frames, by withheld-frame count."""
    return {z: n for z, n in sorted(zone_frames.items()) if frames_in and n > BUSY_ZONE_SHARE * frames_in}


def _created_dirs(out_dir: Path) -> list[Path]:
    """The directories `mkdir(parents=True)` is about to create for `out_dir`, deepest first."""
    missing: list[Path] = []
    d = out_dir.absolute()
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    return missing


@contextmanager
def _cleaned_up_on_failure(out_dir: Path) -> Iterator[None]:
    """On any failure inside the block, remove only what this replay wrote: the output files that
    were not there before it started, and the directories it created (while they are empty)."""
    created = _created_dirs(out_dir)
    existed = {name for name in OUTPUT_FILES if (out_dir / name).exists()}
    try:
        yield
    except BaseException:
        try:
            for name in OUTPUT_FILES:
                if name not in existed:
                    (out_dir / name).unlink(missing_ok=True)
            for d in created:
                try:
                    d.rmdir()  # only if empty: anything else in it was not ours to delete
                except OSError:
                    break
        except OSError as e:
            log.warning("could not clean up after the failed replay in %s: %s", out_dir, e)
        raise


def run_replay(
    source: str,
    loaded: LoadedConfig,
    camera_id: str,
    out_dir: Path,
    *,
    progress: bool = False,
    mode: Mode | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Replay `source` into `out_dir` (see the module docstring); returns the summary."""
    with _cleaned_up_on_failure(out_dir):
        return _replay(source, loaded, camera_id, out_dir, progress, mode, clock)


def _replay(source: str, loaded: LoadedConfig, camera_id: str, out_dir: Path, progress: bool,
            mode: Mode | None, clock: Clock | None) -> dict[str, Any]:
    clock = clock or SystemClock()
    cam = loaded.config.camera(camera_id)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SinkError(f"output directory {out_dir} is not writable: {e.strerror or e}") from e

    tune_process()
    opener = SourceOpener(source, Path.cwd(), cam.fps)
    # Open once up front so a bad source fails fast with its own message.
    first = opener()
    fps = first.info.fps
    total = first.info.frame_count
    first.close()

    events = EventLog(out_dir / "events.jsonl")
    (out_dir / "events.jsonl").write_text("")
    policy = camera_policy(loaded, cam)
    analyzers = build_analyzers(loaded, cam, policy, clock, events)
    modes = ModeController(loaded.config.modes, None, clock, fixed=mode or loaded.config.modes.default)
    video = ReplayVideoSink(out_dir / "redacted.mp4", fps)
    dec_path = out_dir / "decisions.jsonl"
    bar = None
    if progress and sys.stderr.isatty():
        # Imported only for an interactive replay: it costs 40 ms of start-up.
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=camera_id)

    zone_frames: Counter[str] = Counter()
    with dec_path.open("w", encoding="utf-8") as dec_file:

        def on_decision(d: Decision, out_index: int | None) -> None:
            if d.action == Action.WITHHOLD:
                zone_frames.update({z for z in map(withhold_zone, d.reasons) if z is not None})
            rec = d.to_json()
            rec["out_index"] = out_index
            dec_file.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(1)

        pipe = CameraPipeline(
            policy, analyzers, [video], modes.current, events,
            clock=clock,
            analysis_timeout_s=loaded.config.analysis.timeout_s,
            max_lag_s=loaded.config.analysis.max_lag_s,
            on_decision=on_decision,
        )
        t0 = time.perf_counter()
        stats = pipe.run(opener)
        elapsed = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if stats.frames_in == 0:
        raise SourceError(f"source {source}: no frames were decoded")
    busy = busy_withhold_zones(zone_frames, stats.frames_in)
    for zone, n in busy.items():
        # info, not warning: the summary carries it and the tester's CLI prints the warning.
        log.info("withhold zone %r withheld %d of %d frames: is it drawn over a busy area?",
                    zone, n, stats.frames_in)
    summary = {
        "camera": camera_id,
        "source": source,
        "mode": str(modes.current()),
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "passed": stats.passed,
        "masked": stats.masked,
        "withheld": stats.withheld,
        "decode_errors": stats.decode_errors,
        "sink_errors": stats.sink_errors,
        "withhold_reasons": dict(sorted(stats.reasons.items())),
        "busy_withhold_zones": busy,
        "source_fps": fps,
        "fps": round(stats.frames_in / elapsed, 2) if elapsed > 0 else None,
        "elapsed_s": round(elapsed, 3),
        "config_sha256": loaded.sha256,
        "events": events.total,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class ReplayVideoSink:
    """Writes released frames to `redacted.mp4` for inspection (plaintext by design: a lab tool)."""

    plaintext = True

    def __init__(self, path: Path, fps: float) -> None:
        self.name = f"replay:{path}"
        self._path = path
        self._fps = fps
        self._enc: VideoEncoder | None = None
        self._fh: BinaryIO | None = None

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        if self._enc is None:
            try:
                self._fh = open(self._path, "wb")
            except OSError as e:
                raise SinkError(f"cannot create {self._path}: {e.strerror or e}") from e
            self._enc = VideoEncoder(self._fh, rf.width_px, rf.height_px, self._fps)
        try:
            self._enc.write(rf)
        except OSError as e:
            raise SinkError(f"cannot write {self._path}: {e.strerror or e}") from e

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        return None

    def close(self) -> None:
        if self._enc is not None:
            self._enc.close()
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as e:
                raise SinkError(f"cannot close {self._path}: {e.strerror or e}") from e
