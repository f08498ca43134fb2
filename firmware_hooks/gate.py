"""The pre-upload gate: `upload-gate FILE`, called by the vendor's own uploader on every file it is
about to send anywhere.

It passes (exit 0) only a complete, valid clip envelope signed by THIS hub: the header and trailer
signatures verify under the hub's own public key (`DATA/keys/hub.pub`, or `--hub-pub`), every
chunk record is where the format puts it, the chunk count and ciphertext hash match what the hub
signed in the trailer, and nothing follows the trailer. Anything else is denied with its own exit
code (firmware_hooks/CONTRACT.md) and one line on stderr saying why: a plaintext video, another
hub's clip, a cut or edited clip, a directory, a symlink, a file that cannot be read.

Invariants:
- It never decrypts (the hub holds no key that could) and reads the file as a stream, one chunk
  record (at most 64 KiB) at a time, so a file of any size is checked in bounded memory.
- The file is opened once, with O_NOFOLLOW, and checked through that descriptor: a symlink is
  denied rather than followed (the uploader would send whatever it points to at upload time),
  and what is checked is what was opened.
- The chain between clips (each header's `prev` hash) is not judged here: one file cannot show a
  gap. Owners check chains over the clips they hold (`privacy-agent verify`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.crypto.envelope import MAGIC, ClipInfo, verify_clip
from agent.crypto.keys import HubPublic
from agent.errors import EnvelopeError, ExitCode

#: Exit codes `upload-gate` returns, and what each means (CONTRACT.md lists the same).
GATE_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "pass: a complete clip envelope signed by this hub",
    ExitCode.ERROR: "deny: not a readable regular file (missing, a directory, a symlink, a device, "
    "unreadable), or the hub's public key cannot be loaded",
    ExitCode.MALFORMED_CLIP: "deny: not a clip envelope (a plaintext video, any other file) or a malformed one",
    ExitCode.BAD_SIGNATURE: "deny: signed by another hub, or a signature that does not verify",
    ExitCode.TAMPERED_CLIP: "deny: the ciphertext, the chunk count or the trailer was changed, or data "
    "follows the end of the clip",
    ExitCode.TRUNCATED_CLIP: "deny: the clip ends before its trailer (cut, or still being written)",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    code: ExitCode
    reason: str
    info: ClipInfo | None = None

    @property
    def passed(self) -> bool:
        return self.code is ExitCode.OK


def check_file(path: Path, hub: HubPublic) -> Verdict:
    """The gate's verdict on `path`. Never raises for anything the file is or holds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Verdict(ExitCode.ERROR, "is a symlink; give the uploader the clip file itself")
        return Verdict(ExitCode.ERROR, f"cannot be opened: {e.strerror or e}")
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return Verdict(ExitCode.ERROR, "is a directory, not a clip file")
        if not stat.S_ISREG(st.st_mode):
            return Verdict(ExitCode.ERROR, "is not a regular file (a device, a pipe or a socket)")
        os.set_blocking(fd, True)
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            # Said first: a short file that is not a clip at all is "not a clip", not "truncated".
            return Verdict(ExitCode.MALFORMED_CLIP, "not an epa-clip envelope (bad magic): a plaintext video "
                           "or another file, never to be uploaded")
        with os.fdopen(fd, "rb", buffering=1 << 16, closefd=False) as f:
            try:
                info = verify_clip(f, hub)
            except EnvelopeError as e:
                return Verdict(e.exit_code, str(e))
            except OSError as e:
                return Verdict(ExitCode.ERROR, f"cannot be read: {e.strerror or e}")
    finally:
        os.close(fd)
    return Verdict(ExitCode.OK, "a complete clip envelope signed by this hub", info)


def accepted_line(path: Path, v: Verdict) -> str:
    """The one line on stdout for a file that passes."""
    assert v.info is not None
    return (f"pass {path} clip={v.info.clip_id_hex} hub={v.info.header.hub_key_id} "
            f"chunks={v.info.chunk_count} bytes={v.info.size_bytes}")
