"""Running BLAKE2b hashes over chunk records: in line, or on a background thread while the next
chunks are encrypted (the writer and the reader both hash every record they touch; the writer
through `RecordBatches`, which also holds its output)."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable

import nacl.bindings as sodium

from agent.crypto.envelope.format import (
    HASH_BYTES,
)
from agent.crypto.envelope.rawsodium import Blake2b, Pointer, pointer


class Blake2bStream:
    """Incremental BLAKE2b-256 with a personalisation (libsodium's crypto_generichash via PyNaCl)."""

    def __init__(self, person: bytes) -> None:
        self._st = sodium.crypto_generichash_blake2b_init(person=person.ljust(16, b"\x00"), digest_size=HASH_BYTES)

    def update(self, data: bytes) -> None:
        sodium.crypto_generichash_blake2b_update(self._st, data)

    def digest(self) -> bytes:
        return sodium.crypto_generichash_blake2b_final(self._st)


class _Worker:
    """What both background hashers share: a worker thread, its stop finalizer, its first error."""

    _h: Blake2bStream | Blake2b
    _t: threading.Thread
    _stop: weakref.finalize
    _err: list[BaseException]

    def _join(self) -> None:
        self._stop()
        self._t.join()

    def _final(self) -> bytes:
        """Stop the worker once it has hashed everything handed over; the digest, or its error."""
        self._join()
        if self._err:
            raise self._err[0]
        return self._h.digest()


class BackgroundHasher(_Worker):
    """The same hash, computed on a worker thread while the caller decrypts (the reader's re-check;
    the seal hashes through `RecordBatches`).

    PyNaCl's cffi calls release the GIL, so hashing chunk i overlaps with opening chunk i+1 on a
    second core; the bounded queue keeps at most a few chunks in memory. Order is preserved (one
    worker, FIFO), so the digest is identical to `Blake2bStream`'s. The worker holds no
    reference to this object: if a writer is dropped without finish/abort, the finalizer stops it.
    Updates go to the worker `batch` at a time: a hand-off per 64 KiB chunk (a futex wake and a
    GIL round trip each) cost the calling thread about a tenth of its time
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
        return self._final()

    def cancel(self) -> None:
        self._pending, self._pending_updates = [], 0
        self._join()


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


class RecordBatches(_Worker):
    """The seal's output path: chunk records are encrypted straight into contiguous batches; a full
    batch is written to `out`, then hashed in one BLAKE2b call on a worker thread while the next
    batch fills.

    Hashing a batch (`len || ct` of `per_batch` records, back to back) in one call gives the same
    digest as hashing its records one by one, and it is one GIL hand-over instead of eight (see
    `rawsodium`). The pool holds `buffers` batches: one filling, the rest written and waiting for
    the worker; `take()` blocks while none is free, so a slow hash slows the writer instead of
    growing memory (3 x 4 x 64 KiB). `out.write` gets a view of the batch and, as the `io`
    contract allows, the buffer is reused once it returns and is hashed. Errors on the worker are
    raised by `digest()`; a writer dropped without `digest`/`cancel` stops the worker through the
    finalizer, which holds no reference to this object.
    """

    def __init__(self, person: bytes, out_write: Callable[[memoryview], object], record_max: int,
                 per_batch: int = 4, buffers: int = 3) -> None:
        self._out_write = out_write
        self._size = record_max * per_batch
        self._record_max = record_max
        self._h = Blake2b(person.ljust(16, b"\x00"), HASH_BYTES)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(buffers):
            self._free.put(bytearray(self._size))
        self._work: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._err: list[BaseException] = []
        self._t = threading.Thread(target=_batch_worker, args=(self._work, self._free, self._h, self._err),
                                   name="epa-clip-hash", daemon=True)
        self._t.start()
        self._stop = weakref.finalize(self, self._work.put, None)
        self._buf, self._ptr, self._used = self._take()

    def _take(self) -> tuple[bytearray, Pointer, int]:
        buf = self._free.get()
        return buf, pointer(buf), 0

    def reserve(self) -> tuple[bytearray, Pointer, int]:
        """The batch and offset where the next record (at most `record_max` bytes) goes."""
        if self._size - self._used < self._record_max:
            self._flush()
        return self._buf, self._ptr, self._used

    def commit(self, n: int) -> None:
        """The record just placed at the reserved offset is `n` bytes long."""
        self._used += n

    def _flush(self) -> None:
        if not self._used:
            return
        if self._err:
            raise self._err[0]
        buf, used = self._buf, self._used
        self._out_write(memoryview(buf)[:used])
        self._work.put((buf, used))
        self._buf, self._ptr, self._used = self._take()

    def digest(self) -> bytes:
        """Write and hash what is left, stop the worker and return the hash of every record."""
        self._flush()
        return self._final()

    def cancel(self) -> None:
        self._used = 0
        self._join()


def _batch_worker(work: queue.SimpleQueue[tuple[bytearray, int] | None], free: queue.SimpleQueue[bytearray],
                  h: Blake2b, err: list[BaseException]) -> None:
    while True:
        item = work.get()
        if item is None:
            return
        buf, n = item
        if not err:
            try:
                h.update(pointer(buf), n)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by digest()
                err.append(e)
        free.put(buf)
