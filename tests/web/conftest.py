"""A hub for the page's tests: the canary fixture's camera, its real pipeline, the real server.

The camera is the one stand-in: `PushSource` gives the fixture's first frame again each time the
test pushes one (a camera device cannot run here), so every released frame has the same raw
pixels and a change in the output is the policy's doing alone. Everything behind it is real:
the pipeline, policy, redaction, the board, the HTTPS server, the config on disk.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.analysis.build import build_analyzers
from agent.clock import FakeClock, SystemClock
from agent.config import load_config
from agent.core.datatypes import Event
from agent.core.pipeline import CameraPipeline
from agent.core.policy import camera_policy
from agent.core.ports import SourceInfo
from agent.lab.fixtures import canary_pattern
from agent.vocab import Mode
from agent.web.auth import set_password
from agent.web.server import WebServer
from agent.web.service import start_web

PASSWORD = "correct horse battery"


class PushSource:
    """A camera that gives `image` once per `push()`, and ends on `end()`.

    The pipeline releases a frame once the next one is decided (look-ahead), so a test that wants
    frame k's outcome pushes k+1 too: `push_next()`."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.info = SourceInfo("test camera", False, 5.0, None)
        self._cond = threading.Condition()
        self._pending = 0
        self._ended = False
        #: Frames pushed so far: the next pushed frame's index.
        self.pushed = 0

    def push(self, n: int = 1) -> None:
        with self._cond:
            self._pending += n
            self.pushed += n
            self._cond.notify_all()

    def push_next(self) -> int:
        """Push a new frame, and the one after it that lets it out; return the new frame's index."""
        index = self.pushed
        self.push(2)
        return index

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def read(self) -> np.ndarray | None:
        with self._cond:
            self._cond.wait_for(lambda: self._pending > 0 or self._ended)
            if self._ended:
                return None
            self._pending -= 1
            return self.image.copy()

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    root: Path
    config: Path
    raw: np.ndarray
    source: PushSource
    pipeline: CameraPipeline
    server: WebServer
    clock: FakeClock
    truth: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    https: bool = True
    mode: list[Mode] = field(default_factory=lambda: [Mode.HOME])  # mode[0]: the household mode now

    @property
    def camera(self) -> str:
        return self.pipeline.camera_id

    @property
    def base(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.server.port}"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", self.server.port,
                                                                           context=ctx, timeout=10)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def post_json(self, path: str, doc: Any, *, cookie: str | None = None, csrf: str | None = None,
                  extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        if csrf:
            headers["X-CSRF-Token"] = csrf
        headers.update(extra or {})
        status, h, data = self.request("POST", path, json.dumps(doc).encode(), headers)
        return status, h, json.loads(data) if data else None

    def login(self, password: str = PASSWORD) -> tuple[str, str]:
        """(cookie header value, csrf token)."""
        status, h, doc = self.post_json("/api/login", {"password": password})
        assert status == 200, doc
        cookie = h["set-cookie"].split(";")[0]
        return cookie, doc["csrf"]

    def next_frame(self, after: int = -1, want_reason: str | None = None) -> tuple[int, np.ndarray]:
        """Push frames until a new one after frame `after` is released (with `want_reason`). A new
        frame is one pushed by this call, so decided after whatever the test did before it."""
        for _ in range(50):
            index = self.source.push_next()
            got = self.wait_board(max(after, index - 1))
            assert got is not None, f"no frame after frame {max(after, index - 1)}"
            if got.withheld is None and (want_reason is None or want_reason in got.frame.decision.reasons):
                return got.frame_index, got.frame.image.copy()
        raise AssertionError(f"no released frame with {want_reason!r} after frame {after}")

    def wait_board(self, after: int) -> Any:
        """The board's entry for the first frame after `after`, released or withheld."""
        board = self.server.app.board
        done = threading.Event()
        for _ in range(1000):
            latest = board.latest(self.camera)
            if latest is not None and latest.frame_index > after:
                return latest
            done.wait(0.01)  # polling a worker thread's progress, not timing anything
        return None

    def next_withheld(self) -> tuple[str, ...]:
        """Push a new frame and return the reasons it was withheld for."""
        index = self.source.push_next()
        got = self.wait_board(index - 1)
        assert got is not None and got.withheld is not None, "the frame was not withheld"
        return tuple(got.withheld)


def _canary_copy(scenario_dir: Callable[[str], Path], dest: Path, port: int, https: bool,
                 detection: str) -> tuple[Path, dict]:
    shutil.copytree(scenario_dir("canary"), dest)
    cfg = dest / "config.yaml"
    text = cfg.read_text()
    text += (f"detection: {detection}\n"
             "web:\n  enabled: true\n  listen: 127.0.0.1\n"
             f"  port: {port}\n  https: {'true' if https else 'false'}\n")
    cfg.write_text(text)
    return cfg, json.loads((dest / "truth.json").read_text())


FRAME_W, FRAME_H = 640, 480


def synthetic_room(w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray:
    """A drawn living room (wall, window, door, sofa, lamp, rug): the shared photos' licences keep
    them out of the repository, and the README's screenshots are made from this frame."""
    img = np.zeros((h, w, 3), np.uint8)
    for y in range(h):
        img[y, :] = (170 + y * 40 // h, 196 + y * 30 // h, 214 + y * 20 // h)  # warm wall, BGR
    floor = int(h * 0.72)
    img[floor:] = (60, 105, 150)
    for x in range(0, w, 48):
        cv2.line(img, (x, floor), (x - 60, h), (50, 90, 130), 2)
    cv2.rectangle(img, (int(w * .08), int(h * .12)), (int(w * .36), int(h * .5)), (235, 205, 160), -1)  # sky
    cv2.rectangle(img, (int(w * .08), int(h * .12)), (int(w * .36), int(h * .5)), (245, 245, 245), 6)
    cv2.line(img, (int(w * .22), int(h * .12)), (int(w * .22), int(h * .5)), (245, 245, 245), 4)
    cv2.circle(img, (int(w * .3), int(h * .2)), 14, (120, 230, 255), -1)  # sun
    cv2.rectangle(img, (int(w * .44), int(h * .2)), (int(w * .58), floor), (70, 110, 160), -1)  # door
    cv2.circle(img, (int(w * .555), int(h * .47)), 5, (60, 200, 230), -1)
    cv2.rectangle(img, (int(w * .05), int(h * .58)), (int(w * .4), int(h * .8)), (120, 90, 60), -1)  # sofa
    cv2.rectangle(img, (int(w * .05), int(h * .52)), (int(w * .4), int(h * .62)), (140, 105, 70), -1)
    cv2.ellipse(img, (int(w * .3), int(h * .9)), (int(w * .22), int(h * .06)), 0, 0, 360, (90, 60, 140), -1)
    cv2.line(img, (int(w * .5), floor), (int(w * .5), int(h * .62)), (40, 40, 40), 3)  # lamp
    cv2.ellipse(img, (int(w * .5), int(h * .6)), (24, 12), 0, 180, 360, (150, 230, 250), -1)
    return img


def canary_box(truth: dict[str, Any], w: int = FRAME_W, h: int = FRAME_H) -> list[int]:
    """The canary zone's pixels at this frame size (the zone is relative; the fixture's box is 320x240)."""
    zone = next(z for z in truth["zones"] if z["name"] == truth["canary"]["zone"])
    xs, ys = [p[0] for p in zone["points"]], [p[1] for p in zone["points"]]
    # One pixel inside the zone on every side: the zone's own edge pixels are masked anyway.
    return [int(min(xs) * w) + 1, int(min(ys) * h) + 1, int(max(xs) * w), int(max(ys) * h)]


def make_hub(scenario_dir: Callable[[str], Path], root: Path, *, https: bool = True,
             detection: str = "{enabled: false}") -> Iterator[Hub]:
    """`detection`: the config's `detection:` value (the pipeline runs no detector either way when
    it is `enabled: false`; `zones discover` still uses its object model)."""
    cfg_path, truth = _canary_copy(scenario_dir, root, free_port(), https, detection)
    loaded = load_config(cfg_path)
    cam = loaded.config.cameras[0]
    raw = synthetic_room()
    x0, y0, x1, y1 = canary_box(truth)
    raw[y0:y1, x0:x1] = canary_pattern(truth["canary"]["seed"], 0, (x0, y0, x1, y1))
    events: list[Event] = []
    mode = [Mode.HOME]
    policy = camera_policy(loaded, cam)
    pipe = CameraPipeline(policy, build_analyzers(loaded, cam, policy, SystemClock(), events.append), [],
                          lambda: mode[0], events.append, clock=SystemClock())
    src = PushSource(raw)
    clock = FakeClock()
    set_password(loaded.data_dir, PASSWORD)
    server = start_web(loaded, [pipe], lambda: mode[0], events.append, clock, quiet=True)
    assert server is not None
    t = threading.Thread(target=pipe.run, args=(lambda: src,), daemon=True)
    t.start()
    hub = Hub(root, cfg_path, raw, src, pipe, server, clock, truth, events, https, mode)
    try:
        yield hub
    finally:
        src.end()
        pipe.stop()
        t.join(10)
        server.stop()


@pytest.fixture(scope="module")
def hub(scenario_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from make_hub(scenario_dir, tmp_path_factory.mktemp("webhub") / "fx")
