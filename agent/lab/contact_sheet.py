"""A before/after contact sheet of a fixture replay: input frames beside what left the hub.

Each cell shows one input frame of a generated fixture, the corresponding output frame of the
replay (decoded from `redacted.mp4`, or a "WITHHELD" panel) and a label with the frame's decision
and reasons from `decisions.jsonl`. One cell is picked from each run of identical decisions, so
the sheet tells the replay's story (warm-up, masked, withheld, released again) at a glance.

Invariant: this is a lab tool and the only place that draws a source's input frames into an
output file. It reads inputs only from a fixture directory made by `fixtures make` (checked through
its `truth.json`), whose frames are synthetic scenes cut from the shared public photos, so nothing
a real camera saw can end up on a sheet. The hub's code paths never import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.policy import own_reason
from agent.errors import FixtureError
from agent.lab.decisions import DecisionRecord, fixture_frames, output_frames, read_decisions
from agent.lab.fixtures import load_truth

# Thumbnail width; the height follows the fixture's aspect ratio.
THUMB_W_PX = 320


# Cells per row (each cell is an input/output pair), and the most cells a sheet shows.
COLUMNS = 2


MAX_CELLS = 10


LABEL_H_PX = 46
HEADER_H_PX = 40
GAP_PX = 12

# BGR colours of the decision kinds: green passes, amber masks, red withholds.
ACTION_COLOURS = {"pass": (60, 160, 60), "mask": (0, 140, 230), "withhold": (40, 40, 200)}
_BG = (245, 245, 245)
_INK = (30, 30, 30)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True, slots=True)
class SheetCell:
    """One input/output pair on the sheet; boxes are (x0, y0, x1, y1) in sheet pixels."""

    frame: int
    action: str
    reasons: tuple[str, ...]
    label: str
    input_box_px: tuple[int, int, int, int]
    output_box_px: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class SheetLayout:
    width_px: int
    height_px: int
    cells: tuple[SheetCell, ...]

    @property
    def actions(self) -> set[str]:
        return {c.action for c in self.cells}


def pick_frames(decisions: dict[int, DecisionRecord], max_cells: int = MAX_CELLS) -> list[int]:
    """The middle frame of each run of identical decisions (action and reasons), at most `max_cells`.

    With more runs than cells, the runs are sampled evenly, always keeping the first and the last,
    and at least one run of each action present, so no kind of decision drops off the sheet.
    """
    runs: list[list[int]] = []
    key_of_run: list[tuple[str, tuple[str, ...]]] = []
    for i in sorted(decisions):
        d = decisions[i]
        # A frame masked or withheld for what the next one shows (`ahead:`) is in the same run: one
        # more frame of the same decision, not a decision of its own kind.
        key = (d.action, tuple(sorted(set(map(own_reason, d.reasons)))))
        if runs and key_of_run[-1] == key and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
            key_of_run.append(key)
    if len(runs) > max_cells:
        chosen = {round(k * (len(runs) - 1) / (max_cells - 1)) for k in range(max_cells)}
        for action in {k[0] for k in key_of_run}:
            if not any(key_of_run[r][0] == action for r in chosen):
                chosen.add(next(r for r, k in enumerate(key_of_run) if k[0] == action))
        runs = [runs[r] for r in sorted(chosen)]
    return [run[len(run) // 2] for run in runs]


def _label(d: DecisionRecord, t_s: float) -> str:
    return f"frame {d.frame}  t={t_s:.1f}s  {d.action.upper()}"


def _put(img: Image, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int],
         thick: int = 1) -> None:
    cv2.putText(img, text, org, _FONT, scale, colour, thick, cv2.LINE_AA)


def _fit_text(text: str, width_px: int, scale: float) -> str:
    # Shorten with an ellipsis rather than draw past the cell.
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width_px:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, 1)[0][0] > width_px:
        text = text[:-1]
    return text + "..."


def _withheld_panel(w: int, h: int, reasons: Sequence[str]) -> Image:
    panel = np.full((h, w, 3), 70, np.uint8)
    # Diagonal hatching so a withheld cell can never be mistaken for a black mask.
    for x in range(-h, w, 18):
        cv2.line(panel, (x, h), (x + h, 0), (85, 85, 85), 6)
    text = "WITHHELD"
    scale = w / 320
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 2)
    _put(panel, text, ((w - tw) // 2, h // 2), scale, (255, 255, 255), 2)
    sub = _fit_text("nothing left the hub", w - 10, 0.45 * scale)
    (sw, _), _ = cv2.getTextSize(sub, _FONT, 0.45 * scale, 1)
    _put(panel, sub, ((w - sw) // 2, h // 2 + th + 8), 0.45 * scale, (220, 220, 220))
    return panel


def build_sheet(fixture_dir: Path, replay_dir: Path, *, max_cells: int = MAX_CELLS,
                thumb_w_px: int = THUMB_W_PX) -> tuple[Image, SheetLayout]:
    """Draw the sheet for a replay of a fixture; returns the BGR image and where everything is."""
    truth = load_truth(fixture_dir)  # also refuses a directory that is not a generated fixture
    decisions = read_decisions(replay_dir)
    if not decisions:
        raise FixtureError(f"{replay_dir / 'decisions.jsonl'} has no decisions to show")
    picked = pick_frames(decisions, max_cells)
    wanted_in = set(picked)
    wanted_out = {decisions[i].out_index: i for i in picked if decisions[i].out_index is not None}
    inputs: dict[int, Image] = {}
    for i, img in enumerate(fixture_frames(fixture_dir, truth)):
        if i in wanted_in:
            inputs[i] = img
    outputs: dict[int, Image] = {}
    if wanted_out:
        for oi, img in enumerate(output_frames(replay_dir / "redacted.mp4")):
            if oi in wanted_out:
                outputs[wanted_out[oi]] = img
    missing = [i for i in picked if i not in inputs or (decisions[i].out_index is not None and i not in outputs)]
    if missing:
        raise FixtureError(f"replay {replay_dir} does not match fixture {fixture_dir}: frame(s) "
                           f"{', '.join(map(str, missing[:5]))} missing from the input or redacted.mp4")

    w0, h0 = int(truth["width_px"]), int(truth["height_px"])
    tw, th = thumb_w_px, max(8, round(thumb_w_px * h0 / w0))
    cell_w = 2 * tw + GAP_PX // 2
    cell_h = th + LABEL_H_PX
    cols = min(COLUMNS, len(picked))
    rows = -(-len(picked) // cols)
    width = GAP_PX + cols * (cell_w + GAP_PX)
    height = HEADER_H_PX + rows * (cell_h + GAP_PX) + GAP_PX
    sheet = np.full((height, width, 3), _BG, np.uint8)
    title = f"{truth['scenario']}: input (synthetic fixture) | output (what left the hub)"
    _put(sheet, _fit_text(title, width - 2 * GAP_PX, 0.7), (GAP_PX, 28), 0.7, _INK, 2)

    cells: list[SheetCell] = []
    t_by_frame = {int(f["frame"]): float(f["t_s"]) for f in truth["per_frame"]}
    for k, i in enumerate(picked):
        d = decisions[i]
        x = GAP_PX + (k % cols) * (cell_w + GAP_PX)
        y = HEADER_H_PX + (k // cols) * (cell_h + GAP_PX)
        src = cv2.resize(inputs[i], (tw, th), interpolation=cv2.INTER_AREA)
        out = (cv2.resize(outputs[i], (tw, th), interpolation=cv2.INTER_AREA) if i in outputs
               else _withheld_panel(tw, th, d.reasons))
        xo = x + tw + GAP_PX // 2
        sheet[y : y + th, x : x + tw] = src
        sheet[y : y + th, xo : xo + tw] = out
        colour = ACTION_COLOURS.get(d.action, _INK)
        # A coloured frame around the output says the decision before any text is read.
        cv2.rectangle(sheet, (xo - 2, y - 2), (xo + tw + 1, y + th + 1), colour, 3)
        label = _label(d, t_by_frame.get(i, 0.0))
        _put(sheet, label, (x, y + th + 19), 0.55, colour, 2)
        reasons = "reasons: " + (", ".join(d.reasons) if d.reasons else "none")
        _put(sheet, _fit_text(reasons, cell_w, 0.45), (x, y + th + 39), 0.45, _INK)
        cells.append(SheetCell(i, d.action, d.reasons, label, (x, y, x + tw, y + th), (xo, y, xo + tw, y + th)))
    return sheet, SheetLayout(width, height, tuple(cells))


def write_sheet(fixture_dir: Path, replay_dir: Path, out_png: Path, *, max_cells: int = MAX_CELLS) -> SheetLayout:
    """Build the sheet and write it as PNG (parent directories are created)."""
    sheet, layout = build_sheet(fixture_dir, replay_dir, max_cells=max_cells)
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(out_png), sheet)
    except OSError as e:
        raise FixtureError(f"cannot write contact sheet {out_png}: {e.strerror or e}") from e
    except cv2.error as e:
        raise FixtureError(f"cannot write contact sheet {out_png}: {e}") from None
    if not ok:
        raise FixtureError(f"cannot write contact sheet {out_png} (is the name a .png?)")
    return layout
