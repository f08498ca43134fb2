#!/usr/bin/env python3
"""Run `privacy-agent run` in this process with measurement hooks, for `bench/bench_live.py`.

    .venv/bin/python bench/live_probe.py --out FIGURES.json --warmup 15 --seconds 60 -- run --config C

The agent runs unchanged; the hooks only observe (each wraps a method and calls the original):
- per camera, every frame's decision (`PipelineStats.count`): received, released, withheld and why;
- capture-to-sealed latency of every released frame: from the pipeline's `captured_monotonic_s` (when
  the camera sent the frame, by the stream's timestamps: `agent.media.streamclock`) until the sinks' `write` returned, i.e. the frame is encoded (the muxer hands
  its bytes to the encrypting `ClipWriter` with the next fragment, at most a second later);
- CPU per stage, as exclusive thread CPU time (`time.thread_time`, nested calls subtracted):
  decode (the source's `read`), each analyzer (`analyze`) and each model's inference (`detect`),
  policy, redaction, encode (`VideoEncoder`), seal (`ClipWriter`, plus its hash thread), store
  (segment start/finish: outbox, uploads). Process CPU not inside any of these is "other";
- the process's RSS every 0.5 s.
Figures cover the window from `--warmup` seconds after start to `--seconds`; at `--seconds` the
probe sends itself SIGTERM, which `run` handles as on a hub (clips sealed, summary printed). The
JSON is written at the end of the window, before the stop, so a slow stop cannot lose it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_local = threading.local()
_cpu: dict[str, float] = {}
_calls: dict[str, int] = {}
_lock = threading.Lock()
_window = {"open": False}


def _timed(label: str | Callable[[Any], str], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so its exclusive thread CPU time is added to `label` (callables name it per object)."""

    def wrapper(self: Any, *a: Any, **k: Any) -> Any:
        name = label(self) if callable(label) else label
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(0.0)  # CPU of nested timed calls, taken out of this one
        t0 = time.thread_time()
        try:
            return fn(self, *a, **k)
        finally:
            spent = time.thread_time() - t0
            nested = stack.pop()
            if stack:
                stack[-1] += spent
            if _window["open"]:
                with _lock:
                    _cpu[name] = _cpu.get(name, 0.0) + spent - nested
                    _calls[name] = _calls.get(name, 0) + 1

    return wrapper


