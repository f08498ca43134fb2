"""The canary: a unique random pattern in a mask zone touching the right and bottom edges.

Runs the real pipeline (`replay`, and `run` into a plaintext directory sink)
on the canary fixture and proves two things:
- no canary pixel survives in any decoded output frame;
- no canary byte sequence appears in any output file, event file or log line.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.cli.main import main
from agent.lab.decisions import output_frames, read_decisions
from agent.lab.fixtures import canary_pattern, load_truth

ScenarioDir = Callable[[str], Path]


def _copy_canary(scenario_dir: ScenarioDir, dest: Path, style: str = "solid", sink: bool = False) -> Path:
    """A private copy (the pipeline may write `data/` beside the config), optionally restyled / with a sink."""
    shutil.copytree(scenario_dir("canary"), dest)
    cfg = dest / "config.yaml"
    text = cfg.read_text().replace("style: solid", f"style: {style}")
    if sink:
        text = text.replace("sinks: []", "sinks:\n  - type: directory\n    path: ./sink\n    plaintext: true\n")
    cfg.write_text(text)
    return dest


def _probes(truth: dict) -> list[bytes]:
    return [bytes.fromhex(h) for h in truth["canary"]["canary_probe_hex"]]


def _hits(blobs: Iterable[tuple[str, bytes]], probes: list[bytes]) -> list[str]:
    """Names of blobs holding a probe, raw or written out as hex text."""
    hexes = [p.hex().encode() for p in probes]
    return [name for name, data in blobs
            if any(p in data for p in probes) or any(h in data.lower() for h in hexes)]


def _files(*roots: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for r in roots if r.exists() for p in sorted(r.rglob("*")) if p.is_file()]


def _canary_box(out: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return out[y0:y1, x0:x1]


def test_byte_search_finds_a_leaked_canary(scenario_dir: ScenarioDir, tmp_path: Path) -> None:
    # Positive control: the search does find canary bytes where they are.
    d = scenario_dir("canary")
    truth = load_truth(d)
    frame = cv2.imread(str(sorted((d / "frames").glob("*.png"))[0]))
    assert frame is not None
    (tmp_path / "dump.raw").write_bytes(frame.tobytes())
    (tmp_path / "debug.log").write_text("frame bytes " + frame.tobytes().hex())
    assert len(_hits(_files(tmp_path), _probes(truth))) == 2


def test_replay_releases_no_canary_pixel_or_byte(scenario_dir: ScenarioDir, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    fx = _copy_canary(scenario_dir, tmp_path / "fx")
    truth = load_truth(fx)
    can = truth["canary"]
    out = tmp_path / "replay"
    caplog.set_level(logging.DEBUG)
    rc = main(["-vv", "replay", str(fx / "frames" / "*.png"), "--config", str(fx / "config.yaml"),
               "--camera", "cam", "--out", str(out), "-q"])
    assert rc == 0
    captured = capfd.readouterr()

    decisions = read_decisions(out)
    frames = list(output_frames(out / "redacted.mp4"))
    released = {d.out_index: d.frame for d in decisions.values() if d.out_index is not None}
    assert len(frames) == len(released) > 0.8 * truth["frames"], "most frames are released (masked)"
    for oi, img in enumerate(frames):
        got = _canary_box(img, can["box_px"]).astype(np.int16)
        pat = canary_pattern(can["seed"], released[oi], can["box_px"]).astype(np.int16)
        # Solid style: the whole zone decodes to (near) black ...
        assert got.max() <= 24, f"output frame {oi}: canary box is not black"
        # ... and is nowhere near the random pattern (uniform noise vs black: ~127).
        assert np.abs(got - pat).mean() > 100
        close = np.all(np.abs(got - pat) <= 8, axis=2) & (pat.max(axis=2) > 32)
        assert not close.any(), f"output frame {oi}: canary pixels survive"

    blobs = _files(out, fx / "data") + [
        ("stdout", captured.out.encode()), ("stderr", captured.err.encode()), ("logging", caplog.text.encode()),
    ]
    assert any(name.endswith("redacted.mp4") for name, _ in blobs)
    assert _hits(blobs, _probes(truth)) == []


@pytest.mark.parametrize("style", ["pixelate", "blur"])
def test_styled_canary_leaves_no_original_pixel(scenario_dir: ScenarioDir, tmp_path: Path, style: str) -> None:
    from agent.config import load_config
    from agent.lab.replay import run_replay

    fx = _copy_canary(scenario_dir, tmp_path / "fx", style=style)
    truth = load_truth(fx)
    can = truth["canary"]
    loaded = load_config(fx / "config.yaml")
    out = tmp_path / "replay"
    run_replay(str(fx / "frames" / "*.png"), loaded, "cam", out)
    decisions = read_decisions(out)
    released = {d.out_index: d.frame for d in decisions.values() if d.out_index is not None}
    frames = list(output_frames(out / "redacted.mp4"))
    assert frames and len(frames) == len(released)
    for oi, img in enumerate(frames):
        got = _canary_box(img, can["box_px"]).astype(np.int16)
        pat = canary_pattern(can["seed"], released[oi], can["box_px"]).astype(np.int16)
        # A coarse rebuild of noise is flat grey: far from every original pixel.
        assert np.abs(got - pat).mean() > 40
        close = np.all(np.abs(got - pat) <= 8, axis=2)
        assert close.mean() < 0.001, f"output frame {oi}: {close.sum()} canary-like pixels"
    assert _hits(_files(out), _probes(truth)) == []


def test_run_into_a_plaintext_sink_leaks_no_canary(scenario_dir: ScenarioDir, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    fx = _copy_canary(scenario_dir, tmp_path / "fx", sink=True)
    truth = load_truth(fx)
    caplog.set_level(logging.DEBUG)
    assert main(["-vv", "run", "--config", str(fx / "config.yaml")]) == 0
    captured = capfd.readouterr()
    segments = sorted((fx / "sink").rglob("*.mp4"))
    assert segments, "the sink wrote segments"
    n = 0
    for seg in segments:
        for img in output_frames(seg):
            n += 1
            assert _canary_box(img, truth["canary"]["box_px"]).max() <= 24
    assert n > 0.8 * truth["frames"]
    blobs = _files(fx / "sink", fx / "data") + [
        ("stdout", captured.out.encode()), ("stderr", captured.err.encode()), ("logging", caplog.text.encode()),
    ]
    assert _hits(blobs, _probes(truth)) == []
