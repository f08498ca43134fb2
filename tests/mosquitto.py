"""A throwaway Mosquitto broker for tests and benchmarks.

`Broker` writes a generated config into a temporary directory and runs the
system `mosquitto` on a free loopback port with:
- a TLS-only listener, using a CA and a server certificate generated here
  (the `cryptography` package; EC P-256, valid for `localhost` and 127.0.0.1);
- `allow_anonymous false` and a password file made with `mosquitto_passwd`;
- an ACL file: the hub may write its whole prefix, owners may only publish
  decisions and mode changes, requesters only requests, `intruder` is
  authenticated but may publish nothing, `homeassistant` only reads.

Readiness is detected from the broker's own log line, not by sleeping.
`restart()` stops and starts the broker on the same port with the same
persistence file, to test a broker restart in the middle of a flow.

Nothing here is used by the agent itself; the agent only needs the CA file,
a username and a password.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

#: Users of the test broker and their passwords.
USERS: dict[str, str] = {
    "hub": "hub-secret-pw",
    "owner": "owner-secret-pw",
    "requester": "requester-secret-pw",
    "homeassistant": "ha-secret-pw",
    "intruder": "intruder-secret-pw",
    "spy": "spy-secret-pw",
}


def acl_text(prefix: str) -> str:
    """The ACL the README recommends, for topic prefix `prefix`."""
    p = prefix
    return f"""\
# The hub owns its whole prefix and the Home Assistant discovery topic.
user hub
topic readwrite {p}/#
topic write homeassistant/device/#
topic read homeassistant/status

# Owner devices read everything of the hub and may publish only signed
# decisions and signed mode changes (the hub checks the signatures too),
# ask for audit consistency proofs, and publish their signed epoch key lists.
user owner
topic read {p}/#
topic write {p}/access/decision/#
topic write {p}/mode/set
topic write {p}/relearn/request
topic write {p}/audit/proof/request
topic write {p}/delete/request/#
topic write {p}/epochs/#

# Requesters may publish requests and read grants and denials.
user requester
topic write {p}/access/request/#
topic read {p}/access/grant/#
topic read {p}/available

# Home Assistant reads the state and discovery; it cannot change anything.
user homeassistant
topic read {p}/#
topic read homeassistant/#
topic write homeassistant/status

# Authenticated, but granted nothing to write.
user intruder
topic read {p}/available

# Test-only observer that reads every topic (to prove nothing secret is on the broker).
user spy
topic read #
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca_and_server_cert(out: Path) -> tuple[Path, Path, Path]:
    """Write ca.crt, server.crt, server.key into `out`; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "epa-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, crt_path, key_path = out / "ca.crt", out / "server.crt", out / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    crt_path.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return ca_path, crt_path, key_path


@dataclass
class Broker:
    """A running test broker. Use as a context manager or call start()/stop()."""

    workdir: Path
    prefix: str = "epa-test"
    port: int = 0
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    _proc: subprocess.Popen[bytes] | None = None
    _log: list[str] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        make_ca_and_server_cert(self.workdir)
        pwfile = self.workdir / "passwd"
        pwfile.write_text("")
        for user, pw in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(pwfile), user, pw], check=True,
                           capture_output=True)
        os.chmod(pwfile, 0o600)
        (self.workdir / "acl").write_text(acl_text(self.prefix))
        (self.workdir / "mosquitto.conf").write_text(
            f"""\
user {getpass.getuser()}
per_listener_settings false
allow_anonymous false
password_file {self.workdir / 'passwd'}
acl_file {self.workdir / 'acl'}
persistence true
persistence_location {self.workdir}/
persistence_file mosquitto.db
autosave_interval 0
# Slow subscribers must not lose QoS 1 messages during a burst (the outbox test).
max_queued_messages 0
max_inflight_messages 100
# Small request/answer messages: avoid Nagle + delayed-ACK stalls (~40 ms each).
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
listener {self.port} 127.0.0.1
cafile {self.workdir / 'ca.crt'}
certfile {self.workdir / 'server.crt'}
keyfile {self.workdir / 'server.key'}
tls_version tlsv1.2
"""
        )

    def start(self, timeout_s: float = 10.0) -> None:
        if not (self.workdir / "mosquitto.conf").exists():
            self.setup()
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.workdir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._proc = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                self._log.append(line)
                if " running" in line:  # "mosquitto version 2.0.11 running"
                    ready.set()
            ready.set()  # process exited: let start() notice

        threading.Thread(target=pump, name="mosquitto-log", daemon=True).start()
        if not ready.wait(timeout_s) or proc.poll() is not None:
            self.stop()
            raise RuntimeError("mosquitto did not start:\n" + "\n".join(self._log[-20:]))
        # The log line comes right after the listener is bound; confirm with a TCP connect.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto port not reachable") from None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> list[str]:
        return list(self._log)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
