"""Envelope throughput against raw PyNaCl secretstream, and the latency the envelope adds per segment.

    .venv/bin/python bench/bench_envelope.py [--mib 64] [--segment-mib 2] [--recipients 3]

Measures, in one run on the same data:
- raw `crypto_secretstream_xchacha20poly1305_push` / `pull` over 64 KiB chunks (the floor);
- `ClipWriter` (seal: wrap, sign, encrypt, hash) and `open_clip` (verify pass + decrypt pass);
- the fixed cost per segment: key generation, one SealedBox per recipient, two signatures, and the
  verify pass, measured on small segments, plus the total added to a typical segment.
- the seal cost with epoch wrapping (v2 stanzas sealed to `EpochRecipient` epoch keys) beside
  long-term wrapping (plain `DevicePublic`, in the v2 and the old v1 layout), interleaved.
Target: envelope seal throughput >= 0.8x raw push; epoch wrapping within 5% of long-term wrapping.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import nacl.bindings as sodium
from benchargs import positive_float, positive_int, run_main
from nacl.public import PrivateKey

from agent.crypto import envelope as env
from agent.crypto.keys import DeviceIdentity, EpochRecipient, HubIdentity

CHUNK = env.CHUNK_BYTES


def raw_push(data: bytes) -> bytes:
    """The floor: secretstream over 64 KiB chunks into the same kind of sink as the envelope."""
    st = sodium.crypto_secretstream_xchacha20poly1305_state()
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    out = io.BytesIO()
    out.write(sodium.crypto_secretstream_xchacha20poly1305_init_push(st, key))
    n = len(data)
    mv = memoryview(data)
    for off in range(0, n, CHUNK):
        tag = env.TAG_FINAL if off + CHUNK >= n else env.TAG_MESSAGE
        out.write(sodium.crypto_secretstream_xchacha20poly1305_push(st, bytes(mv[off : off + CHUNK]), None, tag))
    return out.getvalue()


def raw_roundtrip(data: bytes) -> float:
    st = sodium.crypto_secretstream_xchacha20poly1305_state()
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    hdr = sodium.crypto_secretstream_xchacha20poly1305_init_push(st, key)
    cts = [sodium.crypto_secretstream_xchacha20poly1305_push(st, data[o : o + CHUNK]) for o in range(0, len(data), CHUNK)]
    t = time.perf_counter()
    st2 = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(st2, hdr, key)
    for c in cts:
        sodium.crypto_secretstream_xchacha20poly1305_pull(st2, c)
    return time.perf_counter() - t


def best(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description="envelope benchmark")
    ap.add_argument("--mib", type=positive_int, default=32, help="data size for throughput")
    ap.add_argument("--segment-mib", type=positive_float, default=2.0, help="typical segment size (10 s of 720p ~ 2 MiB)")
    ap.add_argument("--recipients", type=positive_int, default=3)
    ap.add_argument("--reps", type=positive_int, default=5)
    a = ap.parse_args()

    hub = HubIdentity.generate()
    devs = [DeviceIdentity.generate(f"d{i}") for i in range(a.recipients)]
    recips = [d.public for d in devs]
    sid = env.stream_id_for(hub, "bench")
    data = os.urandom(a.mib * 1024 * 1024)
    mb = len(data) / 1e6

    def seal_stream() -> bytes:
        out = io.BytesIO()
        w = env.ClipWriter(out, hub, recips, sid, 0)
        # feed in encoder-sized writes (PyAV hands over ~32 KiB at a time)
        for off in range(0, len(data), 32768):
            w.write(data[off : off + 32768])
        w.finish({"camera_id": "bench"})
        return out.getvalue()

    # Interleave the two so background load hits both alike; keep the best of each.
    t_raw = t_seal = float("inf")
    cpu_raw = cpu_seal = float("inf")
    load = os.getloadavg()[0]
    for _ in range(a.reps):
        c = time.process_time()
        t_raw = min(t_raw, best(lambda: raw_push(data), 1))
        cpu_raw = min(cpu_raw, time.process_time() - c)
        c = time.process_time()
        t_seal = min(t_seal, best(seal_stream, 1))
        cpu_seal = min(cpu_seal, time.process_time() - c)
    clip = seal_stream()
    t_raw_pull = min(raw_roundtrip(data) for _ in range(a.reps))
    sink = bytearray()

    def open_all() -> None:
        sink.clear()
        env.open_clip(clip, devs[0], sink.extend, hub.public)

    def open_file_like() -> None:
        sink.clear()
        env.open_clip(io.BytesIO(clip), devs[0], sink.extend, hub.public)

    t_open = best(open_all, a.reps)
    t_open_f = best(open_file_like, a.reps)
    t_verify = best(lambda: env.verify_clip(clip, hub.public), a.reps)
    print(f"data: {a.mib} MiB, {a.recipients} recipients, 64 KiB chunks")
    print(f"raw secretstream push : {mb / t_raw:8.0f} MB/s")
    print(f"envelope seal (stream): {mb / t_seal:8.0f} MB/s   ratio {t_raw / t_seal:.2f}x  (target >= 0.80x)")
    # The envelope also hashes every chunk record (BLAKE2b over the ciphertext, about as costly as
    # the encryption), on a second thread: the ratio holds only while a second core is free.
    print(f"  CPU per MB: raw {cpu_raw / mb * 1e3:.2f} ms, seal {cpu_seal / mb * 1e3:.2f} ms "
          f"({cpu_seal / cpu_raw:.2f}x: encryption plus the chunk hash, which runs on a second core); "
          f"load average {load:.2f} on {os.cpu_count()} cores" +
          ("  -- busy machine: the hash thread had no free core, the ratio says little" if
           load > (os.cpu_count() or 1) - 1 else ""))
    print(f"raw secretstream pull : {mb / t_raw_pull:8.0f} MB/s")
    print(f"envelope open (bytes) : {mb / t_open:8.0f} MB/s   ratio {t_raw_pull / t_open:.2f}x  (verify pass + decrypt pass)")
    print(f"envelope open (file)  : {mb / t_open_f:8.0f} MB/s   ratio {t_raw_pull / t_open_f:.2f}x  (+ hash re-check while decrypting)")
    print(f"envelope verify only  : {mb / t_verify:8.0f} MB/s   (no secret; BLAKE2b over ciphertext)")

    # fixed cost per segment: an empty clip (header, wraps, 2 signatures, final chunk)
    fixed = [best(lambda: env.seal(b"", {}, hub, recips, sid), 1) for _ in range(50)]
    seg = os.urandom(int(a.segment_mib * 1024 * 1024))
    seg_raw = best(lambda: raw_push(seg), 5)
    seg_env = best(lambda: env.seal(seg, {"camera_id": "bench"}, hub, recips, sid), 5)
    seg_clip, _ = env.seal(seg, {}, hub, recips, sid)
    seg_verify = best(lambda: env.verify_clip(seg_clip, hub.public), 5)
    print(f"fixed cost per segment (keygen + {a.recipients} SealedBox + 2 Ed25519 signs): "
          f"median {statistics.median(fixed) * 1e3:.2f} ms")
    print(f"{a.segment_mib:g} MiB segment: raw push {seg_raw * 1e3:.2f} ms, envelope seal {seg_env * 1e3:.2f} ms, "
          f"added {max(0.0, seg_env - seg_raw) * 1e3:.2f} ms; pre-upload gate (verify) {seg_verify * 1e3:.2f} ms")
    epoch_wrapping(hub, devs, sid, seg, a.reps)


def epoch_wrapping(hub: HubIdentity, devs: list[DeviceIdentity], sid: bytes, seg: bytes, reps: int) -> None:
    """Seal cost: epoch keys (v2, EpochRecipient) against long-term keys (v2 and v1), same run."""
    longterm = [d.public for d in devs]
    epoch = [EpochRecipient(d.public, 490_000 + i, PrivateKey.generate().public_key) for i, d in enumerate(devs)]
    cases = {
        "long-term, v1 layout": lambda data: env.seal(data, {}, hub, longterm, sid, format_version=1),
        "long-term, v2": lambda data: env.seal(data, {}, hub, longterm, sid),
        "epoch keys, v2": lambda data: env.seal(data, {}, hub, epoch, sid),
    }
    for label, data, rounds in (("fixed cost (empty clip)", b"", 200), (f"{len(seg) / 2**20:g} MiB segment", seg, 5)):
        best_t = dict.fromkeys(cases, float("inf"))
        for _ in range(max(reps, 3)):  # interleaved: background load hits every case alike
            for name, fn in cases.items():
                best_t[name] = min(best_t[name], min(best(lambda f=fn, d=data: f(d), 1) for _ in range(rounds)))
        base = best_t["long-term, v2"]
        print(f"seal with epoch wrapping, {label}, {len(devs)} recipients:")
        for name, t in best_t.items():
            print(f"  {name:22s}: {t * 1e3:8.3f} ms  ({(t / base - 1) * 100:+.1f}% vs long-term v2)")


if __name__ == "__main__":
    run_main(main)
