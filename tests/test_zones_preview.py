"""`zones preview`: drawn over the frame as it leaves the hub (mask zones as redacted, never raw
pixels), a legend and a 0.1 grid readable on small and large frames; the PNG written 0600."""

from __future__ import annotations

import argparse
import stat
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli.homeowner import register_cli
from agent.config import load_config
from agent.core.datatypes import Frame
from agent.core.policy import CameraPolicy, ZonePolicy, camera_policy, decide_zones_only
from agent.core.redact import RedactedFrame, apply
from agent.core.zones import zone_mask
from agent.errors import PrivacyViolation, SinkError
from agent.geometry import PointRel
from agent.lab.shared_data import shared_file
from agent.media.preview import (
    PreviewZone,
    Withheld,
    colour_of,
    grid_positions,
    preview_zones,
    redacted_view,
    render_zones,
)
from agent.vocab import Mode, Style, ZoneAction


def _zone(name: str, pts: list[tuple[float, float]], action: str = "mask", style: str = "solid") -> PreviewZone:
    return PreviewZone(name, tuple(PointRel(x, y) for x, y in pts), action, style)


ZONES = [
    _zone("window", [(0.7, 0.0), (1.0, 0.0), (1.0, 0.3), (0.7, 0.3)]),
    _zone("bed", [(0.0, 0.58), (0.62, 0.58), (0.62, 1.0), (0.0, 1.0)], "withhold"),
    _zone("desk", [(0.3, 0.1), (0.5, 0.1), (0.45, 0.4)], style="pixelate"),
]


def _policy(zones: list[PreviewZone]) -> CameraPolicy:
    return CameraPolicy("cam", tuple(ZonePolicy(z.name, z.points, ZoneAction(z.action), Style(z.style), 0.0)
                                     for z in zones))


def _view(img: np.ndarray, zones: list[PreviewZone] = ZONES, mode: Mode = Mode.HOME) -> RedactedFrame | Withheld:
    return redacted_view(img, _policy(zones), mode)


def _untouched(zones: list[PreviewZone], w: int, h: int) -> np.ndarray:
    """Pixels no outline, label, grid line or legend covers: where the picture is the frame itself.

    Found by drawing the same zones over an all-0 and an all-255 frame: a drawn pixel cannot come
    out equal to both.
    """
    outs = [render_zones(_view(np.full((h, w, 3), v, np.uint8), []), zones)[0] for v in (0, 255)]
    return np.asarray((outs[0] == 0).all(axis=2) & (outs[1] == 255).all(axis=2))


@pytest.mark.parametrize("size", [(320, 240), (1920, 1080)])
def test_grid_lines_and_legend_are_drawn(size: tuple[int, int]) -> None:
    w, h = size
    frame = np.full((h, w, 3), 60, np.uint8)  # a plain frame: anything not 60 was drawn or redacted
    out, layout = render_zones(_view(frame), ZONES)
    assert out.shape == frame.shape and (frame == 60).all()  # same size, input untouched
    assert layout.grid_x_px == grid_positions(w) and len(layout.grid_x_px) == 9
    assert layout.grid_x_px[0] == round(0.1 * w) and layout.grid_y_px[4] == round(0.5 * h)
    # Every vertical line at x = 0.1 .. 0.9 is lighter than the frame, in a row no zone, label or
    # legend covers (y = 0.45), and the column beside it is not: a line, not a wash.
    row = round(0.45 * h)
    for x in layout.grid_x_px:
        assert out[row, x].mean() > 100 and out[row, x + 3].mean() == 60, x
    # Horizontal lines down a column at x = 0.55, through the bed's fill too: each line is lighter than
    # the pixels just below it.
    col = round(0.55 * w)
    for y in layout.grid_y_px:
        assert out[y, col].mean() > out[y + 3, col].mean() + 30, y
    # The legend: one row per zone naming action and style, on a dark box inside the frame, each row
    # starting with a swatch in the zone's colour.
    assert layout.legend_rows == ("window: mask, solid", "bed: withhold, solid", "desk: mask, pixelate")
    assert layout.legend_box_px is not None
    x0, y0, x1, y1 = layout.legend_box_px
    assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
    box = out[y0:y1 + 1, x0:x1 + 1]
    for i in range(len(ZONES)):
        assert (box == colour_of(i)).all(axis=2).sum() > 9, i
    # It takes the corner that hides no zone (bottom-right here) and stays a modest share of the frame.
    assert x1 > w * 0.6 and y1 > h * 0.7 and (x1 - x0) * (y1 - y0) < 0.2 * w * h


