"""The install rules: runtime dependencies are bounded and carry no dev tool, the README's Pi install
steps (the ones scripts/test-aarch64 runs in an arm64 root) use the service layout, the arm64
decision comparison, and the README's broker setup commands against the real Mosquitto."""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as mqtt
import pytest
from mosquitto import MOSQUITTO, Broker, free_port
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
DEV_TOOLS = {"pytest", "hypothesis", "ruff", "mypy", "moto", "import-linter", "pycryptodome-test-vectors",
             "coverage", "black", "flake8"}


def _script(name: str) -> ModuleType:
    path = REPO / "scripts" / "aarch64" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"aarch64_{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- dependencies -------------------------------------------------------------------------------

def test_runtime_dependencies_hold_no_dev_tool() -> None:
    dev = {_norm(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    runtime = {_norm(r.name) for r in RUNTIME}
    assert not runtime & (dev | DEV_TOOLS), "dev tools belong in the `dev` extra, not in dependencies"


def test_every_runtime_dependency_is_bounded_below_and_above() -> None:
    for req in RUNTIME:
        ops = {s.operator for s in req.specifier}
        assert ops & {">=", "~=", "=="}, f"{req}: no lower bound"
        assert ops & {"<", "~=", "=="}, f"{req}: no upper bound (a major version may change what we rely on)"
    onnx = next(r for r in RUNTIME if _norm(r.name) == "onnxruntime")
    assert not onnx.specifier.contains("2.0") and onnx.specifier.contains("1.17")


def test_the_bounds_admit_the_installed_versions() -> None:
    for req in RUNTIME:
        installed = Version(version(req.name))
        assert req.specifier.contains(installed, prereleases=True), f"{req} excludes the installed {installed}"


def test_bootstrap_runtime_installs_the_package_alone() -> None:
    text = (REPO / "scripts" / "bootstrap").read_text(encoding="utf-8")
    runtime = re.search(r'what="the agent \(runtime only\)"; target=\((?P<t>[^)]*)\)', text)
    assert runtime and runtime["t"] == '"."', "scripts/bootstrap --runtime must run `pip install .`"


# --- the README's Pi install steps --------------------------------------------------------------

def test_pi_install_steps_use_the_service_layout() -> None:
    steps = _script("readme_block").pi_blocks(README.read_text(encoding="utf-8"))
    lines = [ln for ln in steps.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "python3 -m venv /opt/privacy-agent/venv" in lines
    assert "/opt/privacy-agent/venv/bin/pip install ." in lines, "runtime only: no [dev], no -e"
    assert any("models install --from" in ln and "--cache /opt/privacy-agent/models" in ln for ln in lines)
    assert "systemctl enable --now privacy-agent" in lines
    for must in ("systemd-sysusers", "systemd-tmpfiles --create", "/etc/privacy-agent/config.yaml",
                 "/usr/lib/sysusers.d/privacy-agent.conf", "/usr/lib/tmpfiles.d/privacy-agent.conf"):
        assert must in steps
    # Every file of this repository that the steps install exists.
    for rel in re.findall(r"\b((?:deploy|config)/[\w.-]+)", steps):
        assert (REPO / rel).is_file(), f"the Pi install steps install {rel}, which does not exist"


def test_pi_install_steps_are_found_only_through_their_marker() -> None:
    rb = _script("readme_block")
    text = ("<!-- readme-test: skip (scripts/test-aarch64 runs this) -->\n```sh\na\n```\n"
            "<!-- readme-test: skip (other) -->\n```sh\nb\n```\n"
            "<!-- readme-test: skip (scripts/test-aarch64 too) -->\n```sh\nc\n```\n")
    assert rb.pi_blocks(text) == "a\nc\n"
    with pytest.raises(SystemExit, match="no sh block"):
        rb.pi_blocks("<!-- readme-test: skip (other) -->\n```sh\nb\n```\n")


# --- the arm64 / native comparison -------------------------------------------------------------

def _decision(frame: int, action: str = "mask", reasons: tuple[str, ...] = (),
              box: tuple[float, float] = (0.1, 0.2)) -> dict[str, object]:
    x, y = box
    return {"camera": "cam", "frame": frame, "t_s": frame / 10, "action": action, "reasons": list(reasons),
            "regions": [{"name": "face", "kind": "detection", "style": "solid",
                         "points": [[x, y], [x + 0.1, y], [x + 0.1, y + 0.1], [x, y + 0.1]]}],
            "out_index": frame if action != "withhold" else None}


def test_compare_accepts_boxes_that_differ_in_the_third_decimal() -> None:
    cmp = _script("compare")
    native = [_decision(0), _decision(1, "withhold", ("zone:dressing:presence",))]
    other = [_decision(0, box=(0.100004, 0.2003)), _decision(1, "withhold", ("zone:dressing:presence",))]
    assert cmp.differences(native, other, 0.005) == []


def test_compare_ignores_the_order_of_reasons_and_regions() -> None:
    """The order follows which detector lane answered first: timing, not a decision."""
    cmp = _script("compare")
    a = _decision(0, reasons=("detection:bed", "detection:person"))
    b = _decision(0, reasons=("detection:person", "detection:bed"))
    bed = {"name": "bed", "kind": "detection", "style": "solid", "points": [[0.5, 0.5], [0.9, 0.9]]}
    a["regions"] = [*a["regions"], bed]  # type: ignore[misc]
    b["regions"] = [bed, *b["regions"]]  # type: ignore[misc]
    assert cmp.differences([a], [b], 0.005) == []
    b["regions"] = [bed]
    assert cmp.differences([a], [b], 0.005)


def test_compare_lets_a_borderline_region_be_on_one_side_only_within_the_tolerance() -> None:
    """A tiny foreground blob just above the threshold on one build (OpenCV's NEON and SSE paths
    round differently) is not a different decision; a zone, room or fault reason always is."""
    cmp = _script("compare")
    a = _decision(0, reasons=("detection:face",))
    b = _decision(0, reasons=("detection:face", "foreground:unexplained"))
    speck = {"name": "foreground:unexplained", "kind": "foreground", "style": "solid",
             "points": [[0.5, 0.5], [0.51, 0.5], [0.51, 0.51], [0.5, 0.51]]}
    b["regions"] = [*b["regions"], speck]  # type: ignore[misc]
    assert cmp.differences([a], [b], 0.005) == []
    big = {**speck, "points": [[0.3, 0.3], [0.6, 0.3], [0.6, 0.6], [0.3, 0.6]]}
    b["regions"] = [a["regions"][0], big]  # type: ignore[index]
    assert any("reasons" in d for d in cmp.differences([a], [b], 0.005))
    for structural in ("room:bedroom", "zone:bed", "foreground:learning", "tamper:moved"):
        c = _decision(0, reasons=("detection:face", structural))
        assert cmp.differences([a], [c], 0.005) == [
            f"frame 0: reasons ['detection:face'] native, ['detection:face', '{structural}'] arm64"]


def test_compare_names_each_differing_frame() -> None:
    cmp = _script("compare")
    native = [_decision(0), _decision(1), _decision(2, reasons=("a",))]
    other = [_decision(0, box=(0.3, 0.2)), _decision(1, "withhold"), _decision(2, reasons=("b",)), _decision(3)]
    diffs = cmp.differences(native, other, 0.005)
    assert diffs[0] == "frame count: 3 native, 4 arm64"
    assert any(d.startswith("frame 0: ") and "masked on one side only" in d for d in diffs)
    assert "frame 1: action 'mask' native, 'withhold' arm64" in diffs
    assert "frame 2: reasons ['a'] native, ['b'] arm64" in diffs


def test_compare_cli_prints_a_one_line_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmp = _script("compare")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(_decision(i)) + "\n" for i in range(3)))
    b.write_text("".join(json.dumps(_decision(i, box=(0.1001, 0.2))) + "\n" for i in range(3)))
    assert cmp.main([str(a), str(b)]) == 0
    verdict = capsys.readouterr().out
    assert verdict.startswith("compare: OK: 3 frames") and "3 regions paired" in verdict
    b.write_text(json.dumps(_decision(0, "withhold")) + "\n")
    assert cmp.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("compare: FAIL:") and "frame count: 3 native, 1 arm64" in out


# --- the README's broker setup, on the real Mosquitto -------------------------------------------

def _readme_sections() -> tuple[str, str, str]:
    """(mosquitto config, ACL, setup commands) as the README's broker section gives them."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Broker setup (Mosquitto)"):text.index("### Access flow in practice")]
    plain = re.findall(r"^```\n(.*?)^```$", section, re.S | re.M)
    cmds = re.search(r"readme-test: skip \([^)]*tests/test_install\.py[^)]*\) -->\n```sh\n(.*?)^```$", section,
                     re.S | re.M)
    assert len(plain) == 2 and cmds, "the broker section has the config, the ACL and the setup commands"
    return plain[0], plain[1], cmds.group(1)


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    # Mosquitto reads the files after dropping to its own user: pytest's tmp_path (under a 0700
    # directory) is not reachable for it, so this directory sits in /tmp, open to traverse.
    d = Path(tempfile.mkdtemp(prefix="epa-broker-setup-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def _setup_broker(d: Path) -> Broker:
    conf, acl, cmds = _readme_sections()
    (d / "acl").write_text(acl)
    # The hub's name and address in the certificate are the ones this test connects to.
    cmds = cmds.replace("hub.lan", "localhost").replace("192.168.1.20", "127.0.0.1")
    if os.geteuid() != 0:  # a developer's machine: no `mosquitto` group to hand the files to
        cmds = cmds.replace("chown root:mosquitto passwd acl server.key", "true")
    # Under the strictest umask a root shell may have: the block must set every mode it needs.
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", "umask 077\n" + cmds], cwd=d, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    port = free_port()
    conf = conf.replace("/etc/mosquitto/", f"{d}/").replace("listener 8883", f"listener {port} 127.0.0.1")
    (d / "mosquitto.conf").write_text(conf + "log_dest stderr\n")
    return Broker(workdir=d, port=port, host="127.0.0.1")


def _connect(d: Path, port: int, user: str, password: str) -> mqtt.ReasonCode | None:
    result: list[mqtt.ReasonCode] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(d / "ca.crt"))  # verifies the certificate's subjectAltName too
    c.username_pw_set(user, password)
    c.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    c.connect("localhost", port)
    for _ in range(50):  # each loop() waits for the socket, up to 0.1 s
        c.loop(0.1)
        if result:
            break
    c.disconnect()
    return result[0] if result else None


@pytest.mark.mqtt
def test_readme_broker_setup_starts_mosquitto_with_tls_and_passwords(broker_dir: Path) -> None:
    broker = _setup_broker(broker_dir)
    if os.geteuid() == 0:
        for name in ("passwd", "acl", "server.key"):
            st = (broker_dir / name).stat()
            assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, grp.getgrnam("mosquitto").gr_gid)
    with broker:
        rc = _connect(broker_dir, broker.port, "hub", "hub-password")
        assert rc is not None and not rc.is_failure, rc
        bad = _connect(broker_dir, broker.port, "hub", "wrong")
        assert bad is not None and bad.is_failure


@pytest.mark.mqtt
def test_a_root_only_password_file_stops_mosquitto(broker_dir: Path) -> None:
    """The reason for the README's chown/chmod: Mosquitto reads the file as `mosquitto`, not root."""
    assert os.geteuid() == 0, "CI runs as root; this proves what Mosquitto does after dropping privileges"
    _setup_broker(broker_dir)
    (broker_dir / "passwd").chmod(0o600)
    os.chown(broker_dir / "passwd", 0, 0)
    # It exits at once; a broker that ran instead would hit the timeout and fail the test.
    proc = subprocess.run([MOSQUITTO, "-c", str(broker_dir / "mosquitto.conf")], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode != 0
    assert "Unable to open pwfile" in proc.stderr
