"""Running BLAKE2b hashes over chunk records: in line, or on a background thread while the next
chunks are encrypted (the writer and the reader both hash every record they touch)."""

from __future__ import annotations

import queue
import threading
import weakref

import nacl.bindings as sodium

from agent.crypto.envelope.format import (
    HASH_BYTES,
)


class Blake2bStream:
    """Incremental BLAKE2b-256 with a personalisation (libsodium's crypto_generichash via PyNaCl)."""

    def __init__(self, person: bytes) -> None:
        self._st = sodium.crypto_generichash_blake2b_init(person=person.ljust(16, b"\x00"), digest_size=HASH_BYTES)

    def update(self, data: bytes) -> None:
        sodium.crypto_generichash_blake2b_update(self._st, data)

    def digest(self) -> bytes:
        return sodium.crypto_generichash_blake2b_final(self._st)


class BackgroundHasher:
    """The same hash, computed on a worker thread while the caller encrypts or decrypts.

    PyNaCl's cffi calls release the GIL, so hashing chunk i overlaps with sealing chunk i+1 on a
    second core; the bounded queue keeps at most a few chunks in memory. Order is preserved (one
    worker, FIFO), so the digest is identical to `Blake2bStream`'s. The worker holds no
    reference to this object: if a writer is dropped without finish/abort, the finalizer stops it.
    """

    def __init__(self, person: bytes, depth: int = 8) -> None:
        self._h = Blake2bStream(person)
        self._q: queue.Queue[tuple[bytes, ...] | None] = queue.Queue(maxsize=depth)
        self._err: list[BaseException] = []
        self._t = threading.Thread(
            target=_hash_worker, args=(self._q, self._h, self._err), name="epa-clip-hash", daemon=True
        )
        self._t.start()
        self._stop = weakref.finalize(self, self._q.put, None)

    def update(self, *parts: bytes) -> None:
        self._q.put(parts)

    def digest(self) -> bytes:
        self._stop()
        self._t.join()
        if self._err:
            raise self._err[0]
        return self._h.digest()

    def cancel(self) -> None:
        self._stop()
        self._t.join()


def _hash_worker(q: queue.Queue[tuple[bytes, ...] | None], h: Blake2bStream, err: list[BaseException]) -> None:
    while True:
        item = q.get()
        if item is None:
            return
        if not err:
            try:
                for part in item:
                    h.update(part)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by digest()
                err.append(e)
