"""Saving zones from the page: only the camera's zones change, comments and other keys stay, audited first."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from agent.access.audit import read_entries
from agent.access.recorder import open_hub_audit
from agent.cli.main import main
from agent.clock import FakeClock
from agent.config import load_config
from agent.core.policy import CameraPolicy
from agent.errors import AuditError, ConfigError
from agent.web.zonesave import PageZone, ZoneSaver

CONFIG = """\
# My house
data_dir: ./data
cameras:
  # the hallway
  - id: hall
    source: "hall/*.png"   # stills
    zones:
      - name: 'door'  # the front door
        points: [[0.1, 0.1], [0.3, 0.1], [0.3, 0.5]]
        action: withhold
        hold_s: 4
      - name: window
        points: [[0.6, 0.0], [1.0, 0.0], [1.0, 0.3]]
  - id: porch
    source: porch.mp4
    zones: []
detection: {enabled: false}
"""


def _saver(tmp_path: Path, record=None) -> tuple[ZoneSaver, Path, list[tuple[str, CameraPolicy]]]:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    applied: list[tuple[str, CameraPolicy]] = []

    def apply(cam: str, policy: CameraPolicy) -> bool:
        applied.append((cam, policy))
        return True

    return ZoneSaver(load_config(cfg), apply, record), cfg, applied


def test_only_the_zones_change_and_comments_stay(tmp_path: Path) -> None:
    saver, cfg, applied = _saver(tmp_path)
    saver.save("hall", [PageZone("door", ((0.1, 0.1), (0.35, 0.1), (0.3, 0.5)), "withhold", "solid", "door"),
                        PageZone("desk", ((0.5, 0.5), (0.7, 0.5), (0.6, 0.8)), "mask", "blur", None)])
    text = cfg.read_text()
    diff = [ln for ln in difflib.unified_diff(CONFIG.splitlines(), text.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert diff == [  # the moved point, the removed zone, the new one: nothing else (quotes, comments, hold_s)
        "-        points: [[0.1, 0.1], [0.3, 0.1], [0.3, 0.5]]",
        "+        points: [[0.1, 0.1], [0.35, 0.1], [0.3, 0.5]]",
        "-      - name: window",
        "-        points: [[0.6, 0.0], [1.0, 0.0], [1.0, 0.3]]",
        "+      - name: desk",
        "+        points: [[0.5, 0.5], [0.7, 0.5], [0.6, 0.8]]",
        "+        style: blur",
    ]
    assert (tmp_path / "config.yaml.bak").read_text() == CONFIG
    [(cam, policy)] = applied
    assert cam == "hall" and [z.name for z in policy.zones] == ["door", "desk"]
    assert policy.zones[0].hold_s == 4


def test_an_untouched_zone_is_not_rewritten_even_with_more_decimals_than_the_page_writes(tmp_path: Path) -> None:
    """Saving a new zone leaves a fine-grained withhold zone as it was: rounding it would change what
    the analyzers watch and hold the camera until a restart."""
    cfg = tmp_path / "config.yaml"
    fine = CONFIG.replace("[[0.1, 0.1], [0.3, 0.1], [0.3, 0.5]]", "[[0.123456, 0.1], [0.3, 0.1], [0.3, 0.5]]")
    cfg.write_text(fine)
    applied: list[CameraPolicy] = []
    saver = ZoneSaver(load_config(cfg), lambda cam, policy: applied.append(policy) or True, None)
    saver.save("hall", [PageZone("door", ((0.123456, 0.1), (0.3, 0.1), (0.3, 0.5)), "withhold", "solid", "door"),
                        PageZone("window", ((0.6, 0.0), (1.0, 0.0), (1.0, 0.3)), "mask", "solid", "window"),
                        PageZone("desk", ((0.5, 0.5), (0.7, 0.5), (0.6, 0.8)), "mask", "solid", None)])
    text = cfg.read_text()
    assert "[[0.123456, 0.1], [0.3, 0.1], [0.3, 0.5]]" in text
    assert "[[0.5, 0.5], [0.7, 0.5], [0.6, 0.8]]" in text
    assert applied[0].zones[0].points[0].x_rel == 0.123456  # what the analyzers watch is unchanged


def test_a_camera_without_zones_gets_a_block_list(tmp_path: Path) -> None:
    saver, cfg, _ = _saver(tmp_path)
    saver.save("porch", [PageZone("gate", ((0.1, 0.1), (0.3, 0.1), (0.3, 0.5)), "mask", "solid", None)])
    assert main(["check-config", str(cfg)]) == 0
    assert [z.name for z in load_config(cfg).config.camera("porch").zones] == ["gate"]


def test_a_change_is_audited_before_it_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    log = open_hub_audit(data, FakeClock())
    assert log is not None
    saver, cfg, applied = _saver(tmp_path, log.append)
    before = saver.loaded.sha256
    saved, live = saver.save("porch", [PageZone("gate", ((0.1, 0.1), (0.3, 0.1), (0.3, 0.5)), "mask", "solid", None)])
    entries, problems = read_entries(log.path)
    assert not problems and entries[-1].kind == "config_change"
    assert entries[-1].fields["from_sha256"] == before and entries[-1].fields["config_sha256"] == saved.loaded.sha256
    assert entries[-1].fields["by"] == "web" and live

    def broken(kind: str, fields: dict) -> None:  # type: ignore[type-arg]
        raise AuditError("the audit log is full")

    (tmp_path / "other").mkdir()
    saver2, cfg2, applied2 = _saver(tmp_path / "other", broken)
    with pytest.raises(AuditError):
        saver2.save("porch", [])
    assert cfg2.read_text() == CONFIG and not applied2


def test_an_invalid_save_writes_nothing(tmp_path: Path) -> None:
    saver, cfg, applied = _saver(tmp_path)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.zones: duplicate zone name 'a'"):
        saver.save("hall", [PageZone("a", ((0.1, 0.1), (0.3, 0.1), (0.3, 0.5)), "mask", "solid", None)] * 2)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.zones\[0\]\.style: Input should be"):
        saver.save("hall", [PageZone("a", ((0.1, 0.1), (0.3, 0.1), (0.3, 0.5)), "mask", "sparkle", None)])
    assert cfg.read_text() == CONFIG and not applied and not (tmp_path / "config.yaml.bak").exists()
