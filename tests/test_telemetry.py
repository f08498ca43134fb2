"""The hub never phones home: no ONNX Runtime telemetry, and `run` talks only to its broker and sinks.

ONNX Runtime's PyPI build writes a persistent device id and a queue of telemetry events to
`$XDG_CACHE_HOME` or `~/.cache` `/Microsoft/DeveloperTools/.onnxruntime/` as soon as it is
imported, unless `ORT_DISABLE_TELEMETRY=1` is set first (`agent/__init__.py` forces it). These
tests run the real entry points in subprocesses with a fresh, empty HOME, because this pytest
process has imported `agent` (and so has the variable set) long before any test runs.

The connection test records outbound connections with a Python audit hook. It sees every
connect made through Python's `socket` module (paho-mqtt, botocore/urllib3); it cannot see a
connect made inside a native library (ONNX Runtime's own uploader uses libcurl), which is why
the device-id tests above matter as much.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from hubkit import enrolled_hub, hub_password_file
from mosquitto import Broker
from videokit import walker_frames, write_video

import agent.detect.session as ort_session

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "ORT_DISABLE_TELEMETRY"

# Variables that would send the child elsewhere than we configure (a proxy, another S3 endpoint,
# an AWS profile) or hand it this process's telemetry setting.
_DROPPED = ("XDG_CACHE_HOME", ENV_VAR, "http_proxy", "https_proxy", "all_proxy", "no_proxy",
            "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def fresh_env(home: Path, *, xdg_in_home: bool = False, ort_value: str | None = "0") -> dict[str, str]:
    """This process's environment with a fresh HOME, no proxy or AWS settings, and the ORT variable
    set to `ort_value` ("0" by default: the agent must override what it inherits, not only fill a gap)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith("AWS_")}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    if xdg_in_home:
        env["XDG_CACHE_HOME"] = str(home / "xdg-cache")
    if ort_value is not None:
        env[ENV_VAR] = ort_value
    assert "EPA_MODEL_CACHE" in env, "conftest points the model cache outside HOME"
    return env


def telemetry_traces(home: Path) -> list[str]:
    """Anything ONNX Runtime's telemetry leaves under `home`: its directories or a device id."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.name in ("Microsoft", ".onnxruntime", "deviceid", "deviceid.lock", "onnxruntime.db"))


def agent_cli(args: list[str], env: dict[str, str], cwd: Path, module: str = "agent",
              timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


# --- ONNX Runtime telemetry ----------------------------------------------------------


@pytest.mark.parametrize("xdg_in_home", [False, True], ids=["home-cache", "xdg-cache"])
def test_replay_with_detection_leaves_no_onnxruntime_device_id(
    scenario_dir: Callable[[str], Path], tmp_path: Path, xdg_in_home: bool
) -> None:
    fx = scenario_dir("faces")  # detection is on in the fixture's config (the default)
    home, out = tmp_path / "home", tmp_path / "replay"
    r = agent_cli(["replay", str(fx / "video.mp4"), "--config", str(fx / "config.yaml"), "--out", str(out), "-q"],
                  fresh_env(home, xdg_in_home=xdg_in_home), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    # Faces were masked, so the detectors ran: onnxruntime was imported and sessions were built
    # (without a model, detection withholds every frame instead).
    assert summary["masked"] > 0 and summary["withheld"] < summary["frames_in"], summary
    assert telemetry_traces(home) == [], "ONNX Runtime telemetry wrote under HOME"


def test_every_entry_point_forces_telemetry_off(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home", ort_value="0")
    for module in ("agent", "agent.cli.main", "firmware_hooks", "firmware_hooks.hooks", "models.install",
                   "agent.detect.session"):
        code = f"import os, {module}; print(os.environ['{ENV_VAR}'])"
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, check=False)
        assert (r.returncode, r.stdout.strip()) == (0, "1"), (module, r.stderr)
    assert telemetry_traces(tmp_path / "home") == []


def test_boot_check_imports_onnxruntime_without_telemetry(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", walker_frames(3))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{id: cam, source: v.mp4}]\nsinks: [{type: directory, path: out, plaintext: true}]\n")
    home = tmp_path / "home"
    r = agent_cli(["boot-check", "--config", str(cfg)], fresh_env(home), cwd=tmp_path, module="firmware_hooks")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ok  ] import onnxruntime" in r.stdout
    assert "[ok  ] onnxruntime telemetry" in r.stdout and "no device id" in r.stdout
    assert telemetry_traces(home) == []


def test_api_opt_out_is_called_and_tolerates_other_onnxruntime_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ort_session.ort, "disable_telemetry_events", lambda: calls.append(1))
    assert ort_session.disable_telemetry_events() is True and calls == [1]

    def refuse() -> None:
        raise RuntimeError("not in this build")

    monkeypatch.setattr(ort_session.ort, "disable_telemetry_events", refuse)
    assert ort_session.disable_telemetry_events() is False
    monkeypatch.delattr(ort_session.ort, "disable_telemetry_events")
    assert ort_session.disable_telemetry_events() is False


def test_sessions_are_opened_after_the_api_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.detect.registry import load_detector

    order: list[str] = []
    real_session = ort_session.ort.InferenceSession
    monkeypatch.setattr(ort_session, "disable_telemetry_events", lambda: order.append("opt-out") or True)

    def session(*a: object, **kw: object) -> object:
        order.append("session")
        return real_session(*a, **kw)

    monkeypatch.setattr(ort_session.ort, "InferenceSession", session)
    load_detector("yunet_s_dynamic", cache=Path(os.environ["EPA_MODEL_CACHE"]))
    assert order[:2] == ["opt-out", "session"] and order.count("opt-out") == order.count("session")


# --- outbound connections of `run` ---------------------------------------------------

# Runs in its own interpreter: an audit hook cannot be removed again. It is installed before
# `agent` is imported, so nothing the agent does at import time escapes it either.
RECORDER = textwrap.dedent(
    """
    import json, socket, sys, weakref

    seen = {"connect": [], "self_connect": [], "sendto": [], "getaddrinfo": []}
    bound = []  # weak references to every socket this process bound (a listener is one)

    def where(sock, addr):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return [str(addr[0]), int(addr[1])]
        if sock.family == socket.AF_UNIX:
            return None
        return [str(sock.family), repr(addr)]

    def own_socket(target):
        # Is `target` the address of a socket this very process has bound (and still holds)?
        for ref in bound:
            s = ref()
            if s is None or s.fileno() == -1:
                continue
            try:
                name = s.getsockname()
            except OSError:
                continue
            if [str(name[0]), int(name[1])] == target:
                return True
        return False

    def hook(event, args):
        try:
            if event == "socket.bind":
                bound.append(weakref.ref(args[0]))
            elif event == "socket.connect":
                w = where(*args)
                if w is not None:
                    seen["self_connect" if own_socket(w) else "connect"].append(w)
            elif event in ("socket.sendto", "socket.sendmsg") and args[1] is not None:
                w = where(*args)
                if w is not None:
                    seen["sendto"].append(w)
            elif event == "socket.getaddrinfo":
                seen["getaddrinfo"].append([str(args[0]), str(args[1])])
        except Exception as e:  # a hook that raises would break the connect it watches
            seen.setdefault("hook_errors", []).append(repr(e))

    sys.addaudithook(hook)
    from agent.cli.main import main

    rc = main(sys.argv[2:])
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump({"rc": rc, **seen}, f)
    """
)

AK, SK, BUCKET, PREFIX = "AKIDTESTEPA", "secret-test-key", "clips", "epa-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[tuple[str, int]]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield "127.0.0.1", port
    finally:
        server.stop()


@pytest.fixture
def run_broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "mosquitto", prefix=PREFIX) as b:
        yield b


def _hub_config(tmp_path: Path, broker: Broker, s3: tuple[str, int]) -> Path:
    data = enrolled_hub(tmp_path)
    write_video(tmp_path / "v.mp4", walker_frames(30))
    creds = tmp_path / "s3.credentials"
    creds.write_text(f"[default]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n")
    creds.chmod(0o600)
    pw = hub_password_file(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
recipients: [{tmp_path / 'owner.key.pub'}]
cameras:
  - id: porch
    source: v.mp4
sinks:
  - type: s3
    endpoint: http://{s3[0]}:{s3[1]}
    bucket: {BUCKET}
    prefix: hub1/
    credentials_file: {creds}
    segment_s: 10
mqtt:
  host: {broker.host}
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {pw}
  topic_prefix: {PREFIX}
  client_id: hub-no-phone-home
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
""")
    return cfg


