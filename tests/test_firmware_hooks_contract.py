"""firmware_hooks/CONTRACT.md names every hook the command line registers and every exit code each
can return; the lifecycle hooks (boot, shutdown), the switch over a GPIO line and the LED test."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.access.audit import CHECKPOINT_FILE, LOG_FILE, audit_dir, read_entries
from agent.access.checkpoint import Checkpoint
from agent.clock import FakeClock
from agent.config import ModesConfig, load_config
from agent.core.modes import ModeController, switch_engaged
from agent.crypto.keys import init_hub
from agent.errors import ConfigError, ExitCode
from agent.gpio import GpiodInputLine, SimulatedLine
from agent.vocab import Mode
from firmware_hooks import hooks, indicator, switch
from firmware_hooks.hooks import EXIT_CODES, build_parser, main

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "firmware_hooks" / "CONTRACT.md"


def _contract() -> dict[str, set[int]]:
    """Hook name -> the exit codes its section lists (`- `N` NAME: ...` under "Exit codes")."""
    sections: dict[str, set[int]] = {}
    current: str | None = None
    in_codes = False
    for line in CONTRACT.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^## `([a-z-]+)`$", line)
        if m:
            current, in_codes = m.group(1), False
            sections[current] = set()
            continue
        if line.startswith("## "):
            current = None
        if current is None:
            continue
        if line.startswith("- **Exit codes**"):
            in_codes = True
            continue
        if in_codes:
            c = re.match(r"^  - `(\d+)` ([A-Z_]+):", line)
            if c:
                code = int(c.group(1))
                assert ExitCode(code).name == c.group(2), f"{current}: `{code}` is not {c.group(2)}"
                sections[current].add(code)
            elif line.startswith("- "):
                in_codes = False
    # `boot-check` is documented under `boot` (its older name).
    if "boot" in sections and "`boot-check`" in CONTRACT.read_text(encoding="utf-8"):
        sections["boot-check"] = sections["boot"]
    return sections


def _registered() -> set[str]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_contract_names_every_hook_and_every_exit_code() -> None:
    documented = _contract()
    assert _registered() == set(EXIT_CODES) == set(documented)
    for hook, codes in EXIT_CODES.items():
        assert {int(c) for c in codes} == documented[hook], hook
    text = CONTRACT.read_text(encoding="utf-8")
    assert "missing, fails (any exit code but 0) or times out\nmeans deny" in text
    for hook in EXIT_CODES:
        if hook == "boot-check":
            continue
        body = text.split(f"## `{hook}`", 1)[1].split("\n## ", 1)[0]
        for part in ("**Trigger**", "**Inputs**", "**Outputs**", "**Timeout**", "**Exit codes**"):
            assert part in body, f"{hook}: no {part}"


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n" + extra)
    return cfg


def test_shutdown_records_a_clean_shutdown_and_boot_reports_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    data = tmp_path / "data"
    assert main(["shutdown", "--config", str(cfg)]) == ExitCode.OK  # no identity yet: nothing to record
    assert "nothing to record" in capsys.readouterr().out
    hub = init_hub(data)
    assert main(["boot", "--config", str(cfg)]) == ExitCode.FAILED  # x.mp4 is missing: the doctor says so
    assert "previous shutdown: none recorded" in capsys.readouterr().out
    assert main(["shutdown", "--config", str(cfg)]) == ExitCode.OK
    out = capsys.readouterr().out
    entries, problems = read_entries(audit_dir(data) / LOG_FILE)
    assert not problems and [e.kind for e in entries] == ["shutdown"] and entries[0].fields["clean"] is True
    cp = Checkpoint.decode(out.encode(), hub.public)
    assert cp.size == 1 and (audit_dir(data) / CHECKPOINT_FILE).read_bytes() == out.encode()
    assert main(["boot-check", "--config", str(cfg)]) == ExitCode.FAILED
    assert "previous shutdown: clean (audit entry 1)" in capsys.readouterr().out
    from agent.access.audit import AuditLog

    log = AuditLog(audit_dir(data), FakeClock(), hub)
    log.append("boot", {"version": "x", "config_sha256": "y"})  # what `run` records when it starts
    log.close()
    assert main(["boot", "--config", str(cfg)]) == ExitCode.FAILED
    assert "previous shutdown: not recorded (power loss" in capsys.readouterr().out


def test_shutdown_is_refused_while_the_service_holds_the_data_dir(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    init_hub(tmp_path / "data")
    code = ("import sys; from pathlib import Path; from agent.storage.lock import acquire; "
            f"acquire(Path({str(tmp_path / 'data')!r}), 'run'); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(["shutdown", "--config", str(cfg)]) == ExitCode.BUSY
        err = capsys.readouterr().err
        assert err.startswith("firmware hook: error: data directory") and "(run," in err
    finally:
        holder.communicate("")
    assert not (audit_dir(tmp_path / "data") / LOG_FILE).exists()


def test_watch_switch_over_a_simulated_gpio_line_fails_closed(tmp_path: Path) -> None:
    data, clock = tmp_path / "data", FakeClock()
    line = SimulatedLine(False)
    mc = ModeController(ModesConfig(), data, clock)
    assert switch.watch(line, data, clock, max_polls=2) == 1 and not switch_engaged(data)
    line.value = True
    assert switch.watch(line, data, clock, max_polls=1) == 1 and switch_engaged(data)
    assert mc.current() is Mode.PRIVACY
    line.value = False
    line.failing = True  # the chip went away: privacy, not the last position
    assert switch.watch(line, data, clock, max_polls=3) == 1 and switch_engaged(data)
    line.failing = False
    assert switch.watch(line, data, clock, max_polls=1) == 1 and not switch_engaged(data)


def _watch_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["watch-switch", *argv])


def test_watch_switch_picks_its_line(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    loaded = load_config(cfg)
    line = switch.line_from_args(_watch_args("--config", str(cfg), "--chip", "/dev/gpiochip0", "--line", "17"), loaded)
    assert isinstance(line, GpiodInputLine) and (line.chip, line.offset, line.active_low) == ("/dev/gpiochip0", 17, False)
    value = tmp_path / "v"
    line2 = switch.line_from_args(_watch_args("--config", str(cfg), "--gpio-value", str(value), "--active-low"), loaded)
    assert isinstance(line2, switch.SysfsGpioLine) and line2.active_low
    for bad, msg in ((("--chip", "/dev/gpiochip0"), "go together"), (("--line", "3"), "go together"),
                     (("--gpio-value", str(value), "--line", "3"), "--line goes with --chip"),
                     ((), "no switch line")):
        with pytest.raises(ConfigError, match=msg):
            switch.line_from_args(_watch_args("--config", str(cfg), *bad), loaded)
    configured = load_config(_cfg(tmp_path, "hardware:\n  privacy_switch: {chip: /dev/gpiochip1, line: 5, "
                                            "active_low: true}\n"))
    line3 = switch.line_from_args(_watch_args("--config", str(cfg)), configured)
    assert isinstance(line3, GpiodInputLine) and (line3.chip, line3.offset, line3.active_low) == ("/dev/gpiochip1", 5, True)


def test_watch_switch_on_a_chip_that_is_not_there_forces_privacy(tmp_path: Path) -> None:
    """The real libgpiod line on a missing chip reads as unreadable: privacy."""
    data, clock = tmp_path / "data", FakeClock()
    assert switch.watch(GpiodInputLine(tmp_path / "gpiochip7", 17), data, clock, max_polls=2) == 1
    assert switch_engaged(data)


def test_watch_switch_without_a_line_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch-switch", "--config", str(_cfg(tmp_path))]) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert err.startswith("firmware hook: error: watch-switch: no switch line") and err.count("\n") == 1


def test_led_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock, line = FakeClock(), SimulatedLine()
    t0 = clock.monotonic()
    assert indicator.led_test(line, clock, 2.0) == (ExitCode.OK, "the privacy LED was lit for 2 s and is off again")
    assert line.history == [True, False] and line.closed and clock.monotonic() - t0 == 2.0
    broken = SimulatedLine()
    broken.failing = True
    code, msg = indicator.led_test(broken, clock, 1.0)
    assert code == ExitCode.FAILED and "cannot be driven" in msg
    assert main(["led-test", "--config", str(_cfg(tmp_path))]) == ExitCode.ERROR
    assert "no LED configured" in capsys.readouterr().err
    cfg = _cfg(tmp_path, f"hardware:\n  indicator_led: {{chip: {tmp_path / 'gpiochip3'}, line: 4}}\n")
    assert main(["led-test", "--config", str(cfg), "--seconds", "0"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "the privacy LED cannot be driven: GPIO line 4 on" in err and "Traceback" not in err


def test_old_import_paths_still_work() -> None:
    assert hooks.SysfsGpioLine is switch.SysfsGpioLine and hooks.watch is switch.watch
