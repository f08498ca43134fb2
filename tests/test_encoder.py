"""The H.264 encoder choice (`video.encoder`): hardware with a probe, fallback to libx264, and a
clear refusal for an explicit encoder that cannot work. The hardware encoder cannot run here (no
V4L2 M2M device), so its probe is stubbed behind the probe interface; libx264's probe is real."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
from videokit import walker_frames, write_video

from agent.cli.main import main
from agent.config import VideoConfig
from agent.media import encoders
from agent.media.encoders import (
    HARDWARE,
    SOFTWARE,
    EncoderChoice,
    EncoderProbeFailed,
    EncoderUnavailable,
    configure_stream,
    probe_encode,
    select_encoder,
    start_encoder,
)

BOTH = {HARDWARE, SOFTWARE}


class Probe:
    """Records the codecs probed; the ones in `broken` fail with a reason."""

    def __init__(self, broken: dict[str, str] | None = None) -> None:
        self.broken = broken or {}
        self.calls: list[str] = []

    def __call__(self, codec: str) -> None:
        self.calls.append(codec)
        if codec in self.broken:
            raise EncoderProbeFailed(self.broken[codec])


def test_auto_uses_the_hardware_encoder_when_its_probe_works() -> None:
    probe = Probe()
    choice = select_encoder("auto", probe, BOTH)
    assert choice == EncoderChoice(HARDWARE, "auto: the hardware encoder's probe encode worked")
    assert probe.calls == [HARDWARE]


def test_auto_falls_back_to_libx264_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe({HARDWARE: "probe failed: Device or resource busy"})
    with caplog.at_level(logging.WARNING, logger="agent.media.encoders"):
        choice = select_encoder("auto", probe, BOTH)
    assert choice.codec == SOFTWARE and "Device or resource busy" in choice.reason and choice.reason.startswith("auto")
    assert probe.calls == [HARDWARE, SOFTWARE]
    assert any("hardware H.264 encoder not used" in r.getMessage() and "busy" in r.getMessage()
               for r in caplog.records)


def test_auto_without_the_hardware_codec_in_the_build_does_not_probe_it() -> None:
    probe = Probe()
    choice = select_encoder("auto", probe, {SOFTWARE})
    assert choice.codec == SOFTWARE and "not in this PyAV build" in choice.reason
    assert probe.calls == [SOFTWARE]


def test_explicit_libx264_never_probes_the_hardware_encoder() -> None:
    probe = Probe({HARDWARE: "must not be asked"})
    assert select_encoder("libx264", probe, BOTH) == EncoderChoice(SOFTWARE, "video.encoder is libx264")
    assert probe.calls == [SOFTWARE]


def test_explicit_hardware_encoder_that_fails_its_probe_is_a_start_error() -> None:
    probe = Probe({HARDWARE: "no V4L2 device (/dev/video*): this board has no hardware H.264 encoder"})
    with pytest.raises(EncoderUnavailable) as e:
        select_encoder("h264_v4l2m2m", probe, BOTH)
    msg = str(e.value)
    assert msg.startswith("video.encoder: h264_v4l2m2m cannot be used") and "/dev/video" in msg
    assert "video.encoder: auto" in msg and "\n" not in msg
    assert probe.calls == [HARDWARE]  # no silent switch to libx264
    with pytest.raises(EncoderUnavailable, match="not in this PyAV build"):
        select_encoder("h264_v4l2m2m", Probe(), {SOFTWARE})
    assert select_encoder("h264_v4l2m2m", Probe(), BOTH).codec == HARDWARE


def test_no_working_encoder_at_all_is_an_error() -> None:
    probe = Probe({HARDWARE: "busy", SOFTWARE: "probe failed: broken build"})
    with pytest.raises(EncoderUnavailable, match="no H.264 encoder works.*broken build.*busy"):
        select_encoder("auto", probe, BOTH)


def test_the_real_libx264_probe_passes_and_a_missing_codec_fails() -> None:
    probe_encode(SOFTWARE)
    assert select_encoder("libx264").codec == SOFTWARE
    with pytest.raises(EncoderProbeFailed, match="probe failed"):
        probe_encode("no_such_codec_here")


def test_a_probe_that_hangs_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(encoders, "_encode_black_frames", lambda codec: release.wait(10))
    try:
        with pytest.raises(EncoderProbeFailed, match="did not finish"):
            probe_encode(SOFTWARE, timeout_s=0.01)
    finally:
        release.set()


def test_stream_options_per_encoder() -> None:
    settings = VideoConfig(preset="veryfast", crf=30, bitrate_kbps=3000)
    sw = SimpleNamespace()
    configure_stream(sw, SOFTWARE, 320, 240, settings)  # type: ignore[arg-type]
    assert sw.options == {"preset": "veryfast", "tune": "zerolatency", "crf": "30", "threads": "1"} and sw.pix_fmt == "yuv420p"
    hw = SimpleNamespace()
    configure_stream(hw, HARDWARE, 320, 240, settings)  # type: ignore[arg-type]
    assert hw.bit_rate == 3_000_000 and hw.pix_fmt == "yuv420p" and not hasattr(hw, "options")


def test_start_encoder_records_the_choice_as_an_event() -> None:
    seen = []
    choice = start_encoder("auto", seen.append, 1.5, Probe({HARDWARE: "busy"}))
    assert choice.codec in BOTH
    assert [e.kind for e in seen] == ["encoder_selected"]
    assert seen[0].details["codec"] == choice.codec and seen[0].details["reason"] == choice.reason


CONFIG = """\
detection: {{enabled: false}}
video: {{encoder: {encoder}, crf: 28}}
cameras: [{{id: cam, source: v.mp4}}]
sinks: [{{type: directory, path: segs, plaintext: true, segment_s: 1}}]
"""


def _config(tmp_path: Path, encoder: str) -> Path:
    write_video(tmp_path / "v.mp4", walker_frames(12))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(encoder=encoder))
    return cfg


def test_run_encodes_with_the_chosen_encoder_and_records_why(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "libx264")
    assert main(["run", "--config", str(cfg)]) == 0
    events = [json.loads(line) for line in (tmp_path / "data" / "events.jsonl").read_text().splitlines()]
    chosen = [e for e in events if e["kind"] == "encoder_selected"]
    assert len(chosen) == 1 and chosen[0]["details"]["codec"] == "libx264"
    seg = sorted((tmp_path / "segs" / "cam").glob("*.mp4"))[0]
    with av.open(str(seg)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_run_refuses_an_explicit_encoder_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_device(codec: str) -> None:
        if codec == HARDWARE:
            raise EncoderProbeFailed("no V4L2 device (/dev/video*): this board has no hardware H.264 encoder")

    monkeypatch.setattr(encoders, "probe_encode", no_device)
    cfg = _config(tmp_path, "h264_v4l2m2m")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "video.encoder: h264_v4l2m2m cannot be used" in err and "Traceback" not in err
    assert not (tmp_path / "segs").exists()


def test_run_with_an_unknown_camera_is_an_error_naming_the_known_ones(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "auto")
    assert main(["run", "--config", str(cfg), "--camera", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no camera with id 'nosuch'" in err and "known: cam" in err
    assert not (tmp_path / "data").exists()  # nothing started


def test_the_muxer_hands_over_a_fragment_every_second_not_a_whole_clip() -> None:
    """Encoded video reaches the (encrypting) writer at least every second, key frame or not: the
    muxer never holds a whole clip unencrypted in memory, and the fragments still play."""
    import io

    from agent.core import redact
    from agent.core.datatypes import Decision, Frame
    from agent.media.video import VideoEncoder
    from agent.vocab import Action

    class Writes(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()
            self.sizes_at: list[int] = []

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            mv = memoryview(b)  # type: ignore[arg-type]
            self.data += mv
            return len(mv)

    out = Writes()
    enc = VideoEncoder(out, 320, 240, 15.0)  # type: ignore[arg-type]
    frames = walker_frames(60)
    for i, img in enumerate(frames):
        f = Frame("cam", i, i / 15, 0.0, img)
        rf = redact.apply(f, Decision("cam", i, i / 15, Action.PASS))
        assert rf is not None
        enc.write(rf)
        out.sizes_at.append(len(out.data))
    enc.close()
    # Key frames come every 250 frames: without a fragment per second nothing would be written yet.
    assert out.sizes_at[29] > 0 and out.sizes_at[44] > out.sizes_at[29]
    with av.open(io.BytesIO(bytes(out.data))) as c:
        assert sum(1 for _ in c.decode(video=0)) == 60


def _redacted(imgs: list[object], start: int = 0) -> list[object]:
    from agent.core import redact
    from agent.core.datatypes import Decision, Frame
    from agent.vocab import Action

    out = []
    for i, img in enumerate(imgs, start):
        rf = redact.apply(Frame("cam", i, i / 15, 0.0, img), Decision("cam", i, i / 15, Action.PASS))  # type: ignore[arg-type]
        assert rf is not None
        out.append(rf)
    return out


def _decode(data: bytes) -> list[av.VideoFrame]:
    import io

    with av.open(io.BytesIO(data)) as c:
        return list(c.decode(video=0))


def test_a_sinks_clips_share_one_encoder_and_each_clip_decodes_alone() -> None:
    """A sink's factory keeps its libx264 encoder from clip to clip (no teardown and rebuild at
    every boundary), yet every clip starts with a key frame, holds exactly its own frames with
    its own time from 0, and decodes without the clips before it."""
    import io

    import numpy as np

    from agent.media.video import encoder_factory

    make = encoder_factory(None)
    frames = _redacted(walker_frames(45))  # type: ignore[arg-type]
    clips, encoders = [], []
    for k in range(3):
        out = io.BytesIO()
        enc = make(out, 320, 240, 15.0)
        encoders.append(enc._shared)
        for rf in frames[k * 15:(k + 1) * 15]:
            enc.write(rf)  # type: ignore[arg-type]
        enc.close()
        clips.append(out.getvalue())
    assert encoders[0] is not None and encoders[0] is encoders[1] is encoders[2]
    for k, data in enumerate(clips):
        decoded = _decode(data)
        assert len(decoded) == 15
        assert decoded[0].key_frame and decoded[0].pict_type == 1
        assert decoded[0].pts == 0 and decoded[0].time == 0.0
        # The clip's own frames, in order: each one is closest to the source frame it came from.
        for j, vf in enumerate(decoded):
            got = vf.to_ndarray(format="bgr24").astype(np.int16)
            errs = [np.abs(got - f.image.astype(np.int16)).mean() for f in frames]  # type: ignore[attr-defined]
            assert int(np.argmin(errs)) == k * 15 + j


def test_an_encoder_that_holds_frames_back_is_flushed_into_its_clip_and_not_reused() -> None:
    """An encoder with a delay (here libx264 with look-ahead and B-frames, as a stand-in for the
    hardware encoder's buffering) gives its last frames only when flushed: they go into the clip
    they belong to, and the next clip opens a new encoder."""
    import io
    from fractions import Fraction

    from agent.media.video import EncoderKeeper, VideoEncoder, _SharedEncoder

    keeper = EncoderKeeper()
    delayed = _SharedEncoder(SOFTWARE, 320, 240, Fraction(15), VideoConfig())
    delayed.ctx.options = {"preset": "medium"}  # look-ahead and B-frames: packets come out late
    keeper.give_back(delayed)
    frames = _redacted(walker_frames(30))  # type: ignore[arg-type]
    out = io.BytesIO()
    enc = VideoEncoder(out, 320, 240, 15.0, keeper=keeper)
    assert enc._shared is delayed
    for rf in frames[:15]:
        enc.write(rf)  # type: ignore[arg-type]
    enc.close()
    assert len(_decode(out.getvalue())) == 15
    out2 = io.BytesIO()
    enc2 = VideoEncoder(out2, 320, 240, 15.0, keeper=keeper)
    assert enc2._shared is not None and enc2._shared is not delayed
    for rf in frames[15:]:
        enc2.write(rf)  # type: ignore[arg-type]
    enc2.close()
    decoded = _decode(out2.getvalue())
    assert len(decoded) == 15 and decoded[0].key_frame


def test_a_failed_write_leaves_no_encoder_for_the_next_clip() -> None:
    """An encoder in an unknown state (its clip's write failed) never starts another clip."""
    import io

    from agent.errors import SinkError
    from agent.media.video import encoder_factory

    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            raise OSError(28, "No space left on device")

    make = encoder_factory(None)
    frames = _redacted(walker_frames(20))  # type: ignore[arg-type]
    enc = make(Broken(), 320, 240, 15.0)  # type: ignore[arg-type]
    first = enc._shared
    with pytest.raises(SinkError):
        for rf in frames:
            enc.write(rf)  # type: ignore[arg-type]
    try:
        enc.close()
    except SinkError:
        pass  # closing a clip whose writes failed may fail too; the clip is dropped either way
    out = io.BytesIO()
    enc2 = make(out, 320, 240, 15.0)
    assert enc2._shared is not None and enc2._shared is not first
    for rf in frames:
        enc2.write(rf)  # type: ignore[arg-type]
    enc2.close()
    assert len(_decode(out.getvalue())) == 20


def test_only_libx264_is_kept_between_clips() -> None:
    """The hardware encoder buffers frames, so it gets a new encoder per clip, through the same
    path its probe encode checks at start; libx264's sink factory keeps one."""
    from agent.media.video import EncoderKeeper, SinkEncoders, encoder_factory

    sw = encoder_factory(EncoderChoice(SOFTWARE, "test"))
    hw = encoder_factory(EncoderChoice(HARDWARE, "test"))
    assert isinstance(sw, SinkEncoders) and isinstance(hw, SinkEncoders)
    assert isinstance(sw.keeper, EncoderKeeper) and hw.keeper is None
    assert encoder_factory(None).keeper is not sw.keeper  # one keeper per sink
