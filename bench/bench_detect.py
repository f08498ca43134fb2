#!/usr/bin/env python3
"""Benchmark: detector inference time per model and input size, and the detection analyzer's frame rate.

In one run, for every model installed in the cache (installing the shared
ones into a temporary cache when `--from DIR` is given):
- milliseconds per `detect()` call (pre-processing + ONNX Runtime + decode +
  NMS) on a 1280x720 and a 1920x1080 frame, median of `--runs` after warm-up,
  and the share of it spent inside `session.run`;
- the `DetectionAnalyzer` with the default config (faces every frame,
  objects every 5th) on 720p and 1080p frames: frames per second;
- peak RSS of a process that loaded the two default models (measured in a
  child process so other models do not count).

ONNX Runtime uses the config's thread settings (default 1 intra-op thread).

Usage: .venv/bin/python bench/bench_detect.py [--from ../shared/models] [--runs 20] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchargs import positive_int, run_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = ((1280, 720), (1920, 1080))


def _frame(w: int, h: int):  # type: ignore[no-untyped-def]
    import cv2

    from agent.lab.shared_data import shared_file

    # The group photo (many faces) letterboxed into the frame size, like a wide camera view.
    img = cv2.imread(str(shared_file("fixtures", "coco_val2017_000000001000.jpg")))
    return cv2.resize(img, (w, h))


def bench_models(cache: Path, runs: int, threads: int) -> list[dict]:
    from agent.config import DEFAULT_THRESHOLDS, OnnxRuntimeConfig
    from agent.detect.registry import load_detector
    from models.install import load_manifest, verify

    installed = {r.name for r in verify(cache=cache) if r.ok}
    onnx = OnnxRuntimeConfig(intra_op_threads=threads)
    rows = []
    for entry in load_manifest().values():
        if not entry.is_model or entry.name not in installed:
            continue
        det = load_detector(entry.name, cache=cache, onnx=onnx, thresholds=DEFAULT_THRESHOLDS,
                            wanted=frozenset({"face", "person", "bed", "toilet", "sink"}))
        sess = det.session  # type: ignore[attr-defined]
        for w, h in SIZES:
            img = _frame(w, h)
            for _ in range(3):
                det.detect(img)
            total: list[float] = []
            infer: list[float] = []
            real_run = sess.run

            def timed_run(*a, _real=real_run, _infer=infer, **k):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                out = _real(*a, **k)
                _infer.append(time.perf_counter() - t)
                return out

            sess.run = timed_run
            try:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    n = len(det.detect(img))
                    total.append(time.perf_counter() - t0)
            finally:
                sess.run = real_run
            in_w, in_h = det.input_size_for(w, h)  # type: ignore[attr-defined]
            rows.append({
                "model": entry.name, "frame": f"{w}x{h}", "input": f"{in_w}x{in_h}",
                "ms_per_detect": round(statistics.median(total) * 1000, 2),
                "ms_in_onnxruntime": round(statistics.median(infer) * 1000, 2),
                "detections": n,
            })
        del det
    return rows


def bench_analyzer(cache: Path, frames: int, threads: int) -> list[dict]:
    from agent.analysis.factory import build_detection_analyzer
    from agent.clock import SystemClock
    from agent.config import DetectionConfig
    from agent.core.datatypes import Frame

    cfg = DetectionConfig(model_cache=str(cache), onnxruntime={"intra_op_threads": threads})
    clock = SystemClock()
    a = build_detection_analyzer(cfg, "bench", clock, lambda e: None)
    rows = []
    for w, h in SIZES:
        img = _frame(w, h)
        for i in range(5):
            a.analyze(Frame("bench", i, i / 15, clock.monotonic(), img.copy()))
        t0 = time.perf_counter()
        for i in range(frames):
            out = a.analyze(Frame("bench", 5 + i, (5 + i) / 15, clock.monotonic(), img.copy()))
            assert not out.faults, out.faults
        dt = time.perf_counter() - t0
        rows.append({"frame": f"{w}x{h}", "analysis_fps": round(frames / dt, 1),
                     "ms_per_frame": round(dt / frames * 1000, 2)})
    return rows


def child_rss(cache: Path) -> None:
    """Run in a child: load the two default models, analyse one 1080p frame, print peak RSS (MiB)."""
    from agent.analysis.factory import build_detection_analyzer
    from agent.clock import SystemClock
    from agent.config import DetectionConfig
    from agent.core.datatypes import Frame

    a = build_detection_analyzer(DetectionConfig(model_cache=str(cache)), "rss", SystemClock(), lambda e: None)
    a.analyze(Frame("rss", 0, 0.0, 0.0, _frame(1920, 1080)))
    # VmHWM belongs to this process image; ru_maxrss can carry the parent's peak across fork+exec.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                print(int(line.split()[1]) / 1024)
                return
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", help="model cache (default: $EPA_MODEL_CACHE or the user cache)")
    p.add_argument("--from", dest="from_dir", help="install every model found here into a temporary cache first")
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--frames", type=positive_int, default=60, help="frames per size for the analyzer fps")
    p.add_argument("--threads", type=positive_int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        child_rss(Path(args.child_rss))
        return 0

    from models.install import cache_dir, install, load_manifest

    with tempfile.TemporaryDirectory(prefix="epa-bench-models-") as tmp:
        cache = cache_dir(args.cache)
        if args.from_dir:
            cache = Path(tmp)
            names = [e.name for e in load_manifest().values() if (Path(args.from_dir) / e.file).exists()]
            install(names, from_dir=args.from_dir, cache=cache)
        models = bench_models(cache, args.runs, args.threads)
        analyzer = bench_analyzer(cache, args.frames, args.threads)
        rss = float(subprocess.run([sys.executable, __file__, "--child-rss", str(cache)], check=True,
                                   capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f"{'model':<18} {'frame':<10} {'input':<10} {'ms/detect':>10} {'ms in ORT':>10} {'dets':>5}")
    for r in models:
        print(f"{r['model']:<18} {r['frame']:<10} {r['input']:<10} {r['ms_per_detect']:>10} "
              f"{r['ms_in_onnxruntime']:>10} {r['detections']:>5}")
    print()
    for r in analyzer:
        print(f"DetectionAnalyzer (defaults: faces every frame, objects every 5th) {r['frame']}: "
              f"{r['analysis_fps']} fps ({r['ms_per_frame']} ms/frame)")
    print(f"peak RSS with both default models loaded, one 1080p frame analysed: {rss:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "models": models, "analyzer": analyzer,
                                               "peak_rss_mib": round(rss, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
