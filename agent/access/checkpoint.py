"""Audit checkpoints in the C2SP signed-note checkpoint format (c2sp.org/tlog-checkpoint).

A checkpoint is the hub's signed statement "my audit log has SIZE entries and its Merkle tree
(agent.access.merkle) has ROOT". As a note:

    epa-audit/<hub key id>\n            origin: one log, one hub
    <size>\n                            decimal, no leading zeros
    <root>\n                            standard base64 of the 32-byte RFC 6962 root
    signed-ms <wall ms>\n               extension line: when the hub signed it (staleness)
    \n
    — epa-audit/<hub key id> <base64(key hash[4] || Ed25519 signature[64])>\n

The signature is Ed25519 by the hub's signing key over the note text (the four lines above the
blank line, each with its newline), as c2sp.org/signed-note specifies; the key hash is the first
4 bytes of SHA-256(name || 0x0A || 0x01 || public key). The text starts with "epa-audit/", which
no other message the hub signs starts with (access messages sign "epa/v2/access/...", clips and
rosters their own domains), so no other signature can pass as a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

import nacl.exceptions

from agent.access.merkle import HASH_BYTES, sha256
from agent.crypto.keys import HubIdentity, HubPublic
from agent.errors import AuditError

#: Largest checkpoint accepted from an untrusted place (the broker, a file).
MAX_NOTE_BYTES = 4096

ORIGIN_PREFIX = "epa-audit/"
_EXT_PREFIX = "signed-ms "
_SIG_PREFIX = "\u2014 "  # em dash and a space, as signed-note requires
_ALG_ED25519 = b"\x01"
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_MS_RE = re.compile(r"^(0|[1-9][0-9]{0,15})$")


def origin_for(hub_key_id: str) -> str:
    return ORIGIN_PREFIX + hub_key_id


def key_hash(name: str, public_key: bytes) -> bytes:
    return sha256(name.encode() + b"\n" + _ALG_ED25519 + public_key)[:4]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A hub-signed checkpoint: the log had `size` entries and its Merkle root was `root` (hex)."""

    hub: str
    size: int
    root: str
    wall_ms: int
    signature: bytes = field(repr=False)
    #: The signed-note key hash of the hub key (set by `sign` and `decode`).
    key_hash: bytes = field(default=b"", repr=False)

    @property
    def origin(self) -> str:
        return origin_for(self.hub)

    def text(self) -> str:
        """The signed note text (what the signature covers)."""
        r = base64.b64encode(bytes.fromhex(self.root)).decode()
        return f"{self.origin}\n{self.size}\n{r}\n{_EXT_PREFIX}{self.wall_ms}\n"

    def encode(self) -> bytes:
        return (self.text() + "\n" + _SIG_PREFIX + self.origin + " "
                + base64.b64encode(self.key_hash + self.signature).decode() + "\n").encode()

    @staticmethod
    def sign(hub: HubIdentity, size: int, root_hex: str, wall_ms: int) -> Checkpoint:
        unsigned = Checkpoint(hub.key_id, size, root_hex, wall_ms, b"")
        sig = hub.signing_key.sign(unsigned.text().encode()).signature
        kh = key_hash(unsigned.origin, bytes(hub.signing_key.verify_key))
        return Checkpoint(hub.key_id, size, root_hex, wall_ms, sig, kh)

    @staticmethod
    def decode(data: bytes | str, hub: HubPublic, what: str = "checkpoint") -> Checkpoint:
        """Parse and verify under `hub`. Raises AuditError naming what is wrong."""
        if len(data) > MAX_NOTE_BYTES:
            raise AuditError(f"{what}: larger than {MAX_NOTE_BYTES} bytes")
        try:
            text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else str(data)
        except UnicodeDecodeError:
            raise AuditError(f"{what}: not UTF-8 text") from None
        if any(ord(c) < 0x20 and c != "\n" for c in text):
            raise AuditError(f"{what}: control characters in a signed note")
        body, sep, sigs = text.partition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise AuditError(f"{what}: not a signed note (text, blank line, signature lines)")
        lines = body.split("\n")
        if len(lines) != 4:
            raise AuditError(f"{what}: expected origin, size, root and one signed-ms line "
                             f"(an older JSON checkpoint is not accepted)")
        origin, size_s, root_s, ext = lines
        if origin != origin_for(hub.key_id):
            raise AuditError(f"{what}: origin {origin[:80]!r} is not this hub's log ({origin_for(hub.key_id)})")
        if not _SIZE_RE.match(size_s):
            raise AuditError(f"{what}: tree size {size_s[:40]!r} is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except (binascii.Error, ValueError):
            raise AuditError(f"{what}: root hash is not base64") from None
        if len(root) != HASH_BYTES or base64.b64encode(root).decode() != root_s:
            raise AuditError(f"{what}: root hash must be 32 bytes in canonical base64")
        if not ext.startswith(_EXT_PREFIX) or not _MS_RE.match(ext[len(_EXT_PREFIX):]):
            raise AuditError(f"{what}: the signed-ms line is malformed")
        name = origin
        want_kh = key_hash(name, bytes(hub.verify_key))
        found: Checkpoint | None = None
        for line in sigs[:-1].split("\n"):
            if not line.startswith(_SIG_PREFIX):
                raise AuditError(f"{what}: malformed signature line")
            parts = line[len(_SIG_PREFIX):].split(" ")
            if len(parts) != 2:
                raise AuditError(f"{what}: malformed signature line")
            try:
                raw = base64.b64decode(parts[1], validate=True)
            except (binascii.Error, ValueError):
                raise AuditError(f"{what}: signature is not base64") from None
            if parts[0] != name or len(raw) != 4 + 64 or raw[:4] != want_kh:
                continue  # a cosignature by some other key: not ours to check
            cp = Checkpoint(hub.key_id, int(size_s), root.hex(), int(ext[len(_EXT_PREFIX):]), raw[4:], want_kh)
            try:
                hub.verify_key.verify(cp.text().encode(), raw[4:])
            except nacl.exceptions.BadSignatureError:
                raise AuditError(f"{what}: the hub signature does not verify") from None
            found = cp
        if found is None:
            raise AuditError(f"{what}: no signature by hub {hub.key_id}")
        return found
