"""Access-flow latency and event throughput on a loopback Mosquitto (TLS, password file, ACL).

    .venv/bin/python bench/bench_mqtt.py [--rounds 50] [--events 5000]

Measures, in one run, through the real hub service (signature checks, audit log with fsync,
retained challenge) and real clients:
- request -> challenge: a requester publishes a signed request; time until an owner device
  subscribed to challenges receives the hub's signed challenge. Target < 100 ms.
- approval -> grant: the owner publishes a signed approval carrying one clip key (re-wrapped to
  the requester and sealed to the hub's box key for release); time until the requester receives
  the hub's signed grant (clip index lookup, release, audit with fsync). Target < 100 ms.
- sustained events/s: events committed to the durable outbox (SQLite) and delivered at QoS 1 to
  a subscriber, end to end; plus the rate of `put` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchargs import positive_int, run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "mqtt"))

from mosquitto import USERS, Broker  # noqa: E402

from agent import access as A  # noqa: E402
from agent.access.audit import AuditLog  # noqa: E402
from agent.access.state import init_state  # noqa: E402
from agent.crypto.envelope import seal, unwrap_key, wrap_key  # noqa: E402
from agent.crypto.keys import DeviceIdentity, HubIdentity, RequesterEntry, RosterEntry, sign_roster  # noqa: E402
from agent.mqtt.client import Message, MqttClient  # noqa: E402
from agent.mqtt.hub import HubAccessService  # noqa: E402
from agent.mqtt.outbox import Deduper, Outbox  # noqa: E402
from agent.topics import Topics  # noqa: E402

PREFIX = "epa-bench"


def _client(b: Broker, user: str, cid: str, availability: bool = False) -> MqttClient:
    c = MqttClient(b.host, b.port, client_id=cid, topics=Topics(PREFIX), username=user, password=USERS[user],
                   ca_file=b.ca_file, availability=availability, reconnect_min_s=0.1, reconnect_max_s=1)
    c.start()
    return c


class Waiter:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: dict[str, float] = {}

    def mark(self, key: str) -> None:
        with self.cond:
            self.got.setdefault(key, time.perf_counter())
            self.cond.notify_all()

    def wait(self, key: str, timeout_s: float = 10) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.got, timeout_s):
                raise TimeoutError(key)
            return self.got[key]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]


def bench_access(b: Broker, work: Path, rounds: int) -> tuple[list[float], list[float]]:
    hub = HubIdentity.generate()
    alice = DeviceIdentity.generate("alice")
    plumber = DeviceIdentity.generate("plumber")
    roster = sign_roster(alice, 1, [RosterEntry(alice.public, "owner")], hub_key_id=hub.key_id,
                         requesters=[RequesterEntry(plumber.public, "contractor")])
    init_state(work)
    now_ms = int(time.time() * 1000)
    _, clip_info = seal(b"\x00" * 4096, {"camera_id": "porch"}, hub, [alice.public], bytes(16))
    meta = A.ClipMeta(clip_info.clip_id_hex, "porch", now_ms - 600_000, now_ms - 570_000)
    clip_key = unwrap_key(alice, clip_info.header)
    hub_client = _client(b, "hub", "bench-hub", availability=True)
    svc: list[HubAccessService] = []
    audit = AuditLog(work / "audit", hub=hub, on_checkpoint=lambda cp: svc[0].publish_checkpoint(cp) if svc else None)
    service = HubAccessService(hub_client, hub, lambda: roster, audit, work / "mqtt",
                               policy=A.AccessPolicy(max_pending=1000, max_pending_per_requester=1000,
                                                     max_pending_per_role=1000),
                               known_cameras=frozenset({"porch"}),
                               clip_lookup=lambda ids: {c: meta for c in ids if c == meta.clip})
    svc.append(service)
    service.start()
    owner = _client(b, "owner", "bench-owner")
    requester = _client(b, "requester", "bench-req")
    t = Topics(PREFIX)
    challenges = Waiter()
    grants = Waiter()
    latest: dict[str, A.Challenge] = {}

    def on_challenge(m: Message) -> None:
        if m.payload and not m.retain:
            ch = A.parse_challenge(m.payload, hub.public)  # the owner device verifies, as it would
            latest[ch.request.request_id] = ch
            challenges.mark(ch.request.request_id)

    def on_grant(m: Message) -> None:
        g = A.parse_grant(m.payload, hub.public)
        grants.mark(g.request_id)

    owner.subscribe(t.access_challenge_filter, on_challenge)
    requester.subscribe(t.access_grant_filter, on_grant)
    r2c: list[float] = []
    a2g: list[float] = []
    scope = A.Scope.make(["porch"], [meta.clip], now_ms - 3_600_000, now_ms)
    for i in range(rounds):
        rid = os.urandom(16)
        req = A.make_request(plumber, hub.key_id, rid, "contractor", scope, "bench", "", now_ms)
        t0 = time.perf_counter()
        requester.publish(t.access_request(rid.hex()), req)
        t1 = challenges.wait(rid.hex())
        r2c.append((t1 - t0) * 1000)
        ch = latest[rid.hex()]
        inner = A.WrappedKey(meta.clip, wrap_key(plumber.public, clip_info.header.clip_id, clip_key).sealed)
        d = A.make_decision(alice, ch, "approve", i + 1, 1, now_ms, scope, A.release_keys(ch, (inner,)))
        t2 = time.perf_counter()
        owner.publish(t.access_decision(ch.challenge_id), d)
        t3 = grants.wait(rid.hex())
        a2g.append((t3 - t2) * 1000)
    for c in (owner, requester, hub_client):
        c.stop()
    audit.close()
    return r2c, a2g


def bench_events(b: Broker, work: Path, n: int) -> tuple[float, float]:
    hub_client = _client(b, "hub", "bench-hub-events", availability=True)
    spy = _client(b, "spy", "bench-spy")
    t = Topics(PREFIX)
    got: list[int] = []
    cond = threading.Condition()
    dedupe = Deduper()

    def on_event(m: Message) -> None:
        e = json.loads(m.payload)
        with cond:
            if dedupe.accept(e):
                got.append(e["seq"])
                cond.notify_all()

    spy.subscribe(t.events, on_event)
    ob = Outbox(work / "outbox.sqlite")
    ob.attach(hub_client)
    t0 = time.perf_counter()
    for i in range(n):
        ob.put_event(t.events, "withheld", "porch", n=i)
    t_put = time.perf_counter() - t0
    with cond:
        if not cond.wait_for(lambda: len(got) >= n, 120):
            raise TimeoutError(f"only {len(got)} of {n} events arrived")
    t_all = time.perf_counter() - t0
    assert got == sorted(got), "events out of order"
    ob.close()
    spy.stop()
    hub_client.stop()
    return n / t_put, n / t_all


def bench_baseline(b: Broker, rounds: int) -> list[float]:
    """Baseline from the same run: a bare publish -> subscriber round on the same broker (TLS, ACL),
    no signatures, no hub, no audit. The access figures minus this is the hub's own cost."""
    sender = _client(b, "hub", "bench-base-pub")
    receiver = _client(b, "owner", "bench-base-sub")
    t = Topics(PREFIX)
    got = Waiter()
    receiver.subscribe(f"{t.prefix}/bench/+", lambda m: got.mark(m.topic.rsplit("/", 1)[-1]))
    receiver.sync()
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        sender.publish(f"{t.prefix}/bench/{i}", b"x" * 512)
        out.append((got.wait(str(i)) - t0) * 1000)
    sender.stop()
    receiver.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=positive_int, default=50)
    ap.add_argument("--events", type=positive_int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        with Broker(work / "broker", prefix=PREFIX) as b:
            # warm-up round (TLS session, imports) not counted
            bench_access(b, work / "warm", 3)
            r2c, a2g = bench_access(b, work / "run", args.rounds)
            base = bench_baseline(b, args.rounds)
            put_rate, e2e_rate = bench_events(b, work, args.events)
    print(f"loopback Mosquitto with TLS, {args.rounds} access flows, {args.events} events")
    print(f"  {'baseline: bare publish':22s} median {statistics.median(base):6.1f} ms   p95 {pct(base, 0.95):6.1f} ms"
          f"   max {max(base):6.1f} ms   (same broker, no hub)")
    for name, xs in (("request -> challenge", r2c), ("approval -> grant", a2g)):
        verdict = "OK" if pct(xs, 0.95) < 100 else "OVER TARGET"
        print(f"  {name:22s} median {statistics.median(xs):6.1f} ms   p95 {pct(xs, 0.95):6.1f} ms   "
              f"max {max(xs):6.1f} ms   (target < 100 ms: {verdict})")
    print(f"  events: outbox put {put_rate:8.0f} /s, end to end (durable, QoS 1, in order) {e2e_rate:8.0f} /s")
    return 0


if __name__ == "__main__":
    run_main(main)
