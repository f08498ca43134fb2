"""libsodium's secretstream push and BLAKE2b update on buffers, for the seal's hot loop only.

PyNaCl's wrappers take and return `bytes`: every 64 KiB chunk pushed is copied out of a C buffer
into a new `bytes`, and a hash update accepts nothing else. The seal instead encrypts each chunk
straight into a preallocated, contiguous batch of records and hashes a whole batch in one call
on a second thread. One long call instead of eight short ones matters: every call hands the GIL
over, and on this kind of machine each hand-over between two busy threads costs more than the
work it separates (bench/bench_envelope.py: 0.76x raw push before, 0.85x after).

These are the same libsodium functions, reached through PyNaCl's own cffi binding
(`nacl._sodium`, the module every `nacl.bindings` wrapper calls), so there is still exactly one
crypto library. The wrappers' argument checks are made here, once per call site, and every
return code is checked. The clip vectors (tests/vectors/clip-*.epaclip, re-sealed by
tests/test_vectors.py) pin the output bytes.
"""

from __future__ import annotations

from typing import Any

import nacl.bindings as sodium
from nacl._sodium import ffi, lib

from agent.crypto.envelope.format import ABYTES
from agent.errors import MalformedEnvelope

__all__ = ["ABYTES", "Blake2b", "Pointer", "pointer", "push_into"]

_MESSAGE_MAX: int = sodium.crypto_secretstream_xchacha20poly1305_MESSAGEBYTES_MAX

Pointer = Any
"""A cffi `unsigned char *` (into a bytearray, a bytes object or a C buffer)."""


def pointer(buf: bytes | bytearray | memoryview) -> Pointer:
    """A C pointer to `buf`'s bytes, valid while `buf` (and the returned object) live."""
    return ffi.from_buffer(buf)


def push_into(
    state: sodium.crypto_secretstream_xchacha20poly1305_state,
    out: Pointer,
    src: Pointer,
    mlen: int,
    ad: bytes,
    tag: int,
) -> None:
    """`crypto_secretstream_xchacha20poly1305_push` writing `mlen + ABYTES` bytes at `out`.

    The caller guarantees `out` has room for them (the batch buffers are sized for a full record);
    `state` is PyNaCl's own state object, initialised by its `init_push`."""
    if not 0 <= mlen <= _MESSAGE_MAX:
        raise MalformedEnvelope(f"secretstream message of {mlen} bytes")
    rc = lib.crypto_secretstream_xchacha20poly1305_push(state.statebuf, out, ffi.NULL, src, mlen, ad, len(ad), tag)
    if rc != 0:
        raise MalformedEnvelope("secretstream push failed")


class Blake2b:
    """Incremental, personalised BLAKE2b whose `update` takes any buffer and a length.

    Output is identical to `nacl.bindings.crypto_generichash_blake2b_*` with the same parameters
    (tests/test_envelope.py compares them)."""

    def __init__(self, person: bytes, digest_size: int) -> None:
        if len(person) > sodium.crypto_generichash_PERSONALBYTES:
            raise MalformedEnvelope("BLAKE2b personalisation too long")
        self._digest_size = digest_size
        # The state as PyNaCl allocates it (cffi's `unsigned char[]` is suitably aligned).
        self._st = ffi.new("unsigned char[]", sodium.crypto_generichash_STATEBYTES)
        salt = ffi.new("unsigned char[]", sodium.crypto_generichash_SALTBYTES)
        pers = ffi.new("unsigned char[]", sodium.crypto_generichash_PERSONALBYTES)
        ffi.memmove(pers, person, len(person))
        if lib.crypto_generichash_blake2b_init_salt_personal(self._st, ffi.NULL, 0, digest_size, salt, pers) != 0:
            raise MalformedEnvelope("BLAKE2b init failed")

    def update(self, data: Pointer, n: int) -> None:
        """Hash the first `n` bytes at `data`. Releases the GIL for the call (cffi does)."""
        if lib.crypto_generichash_blake2b_update(self._st, data, n) != 0:
            raise MalformedEnvelope("BLAKE2b update failed")

    def digest(self) -> bytes:
        out = ffi.new("unsigned char[]", self._digest_size)
        if lib.crypto_generichash_blake2b_final(self._st, out, self._digest_size) != 0:
            raise MalformedEnvelope("BLAKE2b final failed")
        return bytes(ffi.buffer(out, self._digest_size))
