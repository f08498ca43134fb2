#!/usr/bin/env python3
"""Benchmark: replay throughput with static zones against plain decode+encode of the same clip.

For 720p and 1080p clips rendered from a shared photo, it measures in one run:
- baseline: decode (OpenCV) + encode (H.264 via PyAV, the same encoder settings the agent uses);
- replay: the whole privacy pipeline with static mask zones (analysis, policy, redaction,
  encode, decision log);
- the ratio between the two (goal: masking costs at most 10% over decode+encode);
- peak RSS of each, measured in a child process of its own.

Usage: .venv/bin/python bench/bench_replay.py [--frames 150] [--sizes 1280x720,1920x1080]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchargs import frame_sizes, positive_int, run_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clip(path: Path, w: int, h: int, frames: int) -> None:
    import cv2
    import numpy as np

    from agent.lab.shared_data import shared_file

    bg = cv2.resize(cv2.imread(str(shared_file("fixtures", "coco_val2017_000000000632.jpg"))), (w, h))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (w, h))
    for i in range(frames):
        f = bg.copy()
        x = int((i / frames) * (w - w // 8))
        cv2.rectangle(f, (x, h // 3), (x + w // 8, h - h // 10), (40, 180, 230), -1)
        f[:, :, 1] = np.clip(f[:, :, 1].astype(int) + (i % 5), 0, 255).astype(np.uint8)
        vw.write(f)
    vw.release()


# Static zones only: detection is measured by bench_pipeline.py.
CONFIG = """\
data_dir: {data}
detection: {{enabled: false}}
cameras:
  - id: bench
    source: {clip}
    zones:
      - name: bed
        points: [[0.0, 0.55], [0.6, 0.5], [0.62, 1.0], [0.0, 1.0]]
      - name: window
        points: [[0.35, 0.05], [0.6, 0.05], [0.6, 0.5], [0.35, 0.5]]
      - name: shelf
        points: [[0.65, 0.0], [1.0, 0.0], [1.0, 0.7]]
        style: pixelate
"""


def child_baseline(clip: str) -> dict[str, float]:
    import cv2

    from agent.media.video import VideoEncoder

    cap = cv2.VideoCapture(clip)
    fps = cap.get(cv2.CAP_PROP_FPS) or 15
    n = 0
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sinkf:
        enc = None
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if enc is None:
                enc = _PlainEncoder(sinkf, img.shape[1], img.shape[0], fps)
            enc.write(img)
            n += 1
        if enc is not None:
            enc.close()
    el = time.perf_counter() - t0
    del VideoEncoder
    return {"frames": n, "seconds": el, "fps": n / el}


def child_baseline_threaded(clip: str) -> dict[str, float]:
    """Decode and encode on two threads joined by a small queue, as the pipeline overlaps them."""
    import queue
    import threading

    import cv2

    cap = cv2.VideoCapture(clip)
    fps = cap.get(cv2.CAP_PROP_FPS) or 15
    q: queue.Queue = queue.Queue(maxsize=3)

    def reader() -> None:
        while True:
            ok, img = cap.read()
            q.put(img if ok else None)
            if not ok:
                return

    n = 0
    t0 = time.perf_counter()
    th = threading.Thread(target=reader)
    th.start()
    with open(os.devnull, "wb") as sinkf:
        enc = None
        while (img := q.get()) is not None:
            if enc is None:
                enc = _PlainEncoder(sinkf, img.shape[1], img.shape[0], fps)
            enc.write(img)
            n += 1
        if enc is not None:
            enc.close()
    th.join()
    el = time.perf_counter() - t0
    return {"frames": n, "seconds": el, "fps": n / el}


class _PlainEncoder:
    """Same settings as agent.media.video.VideoEncoder, but takes raw arrays: this is the baseline."""

    def __init__(self, out, w: int, h: int, fps: float) -> None:  # type: ignore[no-untyped-def]
        from fractions import Fraction

        import av

        self.av = av
        self.c = av.open(out, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        self.s = self.c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.s.width, self.s.height, self.s.pix_fmt = w, h, "yuv420p"
        self.s.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
        self.i = 0

    def write(self, img) -> None:  # type: ignore[no-untyped-def]
        vf = self.av.VideoFrame.from_ndarray(img, format="bgr24")
        vf.pts = self.i
        self.i += 1
        for p in self.s.encode(vf):
            self.c.mux(p)

    def close(self) -> None:
        for p in self.s.encode(None):
            self.c.mux(p)
        self.c.close()


def child_replay(clip: str, cfg_path: str, out: str) -> dict[str, float]:
    from agent.config import load_config
    from agent.lab.replay import run_replay

    loaded = load_config(cfg_path)
    t0 = time.perf_counter()
    s = run_replay(clip, loaded, "bench", Path(out))
    el = time.perf_counter() - t0
    return {"frames": s["frames_in"], "seconds": el, "fps": s["frames_in"] / el, "masked": s["masked"]}


def run_child(args: list[str]) -> dict[str, float]:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=positive_int, default=150)
    ap.add_argument("--sizes", type=frame_sizes, default=[(1280, 720), (1920, 1080)],
                    help="frame sizes of the rendered clips, WIDTHxHEIGHT, comma-separated")
    ap.add_argument("--repeat", type=positive_int, default=2, help="runs per measurement; the best is reported")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        fn = {"baseline": child_baseline, "baseline2": child_baseline_threaded, "replay": child_replay}[kind]
        res = fn(*rest)
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0

    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for w, h in a.sizes:
            clip = Path(td) / f"clip_{w}x{h}.mp4"
            make_clip(clip, w, h, a.frames)
            cfg = Path(td) / f"cfg_{w}x{h}.yaml"
            cfg.write_text(CONFIG.format(data=Path(td) / "data", clip=clip))
            base = max((run_child(["baseline", str(clip)]) for _ in range(a.repeat)), key=lambda r: r["fps"])
            base2 = max((run_child(["baseline2", str(clip)]) for _ in range(a.repeat)), key=lambda r: r["fps"])
            rep = max((run_child(["replay", str(clip), str(cfg), str(Path(td) / f"out_{w}")])
                       for _ in range(a.repeat)), key=lambda r: r["fps"])
            rows.append((f"{w}x{h}", base, base2, rep))
    print("decode+encode: sequential in one thread; decode+encode (2 thr): decoder and encoder overlapped on two")
    print("threads like the pipeline's stages. Overhead = time per frame of replay over the 2-thread baseline.")
    print(f"{'clip':>10} | {'dec+enc fps':>11} | {'dec+enc (2 thr)':>15} | {'replay fps':>10} | {'overhead':>8} | "
          f"{'RSS base MiB':>12} | {'RSS replay MiB':>14}")
    for size, base, base2, rep in rows:
        overhead = base2["fps"] / rep["fps"] - 1
        print(f"{size:>10} | {base['fps']:11.1f} | {base2['fps']:15.1f} | {rep['fps']:10.1f} | "
              f"{overhead * 100:7.1f}% | {base2['peak_rss_mib']:12.0f} | {rep['peak_rss_mib']:14.0f}")
    print("goal: static-zone masking costs no more than 10% over decode+encode")
    return 0


if __name__ == "__main__":
    run_main(main)
