"""A live camera over RTSP: GStreamer's RTSP server on loopback (bench/rtsp_serve.py, run by the
system Python) serves an H.264 clip as an IP camera sends it, and the agent's RTSP source reads it.

The clip is drawn here with exact content: a grey room with a white square that moves one step per
frame. The source must hand over BGR frames of the stream's size at its frame rate, the moving
square must show (live frames, not one frame repeated), and a pipeline with a privacy zone over the
left half must release only frames that are black exactly there.
"""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_pipeline import ZONE, OkAnalyzer, RecordingSink

from agent.clock import SystemClock
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy
from agent.media import sources
from agent.media.sources import SourceOpener, open_source
from agent.vocab import Mode

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "bench" / "rtsp_serve.py"
W, H, FPS, FRAMES = 320, 240, 15, 45
GREY = 90


def _frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), GREY, np.uint8)
    x = 20 + 4 * (i % 60)
    img[100:140, x : x + 40] = 255
    return img


def _clip(path: Path) -> None:
    """Annex-B H.264, 1 s GOP, no B-frames: what an IP camera sends."""
    with av.open(str(path), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=Fraction(FPS))
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.thread_type = "FRAME"  # one slice per frame, as the bench's cameras send
        st.options = {"preset": "veryfast", "crf": "18", "g": str(FPS), "bf": "0"}
        for i in range(FRAMES):
            vf = av.VideoFrame.from_ndarray(_frame(i), format="bgr24")
            vf.pts = i
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)


