"""`zones preview`: a legend and a 0.1 grid readable on small and large frames; the PNG written 0600."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli.homeowner import register_cli
from agent.errors import SinkError
from agent.geometry import PointRel
from agent.lab.shared_data import shared_file
from agent.media.preview import PreviewZone, colour_of, grid_positions, render_zones


def _zone(name: str, pts: list[tuple[float, float]], action: str = "mask", style: str = "solid") -> PreviewZone:
    return PreviewZone(name, tuple(PointRel(x, y) for x, y in pts), action, style)


ZONES = [
    _zone("window", [(0.7, 0.0), (1.0, 0.0), (1.0, 0.3), (0.7, 0.3)]),
    _zone("bed", [(0.0, 0.58), (0.62, 0.58), (0.62, 1.0), (0.0, 1.0)], "withhold"),
    _zone("desk", [(0.3, 0.1), (0.5, 0.1), (0.45, 0.4)], style="pixelate"),
]


@pytest.mark.parametrize("size", [(320, 240), (1920, 1080)])
def test_grid_lines_and_legend_are_drawn(size: tuple[int, int]) -> None:
    w, h = size
    frame = np.full((h, w, 3), 60, np.uint8)  # a plain frame: anything not 60 was drawn
    out, layout = render_zones(frame, ZONES)
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
    small = render_zones(np.zeros((240, 320, 3), np.uint8), ZONES)[1]
    large = render_zones(np.zeros((1080, 1920, 3), np.uint8), ZONES)[1]
    assert small.text_scale >= 0.4 and large.text_scale > 2 * small.text_scale
    assert small.legend_box_px is not None and large.legend_box_px is not None
    assert small.legend_box_px[2] - small.legend_box_px[0] < 320 * 0.45  # fits a small frame


def test_no_zones_grid_only() -> None:
    out, layout = render_zones(np.zeros((240, 320, 3), np.uint8), [])
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