@pytest.mark.mqtt
def test_run_contacts_only_the_configured_broker_and_sink(
    tmp_path: Path, run_broker: Broker, s3_endpoint: tuple[str, int]
) -> None:
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint[0]}:{s3_endpoint[1]}", region_name="us-east-1",
                      aws_access_key_id=AK, aws_secret_access_key=SK)
    s3.create_bucket(Bucket=BUCKET)
    cfg = _hub_config(tmp_path, run_broker, s3_endpoint)
    script, record, home = tmp_path / "record.py", tmp_path / "connections.json", tmp_path / "home"
    script.write_text(RECORDER)
    r = subprocess.run([sys.executable, str(script), str(record), "run", "--config", str(cfg)],
                       env=fresh_env(home, ort_value=None), cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0 and record.exists(), r.stderr
    seen = json.loads(record.read_text())
    assert seen["rc"] == 0 and not seen.get("hook_errors"), (seen, r.stderr)
    broker, sink = (run_broker.host, run_broker.port), s3_endpoint
    # paho-mqtt wakes its network loop through a loopback "socketpair" it builds itself (bind
    # 127.0.0.1:0, connect to it). The recorder files a connect to a socket this very process holds
    # bound under self_connect: it never leaves the process. Only loopback may appear there.
    assert all(h in ("127.0.0.1", "::1") for h, _ in seen["self_connect"]), seen["self_connect"]
    connected = {(h, p) for h, p in seen["connect"]}
    assert connected <= {broker, sink}, f"unexpected connections: {connected - {broker, sink}}"
    assert broker in connected and sink in connected, connected
    assert seen["sendto"] == [], seen["sendto"]
    # Name lookups leak too: only the configured hosts (here loopback literals) are resolved.
    assert {h for h, _ in seen["getaddrinfo"]} <= {broker[0], sink[0]}, seen["getaddrinfo"]
    # The clip really went out (the S3 connection was the upload, not only a probe), and
    # detection ran in this process without leaving a device id.
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="hub1/")["KeyCount"] >= 1
    assert telemetry_traces(home) == []
