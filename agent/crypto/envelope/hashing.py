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
    Updates go to the worker `batch` at a time: a hand-off per 64 KiB chunk (a futex wake and a
    GIL round trip each) cost the sealing thread about a tenth of its time
    (bench/bench_envelope.py). At most `depth` batches wait, so memory stays bounded.
    """

    def __init__(self, person: bytes, depth: int = 2, batch: int = 4) -> None:
        self._h = Blake2bStream(person)
        self._batch = batch
        self._pending: list[bytes] = []
        self._pending_updates = 0
        self._q: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=depth)
        self._err: list[BaseException] = []
        self._t = threading.Thread(
            target=_hash_worker, args=(self._q, self._h, self._err), name="epa-clip-hash", daemon=True
        )
        self._t.start()
        self._stop = weakref.finalize(self, self._q.put, None)

    def update(self, *parts: bytes) -> None:
        self._pending.extend(parts)
        self._pending_updates += 1
        if self._pending_updates >= self._batch:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._pending:
            self._q.put(self._pending)
        self._pending, self._pending_updates = [], 0

    def digest(self) -> bytes:
        self._hand_over()
        self._stop()
        self._t.join()
        if self._err:
            raise self._err[0]
        return self._h.digest()

    def cancel(self) -> None:
        self._pending, self._pending_updates = [], 0
        self._stop()
        self._t.join()


def _hash_worker(q: queue.Queue[list[bytes] | None], h: Blake2bStream, err: list[BaseException]) -> None:
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
