"""A live camera over RTSP: GStreamer's RTSP server on loopback (bench/rtsp_serve.py, run by the
system Python) serves an H.264 clip as an IP camera sends it, and the agent's RTSP source reads it.

The clip is drawn here with exact content: a grey room with a white square that moves one step per
frame. The source must hand over BGR frames of the stream's size at its frame rate, the moving
square must show (live frames, not one frame repeated), and a pipeline with a privacy zone over the
left half must release only frames that are black exactly there.
"""

from __future__ import annotations

import contextlib
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
from agent.core.datatypes import Analysis, Decision, Frame
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline, PipelineStats
from agent.core.policy import CameraPolicy
from agent.errors import DamagedFrameError, SourceError
from agent.media import avsource
from agent.media.sources import SourceOpener, open_source
from agent.vocab import Action, Mode

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

    def __init__(self, t: Path, clip: Path, port: int = 0, stamp_scale: float = 1.0) -> None:
        ready = t / f"port-{time.monotonic_ns()}"
        self._log_path = t / "server.log"
        self._log = self._log_path.open("a")
        # scripts/bootstrap installs GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0).
        self._proc = subprocess.Popen(["/usr/bin/python3", str(SERVE), "--clip", f"cam={clip}", "--fps", str(FPS),
                                       "--port", str(port), "--ready", str(ready),
                                       "--stamp-scale", str(stamp_scale)],
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


def _run_for(p: CameraPipeline, camera: str, seconds: float) -> PipelineStats:
    """Run `p` on the live camera for `seconds`, then stop it."""
    stopper = threading.Timer(seconds, p.stop)
    stopper.start()
    try:
        return p.run(SourceOpener(camera))
    finally:
        stopper.cancel()


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
    stats = _run_for(p, camera, 3.0)
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


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The FFmpeg options of every network open, in order."""
    seen: list[dict[str, str]] = []
    real = avsource._open_network

    def spy(target: str, spec: str, options: dict[str, str]) -> object:
        seen.append(dict(options))
        return real(target, spec, options)

    monkeypatch.setattr(avsource, "_open_network", spy)
    return seen


def test_a_camera_opens_on_its_first_packet_without_a_burst_of_stale_frames(
        camera: str, opens: list[dict[str, str]]) -> None:
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
    assert opens == [{"rtsp_transport": "tcp", "probesize": "32"}]
    # Read at every open, never written: the process-wide variable is the installer's alone.
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"


def test_the_installers_own_probe_setting_wins(camera: str, monkeypatch: pytest.MonkeyPatch,
                                               opens: list[dict[str, str]]) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;2000000")
    src = open_source(camera)
    try:
        assert src.read() is not None
    finally:
        src.close()
    assert opens == [{"rtsp_transport": "tcp", "analyzeduration": "2000000"}]


def _frames_of(data: bytes) -> list[bytes]:
    """An Annex-B clip cut into one piece per frame: each runs up to the next frame's first NAL unit
    (a slice, or the parameter sets before a key frame), start codes included."""
    nals = [i for i in range(len(data) - 4) if data[i : i + 3] == b"\x00\x00\x01"]
    starts = [i - 1 if i and data[i - 1] == 0 else i for i in nals if data[i + 3] & 0x1F in (1, 7)]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


class _HttpCamera(http.server.BaseHTTPRequestHandler):
    """Raw H.264 over HTTP, as a simple IP camera sends it: `frames()` at the camera's pace."""

    def frames(self) -> list[bytes]:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/h264")
        self.end_headers()
        try:
            for f in self.frames():
                self.wfile.write(f)
                time.sleep(1 / FPS)
            self.wfile.flush()
        except OSError:
            return
        self.after()

    def after(self) -> None:
        """What the camera does once its frames are sent: close the connection."""

    def log_message(self, *args: object) -> None:
        return None


@contextlib.contextmanager
def _serving(handler: type[_HttpCamera]) -> Iterator[str]:
    """The handler's camera on a loopback port: its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cam.h264"
    finally:
        server.shutdown()
        server.server_close()


class _MidStream(_HttpCamera):
    """Looping, joined between key frames: the first bytes hold no parameter sets, which come again
    only with the next key frame."""

    data = b""

    def frames(self) -> list[bytes]:
        frames = _frames_of(self.data)
        p_slices = [i for i, f in enumerate(frames) if f[f.index(b"\x00\x00\x01") + 3] & 0x1F == 1]
        return frames[p_slices[1]:] + frames * 20


def test_a_camera_joined_between_key_frames_withholds_until_its_first_key_frame(clip: Path) -> None:
    """The first bytes hold P-frames whose references and parameter sets the decoder never got:
    those positions are withheld, never handed out concealed, and the first key frame's picture and
    every one after it come out whole, at the stream's size."""
    _MidStream.data = clip.read_bytes()
    withheld: list[DamagedFrameError] = []
    got: list[np.ndarray] = []
    with _serving(_MidStream) as url:
        src = open_source(url)
        try:
            while len(got) < 5:
                try:
                    img = src.read()
                except DamagedFrameError as e:
                    assert not got, "a frame after the first key frame was withheld"
                    withheld.append(e)
                    continue
                assert img is not None
                got.append(img)
        finally:
            src.close()
    assert withheld and len(withheld) <= FPS, [str(e) for e in withheld]
    assert all(g.shape == (H, W, 3) for g in got)
    row = got[0][120, :, :].astype(int).mean(axis=1)
    assert (row > 200).sum() >= 30, "the first frame handed out is not the room with its square"


class _Damaged(_HttpCamera):
    """The clip once, one frame's payload garbled on the way (a camera's hiccup, a lossy link): what
    a live stream's decoder meets mid-stream."""

    sent: list[bytes] = []

    def frames(self) -> list[bytes]:
        return self.sent


@pytest.mark.parametrize("hit", [3, 20])
def test_a_live_streams_damaged_frames_are_withheld_until_the_next_key_frame(clip: Path, hit: int) -> None:
    """Frame `hit` arrives garbled. Every frame the decoder paints from it (up to the next key
    frame, every 15 frames) is withheld, never handed out concealed; every frame handed out is
    exactly the room with its square where that frame drew it; and the camera plays on."""
    frames = _frames_of(clip.read_bytes())
    assert len(frames) == FRAMES
    bad = bytearray(frames[hit])
    third = len(bad) // 3
    # Noise without zero bytes, so no start code appears: the frame's slice is garbled, not cut.
    bad[third : 2 * third] = np.random.default_rng(hit).integers(16, 256, third, dtype=np.uint8).tobytes()
    _Damaged.sent = [*frames[:hit], bytes(bad), *frames[hit + 1 :]]
    got: list[int | None] = []  # per position: the frame it shows, or None when withheld
    with _serving(_Damaged) as url:
        src = open_source(url)
        try:
            while True:
                try:
                    img = src.read()
                except DamagedFrameError:
                    got.append(None)
                    continue
                except SourceError:
                    break  # the stream ended: a lost camera, which the pipeline would open again
                assert img is not None
                bright = np.nonzero(img[120, :, :].astype(int).mean(axis=1) > 200)[0]
                assert bright.size >= 30, f"position {len(got)}: the square is missing"
                assert np.abs(img[20:60].astype(int) - GREY).max() <= 20, f"position {len(got)}: the room is smeared"
                got.append((int(bright[0]) - 20) // 4)
        finally:
            src.close()
    next_key = (hit // FPS + 1) * FPS
    withheld = [i for i, g in enumerate(got) if g is None]
    # From the damage (and the look-behind before it) to the next key frame, and nothing else.
    assert withheld and withheld[0] <= hit and withheld[-1] == next_key - 1, got
    assert withheld == list(range(withheld[0], next_key)), got
    assert all(g == i for i, g in enumerate(got) if g is not None), got
    assert len(got) >= next_key + 10, f"the camera did not play on past the damage: {got}"


class _Silent(_HttpCamera):
    """A camera that keeps its connection open and stops sending: first `count` frames, then nothing."""

    clip: list[bytes] = []
    count = 0
    release = threading.Event()

    def frames(self) -> list[bytes]:
        return self.clip[: self.count]

    def after(self) -> None:
        self.release.wait(30)


@pytest.mark.parametrize("sent", [0, 20])
def test_a_camera_that_stops_sending_without_closing_is_lost_not_waited_for(
        clip: Path, sent: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg on its own waits for ever on a connection that stays open and silent: the reader
    would hang and the pipeline never open the camera again. The open and each read are bounded."""
    monkeypatch.setattr(avsource, "STREAM_OPEN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(avsource, "STREAM_READ_TIMEOUT_S", 1.0)
    _Silent.clip, _Silent.count = _frames_of(clip.read_bytes()), sent
    _Silent.release.clear()
    t0 = time.monotonic()
    with _serving(_Silent) as url:
        try:
            with pytest.raises(SourceError) as lost:
                src = open_source(url)
                try:
                    for _ in range(FRAMES):
                        src.read()
                finally:
                    src.close()
        finally:
            _Silent.release.set()
    assert time.monotonic() - t0 < 15, "the silent camera was waited for"
    assert str(lost.value).startswith(f"source {url}: ")


def test_a_stream_the_short_probe_cannot_open_is_opened_at_once_with_the_full_probe(
        camera: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Where the first packet does not say enough (a container that lists its streams later), the
    same open tries again with FFmpeg's full probe, says so once, and that camera keeps it. An
    unreachable camera is not tried twice."""
    seen: list[dict[str, str]] = []
    real = avsource._open_network

    def first_packet_says_too_little(target: str, spec: str, options: dict[str, str]) -> object:
        seen.append(dict(options))
        if "probesize" in options and target == camera:
            raise avsource._ProbeTooShort("no video stream")
        return real(target, spec, options)

    monkeypatch.setattr(avsource, "_open_network", first_packet_says_too_little)
    with caplog.at_level(logging.INFO, logger="agent.media.avsource"):
        for _ in range(2):
            src = open_source(camera)
            try:
                assert src.read() is not None
            finally:
                src.close()
    assert seen == [{"rtsp_transport": "tcp", "probesize": "32"}, {"rtsp_transport": "tcp"},
                    {"rtsp_transport": "tcp"}]
    said = [r.getMessage() for r in caplog.records if "full stream probe" in r.getMessage()]
    assert said == [f"source {camera}: the next open uses FFmpeg's full stream probe"]
    avsource._FullProbe.mark(camera, False)

    seen.clear()
    port = camera.split(":")[2].split("/")[0]
    gone = camera.replace(f":{port}/", ":1/")
    with pytest.raises(SourceError, match=r"cannot open \(Connection refused\)") as lost:
        open_source(gone.replace("rtsp://", "rtsp://admin:secret@"))
    assert "secret" not in str(lost.value) and "admin" not in str(lost.value)
    assert seen == [{"rtsp_transport": "tcp", "probesize": "32"}]


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))


class _SlowAnalyzer:
    """Takes 150 ms a frame: a hub that cannot keep up with a 15 fps camera."""

    name = "slow"

    def analyze(self, frame: Frame) -> Analysis:
        time.sleep(0.15)
        return Analysis()


def test_a_reader_behind_the_camera_is_behind_by_the_streams_own_clock(camera: str) -> None:
    """Read promptly, a frame is behind by the source's look-behind only; read slower than the
    camera sends, the packets wait in the network and every frame is later than the one before,
    by the stream's timestamps, although none is lost and each read returns at once."""
    src = open_source(camera)
    try:
        prompt = []
        for _ in range(10):
            src.read()
            prompt.append(src.backlog_s())
        behind = []
        for _ in range(25):
            time.sleep(0.12)  # 8 frames a second from a 15 fps camera
            src.read()
            behind.append(src.backlog_s())
    finally:
        src.close()
    assert max(prompt) < 0.1, prompt
    # Frames taken 120 ms apart from a camera that sends one every 67 ms: each 53 ms more behind.
    # (The first two were decoded before the slow reads began: the source's look-behind.)
    assert behind[-1] - behind[2] == pytest.approx(22 * (0.12 - 1 / FPS), abs=0.3), behind
    assert behind[2:] == sorted(behind[2:]), behind


def test_a_hub_that_cannot_keep_up_withholds_for_lag_and_catches_up(camera: str) -> None:
    """A pipeline that analyses 7 frames a second of a 15 fps camera falls behind it. The frames
    that waited in the network are withheld for lag, unanalysed, once they are half of
    `max_lag_s` behind the camera by the stream's clock, and the source drops what follows up
    to a key frame undecoded; so the reader catches up and releases fresh frames again. Stamped
    when read, every one of them would have passed for fresh."""
    sink = RecordingSink()
    reasons: list[str] = []
    p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [_SlowAnalyzer()], [sink], lambda: Mode.HOME, EventLog(),
                       clock=SystemClock(), analysis_timeout_s=5.0, max_lag_s=1.5,
                       on_decision=lambda d, _i: reasons.extend(d.reasons))
    stats = _run_for(p, camera, 9.0)
    lagged = [r for r in reasons if r.startswith("lag:")]
    assert lagged, stats
    # Withheld from half of `max_lag_s` behind on (the other half is the pipeline's); then the
    # frames up to a key frame are skipped undecoded, each withheld with how far behind it was
    # read, less and less as the reader catches up.
    behind = sorted(float(r[4:-1]) for r in lagged)
    assert behind[-1] >= 0.75 - 0.005, behind
    assert behind[0] < 0.75, behind
    assert len(sink.frames) >= 10, stats  # it caught up, again and again


def test_a_camera_whose_timestamps_run_slow_is_not_withheld_for_ever(clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera that stamps its frames at half the real pace (a nominal rate it does not send at)
    looks half a second further behind every second. The hub catches up, finds every packet has
    to be waited for, so it is not behind at all, and stops trusting those timestamps: it
    releases the camera's frames again rather than skip them for ever."""
    server = Server(clip.parent, clip, stamp_scale=0.5)
    decisions: list[Decision] = []
    try:
        p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [OkAnalyzer()], [RecordingSink()], lambda: Mode.HOME,
                           EventLog(), clock=SystemClock(), analysis_timeout_s=5.0, max_lag_s=1.0,
                           on_decision=lambda d, _i: decisions.append(d))
        with caplog.at_level(logging.WARNING, logger="agent.media.avsource"):
            _run_for(p, server.url, 7.0)
    finally:
        server.stop()
    lagged = [d.frame_index for d in decisions if any(r.startswith("lag:") for r in d.reasons)]
    assert lagged, "the timestamps were trusted at first: the stream looked further and further behind"
    after = [d for d in decisions if d.frame_index > max(lagged)]
    assert len(after) >= 30 and all(d.action is not Action.WITHHOLD for d in after), decisions[-5:]
    assert "timestamps run slower" in caplog.text


@pytest.mark.parametrize("shed", [True, False], ids=["shedding", "not_shedding"])
def test_a_hub_behind_its_camera_sheds_face_runs_and_keeps_up(camera: str, shed: bool) -> None:
    """A face model that takes 100 ms a run cannot keep up with a 15 fps camera (10 runs a
    second). Shedding (`detection.under_load`, the default) runs it on every second frame once the
    reader is 0.25 s behind: the hub keeps up, withholds nothing for lag, and every frame it
    releases masks the face, the skipped ones with the faces of the frames beside them. Without
    shedding the same hub falls behind and withholds frames for lag."""
    from detect_support import FakeDetector, det

    from agent.analysis.factory import build_detection_analyzer
    from agent.config import LoadedConfig, parse_config_text
    from agent.core.policy import UNDER_LOAD, camera_policy

    cfg = parse_config_text(f"cameras:\n  - id: cam\n    source: {camera}\n"
                            f"detection:\n  foreground: {{enabled: false}}\n  under_load: {{enabled: {str(shed).lower()}}}\n")
    policy = camera_policy(LoadedConfig(config=cfg, path=REPO / "config.yaml", sha256=""), cfg.cameras[0])
    faces = FakeDetector("yunet_s_dynamic", frozenset({"face"}), (det("face", 0.4, 0.1, 0.5, 0.3),))
    faces.on_call = lambda _img: time.sleep(0.1)
    objects = FakeDetector("yolox_nano", frozenset({"person"}), ())
    events = EventLog()
    analyzer = build_detection_analyzer(cfg.detection, "cam", SystemClock(), events,
                                        loader=lambda role, _m: faces if role == "faces" else objects)
    decisions: list[Decision] = []
    p = CameraPipeline(policy, [analyzer], [RecordingSink()], lambda: Mode.HOME, events, clock=SystemClock(),
                       analysis_timeout_s=5.0, max_lag_s=1.5, on_decision=lambda d, _i: decisions.append(d))
    _run_for(p, camera, 8.0)
    lagged = [d for d in decisions if any(r.startswith(("lag:", "ahead:lag:")) for r in d.reasons)]
    released = [d for d in decisions if d.action is not Action.WITHHOLD]
    shed_frames = [d for d in released if UNDER_LOAD in d.reasons]
    if not shed:
        assert lagged and not shed_frames, decisions[-5:]
        return
    assert not lagged, lagged[:3]
    assert len(shed_frames) >= 30 and len(released) >= 90, (len(shed_frames), len(released))
    assert all(any(r.name == "face" for r in d.regions) for d in released)
    assert faces.calls < len(decisions) * 0.75
    assert events.counts["under_load"] == 1 and events.counts["load_eased"] == 0
