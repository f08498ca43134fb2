"""Wiring: turn a loaded config into policies and analyzers for each camera.

This is the I/O edge: it builds the pure parts (policy) and injects the
impure ones (models, clock, events). Detection is on by default; the
policy's detection rules and the detection analyzer come from the same
effective per-camera config, so a rule never exists without a detector
feeding it, and a detector never runs without the policy acting on it.
"""

from __future__ import annotations

import logging

from agent.analysis.base import Analyzer
from agent.analysis.motion import MotionAnalyzer
from agent.analysis.tamper import TamperAnalyzer
from agent.clock import Clock
from agent.config import CameraConfig, LoadedConfig
from agent.detect.config import detection_rules, effective_detection
from agent.detect.factory import build_detection_analyzer
from agent.events import EventCallback
from agent.policy import CameraPolicy, DetectionRule, compile_policy

log = logging.getLogger(__name__)


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
        analyzers.append(build_detection_analyzer(
            loaded.config.detection, cam.id, clock, on_event, camera=cam.detection, base_dir=loaded.path.parent,
        ))
    return analyzers