class Server:
    """bench/rtsp_serve.py serving one clip as `cam`, on a free port or a given one."""

    def __init__(self, t: Path, clip: Path, port: int = 0) -> None:
        ready = t / f"port-{time.monotonic_ns()}"
        self._log_path = t / "server.log"
        self._log = self._log_path.open("a")
        # scripts/bootstrap installs GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0).
        self._proc = subprocess.Popen(["/usr/bin/python3", str(SERVE), "--clip", f"cam={clip}", "--fps", str(FPS),
                                       "--port", str(port), "--ready", str(ready)],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self._proc.poll() is None, self._log_path.read_text()
            assert time.monotonic() < deadline, "the RTSP server did not start"
            time.sleep(0.1)
        self.port = int(ready.read_text().strip())
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rtsp") / "cam.h264"
    _clip(path)
    return path


@pytest.fixture(scope="module")
def camera(clip: Path) -> Iterator[str]:
    server = Server(clip.parent, clip)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback UDP drops packets when the machine is busy; a test should not measure that.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


def test_rtsp_camera_gives_live_bgr_frames(camera: str) -> None:
    src = open_source(camera)
    try:
        assert src.info.live and src.info.frame_count is None
        assert src.info.fps == pytest.approx(FPS, rel=0.1)
        got = [src.read() for _ in range(35)]
    finally:
        src.close()
    assert all(g is not None and g.shape == (H, W, 3) and g.dtype == np.uint8 for g in got)
    xs = []
    for g in got:
        assert g is not None
        row = g[120, :, :].astype(int).mean(axis=1)
        bright = np.nonzero(row > 200)[0]
        assert bright.size >= 30, "the white square is missing"
        xs.append(int(bright[0]))
        # the room around it keeps its grey (codec noise only)
        assert abs(float(np.median(g[20:60, :, :])) - GREY) <= 6
    # The server may drop the P-frames it pushed while the client was still connecting; OpenCV
    # then conceals them until the next key frame (15 frames on). After it, every frame moves.
    assert len(set(xs)) >= 18, f"the square does not move: {xs}"


def test_rtsp_camera_through_a_pipeline_is_masked_exactly_in_the_zone(camera: str) -> None:
    sink = RecordingSink()
    p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [OkAnalyzer()], [sink], lambda: Mode.HOME, EventLog(),
                       clock=SystemClock(), analysis_timeout_s=5.0, max_lag_s=5.0)
    stopper = threading.Timer(3.0, p.stop)
    stopper.start()
    try:
        stats = p.run(SourceOpener(camera))
    finally:
        stopper.cancel()
    assert stats.frames_in >= 15, stats
    assert len(sink.frames) >= 15
    for f in sink.frames:
        assert (f.image[:, : W // 2] == 0).all()
        assert float(np.median(f.image[20:60, W // 2 :])) >= GREY - 6  # the rest is the camera's picture



def test_a_camera_that_goes_away_is_reconnected_when_it_comes_back(clip: Path) -> None:
    """The camera's server is stopped mid-stream and started again on the same port: the source
    is lost (an event, no traceback, nothing released meanwhile), and frames flow again, masked."""
    server = Server(clip.parent, clip)
    sink = RecordingSink()
    events = EventLog()
    p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [OkAnalyzer()], [sink], lambda: Mode.HOME, events,
                       clock=SystemClock(), analysis_timeout_s=5.0, max_lag_s=5.0)
    crashed: list[BaseException | None] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)
    runner = threading.Thread(target=p.run, args=(SourceOpener(server.url),), daemon=True)
    runner.start()
    back: Server | None = None
    try:
        _wait(lambda: len(sink.frames) >= 10, 20, "no frames before the camera went away")
        server.stop()
        _wait(lambda: "source_lost" in events.kinds(), 40, "the lost camera was not noticed")
        before = len(sink.frames)
        back = Server(clip.parent, clip, port=server.port)
        _wait(lambda: len(sink.frames) >= before + 10, 40, f"no frames after the camera came back: {events.kinds()}")
    finally:
        p.stop()
        runner.join(15)
        threading.excepthook = old_hook
        if back is not None:
            back.stop()
    assert not runner.is_alive() and crashed == []
    for f in sink.frames:
        assert (f.image[:, : W // 2] == 0).all()


def test_a_camera_opens_on_its_first_packet_without_a_burst_of_stale_frames(camera: str) -> None:
    """FFmpeg's own probe reads seconds of stream before the camera counts as open, and that video
    then comes out at once. The short probe opens on the first packet: frames come at the camera's
    pace from the start, and the installer's own capture options are kept."""
    src = open_source(camera)
    try:
        t0 = time.monotonic()
        got = [src.read() for _ in range(12)]
        elapsed = time.monotonic() - t0
    finally:
        src.close()
    assert all(g is not None and g.shape == (H, W, 3) for g in got)
    # 12 frames at 15 fps take 0.73 s live; a probed stream's buffered frames come in well under
    # 0.2 s. A busy machine only makes this slower.
    assert elapsed >= 0.45, f"12 frames in {elapsed:.2f} s: a burst of buffered frames"
    assert sources._parse_options(os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]) == {
        "rtsp_transport": "tcp", "probesize": "32"}


def test_the_installers_own_probe_setting_wins(camera: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;2000000")
    src = open_source(camera)
    try:
        assert src.read() is not None
    finally:
        src.close()
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp|analyzeduration;2000000"


class _MidStream(http.server.BaseHTTPRequestHandler):
    """Raw H.264 over HTTP at the camera's frame rate, looping, joined between key frames: the
    first bytes hold no parameter sets, which come again only with the next key frame."""

    data = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/h264")
        self.end_headers()
        d = self.data
        # Each frame's bytes run up to the next frame's first NAL unit (a slice, or the parameter
        # sets before a key frame), start codes included.
        nals = [i for i in range(len(d) - 4) if d[i : i + 3] == b"\x00\x00\x01"]
        starts = [i - 1 if i and d[i - 1] == 0 else i for i in nals if d[i + 3] & 0x1F in (1, 7)]
        frames = [d[a:b] for a, b in zip(starts, [*starts[1:], len(d)], strict=True)]
        p_slices = [i for i, f in enumerate(frames) if f[f.index(b"\x00\x00\x01") + 3] & 0x1F == 1]
        try:
            order = frames[p_slices[1]:] + frames * 20
            for f in order:
                self.wfile.write(f)
                time.sleep(1 / FPS)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        return None


def test_a_stream_the_first_packet_cannot_open_is_opened_with_the_full_probe(
        clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    _MidStream.data = clip.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MidStream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cam.h264"
    try:
        with caplog.at_level(logging.INFO, logger="agent.media.sources"):
            for _ in range(2):
                src = open_source(url)
                try:
                    img = src.read()
                finally:
                    src.close()
                assert img is not None and img.shape == (H, W, 3)
    finally:
        server.shutdown()
        server.server_close()
    # Once: the second open goes straight to the full probe.
    said = [r.getMessage() for r in caplog.records if "full stream probe" in r.getMessage()]
    assert said == [f"source {url}: the next open uses FFmpeg's full stream probe"]


def test_probe_options_follow_full_probe_opens_and_the_installer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    env = lambda: os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]  # noqa: E731
    sources._ProbeOptions.apply(0)
    assert env() == "rtsp_transport;tcp|probesize;32"
    sources._ProbeOptions.apply(+1)  # two full-probe opens at once: FFmpeg's own probe until both end
    sources._ProbeOptions.apply(+1)
    assert env() == "rtsp_transport;tcp"
    sources._ProbeOptions.apply(-1)
    assert env() == "rtsp_transport;tcp"
    sources._ProbeOptions.apply(-1)
    assert env() == "rtsp_transport;tcp|probesize;32"
    # The installer changes the variable: theirs from then on.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    sources._ProbeOptions.apply(0)
    assert env() == "rtsp_transport;udp|probesize;32"
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    sources._ProbeOptions.apply(0)
    assert env() == "probesize;32"


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
