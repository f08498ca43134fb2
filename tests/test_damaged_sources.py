"""Damaged video files: play on past the damage, count it, and withhold every frame it touched.

The fixtures are made here: a short H.264 clip (PyAV, a key frame every 10 frames and no
B-frames, so packet i carries frame i), then bytes in its middle overwritten. The MP4 index
sits at the end of the file and stays intact, so the container still knows every packet and
only the decoder meets the damage. Frames are compared with OpenCV's decode of the clean
clip: a released frame must be exactly what the camera recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np
import pytest
from videokit import decode_all, walker_frames, write_video

from agent.clock import FakeClock
from agent.core.datatypes import Analysis, Decision, Frame
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline, PipelineStats
from agent.core.policy import CameraPolicy
from agent.core.redact import RedactedFrame
from agent.errors import DamagedFrameError, FrameDecodeError
from agent.lab.shared_data import shared_file
from agent.media import avsource
from agent.media.sources import SourceOpener, open_source
from agent.vocab import Action, Mode

GOP = 10
N = 60


# --- fixtures ------------------------------------------------------------------------


def encode(path: Path, frames: list[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p",
           fmt: str | None = None, rotation: int | None = None) -> Path:
    """Frames into a clip, a key frame every GOP frames and no B-frames (decode order = display order)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.codec_context.gop_size = GOP
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "keyint_min": str(GOP), "sc_threshold": "0", "bf": "0"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
        out.mux(s.encode(None))
    return path


class Packet(NamedTuple):
    pos: int
    size: int
    key: bool


def packets(path: Path) -> list[Packet]:
    with av.open(str(path)) as c:
        return [Packet(p.pos, p.size, p.is_keyframe) for p in c.demux(video=0) if p.size]


def clip(tmp_path: Path) -> tuple[Path, list[Packet]]:
    path = encode(tmp_path / "clip.mp4", walker_frames(N))
    pk = packets(path)
    assert len(pk) == N and [i for i, p in enumerate(pk) if p.key] == list(range(0, N, GOP))
    return path, pk


def damage(src: Path, dst: Path, start: int, end: int, seed: int = 0) -> Path:
    """Overwrite bytes [start, end) with noise: a bad sector, a bit-rotted card."""
    data = bytearray(src.read_bytes())
    assert 0 < start < end <= len(data)
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def span(pk: list[Packet], first: int, last: int) -> tuple[int, int]:
    """The bytes of packets first..last (whole packets, their length fields included)."""
    return pk[first].pos, pk[last].pos + pk[last].size


def read_all(path: Path) -> list[np.ndarray | DamagedFrameError]:
    src = open_source(str(path))
    out: list[np.ndarray | DamagedFrameError] = []
    try:
        while True:
            try:
                img = src.read()
            except DamagedFrameError as e:
                out.append(e)
                continue
            if img is None:
                return out
            out.append(img)
    finally:
        src.close()


# --- a pipeline that releases everything it can (no zones, no detection) ---------------


class OkAnalyzer:
    name = "ok"

    def analyze(self, frame: Frame) -> Analysis:
        return Analysis()


class RecordingSink:
    plaintext = True
    name = "rec"

    def __init__(self) -> None:
        self.frames: list[RedactedFrame] = []
        self.withheld_indices: list[int] = []

    def write(self, frame: RedactedFrame) -> None:
        self.frames.append(frame)

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        self.withheld_indices.append(index)

    def close(self) -> None:
        pass


class Run(NamedTuple):
    stats: PipelineStats
    events: EventLog
    decisions: dict[int, Decision]
    released: dict[int, np.ndarray]


def run_pipeline(spec: str) -> Run:
    events = EventLog()
    sink = RecordingSink()
    decisions: list[Decision] = []
    p = CameraPipeline(CameraPolicy("cam"), [OkAnalyzer()], [sink], lambda: Mode.HOME, events, clock=FakeClock(),
                       analysis_timeout_s=5.0, on_decision=lambda d, _: decisions.append(d))
    stats = p.run(SourceOpener(spec))
    # Sinks hear of every withheld frame too (they cut segments on time, not frame count).
    assert sorted(sink.withheld_indices) == sorted(d.frame_index for d in decisions if d.action is Action.WITHHOLD)
    by_index = {d.frame_index: d for d in decisions}
    assert len(by_index) == len(decisions), "one decision per frame"
    assert [d.frame_index for d in decisions] == sorted(by_index), "decisions in frame order"
    released = {f.index: f.image for f in sink.frames}
    assert all(by_index[i].action is not Action.WITHHOLD for i in released), "a withheld frame reached the sink"
    return Run(stats, events, by_index, released)


