#!/usr/bin/env python3
"""Benchmark: peak memory of `privacy-agent run` with 1, 2 and 3 cameras (default detection, both models).

Each camera decodes, analyses with both default models, encodes H.264 and writes encrypted clips
(the default sink) to a directory. The first camera carries the Python runtime and libraries
(OpenCV, ONNX Runtime, FFmpeg, ...) and the model sessions, which cameras with the same detection
settings share; each further camera adds its queues, decoder and encoder. Prints peak RSS for each
count, the marginal cost per camera, and the baseline of the same run: a process that only
imports the agent. Each measurement runs in a fresh child process.

Usage: .venv/bin/python bench/bench_memory.py [--size 1280x720] [--seconds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchargs import frame_size, positive_float, run_main, size_text

REPO = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "agent"]


def peak_of(cmd: list[str], env: dict[str, str]) -> float:
    """Peak RSS (MiB) of `cmd`, measured by a fresh intermediate process so earlier children don't count."""
    probe = ("import json,resource,subprocess,sys;"
             "subprocess.run(json.loads(sys.argv[1]),check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(cmd)], check=True, capture_output=True,
                         text=True, env=env, cwd=REPO)
    return int(out.stdout.strip()) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=frame_size, default=(1280, 720), help="frame size WIDTHxHEIGHT")
    ap.add_argument("--seconds", type=positive_float, default=7.0, help="length of the rendered clip")
    a = ap.parse_args()
    env = dict(os.environ)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as td:
        t = Path(td)
        subprocess.run([*AGENT, "fixtures", "make", "--out", str(t / "fx"), "--scenario", "faces", "--size",
                        size_text(a.size), "--seconds", f"{a.seconds:g}"], check=True, capture_output=True, env=env, cwd=REPO)
        clip = t / "fx" / "faces" / "video.mp4"
        base = peak_of([sys.executable, "-c", "import agent.cli.main; agent.cli.main.build_parser()"], env)
        # Each camera writes encrypted clips, as on a hub: hub identity, one owner device as recipient.
        subprocess.run([*AGENT, "owner", "keygen", "--out", str(t / "owner.key"), "--name", "bench"], check=True,
                       capture_output=True, env=env, cwd=REPO)
        rows = []
        for n in (1, 2, 3):
            data = t / f"d{n}"
            subprocess.run([*AGENT, "keys", "init", "--data", str(data)], check=True, capture_output=True, env=env,
                           cwd=REPO)
            (t / f"clips{n}").mkdir()
            subprocess.run([*AGENT, "sink", "init", str(t / f"clips{n}")], check=True, capture_output=True, env=env,
                           cwd=REPO)
            cams = "".join(f"  - id: cam{i}\n    source: {clip}\n" for i in range(n))
            cfg = t / f"c{n}.yaml"
            # The rendered clip pans, which the tamper check would call a moved camera.
            cfg.write_text(f"data_dir: {data}\nanalysis: {{tamper: {{moved_enabled: false}}}}\n"
                           f"recipients: [{t / 'owner.key.pub'}]\n"
                           f"sinks:\n  - type: directory\n    path: {t / f'clips{n}'}\n    segment_s: 10\n"
                           f"cameras:\n{cams}")
            rows.append((n, peak_of([*AGENT, "run", "--config", str(cfg)], env)))
            if not list((t / f"clips{n}").rglob("*.epaclip")):
                raise SystemExit(f"no encrypted clip was written with {n} camera(s)")
    print(f"baseline (import the agent, no camera): {base:.0f} MiB")
    print(f"{'cameras':>7} | {'peak RSS MiB':>12} | {'per extra camera MiB':>20}")
    for i, (n, mib) in enumerate(rows):
        extra = "" if i == 0 else f"{(mib - rows[0][1]) / (n - 1):.0f}"
        print(f"{n:>7} | {mib:12.0f} | {extra:>20}")
    print(f"first camera over the baseline: {rows[0][1] - base:.0f} MiB; target: <= 200 MiB per camera "
          f"with both models loaded ({size_text(a.size)}, faces every frame, objects every 5th)")
    return 0


if __name__ == "__main__":
    run_main(main)
