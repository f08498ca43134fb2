"""Build one camera's analyzers from its loaded config.

The policy's detection rules (`agent.core.policy.camera_policy`) and the detection analyzers
built here come from the same effective per-camera config, so a rule never exists without a
detector feeding it, and a detector never runs without the policy acting on it. The same holds
for the foreground layer: its analyzer runs exactly when the policy has a `foreground` part.
"""

from __future__ import annotations

from agent.analysis.detection import ROLES
from agent.analysis.factory import build_detection_analyzer
from agent.analysis.foreground import ForegroundAnalyzer
from agent.analysis.motion import MotionAnalyzer
from agent.analysis.scenestore import SceneStore
from agent.analysis.tamper import TamperAnalyzer
from agent.clock import Clock
from agent.config import CameraConfig, LoadedConfig, effective_detection
from agent.core.datatypes import Analysis, Frame
from agent.core.events import EventCallback
from agent.core.policy import CameraPolicy
from agent.core.ports import Analyzer, close_analyzer, merge


def build_analyzers(loaded: LoadedConfig, cam: CameraConfig, policy: CameraPolicy, clock: Clock,
                    on_event: EventCallback, *, keep_scene: bool = False) -> list[Analyzer]:
    """`keep_scene`: the learned scene lives in the data dir and survives restarts (`run`); a
    replay or a preview learns its own and stores nothing."""
    a = loaded.config.analysis
    store = SceneStore(loaded.data_dir, cam.id) if keep_scene else None
    analyzers: list[Analyzer] = [TamperAnalyzer(a.tamper, store)]
    zones = policy.withhold_capable_zones()
    if zones:
        analyzers.append(MotionAnalyzer(zones, a.motion))
    if policy.detection_rules:
        # One analyzer per detector, so the pipeline runs each on its own lane:
        # the object model works a few frames ahead while faces run on every frame.
        for role in ROLES:
            det = build_detection_analyzer(loaded.config.detection, cam.id, clock, on_event, camera=cam.detection,
                                           base_dir=loaded.path.parent, roles=(role,), store=store)
            if det.slots:
                analyzers.append(det)
    if policy.foreground is not None:
        # Its own lane: cheap, on every frame, beside the detectors.
        analyzers.append(ForegroundAnalyzer(effective_detection(loaded.config.detection, cam.detection).foreground,
                                            cam.id))
    return analyzers


def preview_detections(loaded: LoadedConfig, cam: CameraConfig, policy: CameraPolicy, frame: Frame,
                       clock: Clock) -> Analysis | None:
    """What the camera's detectors find on one frame, for a preview that must show the frame as it
    leaves the hub (faces, people and private objects masked, as at run time). None when the camera
    runs no detector. A detector that cannot run is a fault in the result: the preview withholds
    the frame, as the pipeline would (fail closed), rather than show what it could not analyse."""
    if not policy.detection_rules:
        return None
    parts: list[Analysis] = []
    for role in ROLES:
        det = build_detection_analyzer(loaded.config.detection, cam.id, clock, lambda _ev: None,
                                       camera=cam.detection, base_dir=loaded.path.parent, roles=(role,))
        if not det.slots:
            continue
        try:
            parts.append(det.analyze(frame))
        except Exception as e:  # noqa: BLE001 - any detector failure withholds, never shows the frame
            parts.append(Analysis(faults=(f"detector_error:{type(e).__name__}",)))
        finally:
            close_analyzer(det)
    return merge(parts) if parts else None
