"""The page's TLS certificate: self-signed, made at first start, kept in the data dir (0600).

PyNaCl cannot make X.509, so `cryptography` does: an ECDSA P-256 key and a certificate for the
hub's listen address, valid for ten years (the homeowner pins it by its fingerprint once; an
expiring certificate would only teach them to click through warnings). The SHA-256 fingerprint
of the certificate (as browsers show it) is printed at start for the homeowner to compare.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from pathlib import Path

from agent.errors import WebError
from agent.fsutil import atomic_write, make_private_dirs

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
_VALID_DAYS = 3650


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER, as `AB:CD:...` (the form browsers display)."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _make(address: str, now: dt.datetime) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"privacy-agent hub {address}")])
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(directory: Path, address: str, now: dt.datetime | None = None) -> tuple[Path, Path, bool]:
    """(certificate, key, made now): the stored pair, or a new one for `address` when there is none."""
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    if cert.is_file() and key.is_file():
        return cert, key, False
    cert_pem, key_pem = _make(address, now or dt.datetime.now(dt.UTC))
    try:
        make_private_dirs(directory)
        # The key first: a certificate without its key would be kept and never work.
        atomic_write(key, key_pem)
        atomic_write(cert, cert_pem)
    except OSError as e:
        raise WebError(f"cannot write the page's certificate in {directory}: {e.strerror or e}") from None
    return cert, key, True


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise WebError(f"cannot load the page's certificate {cert}: {e}; delete {cert} and {key} to make "
                       "a new one (its fingerprint changes)") from None
    return ctx
