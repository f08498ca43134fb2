"""Doctor check of the broker (with an `mqtt:` section): reachable over TCP, the TLS handshake
verifies against the configured CA and host name, and the hub's user and password are accepted
(CONNACK), each with a short timeout and its own fix.

The CONNACK check connects with a client id of its own, never the hub's: a second connection
with the hub's id would make the broker disconnect the running hub.
"""

from __future__ import annotations

import secrets
import socket
import ssl

from agent.cli.doctor.result import CheckResult
from agent.config import LoadedConfig, MqttConfig
from agent.errors import AgentError, MqttError

#: Seconds each step may take: a broker on the LAN answers in milliseconds.
BROKER_TIMEOUT_S = 5.0


def check_broker(loaded: LoadedConfig | None, timeout_s: float = BROKER_TIMEOUT_S) -> list[CheckResult]:
    if loaded is None or loaded.config.mqtt is None:
        return []
    cfg = loaded.config.mqtt
    return [_check(cfg, loaded, timeout_s)]


def _check(cfg: MqttConfig, loaded: LoadedConfig, timeout_s: float) -> CheckResult:
    from agent.mqtt.client import MqttClient, tls_context

    name = "mqtt broker"
    where = f"{cfg.host}:{cfg.port}"
    base = loaded.path.parent
    try:
        password = cfg.resolved_password(base)
    except AgentError as e:
        return CheckResult(name, "fail", str(e),
                           "make the password file readable by the agent's user only: chown privacy-agent, "
                           "chmod 600, first line the password")
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=timeout_s)
    except OSError as e:
        return CheckResult(name, "fail", f"cannot reach {where}: {e.strerror or e}",
                           "check `mqtt.host` and `mqtt.port`, that the broker runs (systemctl status mosquitto) "
                           "and that no firewall blocks the port", unreachable=True)
    tls = ""
    try:
        if cfg.tls:
            ca = cfg.resolved_ca_file(base)
            try:
                ctx = tls_context(ca)
            except MqttError as e:
                return CheckResult(name, "fail", str(e),
                                   "point `mqtt.ca_file` at the PEM of the CA that signed the broker's certificate")
            try:
                with ctx.wrap_socket(sock, server_hostname=cfg.host) as tsock:
                    tls = f", TLS {tsock.version()} verified"
            except ssl.SSLCertVerificationError as e:
                return CheckResult(name, "fail", f"TLS to {where}: {e.verify_message or e}",
                                   "`mqtt.ca_file` must be the CA that signed the broker's certificate, and "
                                   "`mqtt.host` a name the certificate lists")
            except (OSError, ssl.SSLError) as e:
                return CheckResult(name, "fail", f"TLS handshake with {where} failed: {e}",
                                   "is this the broker's TLS port (8883)? A plain listener needs `tls: false`, "
                                   "which the README advises against")
    finally:
        sock.close()
    # The connection itself, as the hub makes it, under a client id of its own (see above).
    probe = cfg.model_copy(update={"client_id": None, "reconnect_min_s": timeout_s, "reconnect_max_s": timeout_s})
    client = MqttClient.from_config(probe, client_id=f"epa-doctor-{secrets.token_hex(4)}", base_dir=base,
                                    password=password)
    try:
        client.start(wait_s=timeout_s)
    except AgentError as e:
        return CheckResult(name, "fail", f"{where} refused the hub: {str(e).split(': ', 1)[-1]}",
                           "check `mqtt.username` and the password against the broker's password file "
                           "(mosquitto_passwd), and that the ACL lets this user in")
    finally:
        client.stop(clean=False)
    return CheckResult(name, "ok", f"{where} reachable{tls}, authenticated as {cfg.username or '(anonymous)'}")