def test_legend_text_scales_with_the_frame() -> None:
    small = render_zones(_view(np.zeros((240, 320, 3), np.uint8)), ZONES)[1]
    large = render_zones(_view(np.zeros((1080, 1920, 3), np.uint8)), ZONES)[1]
    assert small.text_scale >= 0.4 and large.text_scale > 2 * small.text_scale
    assert small.legend_box_px is not None and large.legend_box_px is not None
    assert small.legend_box_px[2] - small.legend_box_px[0] < 320 * 0.45  # fits a small frame


def test_no_zones_grid_only() -> None:
    out, layout = render_zones(_view(np.zeros((240, 320, 3), np.uint8), []), [])
    assert layout.legend_box_px is None and layout.legend_rows == ()
    assert out[round(0.45 * 240), layout.grid_x_px[0]].mean() > 100


CONFIG = """\
cameras:
  - id: bedroom
    source: "frames/*.jpg"
    zones:
      - name: window
        points: [[0.7, 0.0], [1.0, 0.0], [1.0, 0.3], [0.7, 0.3]]
      - name: bed
        points: [[0.0, 0.58], [0.62, 0.58], [0.62, 1.0], [0.0, 1.0]]
        action: withhold
"""


def _run(*argv: str) -> int:
    p = argparse.ArgumentParser()
    register_cli(p.add_subparsers())
    args = p.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def house(tmp_path: Path) -> Path:
    (tmp_path / "frames").mkdir()
    img = cv2.imread(str(shared_file("fixtures", "coco_val2017_000000000632.jpg")))
    assert img is not None
    cv2.imwrite(str(tmp_path / "frames" / "0.jpg"), img)  # in the test's tmp dir only
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    return cfg


