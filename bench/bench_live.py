#!/usr/bin/env python3
"""Benchmark: `privacy-agent run` on live RTSP cameras in real time, with 1, 2 and 4 cameras.

Recorded 720p clips are served as RTSP cameras on loopback (`bench/rtsp_serve.py`, GStreamer's RTSP
server under the system Python, in its own process) at their frame rate (15 fps), looping, without
re-encoding: the clips are H.264 with a 1 s GOP and no B-frames, as many IP cameras send. The clips:
the real CCTV clip `../shared/fixtures/opencv_vtest.avi` (people walking in a hall, 768x576 at
10 fps), scaled and cropped to 1280x720 and played at 15 fps, and the `faces` fixture
(`privacy-agent fixtures make`, people moving over real photos) at 1280x720 and 15 fps; the cameras
alternate between the two. The agent reads them with its RTSP source (PyAV/FFmpeg over TCP).

Each camera count gets two runs on the same streams, each in a fresh process:
- baseline: the same streams decoded only (the agent's own source, PyAV with one thread per camera, nothing else);
- agent: `privacy-agent run` (default detection, encrypted clips to a directory sink, 10 s
  segments) through `bench/live_probe.py`, which observes without changing anything and stops the
  run with SIGTERM after `--seconds`.
Figures come from the window after `--warmup` seconds (connection, model loading). Per camera:
frames received (fps, against the 15 fps served), released (and of them `shed`: released under load,
their face run skipped and the faces of the frames beside them used, `detection.under_load`), withheld for lag (`lag`, and the frame
before each lag stretch, `ahead:lag`) or busy analysis (`analysis_busy`, `analysis_timeout`),
capture-to-sealed latency (median, p95: from when the camera sent the frame, by the stream's own
timestamps, to the sink's write returning, the frame encoded); per run: process CPU
ms per frame and where it goes (exclusive thread CPU per stage), RSS peak and steady (median).
Targets (x86, 2 cores): 4 cameras with 0 frames withheld for lag and p95 < 1 s; one camera's
process <= 200 MiB peak, each further camera < 100 MiB.

`--lean-malloc` adds a third run per camera count: the agent again, with glibc's mmap threshold
fixed at 1 MiB (`GLIBC_TUNABLES`, as `deploy/privacy-agent.service` can set it on a hub short of
memory), and prints it beside the default run: less memory, more CPU (every frame buffer is a
fresh mapping, faulted in page by page).

The machine may be shared: CPU seconds per frame are the figure to trust, wall-clock rates less so.

Needs GStreamer's RTSP server for the system Python. As root the bench installs it with apt-get
(the packages in `APT_PACKAGES`); otherwise it prints the command.

Usage: .venv/bin/python bench/bench_live.py [--cameras 1,2,4] [--seconds 75] [--warmup 15]
       [--baseline-seconds 35] [--lean-malloc] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from benchargs import positive_float, positive_ints, run_main

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared"
AGENT = [sys.executable, "-m", "agent"]
SYSTEM_PY = "/usr/bin/python3"
APT_PACKAGES = ["python3-gi", "gir1.2-gstreamer-1.0", "gir1.2-gst-plugins-base-1.0", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-base",
                "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad"]
FPS = 15
SIZE = (1280, 720)
TARGET_P95_S = 1.0
TARGET_FIRST_MIB = 200.0
TARGET_EXTRA_MIB = 100.0
#: Share of the served frame rate a camera must be read at to count as keeping up.
KEEP_UP = 0.98
#: Stages of the agent's process CPU, in pipeline order, as `live_probe.py` names them.
STAGE_ORDER = ["decode", "analyze:tamper", "analyze:motion", "analyze:foreground", "analyze:detection:faces",
               "infer:faces", "analyze:detection:objects", "infer:objects", "policy", "redact", "encode", "seal",
               "store"]
# The agent reads RTSP over TCP (its FFmpeg options, `OPENCV_FFMPEG_CAPTURE_OPTIONS`): loopback UDP drops packets whenever the machine is busy,
# which would measure the socket buffer instead of the agent.
RTSP_ENV = {"OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp"}
#: The opt-in for a hub short of memory (`--lean-malloc`; the service unit's commented line).
LEAN_MALLOC_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}

CHECK_GST = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "missing=[e for e in ('appsrc','h264parse','rtph264pay','appsink','filesrc') "
             "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")


def ensure_gstreamer() -> None:
    """GStreamer's RTSP server for the system Python: installed with apt-get as root, else explained."""

    def missing() -> str | None:
        if not os.path.exists(SYSTEM_PY):
            return f"{SYSTEM_PY} not found"
        r = subprocess.run([SYSTEM_PY, "-c", CHECK_GST], capture_output=True, text=True)
        if r.returncode != 0:
            return (r.stderr.strip().splitlines() or ["cannot import gi"])[-1]
        return f"GStreamer elements missing: {r.stdout.strip()}" if r.stdout.strip() else None

    why = missing()
    if why is None:
        return
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"bench_live: {why}; install the RTSP server first: sudo {' '.join(cmd)}")
    print(f"bench_live: {why}; installing {' '.join(APT_PACKAGES)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    why = missing()
    if why is not None:
        raise SystemExit(f"bench_live: still missing after apt-get: {why}")


#: Withheld for lag: behind the camera, or the frame just before such a stretch (look-ahead).
LAG_KINDS = ("lag", "ahead:lag")


def _lagged(reasons: dict[str, int]) -> int:
    return sum(reasons.get(k, 0) for k in LAG_KINDS)


# --- clips ---------------------------------------------------------------------------


def encode_annexb(frames: Any, out: Path) -> int:
    """H.264 Annex-B at 1280x720, FPS: 1 s GOP, no B-frames, one slice per frame (an IP camera's)."""
    import av
    import cv2
    import numpy as np

    w, h = SIZE
    container = av.open(str(out), "w", format="h264")
    st: Any = container.add_stream("libx264", rate=Fraction(FPS))
    st.width, st.height, st.pix_fmt = w, h, "yuv420p"
    st.thread_type = "FRAME"  # slice threads would cut every frame into slices
    st.options = {"preset": "veryfast", "crf": "23", "g": str(FPS), "bf": "0"}
    n = 0
    for img in frames:
        ih, iw = img.shape[:2]
        scale = max(w / iw, h / ih)  # cover, then crop the middle: no bars, no stretching
        img = cv2.resize(img, (max(w, round(iw * scale)), max(h, round(ih * scale))), interpolation=cv2.INTER_AREA)
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w]), format="bgr24")
        vf.pts = n
        n += 1
        for p in st.encode(vf):
            container.mux(p)
    for p in st.encode(None):
        container.mux(p)
    container.close()
    return n


