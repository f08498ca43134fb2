"""`doctor` on the broker, against the real Mosquitto of the suite (TLS, password file, ACL):
reachable, TLS verified against the configured CA, the hub's login accepted; each failure with
its fix; and the check never disturbs a running hub's connection."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import PREFIX, Connect
from mosquitto import USERS, Broker, free_port, make_ca_and_server_cert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.cli.doctor import check_broker
from agent.cli.doctor.result import CheckResult
from agent.cli.main import main
from agent.config import load_config


def doctor(tmp_path: Path, broker: Broker, *, port: int | None = None, ca: Path | None = None,
           password: str | None = None, pw_mode: int = 0o600, client_id: str = "hub-doctor-test") -> CheckResult:
    pw = tmp_path / "hub.pw"
    pw.write_text(USERS["hub"] if password is None else password)
    pw.chmod(pw_mode)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
cameras: [{{id: cam, source: v.mp4}}]
mqtt:
  host: 127.0.0.1
  port: {port or broker.port}
  ca_file: {ca or broker.ca_file}
  username: hub
  password_file: {pw}
  topic_prefix: {PREFIX}
  client_id: {client_id}
""")
    (r,) = check_broker(load_config(cfg), timeout_s=3.0)
    return r


def test_a_healthy_broker(tmp_path: Path, broker: Broker, capsys) -> None:  # type: ignore[no-untyped-def]
    r = doctor(tmp_path, broker)
    assert r.status == "ok" and "TLS" in r.detail and "verified" in r.detail and "authenticated as hub" in r.detail
    main(["doctor", "--config", str(tmp_path / "config.yaml")])
    assert "[ok  ] mqtt broker" in capsys.readouterr().out


def test_wrong_port(tmp_path: Path, broker: Broker) -> None:
    r = doctor(tmp_path, broker, port=free_port())
    assert r.status == "fail" and "cannot reach 127.0.0.1:" in r.detail and "mqtt.port" in r.hint


def test_a_ca_that_did_not_sign_the_broker(tmp_path: Path, broker: Broker) -> None:
    (tmp_path / "other-ca").mkdir()
    other, _crt, _key = make_ca_and_server_cert(tmp_path / "other-ca")
    r = doctor(tmp_path, broker, ca=other)
    assert r.status == "fail" and r.detail.startswith("TLS to 127.0.0.1:")
    assert "mqtt.ca_file" in r.hint


def test_a_missing_ca_file(tmp_path: Path, broker: Broker) -> None:
    r = doctor(tmp_path, broker, ca=tmp_path / "nope.crt")
    assert r.status == "fail" and "nope.crt" in r.detail and "mqtt.ca_file" in r.hint


def test_a_bad_password(tmp_path: Path, broker: Broker) -> None:
    r = doctor(tmp_path, broker, password="not-the-password")
    assert r.status == "fail" and "refused the hub" in r.detail
    assert "mosquitto_passwd" in r.hint


def test_a_password_file_others_can_read(tmp_path: Path, broker: Broker) -> None:
    r = doctor(tmp_path, broker, pw_mode=0o644)
    assert r.status == "fail" and "0644" in r.detail and "chmod 600" in r.hint


def test_the_check_does_not_take_over_the_running_hubs_connection(tmp_path: Path, broker: Broker,
                                                                 connect: Connect) -> None:
    running = connect(broker, "hub", client_id="hub-doctor-live")
    before = running.connect_count
    assert doctor(tmp_path, broker, client_id="hub-doctor-live").status == "ok"
    assert running.connected and running.connect_count == before
    assert os.environ.get("EPA_MODEL_CACHE")  # the session's models, untouched


def test_at_boot_an_unreachable_broker_warns_but_a_wrong_password_fails(tmp_path: Path, broker: Broker,
                                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    # The firmware's boot hook runs before the network is up: a broker that cannot be reached yet
    # must not light the fault LED, while a setup error (the password) still does.
    r = doctor(tmp_path, broker, port=free_port())
    assert r.unreachable
    main(["doctor", "--at-boot", "--config", str(tmp_path / "config.yaml")])
    out = capsys.readouterr().out
    assert "[WARN] mqtt broker" in out and "at boot: the network may not be up yet" in out
    r = doctor(tmp_path, broker, password="wrong")
    assert r.status == "fail" and not r.unreachable
    main(["doctor", "--at-boot", "--config", str(tmp_path / "config.yaml")])
    assert "[FAIL] mqtt broker" in capsys.readouterr().out