def withheld(run: Run) -> set[int]:
    return {i for i, d in run.decisions.items() if d.action is Action.WITHHOLD}


# --- the tests ---------------------------------------------------------------------------


def test_damage_mid_file_is_withheld_counted_and_playback_recovers_at_the_next_key_frame(tmp_path: Path) -> None:
    path, pk = clip(tmp_path)
    bad = damage(path, tmp_path / "bad.mp4", *span(pk, 25, 29))
    run = run_pipeline(str(bad))

    assert sorted(run.decisions) == list(range(N)), "the file is read to its real end, past the damage"
    held = withheld(run)
    # The damaged frames, plus at most the few decoded just before (still in the decoder or
    # held back when the damage showed); never a frame after the key frame at 30.
    assert set(range(25, 30)) <= held <= set(range(20, 30))
    # The frame before the stretch waits for the next one's judgement, which never came: withheld
    # for it too (look-ahead fails closed).
    first = min(held)
    assert run.decisions[first].reasons == ("ahead:decode_damaged",)
    assert all(run.decisions[i].reasons == ("decode_damaged",) for i in held - {first})
    assert run.stats.decode_errors >= 5 and run.stats.reasons["decode_damaged"] == len(held) - 1
    assert run.stats.reasons["ahead:decode_damaged"] == 1

    clean = decode_all(path)
    assert set(run.released) == set(range(N)) - held
    for i, img in run.released.items():
        assert np.array_equal(img, clean[i]), f"released frame {i} is not the recorded frame"

    kinds = run.events.kinds()
    assert kinds.count("decode_error") == 1, "one event per damaged stretch, not per frame"
    (recovered,) = [e for e in run.events.events if e.kind == "decode_recovered"]
    assert recovered.details["frame"] == 30 and recovered.details["frames"] == len(held) - 1
    assert "source_ended" in kinds
    assert "source_truncated" not in kinds and "decode_unrecovered" not in kinds


def test_garbled_frame_and_the_frames_built_on_it_are_withheld_until_the_key_frame(tmp_path: Path) -> None:
    path, pk = clip(tmp_path)
    # The second half of frame 22 only: its header survives, so the decoder returns it, concealed.
    p = pk[22]
    bad = damage(path, tmp_path / "bad.mp4", p.pos + p.size // 2, p.pos + p.size)
    clean = decode_all(path)

    # What the decoder does with it on its own (what OpenCV would pass on): frame 22 and the
    # P-frames predicted from it come out badly garbled, and no error stops them.
    with av.open(str(bad)) as c:
        raw = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(raw) == N
    assert all(np.abs(raw[i].astype(int) - clean[i]).max() > 64 for i in range(22, 30))
    assert np.array_equal(raw[30], clean[30])

    out = read_all(bad)
    assert len(out) == N
    damaged = {i for i, o in enumerate(out) if isinstance(o, DamagedFrameError)}
    assert set(range(22, 30)) <= damaged <= set(range(18, 30))
    errors = [o for o in out if isinstance(o, DamagedFrameError)]
    assert all(isinstance(e, FrameDecodeError) and e.reason == "decode_damaged" for e in errors)
    assert sum(e.errors for e in errors) >= 1, "the frame decoded with errors is counted"
    assert "frame 22" in str(out[22])
    for i, o in enumerate(out):
        if not isinstance(o, DamagedFrameError):
            assert np.array_equal(o, clean[i]), f"frame {i}"


def test_damage_with_no_key_frame_after_it_is_withheld_to_the_end(tmp_path: Path) -> None:
    path, pk = clip(tmp_path)
    # After the last key frame (50): frames 55-59 decode, but from damaged references.
    bad = damage(path, tmp_path / "bad.mp4", *span(pk, 52, 54))
    run = run_pipeline(str(bad))

    assert sorted(run.decisions) == list(range(N))
    held = withheld(run)
    assert set(range(52, N)) <= held <= set(range(47, N))
    assert max(run.released) < 52
    kinds = run.events.kinds()
    assert "decode_recovered" not in kinds and "source_ended" in kinds
    (end,) = [e for e in run.events.events if e.kind == "decode_unrecovered"]
    # The stretch, and the frame before it withheld ahead of it (look-ahead fails closed).
    assert run.decisions[min(held)].reasons == ("ahead:decode_damaged",)
    assert end.details["frames"] == len(held) - 1 and "never recovered" in end.message


@pytest.mark.parametrize("bound", [None, 5])
def test_file_garbage_to_its_end_ends_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              bound: int | None) -> None:
    path, pk = clip(tmp_path)
    bad = damage(path, tmp_path / "bad.mp4", *span(pk, 30, N - 1))
    if bound is not None:
        monkeypatch.setattr(avsource, "MAX_FAILED_READS", bound)
    run = run_pipeline(str(bad))

    assert max(run.released) < 30
    kinds = run.events.kinds()
    if bound is None:
        # 30 failed reads in a row is within the bound: read to the end, all of it withheld.
        assert sorted(run.decisions) == list(range(N)) and set(range(30, N)) <= withheld(run)
        assert "decode_unrecovered" in kinds and "source_ended" in kinds
        assert run.stats.decode_errors >= N - 30
    else:
        # Past the bound the file is given up: an event, no hang, what came before kept.
        (lost,) = [e for e in run.events.events if e.kind == "source_lost"]
        assert "giving up" in lost.message
        assert "source_ended" not in kinds
        assert sorted(run.decisions) == list(range(len(run.decisions))) and len(run.decisions) < N