def test_zones_preview_writes_a_private_png(house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = house.parent / "preview.png"
    assert _run("zones", "preview", "--config", str(house), "--camera", "bedroom", "--out", str(out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # an unredacted frame of the home
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (483, 640, 3)
    printed = capsys.readouterr().out
    assert "2 zone(s) over a 640x483 frame" in printed and "origin top-left" in printed
    # Writing again over an existing, more open file still leaves it 0600.
    out.chmod(0o644)
    assert _run("zones", "preview", "--config", str(house), "--camera", "bedroom", "--out", str(out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["preview", "preview.txt"])
def test_zones_preview_refuses_a_name_without_an_image_type(house: Path, name: str) -> None:
    with pytest.raises(SinkError, match=r"cannot write preview image .*image extension"):
        _run("zones", "preview", "--config", str(house), "--camera", "bedroom", "--out", str(house.parent / name))


def test_zones_preview_reports_an_unwritable_directory(house: Path) -> None:
    with pytest.raises(SinkError, match="cannot write preview image .*missing/p.png"):
        _run("zones", "preview", "--config", str(house), "--camera", "bedroom",
             "--out", str(house.parent / "missing" / "p.png"))


def test_every_homeowner_option_has_help() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    register_cli(sub)
    parsers = dict(sub.choices)
    for group in ("zones",):
        nested = next(a for a in parsers[group]._actions if isinstance(a, argparse._SubParsersAction))
        parsers |= {f"{group} {k}": v for k, v in nested.choices.items()}
    checked = 0
    for name in ("check-config", "zones preview", "zones discover", "mode"):
        for action in parsers[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name}: {action.dest} has no help line"
            checked += 1
    assert checked >= 15


# --- the picture is the frame as it leaves the hub ------------------------------------------------


def _noise(w: int, h: int, seed: int = 7) -> np.ndarray:
    """A frame whose every pixel is known and independent: any of it surviving in a zone shows."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two pixel sets; 0 when either is flat (a solid fill correlates with nothing)."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _outside(box: tuple[int, int, int, int] | None, w: int, h: int) -> np.ndarray:
    keep = np.ones((h, w), bool)
    if box is not None:
        x0, y0, x1, y1 = box
        keep[y0:y1 + 1, x0:x1 + 1] = False
    return keep


def test_a_raw_frame_cannot_be_drawn_on() -> None:
    img = np.zeros((240, 320, 3), np.uint8)
    with pytest.raises(PrivacyViolation):
        render_zones(img, ZONES)  # type: ignore[arg-type]
    with pytest.raises(PrivacyViolation):
        render_zones(Frame("cam", 0, 0.0, 0.0, img), ZONES)  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["solid", "pixelate", "blur"])
def test_mask_zones_are_drawn_exactly_as_redaction_outputs_them(style: str) -> None:
    w, h = 640, 480
    zones = [ZONES[0], ZONES[1], _zone("desk", [(0.3, 0.1), (0.5, 0.1), (0.45, 0.4)], style=style)]
    raw = _noise(w, h)
    policy = _policy(zones)
    frame = Frame("cam", 0, 0.0, 0.0, raw.copy())
    released = apply(frame, decide_zones_only(policy, frame, Mode.HOME))
    assert released is not None
    out, layout = render_zones(redacted_view(raw.copy(), policy, Mode.HOME), zones)
    assert not layout.withheld
    free = _untouched(zones, w, h)
    for z in (zones[0], zones[2]):  # the mask zones
        inside = zone_mask(z.points, w, h) > 0
        seen = inside & free
        assert seen.sum() > 0.5 * inside.sum(), z.name  # most of the zone is the redacted frame itself
        assert (out[seen] == released.image[seen]).all(), z.name  # pixel for pixel what leaves the hub
        # ... and nothing of the raw pattern: no raw value, no correlation with it (the old preview's
        # 35% tint over the raw frame correlated at ~1.0 and inverted almost exactly).
        assert not (out[seen] == raw[seen]).all(axis=1).any(), z.name
        assert abs(_corr(out[seen], raw[seen])) < 0.2, z.name
        assert out[seen].std() < raw[seen].std() / 2, z.name
    # A withhold zone is outlined only: while it is empty its pixels leave the hub as they are.
    bed = (zone_mask(zones[1].points, w, h) > 0) & free
    assert (out[bed] == raw[bed]).all()


def test_a_frame_withheld_as_a_whole_shows_none_of_it() -> None:
    w, h = 640, 480
    raw = _noise(w, h)
    view = _view(raw.copy(), mode=Mode.PRIVACY)
    assert isinstance(view, Withheld) and view.reasons == ("mode:privacy",)
    out, layout = render_zones(view, ZONES)
    assert layout.withheld and layout.legend_rows  # still the legend (and the grid and outlines)
    free = _untouched(ZONES, w, h) & _outside(layout.notice_box_px, w, h)
    assert layout.notice_box_px is not None and free.sum() > 0.5 * w * h
    # Outside what is drawn, one flat grey: not a pixel of the frame.
    assert (out[free] == 64).all()
    assert abs(_corr(out, raw)) < 0.05


NOISE_CONFIG = """\
modes: {default: home}
cameras:
  - id: bedroom
    source: "frames/*.png"
    zones:
      - name: window
        points: [[0.6, 0.05], [0.95, 0.05], [0.95, 0.45], [0.6, 0.45]]
      - name: desk
        points: [[0.1, 0.1], [0.45, 0.1], [0.4, 0.5]]
        style: pixelate
      - name: bed
        points: [[0.0, 0.58], [0.62, 0.58], [0.62, 1.0], [0.0, 1.0]]
        action: withhold
"""


@pytest.fixture
def noisy_house(tmp_path: Path) -> Path:
    (tmp_path / "frames").mkdir()
    assert cv2.imwrite(str(tmp_path / "frames" / "0.png"), _noise(640, 480))  # lossless: the frame is known
    cfg = tmp_path / "config.yaml"
    cfg.write_text(NOISE_CONFIG, encoding="utf-8")
    return cfg


def test_zones_preview_png_holds_the_redacted_pixels_not_the_raw_ones(
        noisy_house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = noisy_house.parent / "preview.png"
    assert _run("zones", "preview", "--config", str(noisy_house), "--camera", "bedroom", "--out", str(out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "the picture shows the frame as it leaves the hub in mode home" in printed
    assert "mask zones filled as redacted, withhold zones outlined" in printed
    png = cv2.imread(str(out))
    raw = _noise(640, 480)
    assert png is not None and png.shape == raw.shape
    # What the pipeline would send: the camera's own compiled policy, through redact.apply.
    loaded = load_config(noisy_house)
    policy = camera_policy(loaded, loaded.config.camera("bedroom"))
    frame = Frame("bedroom", 0, 0.0, 0.0, raw.copy())
    released = apply(frame, decide_zones_only(policy, frame, Mode.HOME))
    assert released is not None
    free = _untouched(preview_zones(policy, Mode.HOME), 640, 480)
    for z in policy.zones[:2]:
        seen = (zone_mask(z.points, 640, 480) > 0) & free
        assert seen.sum() > 0.5 * (zone_mask(z.points, 640, 480) > 0).sum(), z.name
        assert (png[seen] == released.image[seen]).all(), z.name
        assert abs(_corr(png[seen], raw[seen])) < 0.2 and png[seen].std() < raw[seen].std() / 2, z.name
    window = (zone_mask(policy.zones[0].points, 640, 480) > 0) & free
    assert raw[window].std() > 60 and (png[window] == 0).all()  # solid: the noise is gone, all black


def test_zones_preview_in_privacy_mode_shows_no_pixel_of_the_frame(
        noisy_house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = noisy_house.parent / "preview.png"
    assert _run("zones", "preview", "--config", str(noisy_house), "--camera", "bedroom", "--out", str(out),
                "--mode", "privacy") == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "no pixel of the frame: in mode privacy it is withheld as a whole" in capsys.readouterr().out
    png = cv2.imread(str(out))
    assert png is not None
    loaded = load_config(noisy_house)
    zones = preview_zones(camera_policy(loaded, loaded.config.camera("bedroom")), Mode.PRIVACY)
    layout = render_zones(Withheld(640, 480, ("mode:privacy",)), zones)[1]
    free = _untouched(zones, 640, 480) & _outside(layout.notice_box_px, 640, 480)
    assert (png[free] == 64).all() and abs(_corr(png, _noise(640, 480))) < 0.05


def test_the_preview_masks_what_the_detectors_find_on_the_frame(
        scenario_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The preview is the frame as it leaves the hub: a face on it is masked as at run time (before,
    only the zones were drawn and the face showed)."""
    import json

    fx = scenario_dir("demo")
    truth = json.loads((fx / "truth.json").read_text())
    faces = truth["per_frame"][0]["faces"]
    assert faces, "the demo's first frame shows a face"
    out = tmp_path / "preview.png"
    assert _run("zones", "preview", "--config", str(fx / "config.yaml"), "--camera", truth["camera"],
                "--out", str(out)) == 0
    assert "what the camera's detectors find on this frame" in capsys.readouterr().out
    png = cv2.imread(str(out))
    h, w = png.shape[:2]
    for x0, y0, x1, y1 in faces:
        box = png[int(y0 * h) + 2:int(y1 * h) - 2, int(x0 * w) + 2:int(x1 * w) - 2]
        assert box.size and (box == 0).all(axis=2).mean() > 0.9, "a face in the preview is not masked"
