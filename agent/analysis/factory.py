"""Build the detection analyzer for one camera (what the pipeline calls).

Invariants:
- With `on_model_missing: refuse_start`, a missing or corrupt model raises
  `ModelError` here, before the camera starts.
- With `withhold` (the default), the analyzer is built anyway and withholds
  every frame with `model_missing:<model>` until the model can be loaded.
- Per-camera overrides (`CameraConfig.detection`) are applied here, so the
  analyzer and `detection_rules()` see the same effective config.
"""

from __future__ import annotations

from pathlib import Path

from agent.analysis.detection import ROLES, DetectionAnalyzer, EventSink, Loader
from agent.analysis.scenestore import SceneStore
from agent.clock import Clock
from agent.config import CameraDetectionConfig, DetectionConfig, effective_detection
from agent.detect.base import Detector
from agent.detect.registry import load_detector
from agent.errors import ModelError


def model_cache_path(cfg: DetectionConfig, base_dir: Path | None = None) -> Path | None:
    """`detection.model_cache`, relative to the config file's directory when relative; None = default."""
    if not cfg.model_cache:
        return None
    p = Path(cfg.model_cache).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def default_loader(cfg: DetectionConfig, base_dir: Path | None = None) -> Loader:
    """Loader that verifies and opens models from the cache with the config's settings."""
    cache = model_cache_path(cfg, base_dir)

    def load(role: str, model: str) -> Detector:
        if role == "faces":
            return load_detector(
                model, kind="face", onnx=cfg.onnxruntime, thresholds=cfg.thresholds,
                wanted=frozenset({"face"}), input_size=cfg.faces.input_size, cache=cache,
            )
        return load_detector(
            model, kind="objects", onnx=cfg.onnxruntime, thresholds=cfg.thresholds,
            wanted=cfg.object_labels(), cache=cache,
        )

    return load


def build_detection_analyzer(cfg: DetectionConfig, camera_id: str, clock: Clock, on_event: EventSink, *,
                             camera: CameraDetectionConfig | None = None,
                             base_dir: Path | None = None,
                             loader: Loader | None = None, roles: tuple[str, ...] = ROLES,
                             store: SceneStore | None = None) -> DetectionAnalyzer:
    """The analyzer for one camera. `camera` = `CameraConfig.detection`; `base_dir` = the config
    file's directory (for a relative `model_cache`); `loader` is for tests; `roles` limits it to
    some of the detectors (the pipeline builds one analyzer per role, each on its own lane)."""
    eff = effective_detection(cfg, camera)
    analyzer = DetectionAnalyzer(eff, camera_id, clock, on_event, loader or default_loader(eff, base_dir), roles,
                                 store)
    if eff.on_model_missing == "refuse_start" and analyzer.missing_models:
        raise ModelError(
            f"camera {camera_id!r}: refusing to start (detection.on_model_missing: refuse_start): "
            + "; ".join(analyzer.missing_models)
        )
    return analyzer