@pytest.mark.parametrize("container", ["avi", "mkv"])
def test_file_cut_at_the_end_is_truncated_not_damaged(tmp_path: Path, container: str) -> None:
    if container == "avi":
        full = write_video(tmp_path / "full.avi", walker_frames(30), 10)  # MPEG-4 part 2
    else:
        full = encode(tmp_path / "full.mkv", walker_frames(30), fmt="matroska")
    data = full.read_bytes()
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(data[: len(data) // 2])
    assert open_source(str(cut)).info.frame_count == 30, "the container still says how long it was"

    run = run_pipeline(str(cut))
    (trunc,) = [e for e in run.events.events if e.kind == "source_truncated"]
    n = len(run.decisions)
    assert 0 < n < 30 and trunc.details == {"frames": n, "expected": 30}
    assert "source_ended" in run.events.kinds() and "decode_error" not in run.events.kinds()
    # Only whole frames: the partial last one is never decoded, nothing is withheld.
    assert run.stats.decode_errors == 0 and not withheld(run) and sorted(run.released) == list(range(n))
    clean = decode_all(full)
    assert all(np.array_equal(img, clean[i]) for i, img in run.released.items())


def test_undecodable_image_in_a_glob_is_withheld_with_its_own_decision(tmp_path: Path) -> None:
    frames = walker_frames(3)
    cv2.imwrite(str(tmp_path / "a0.png"), frames[0])
    (tmp_path / "a1.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "a2.png"), frames[2])
    run = run_pipeline(str(tmp_path / "a*.png"))

    assert sorted(run.decisions) == [0, 1, 2]
    assert run.decisions[1].action is Action.WITHHOLD and run.decisions[1].reasons == ("decode_error",)
    # The image before it waits for a judgement of the next that never came (look-ahead fails closed).
    assert run.decisions[0].reasons == ("ahead:decode_error",)
    assert sorted(run.released) == [2] and run.stats.decode_errors == 1
    kinds = run.events.kinds()
    assert kinds.count("decode_error") == 1 and kinds.count("decode_recovered") == 1


# --- same pixels, rate and length as OpenCV ----------------------------------------------


def assert_decodes_like_opencv(path: Path) -> int:
    src = open_source(str(path))
    cap = cv2.VideoCapture(str(path))
    try:
        assert src.info.fps == cap.get(cv2.CAP_PROP_FPS)
        assert src.info.frame_count == int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        n = 0
        while True:
            ok, want = cap.read()
            got = src.read()
            if not ok:
                assert got is None
                return n
            assert got is not None and got.dtype == np.uint8 and got.flags.c_contiguous
            assert got.shape == want.shape and np.array_equal(got, want), f"frame {n}"
            n += 1
    finally:
        src.close()
        cap.release()


@pytest.mark.parametrize("kind", ["h264_mp4", "mpeg4_avi", "odd_size_mpeg4_mkv", "h264_10bit", "h264_rotated"])
def test_file_frames_are_exactly_opencvs(tmp_path: Path, kind: str) -> None:
    frames = walker_frames(12)
    if kind == "h264_mp4":
        path = encode(tmp_path / "v.mp4", frames)
    elif kind == "mpeg4_avi":
        path = write_video(tmp_path / "v.avi", frames)
    elif kind == "odd_size_mpeg4_mkv":
        path = encode(tmp_path / "v.mkv", walker_frames(12, w=322, h=242), codec="mpeg4")
    elif kind == "h264_10bit":
        path = encode(tmp_path / "v.mp4", frames, pix_fmt="yuv420p10le")
    else:
        path = encode(tmp_path / "v.mp4", frames, rotation=90)  # a phone held upright
    assert assert_decodes_like_opencv(path) == 12


def test_real_cctv_clip_decodes_exactly_like_opencv() -> None:
    assert assert_decodes_like_opencv(shared_file("fixtures", "opencv_vtest.avi")) == 795