def video_frames(path: Path) -> Any:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


def make_clips(t: Path, env: dict[str, str]) -> dict[str, Path]:
    clips: dict[str, Path] = {}
    vtest = SHARED / "fixtures" / "opencv_vtest.avi"
    if vtest.exists():
        clips["vtest"] = t / "vtest.h264"
        if not clips["vtest"].exists():  # a kept work directory keeps its clips
            encode_annexb(video_frames(vtest), clips["vtest"])
    else:
        print(f"note: {vtest} not found; every camera serves the faces fixture", file=sys.stderr)
    clips["faces"] = t / "faces.h264"
    if not clips["faces"].exists():
        subprocess.run([*AGENT, "fixtures", "make", "--out", str(t / "fx"), "--scenario", "faces", "--size",
                        f"{SIZE[0]}x{SIZE[1]}", "--fps", str(FPS), "--seconds", "20"], check=True,
                       capture_output=True, env=env, cwd=t)
        encode_annexb(video_frames(t / "fx" / "faces" / "video.mp4"), clips["faces"])
    return clips


# --- the server ------------------------------------------------------------------------


class Server:
    def __init__(self, mounts: dict[str, Path], t: Path) -> None:
        ready = t / "rtsp.port"
        ready.unlink(missing_ok=True)  # a kept work directory has the last run's
        args = [SYSTEM_PY, str(BENCH / "rtsp_serve.py"), "--fps", str(FPS), "--ready", str(ready)]
        for name, path in mounts.items():
            args += ["--clip", f"{name}={path}"]
        self.log = (t / "rtsp.log").open("w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench_live: the RTSP server did not start; see {t / 'rtsp.log'}")
            time.sleep(0.2)
        self.port = int(ready.read_text().strip())

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# --- the runs --------------------------------------------------------------------------

