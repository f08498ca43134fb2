"""Wiring: turn a loaded config into policies and analyzers for each camera.

This is the I/O edge: it builds the pure parts (policy) and injects the
impure ones (models, clock, events). Detection is on by default; the
policy's detection rules and the detection analyzer come from the same
effective per-camera config, so a rule never exists without a detector
feeding it, and a detector never runs without the policy acting on it.
"""

from __future__ import annotations

import ctypes
import logging
import platform

import cv2

from agent.analysis.base import Analyzer
from agent.analysis.detection import ROLES
from agent.analysis.motion import MotionAnalyzer
from agent.analysis.tamper import TamperAnalyzer
from agent.clock import Clock
from agent.config import CameraConfig, LoadedConfig
from agent.detect.config import detection_rules, effective_detection
from agent.detect.factory import build_detection_analyzer
from agent.events import EventCallback
from agent.policy import CameraPolicy, DetectionRule, compile_policy

log = logging.getLogger(__name__)


def tune_process() -> None:
    """Process-wide settings for running camera pipelines; `run` and `replay` call it once.

    OpenCV's own thread pool is turned off: the pipeline already keeps both
    cores busy with decode, one lane per analyzer and the encoder, so OpenCV
    splitting each resize over every core only adds wake-ups and contention
    (about 1.5 ms less CPU per 720p frame, measured with bench/bench_pipeline.py).

    glibc's malloc is capped at two arenas: by default every thread that
    allocates (reader, one per analysis lane, sink, encoder) gets its own
    arena, up to eight per core, and each keeps frame-sized buffers it freed.
    The cap saves about 7 MiB for one camera (bench/bench_memory.py), with
    no throughput change measured. Elsewhere than glibc this is skipped.
    """
    cv2.setNumThreads(1)
    _cap_malloc_arenas(2)


# mallopt() parameter number for the arena cap, from glibc's <malloc.h>.
_M_ARENA_MAX = -8


def _cap_malloc_arenas(n: int) -> None:
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_ARENA_MAX, n)
    except (OSError, AttributeError) as e:
        log.info("malloc arenas not capped: %s", e)
        return
    if not ok:
        log.info("malloc arenas not capped: mallopt refused")


def camera_policy(loaded: LoadedConfig, cam: CameraConfig) -> CameraPolicy:
    eff = effective_detection(loaded.config.detection, cam.detection)
    rules = tuple(DetectionRule(**r) for r in detection_rules(eff)) if eff.enabled else ()
    return compile_policy(cam, loaded.config, rules, eff.max_detection_age_s)


def build_analyzers(loaded: LoadedConfig, cam: CameraConfig, policy: CameraPolicy, clock: Clock,
                    on_event: EventCallback) -> list[Analyzer]:
    a = loaded.config.analysis
    analyzers: list[Analyzer] = [TamperAnalyzer(a.tamper)]
    zones = policy.withhold_capable_zones()
    if zones:
        analyzers.append(MotionAnalyzer(zones, a.motion))
    if policy.detection_rules:
        # One analyzer per detector, so the pipeline runs each on its own lane:
        # the object model works a few frames ahead while faces run on every frame.
        for role in ROLES:
            det = build_detection_analyzer(loaded.config.detection, cam.id, clock, on_event, camera=cam.detection,
                                           base_dir=loaded.path.parent, roles=(role,))
            if det.slots:
                analyzers.append(det)
    return analyzers