def _timed_function(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (a plain function or a bound method) with its exclusive thread CPU added to `label`."""
    timed = _timed(label, lambda _none, *a, **k: fn(*a, **k))
    return lambda *a, **k: timed(None, *a, **k)


def _wrap(cls: type, method: str, label: str | Callable[[Any], str]) -> None:
    setattr(cls, method, _timed(label, getattr(cls, method)))


class Probe:
    def __init__(self) -> None:
        self.cams: dict[str, dict[str, Any]] = {}
        self.captured: dict[tuple[str, int], float] = {}
        self.latency: dict[str, list[float]] = {}
        self.rss: list[float] = []

    def cam(self, cam_id: str) -> dict[str, Any]:
        c = self.cams.get(cam_id)
        if c is None:
            c = self.cams[cam_id] = {"received": 0, "released": 0, "masked": 0, "withheld": 0, "under_load": 0,
                                     "reasons": {}}
        return c

    def install(self) -> None:
        from agent.analysis.detection import DetectionAnalyzer
        from agent.core import pipeline as pl
        from agent.core import redact
        from agent.core.lanes import AnalysisRunner
        # By module path: the package's `seal` is the function, which shadows the module's name.
        hashing = importlib.import_module("agent.crypto.envelope.hashing")
        sealmod = importlib.import_module("agent.crypto.envelope.seal")
        from agent.core.policy import AHEAD, UNDER_LOAD, own_reason
        from agent.media import avsource, sources
        from agent.media.video import VideoEncoder
        from agent.storage.sinks.clips import ClipSink
        from agent.vocab import Action

        probe = self
        count = pl.PipelineStats.count

        def counted(stats: Any, d: Any) -> None:
            count(stats, d)
            if not _window["open"]:
                return
            c = probe.cam(d.camera_id)
            c["received"] += 1
            if d.action is Action.WITHHOLD:
                c["withheld"] += 1
                for r in d.reasons:
                    # By kind, as the bench prints them: lag, zone, ahead:lag (the frame before a stretch).
                    kind = own_reason(r).split(":")[0]
                    kind = AHEAD + kind if r.startswith(AHEAD) else kind
                    c["reasons"][kind] = c["reasons"].get(kind, 0) + 1
            else:
                c["released"] += 1
                if UNDER_LOAD in d.reasons:  # released without a face run of its own (look-ahead's)
                    c["under_load"] += 1
                if d.action is Action.MASK:
                    c["masked"] += 1

        pl.PipelineStats.count = counted  # type: ignore[method-assign]

        redact_frame = pl.CameraPipeline._redact

        def redacted(p: Any, frame: Any, decision: Any, **k: Any) -> Any:
            # Every released frame is redacted here, after it has waited for the next frame's
            # decision (look-ahead): that wait is part of the latency.
            decision, out = redact_frame(p, frame, decision, **k)
            if out is not None:
                probe.captured[(p.camera_id, out.index)] = frame.captured_monotonic_s
            return decision, out

        pl.CameraPipeline._redact = redacted  # type: ignore[method-assign]

        write = pl.CameraPipeline._write

        def written(p: Any, item: Any) -> None:
            write(p, item)
            if isinstance(item, redact.RedactedFrame):
                cap = probe.captured.pop((p.camera_id, item.index), None)
                if cap is not None and _window["open"]:
                    probe.latency.setdefault(p.camera_id, []).append(time.monotonic() - cap)

        pl.CameraPipeline._write = written  # type: ignore[method-assign]

        # Stages: exclusive thread CPU.
        _wrap(sources.VideoCaptureSource, "read", "decode")
        _wrap(avsource.AVSource, "read", "decode")
        init = AnalysisRunner.__init__

        def runner_init(r: Any, analyzers: Any, timeout_s: float) -> None:
            init(r, [_TimedAnalyzer(a) for a in analyzers], timeout_s)

        AnalysisRunner.__init__ = runner_init  # type: ignore[method-assign]
        load = DetectionAnalyzer._load

        def loaded(det: Any, slot: Any) -> Any:
            out = load(det, slot)
            d = slot.detector
            if d is not None and not getattr(d, "_probe_timed", False):
                role = slot.role
                try:
                    d.detect = _timed_function(f"infer:{role}", d.detect)
                    d._probe_timed = True
                except AttributeError:  # a detector with __slots__: its time stays in its analyzer's
                    pass
            return out

        DetectionAnalyzer._load = loaded  # type: ignore[method-assign]
        pl.decide = _timed_function("policy", pl.decide)
        redact.apply = _timed_function("redact", redact.apply)
        _wrap(VideoEncoder, "write", "encode")
        _wrap(VideoEncoder, "close", "encode")
        _wrap(sealmod.ClipWriter, "write", "seal")
        _wrap(sealmod.ClipWriter, "finish", "seal")
        _wrap(ClipSink, "_start", "store")
        _wrap(ClipSink, "_finish", "store")
        worker = hashing._hash_worker

        def hash_worker(*a: Any) -> None:
            # The hash thread is the seal's too; it lives for one clip, so count it when it ends.
            t0 = time.thread_time()
            try:
                worker(*a)
            finally:
                if _window["open"]:
                    with _lock:
                        _cpu["seal"] = _cpu.get("seal", 0.0) + time.thread_time() - t0

        hashing._hash_worker = hash_worker  # type: ignore[assignment]

    def sample_rss(self) -> None:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    self.rss.append(int(line.split()[1]) / 1024)


class _TimedAnalyzer:
    """An analyzer whose `analyze` is timed under its name; everything else goes to the original."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self.analyze = _timed_function(f"analyze:{self.name}", inner.analyze)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def _rss_by_mapping(top: int = 25) -> dict[str, float]:
    """MiB of RSS per mapped file (libraries, models) and for anonymous memory, largest first."""
    sizes: dict[str, float] = {}
    name = "[anon]"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                path = head[5].strip() if len(head) > 5 else ""
                name = os.path.basename(path) if path.startswith("/") else (path or "[anon]")
            elif line.startswith("Rss:"):
                sizes[name] = sizes.get(name, 0.0) + int(line.split()[1]) / 1024
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Per OS thread: (group, CPU seconds). Python threads by name (digits dropped), the rest native."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for tid_s in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid_s}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        tid = int(tid_s)
        name = names.get(tid)
        if name is None:
            group = "native threads (codec and runtime pools)"
        else:
            group = "py:" + "".join(ch for ch in name.split("-cam")[0].split("_")[0] if not ch.isdigit())
        out[tid] = (group, cpu)
    return out


def _thread_cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for tid, (group, cpu) in after.items():
        spent = cpu - before.get(tid, (group, 0.0))[1]
        groups[group] = groups.get(group, 0.0) + spent
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def _peak_rss() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("agent_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.agent_args[1:] if a.agent_args[:1] == ["--"] else a.agent_args
    probe = Probe()
    probe.install()
    from agent.cli import main as cli

    t_start = time.monotonic()

    def watch() -> None:
        nxt = t_start
        cpu0 = None
        wall0 = 0.0
        threads0: dict[int, tuple[str, float]] = {}
        while True:
            nxt += 0.5
            time.sleep(max(0.0, nxt - time.monotonic()))
            now = time.monotonic() - t_start
            if now >= a.warmup and not _window["open"]:
                with _lock:
                    _window["open"] = True
                cpu0, wall0 = os.times(), now
                threads0 = _thread_cpu()
            if _window["open"]:
                probe.sample_rss()
            if now >= a.seconds:
                break
        with _lock:
            _window["open"] = False
        assert cpu0 is not None
        t1 = os.times()
        threads = _thread_cpu_delta(threads0, _thread_cpu())
        cpu_s = (t1.user - cpu0.user) + (t1.system - cpu0.system)
        cams = {}
        for cam_id, c in sorted(probe.cams.items()):
            lat = probe.latency.get(cam_id, [])
            cams[cam_id] = {**c, "latency_median_s": statistics.median(lat) if lat else None,
                            "latency_p95_s": _pct(lat, 0.95), "latency_max_s": max(lat) if lat else None}
        frames = sum(c["received"] for c in probe.cams.values())
        out = {
            "window_s": now - wall0, "process_cpu_s": cpu_s, "frames": frames,
            "cpu_ms_per_frame": cpu_s / frames * 1e3 if frames else None,
            "stages_cpu_s": dict(sorted(_cpu.items())), "stage_calls": dict(sorted(_calls.items())),
            "rss_peak_mib": _peak_rss(), "rss_steady_mib": statistics.median(probe.rss) if probe.rss else None,
            "rss_by_mapping_mib": _rss_by_mapping(),
            "threads_cpu_s": threads,
            "cameras": cams,
        }
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, a.out)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="probe", daemon=True).start()
    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