DECODE_ONLY = r"""
import json, os, statistics, sys, threading, time
from agent.errors import AgentError, DamagedFrameError
from agent.media.sources import open_source  # the agent's own decoder, nothing after it
urls, warmup, seconds, out = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
counts = {u: 0 for u in urls}
window = {"open": False}
stop = threading.Event()
def read(u):
    src = None
    while not stop.is_set():
        try:
            src = src or open_source(u)
            src.read()
        except DamagedFrameError:
            pass
        except AgentError:
            if src is not None:
                src.close()
            src = None; time.sleep(0.1); continue
        if window["open"]:
            counts[u] += 1
    if src is not None:
        src.close()
ts = [threading.Thread(target=read, args=(u,), daemon=True) for u in urls]
t0 = time.monotonic()
for t in ts: t.start()
time.sleep(max(0.0, warmup - (time.monotonic() - t0)))
c0, w0 = os.times(), time.monotonic(); window["open"] = True
rss = []
while time.monotonic() - t0 < seconds:
    time.sleep(0.5)
    rss.append(int([l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]) / 1024)
window["open"] = False
c1, w1 = os.times(), time.monotonic()
stop.set()
frames = sum(counts.values())
cpu = (c1.user - c0.user) + (c1.system - c0.system)
peak = int([l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]) / 1024
json.dump({"window_s": w1 - w0, "frames": frames, "fps": {u: n / (w1 - w0) for u, n in counts.items()},
           "cpu_ms_per_frame": cpu / frames * 1e3 if frames else None, "rss_peak_mib": peak,
           "rss_steady_mib": statistics.median(rss) if rss else None}, open(out, "w"))
os._exit(0)
"""


def decode_only(urls: list[str], warmup: float, seconds: float, t: Path, env: dict[str, str]) -> dict[str, Any]:
    out = t / f"decode{len(urls)}.json"
    subprocess.run([sys.executable, "-c", DECODE_ONLY, json.dumps(urls), str(warmup), str(seconds), str(out)],
                   check=True, env=env, cwd=t, timeout=seconds + 120)
    return dict(json.loads(out.read_text()))


