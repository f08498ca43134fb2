"""Redaction: every pixel inside a mask changes in every style; RedactedFrame cannot be forged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import redact
from agent.core.datatypes import Decision, Frame, MaskRegion
from agent.core.redact import RedactedFrame, regions_mask, require_redacted
from agent.core.zones import zone_mask
from agent.errors import PrivacyViolation
from agent.geometry import BoxRel, validate_polygon
from agent.vocab import Action, Style


def frame(img: np.ndarray, index: int = 0) -> Frame:
    return Frame("cam", index, 0.0, 0.0, img)


def region(pts: list[list[float]], style: Style) -> MaskRegion:
    return MaskRegion("z", "zone", validate_polygon(pts), style)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 120), st.integers(1, 90), st.sampled_from(list(Style)), st.integers(0, 2**32 - 1),
    st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.05, 1), st.floats(0.05, 1), st.booleans(),
)
def test_every_masked_pixel_changes(w: int, h: int, style: Style, seed: int, x0: float, y0: float,
                                    dw: float, dh: float, flat: bool) -> None:
    rng = np.random.default_rng(seed)
    if flat:  # flat areas are where blur/pixelate would otherwise reproduce the original
        img = np.full((h, w, 3), rng.integers(0, 256, 3, dtype=np.uint8), np.uint8)
    else:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    x1, y1 = min(1.0, x0 + dw), min(1.0, y0 + dh)
    r = region([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], style)
    d = Decision("cam", 0, 0.0, Action.MASK, ("zone:z",), (r,))
    out = redact.apply(frame(img), d)
    assert out is not None
    m = regions_mask((r,), w, h) > 0
    # The applied mask covers at least the polygon rasterisation every zone gets.
    assert not (zone_mask(r.points, w, h) > 0)[~m].any()
    changed = np.any(out.image != img, axis=2)
    assert changed[m].all(), "a pixel inside the mask kept its original value"
    assert np.array_equal(out.image[~m], img[~m]), "pixels outside the mask must not change"


def test_solid_is_black_and_default() -> None:
    img = np.full((20, 30, 3), 200, np.uint8)
    r = region([[0, 0], [1, 0], [1, 1], [0, 1]], Style.SOLID)
    out = redact.apply(frame(img), Decision("cam", 0, 0.0, Action.MASK, (), (r,)))
    assert out is not None and out.image.max() == 0
    assert MaskRegion("z", "zone", r.points).style is Style.SOLID


def test_detection_boxes_and_zones_combine() -> None:
    img = np.full((100, 100, 3), 255, np.uint8)
    regs = (
        region([[0, 0], [0.2, 0], [0.2, 0.2], [0, 0.2]], Style.SOLID),
        MaskRegion("face", "detection", BoxRel(0.5, 0.5, 0.6, 0.6).to_points()),
        region([[0.8, 0.8], [1, 0.8], [1, 1]], Style.PIXELATE),
    )
    out = redact.apply(frame(img), Decision("cam", 0, 0.0, Action.MASK, (), regs))
    assert out is not None
    assert out.image[5, 5].max() == 0 and out.image[55, 55].max() == 0 and out.image[99, 99].tolist() != [255] * 3


@pytest.mark.parametrize("style", list(Style))
def test_a_frames_many_blobs_mask_each_as_alone(style: Style) -> None:
    # Foreground blobs are stamped together, one raster per style: each blob's own pixels change,
    # the rest of the frame does not, whether blobs overlap or lie far apart.
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    blobs = []
    for i in range(12):
        cx, cy = rng.uniform(0.1, 0.9, 2)
        pts = [(float(np.clip(cx + 0.08 * np.cos(a), 0, 1)), float(np.clip(cy + 0.12 * np.sin(a), 0, 1)))
               for a in np.linspace(0, 2 * np.pi, 7, endpoint=False) + i]
        blobs.append(MaskRegion("foreground:person", "foreground", validate_polygon(pts), style))
    out = redact.apply(frame(img), Decision("cam", 0, 0.0, Action.MASK, (), tuple(blobs)))
    assert out is not None
    each = np.zeros((90, 160), bool)
    for b in blobs:
        each |= zone_mask(b.points, 160, 90) > 0
    assert np.array_equal(regions_mask(tuple(blobs), 160, 90) > 0, each)
    changed = np.any(out.image != img, axis=2)
    assert changed[each].all() and not changed[~each].any()
    if style is Style.SOLID:
        assert out.image[each].max() == 0


def test_withhold_gives_no_frame() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    assert redact.apply(frame(img), Decision("cam", 0, 0.0, Action.WITHHOLD, ("x",))) is None


def test_decision_for_another_frame_withholds() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    assert redact.apply(frame(img, 1), Decision("cam", 2, 0.0, Action.PASS)) is None
    assert redact.apply(frame(img), Decision("other", 0, 0.0, Action.PASS)) is None


def test_redacted_frame_cannot_be_forged() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(PrivacyViolation):
        RedactedFrame("cam", 0, 0.0, img, Decision("cam", 0, 0.0, Action.PASS))
    with pytest.raises(PrivacyViolation):
        require_redacted(frame(img))


def test_redacted_image_is_read_only_and_source_untouched() -> None:
    img = np.full((8, 8, 3), 9, np.uint8)
    f = frame(img)
    out = redact.apply(f, Decision("cam", 0, 0.0, Action.MASK, (), (region([[0, 0], [1, 0], [1, 1]], Style.SOLID),)))
    assert out is not None
    with pytest.raises(ValueError):
        out.image[0, 0] = 1
    assert f.image.max() == 9
