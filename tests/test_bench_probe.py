"""`bench/live_probe.py`'s hooks still see the pipeline they measure.

The probe wraps pipeline methods by name; a renamed or restructured method would leave a figure
empty (the live bench once printed no latency at all). Run in a subprocess: the hooks patch
classes for the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1] + "/bench")
import numpy as np
import live_probe
from live_probe import Probe, _cpu, _window

probe = Probe()
probe.install()
from agent.clock import FakeClock
from agent.core.datatypes import Analysis
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy
from agent.core.ports import SourceInfo
from agent.vocab import Mode


class Source:
    info = SourceInfo("list", False, 10.0, 6)

    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        return np.full((24, 32, 3), 80, np.uint8) if self.n <= 6 else None

    def close(self):
        pass


class Sink:
    name = "mem"
    plaintext = True

    def write(self, frame):
        pass

    def withheld(self, *a):
        pass

    def close(self):
        pass


class Quiet:
    name = "quiet"

    def analyze(self, frame):
        return Analysis()


_window["open"] = True
p = CameraPipeline(CameraPolicy("cam"), [Quiet()], [Sink()], lambda: Mode.HOME, EventLog(), clock=FakeClock())
p.run(Source)
print(json.dumps({"cams": probe.cams, "latency": {k: len(v) for k, v in probe.latency.items()},
                  "stages": sorted(_cpu)}))
"""


def test_the_probe_counts_every_frame_and_times_every_released_one() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cams"]["cam"]["received"] == 6 and out["cams"]["cam"]["released"] == 6
    assert out["latency"] == {"cam": 6}  # capture-to-sealed, for every released frame
    assert {"analyze:quiet", "policy", "redact"} <= set(out["stages"])