def use_models(source: str, t: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment that gives every agent run checked models: without them every frame is withheld
    (`model_missing`), and the figures would measure a camera that analyses nothing."""
    if source == "cache":
        check = subprocess.run([*AGENT, "models", "verify"], capture_output=True, text=True, env=env, cwd=t)
        if check.returncode != 0:
            raise SystemExit("bench_live: the model cache does not hold the default models "
                             f"({(check.stderr or check.stdout).strip().splitlines()[-1:]}); "
                             "run `privacy-agent models install --from DIR` or pass --models DIR")
        return env
    if not Path(source).is_dir():
        raise SystemExit(f"bench_live: --models {source}: no such directory (the detector models to install; "
                         "'cache' uses the user's cache)")
    cache = t / "models"
    env = {**env, "EPA_MODEL_CACHE": str(cache)}
    done = subprocess.run([*AGENT, "models", "install", "--from", source], capture_output=True, text=True,
                          env=env, cwd=t)
    if done.returncode != 0:
        raise SystemExit(f"bench_live: installing the models from {source} failed: "
                         f"{(done.stderr or done.stdout).strip()}")
    return env


def agent_run(n: int, server: Server, cams: list[str], a: argparse.Namespace, t: Path,
              env: dict[str, str]) -> dict[str, Any]:
    data, clips = t / f"data{n}", t / f"clips{n}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(clips, ignore_errors=True)
    subprocess.run([*AGENT, "keys", "init", "--data", str(data)], check=True, capture_output=True, env=env, cwd=t)
    clips.mkdir()
    subprocess.run([*AGENT, "sink", "init", str(clips)], check=True, capture_output=True, env=env, cwd=t)
    cameras = "".join(f"  - id: cam{i}\n    source: {server.url(m)}\n    fps: {FPS}\n" for i, m in enumerate(cams))
    cfg = t / f"live{n}.yaml"
    # The faces fixture pans over its photos, which the tamper check rightly calls a moved camera
    # (withheld until relearned): the check is off so every camera's frames go the whole way.
    cfg.write_text(f"data_dir: {data}\nanalysis: {{tamper: {{moved_enabled: false}}}}\n"
                   f"recipients: [{t / 'owner.key.pub'}]\n"
                   f"sinks:\n  - type: directory\n    path: {clips}\n    segment_s: 10\n"
                   f"cameras:\n{cameras}")
    out = t / f"agent{n}.json"
    log = t / f"agent{n}.log"
    with log.open("w") as lf:
        subprocess.run([sys.executable, str(BENCH / "live_probe.py"), "--out", str(out), "--warmup", str(a.warmup),
                        "--seconds", str(a.seconds), "--", "run", "--config", str(cfg)],
                       env=env, cwd=t, stdout=lf, stderr=subprocess.STDOUT, timeout=a.seconds + 120)
    if not out.exists():
        raise SystemExit(f"bench_live: the agent run with {n} camera(s) left no figures; see {log}")
    fig = dict(json.loads(out.read_text()))
    # A camera that could not load a model withholds every frame and costs almost nothing: such a
    # run's figures say nothing about the agent, so they are refused rather than reported as met.
    missing = sorted({r for c in fig["cameras"].values() for r in c["reasons"] if r.startswith("model_")})
    if missing:
        raise SystemExit(f"bench_live: the agent run with {n} camera(s) withheld frames for {', '.join(missing)}: "
                         f"its detectors did not run, so it has no figures; see {log}")
    fig["clips_written"] = len(list(clips.rglob("*.epaclip")))
    return fig


# --- report ----------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.0f}"


def report_lean(pairs: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
    """The default run beside the lean-malloc run, per camera count."""
    print(f"\nglibc's mmap threshold fixed at 1 MiB ({LEAN_MALLOC_ENV['GLIBC_TUNABLES']}) beside the default:")
    print(f"{'cams':>4} | {'CPU ms/frame':>12} {'(default)':>9} | {'RSS peak':>8} {'(default)':>9} | "
          f"{'steady':>6} {'(default)':>9} | {'lag':>3} {'(default)':>9} | {'slowest fps':>11} {'(default)':>9}")

    def lag(f: dict[str, Any]) -> int:
        return sum(_lagged(c["reasons"]) for c in f["cameras"].values())

    def slowest(f: dict[str, Any]) -> float:
        return min(c["received"] for c in f["cameras"].values()) / f["window_s"]

    for n, fig, lean in pairs:
        print(f"{n:>4} | {lean['cpu_ms_per_frame']:12.1f} {fig['cpu_ms_per_frame']:9.1f} | "
              f"{lean['rss_peak_mib']:8.0f} {fig['rss_peak_mib']:9.0f} | {lean['rss_steady_mib']:6.0f} "
              f"{fig['rss_steady_mib']:9.0f} | {lag(lean):>3} {lag(fig):>9} | {slowest(lean):11.2f} {slowest(fig):9.2f}")


def report(rows: list[tuple[int, list[str], dict[str, Any], dict[str, Any]]], a: argparse.Namespace) -> None:
    print(f"\nper camera (window {a.seconds - a.warmup:g} s after {a.warmup:g} s warm-up; served at {FPS} fps):")
    print(f"{'cams':>4} {'camera':>6} {'clip':>6} | {'recv fps':>8} {'(decode)':>8} | {'released':>8} "
          f"{'shed':>5} | {'lag':>5} {'busy':>5} {'other':>5} | {'lat med ms':>10} {'p95 ms':>7} {'max ms':>7}")
    for n, cams, base, fig in rows:
        window = fig["window_s"]
        for i, clip in enumerate(cams):
            c = fig["cameras"].get(f"cam{i}", {"received": 0, "released": 0, "withheld": 0, "reasons": {}})
            r = c["reasons"]
            lag = _lagged(r)
            busy = r.get("analysis_busy", 0) + r.get("analysis_timeout", 0)
            base_fps = list(base["fps"].values())[i]
            print(f"{n:>4} {'cam' + str(i):>6} {clip:>6} | {c['received'] / window:8.2f} {base_fps:8.2f} | "
                  f"{c['released']:>8} {c.get('under_load', 0):>5} | {lag:>5} {busy:>5} {c['withheld'] - lag - busy:>5} | "
                  f"{_ms(c.get('latency_median_s')):>10} {_ms(c.get('latency_p95_s')):>7} "
                  f"{_ms(c.get('latency_max_s')):>7}")
            others = {k: v for k, v in r.items() if k not in (*LAG_KINDS, "analysis_busy", "analysis_timeout")}
            if others:
                print(f"{'':>18}   other withhold reasons: {others}")
    print("\nper run (process CPU per frame received; RSS of the whole process):")
    print(f"{'cams':>4} | {'CPU ms/frame':>12} {'(decode)':>8} | {'RSS peak':>8} {'(decode)':>8} "
          f"{'steady':>7} {'(decode)':>8} | {'clips':>5}")
    for n, _cams, base, fig in rows:
        print(f"{n:>4} | {fig['cpu_ms_per_frame']:12.1f} {base['cpu_ms_per_frame']:8.1f} | "
              f"{fig['rss_peak_mib']:8.0f} {base['rss_peak_mib']:8.0f} {fig['rss_steady_mib']:7.0f} "
              f"{base['rss_steady_mib']:8.0f} | {fig['clips_written']:>5}")
    print("\nwhere the CPU goes (exclusive thread CPU, ms per frame received):")
    stages = sorted({s for _n, _c, _b, f in rows for s in f["stages_cpu_s"]},
                    key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
    print(f"{'stage':>26} | " + " ".join(f"{str(n) + ' cam':>7}" for n, *_ in rows))
    for s in [*stages, "other"]:
        vals = []
        for _n, _c, _b, f in rows:
            if s == "other":
                v = f["process_cpu_s"] - sum(f["stages_cpu_s"].values())
            else:
                v = f["stages_cpu_s"].get(s, 0.0)
            vals.append(f"{v / f['frames'] * 1e3:7.2f}" if f["frames"] else f"{'-':>7}")
        print(f"{s:>26} | " + " ".join(vals))
    print("  (other: threads outside the stages above: queues and thread hand-offs, codec worker threads,"
          " the service)")
    print("\nthe same CPU by thread (ms per frame received; native: FFmpeg's decoder and x264's worker threads,"
          " ONNX Runtime's pools):")
    groups = sorted({g for _n, _c, _b, f in rows for g in f.get("threads_cpu_s", {})})
    for g in groups:
        vals = [f"{f['threads_cpu_s'].get(g, 0.0) / f['frames'] * 1e3:7.2f}" if f["frames"] else f"{'-':>7}"
                for _n, _c, _b, f in rows]
        print(f"{g[:40]:>40} | " + " ".join(vals))
    by_n = {n: f for n, _c, _b, f in rows}
    for n, f in sorted(by_n.items()):
        lag = sum(_lagged(c["reasons"]) for c in f["cameras"].values())
        p95 = max((c["latency_p95_s"] or 0.0) for c in f["cameras"].values())
        # A camera read slower than it sends: its frames wait in the network, and are withheld for
        # lag once too far behind it (the agent catches up by skipping them). Only a reader more
        # than the server's own 2 s buffer behind would lose frames before the agent sees them.
        slowest = min(c["received"] for c in f["cameras"].values()) / f["window_s"]
        ok = lag == 0 and p95 < TARGET_P95_S and slowest >= KEEP_UP * FPS
        print(f"\n{'target ' if n == 4 else ''}{n} camera(s): {lag} frames withheld for lag (target 0), worst p95 "
              f"{p95 * 1e3:.0f} ms (target < {TARGET_P95_S * 1e3:.0f}), slowest camera read at {slowest:.2f} of "
              f"{FPS} fps (target >= {KEEP_UP * FPS:.2f}): {'met' if ok else 'NOT met'}")
    if 1 in by_n:
        first = by_n[1]["rss_peak_mib"]
        line = f"target memory: one camera {first:.0f} MiB peak (target <= {TARGET_FIRST_MIB:.0f})"
        extra = [(n, (by_n[n]["rss_peak_mib"] - first) / (n - 1)) for n in sorted(by_n) if n > 1]
        if extra:
            line += "; per further camera " + ", ".join(f"{e:.0f} MiB ({n} cams)" for n, e in extra)
            line += f" (target < {TARGET_EXTRA_MIB:.0f})"
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=positive_ints, default=[1, 2, 4], help="camera counts to run, comma-separated")
    ap.add_argument("--seconds", type=positive_float, default=75.0, help="length of each agent run")
    ap.add_argument("--warmup", type=positive_float, default=15.0, help="seconds left out of the figures at the start")
    ap.add_argument("--baseline-seconds", type=positive_float, default=35.0, help="length of each decode-only run")
    ap.add_argument("--lean-malloc", action="store_true",
                    help="also run the agent with glibc's mmap threshold fixed at 1 MiB, and compare")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--keep", help="work in this directory (kept) instead of a temporary one")
    ap.add_argument("--models", default=str(SHARED / "models"),
                    help="install the detector models from this directory (sha256-checked) into the work "
                         "directory's own cache; 'cache' uses the user's cache as it is (default: %(default)s)")
    a = ap.parse_args()
    counts: list[int] = a.cameras
    # Figures come from the window after the warmup: a run no longer than it has no figures at all.
    if a.seconds <= a.warmup:
        ap.error(f"--seconds {a.seconds:g} must be longer than --warmup {a.warmup:g}")
    if a.baseline_seconds <= min(a.warmup, 10.0):
        ap.error(f"--baseline-seconds {a.baseline_seconds:g} must be longer than the decode-only warmup "
                 f"({min(a.warmup, 10.0):g} s, the smaller of --warmup and 10)")
    ensure_gstreamer()
    env = {**os.environ, **RTSP_ENV}
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine inflates wall-clock figures)")
    with tempfile.TemporaryDirectory() as td:
        t = Path(a.keep) if a.keep else Path(td)
        t.mkdir(parents=True, exist_ok=True)
        env = use_models(a.models, t, env)
        clips = make_clips(t, env)
        names = list(clips)
        most = max(counts)
        mounts = {f"m{i}": clips[names[i % len(names)]] for i in range(most)}
        cam_clips = [names[i % len(names)] for i in range(most)]
        if not (t / "owner.key.pub").exists():
            subprocess.run([*AGENT, "owner", "keygen", "--out", str(t / "owner.key"), "--name", "bench"],
                           check=True, capture_output=True, env=env, cwd=t)
        server = Server(mounts, t)
        rows = []
        lean_pairs = []
        try:
            for n in counts:
                urls = [server.url(f"m{i}") for i in range(n)]
                base = decode_only(urls, min(a.warmup, 10.0), a.baseline_seconds, t, env)
                fig = agent_run(n, server, [f"m{i}" for i in range(n)], a, t, env)
                rows.append((n, cam_clips[:n], base, fig))
                print(f"{n} camera(s): {fig['cpu_ms_per_frame']:.1f} ms CPU per frame "
                      f"(decode only {base['cpu_ms_per_frame']:.1f}), peak RSS {fig['rss_peak_mib']:.0f} MiB",
                      flush=True)
                if a.lean_malloc:
                    lean = agent_run(n, server, [f"m{i}" for i in range(n)], a, t, {**env, **LEAN_MALLOC_ENV})
                    lean_pairs.append((n, fig, lean))
                    print(f"{n} camera(s), lean malloc: {lean['cpu_ms_per_frame']:.1f} ms CPU per frame, "
                          f"peak RSS {lean['rss_peak_mib']:.0f} MiB", flush=True)
        finally:
            server.stop()
        report(rows, a)
        if lean_pairs:
            report_lean(lean_pairs)
        if a.json:
            lean_by_n = {n: lean for n, _f, lean in lean_pairs}
            Path(a.json).write_text(json.dumps([{"cameras": n, "clips": c, "decode_only": b, "agent": f,
                                                 "agent_lean_malloc": lean_by_n.get(n)}
                                                for n, c, b, f in rows], indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
