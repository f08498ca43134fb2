"""Shared helpers for the detection tests: a model cache installed once per session, photos, fakes.

Models are installed from `../shared/models` (or `$EPA_SHARED_DIR/models`)
into a temporary cache with the real installer, so the sha256 checks run too.
Loaded detectors are cached per session: loading ONNX sessions is the slow part.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.clock import FakeClock
from agent.config import DEFAULT_THRESHOLDS
from agent.core.datatypes import Detection
from agent.detect.base import Detector
from agent.detect.registry import load_detector
from agent.geometry import BoxRel
from agent.lab.shared_data import shared_dir, shared_file
from models.install import install

# Every model the shared folder provides (CenterFace comes from PyPI, tested separately).
SHARED_MODELS = ("yunet_s_640", "yunet_s_320", "yunet_s_dynamic", "yolox_nano", "nanodet_m_416", "ultraface_rfb_320")
WANTED = frozenset({"face", "person", "bed", "toilet", "sink"})

_cache: list[Path] = []


def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the shared models once per session; later calls return the same directory."""
    if not _cache:
        d = tmp_path_factory.mktemp("epa-models")
        install(SHARED_MODELS, from_dir=shared_dir() / "models", cache=d)
        _cache.append(d)
    return _cache[0]


@cache
def detector(cache: Path, model: str) -> Detector:
    return load_detector(model, cache=cache, wanted=WANTED, thresholds=DEFAULT_THRESHOLDS)


@cache
def photo(name: str) -> np.ndarray:
    img = cv2.imread(str(shared_file("fixtures", name)), cv2.IMREAD_COLOR)
    assert img is not None, name
    img.setflags(write=False)
    return img


ASTRONAUT = "skimage_astronaut.png"
GROUP = "coco_val2017_000000001000.jpg"
INDOOR_PEOPLE = "coco_val2017_000000002685.jpg"
BEDROOM_1 = "coco_val2017_000000000632.jpg"
BEDROOM_2 = "coco_val2017_000000001993.jpg"
TOILET_PERSON = "coco_val2017_000000003156.jpg"
TOILET_GREY = "coco_val2017_000000005503.jpg"
BATHROOM_SINK = "coco_val2017_000000006213.jpg"
NEGATIVES = ("coco_val2017_000000000285.jpg", "skimage_chelsea.png", "skimage_coffee.png",
             "coco_val2017_000000000802.jpg")


class FakeDetector:
    """A scripted detector: returns `result`, optionally raising or taking time on the fake clock."""

    def __init__(self, model: str, labels: frozenset[str], result: tuple[Detection, ...] = (),
                 clock: FakeClock | None = None, takes_s: float = 0.0) -> None:
        self.model = model
        self.labels = labels
        self.result = result
        self.clock = clock
        self.takes_s = takes_s
        self.calls = 0
        self.fail: Exception | None = None
        self.on_call: Callable[[np.ndarray], None] | None = None

    def detect(self, image_bgr: np.ndarray, half_bgr: np.ndarray | None = None) -> tuple[Detection, ...]:
        self.calls += 1
        if self.clock is not None and self.takes_s:
            self.clock.advance(self.takes_s)
        if self.on_call is not None:
            self.on_call(image_bgr)
        if self.fail is not None:
            raise self.fail
        return self.result


def det(label: str, x0: float, y0: float, x1: float, y1: float, score: float = 0.9, model: str = "fake") -> Detection:
    return Detection(label, score, BoxRel(x0, y0, x1, y1), model)
