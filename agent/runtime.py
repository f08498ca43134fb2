"""Wiring: turn a loaded config into policies, analyzers and pipelines for each camera.

This is the I/O edge: it builds the pure parts (policy) and injects the
impure ones (sources, sinks, clock, events).
"""

from __future__ import annotations

import logging

from agent.analysis.base import Analyzer
from agent.analysis.motion import MotionAnalyzer
from agent.clock import Clock
from agent.config import CameraConfig, LoadedConfig
from agent.events import EventCallback
from agent.policy import CameraPolicy, compile_policy

log = logging.getLogger(__name__)


def camera_policy(loaded: LoadedConfig, cam: CameraConfig) -> CameraPolicy:
    return compile_policy(cam, loaded.config)


def build_analyzers(loaded: LoadedConfig, cam: CameraConfig, policy: CameraPolicy, clock: Clock,
                    on_event: EventCallback) -> list[Analyzer]:
    a = loaded.config.analysis
    analyzers: list[Analyzer] = [MotionAnalyzer(policy.withhold_capable_zones(), a.motion, a.tamper)]
    return analyzers
