"""Video files and network cameras decoded with PyAV, with damaged stretches flagged rather than
handed out.

PyAV reports what OpenCV hides: packets the decoder rejects, frames it marks corrupt, frames it
drops. A frame in a damaged stretch, and every frame after it until a clean key frame, raises
`DamagedFrameError`, which the pipeline turns into a withheld frame. A network camera's stream
is read the same way: a packet lost on the way (an RTP gap, a camera's own hiccup) leaves the
decoder painting with a damaged reference until the next key frame, and those pictures, smeared
with the previous scene, are withheld rather than analysed as if they were the room.

Files: pixels, rotation, fps and frame counts follow OpenCV's rules, so detection sees exactly
what it saw before. Network cameras: a 4:2:0 picture is converted to BGR by OpenCV's own
conversion (a third of swscale's cost here), and the stream's end, a read that times out or a
demuxer error is a lost source (`SourceError`), which the pipeline opens again with backoff.
"""

from __future__ import annotations

import errno
import heapq
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from agent.core.datatypes import Image
from agent.core.ports import SourceInfo
from agent.errors import DamagedFrameError, FrameSkipped, SourceError
from agent.media.frames import MAX_FAILED_READS, check_file, to_bgr
from agent.media.streamclock import StreamClock

log = logging.getLogger(__name__)

# Decoded frames held back before they are handed out. Damage that starts
# inside a packet often decodes "cleanly" into garbage just before the first
# packet that fails, and some losses show only when a later frame comes out;
# holding two frames lets damage found that late still withhold them. Kept as
# decoded YUV frames (a few MiB at 1080p), converted to BGR only when handed out.
# A live camera's frames wait for it too: two frame intervals (133 ms at 15 fps).
_LOOKBEHIND_FRAMES = 2


_PICT_I = 1  # AVPictureType AV_PICTURE_TYPE_I, as PyAV reports `VideoFrame.pict_type`


# OpenCV's automatic orientation: the display matrix angle (counter-clockwise) undone.
_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, -90: cv2.ROTATE_90_CLOCKWISE, 270: cv2.ROTATE_90_CLOCKWISE,
           180: cv2.ROTATE_180, -180: cv2.ROTATE_180}


_AV_TIME_BASE = 1_000_000

#: Seconds a network camera may take to open, and to give its next packet, before it counts as
#: lost. FFmpeg's own default is to wait for ever: a camera that stops sending without closing
#: the connection would hang its reader, and the pipeline would never open it again.
STREAM_OPEN_TIMEOUT_S = 20.0
STREAM_READ_TIMEOUT_S = 10.0

#: FFmpeg's stream probe, cut to its first packet for a network camera. By default FFmpeg reads
#: seconds of stream before it says the stream is open (about 1.8 s of a 15 fps RTSP camera here),
#: only to estimate a frame rate the live pipeline never uses (its clock stamps the frames, and the
#: config's `fps` times the clips); that video then comes out in one burst of stale frames, which
#: fills every queue at once (about 10 MiB above the steady figure with one 720p camera) and reaches
#: the first sink late. An RTSP camera's SDP, or the stream's first packet, says the codec and the
#: picture size.
SHORT_PROBE = {"probesize": "32"}  # FFmpeg's smallest: stop after the first packet
#: Options of the installer's that set the probe themselves: with either, FFmpeg probes their way.
PROBE_KEYS = frozenset({"probesize", "analyzeduration"})

#: Errors of an open that say the camera is not there (or not answering), not that the probe was
#: too short: opening it again at once with the full probe would only wait twice. PyAV's errors
#: subclass Python's own (refused, reset, timed out, not found, not permitted); the two network
#: errnos Python has no class for are named.
_UNREACHABLE = (ConnectionError, TimeoutError, PermissionError, FileNotFoundError, av.error.ExitError,
                av.error.HTTPError, av.error.HTTPClientError, av.error.HTTPServerError,
                av.error.ProtocolNotFoundError)
_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


@dataclass(slots=True)
class _Slot:
    """One frame position on its way out: a decoded frame, or None for one lost to an error."""

    frame: av.VideoFrame | None
    damaged: bool
    errors: int  # decode errors this position stands for
    why: str
    #: A live camera's: how far behind the camera the frame came out of the decoder (`StreamClock`).
    behind_s: float = 0.0
    #: Skipped undecoded to catch up with the camera (`AVSource.catch_up`): withheld for lag.
    skipped: bool = False


def _rate_and_count(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[float, int]:
    """OpenCV's CAP_PROP_FPS and CAP_PROP_FRAME_COUNT for the same file (cap_ffmpeg_impl.hpp).

    The same rules, not better ones: `source_truncated` and the lab's fixtures
    compare against what OpenCV said before, and a hub's recordings did not change.
    """
    rate = stream.average_rate
    fps = float(rate) if rate else 0.0
    if fps <= 0 and stream.time_base:
        fps = 1.0 / float(stream.time_base)
    count = int(stream.frames or 0)
    if count == 0:
        seconds = (container.duration or 0) / _AV_TIME_BASE
        if seconds <= 0 and stream.duration is not None and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        count = int(np.floor(seconds * fps + 0.5))
    return fps, count


def _seconds(ts: int | None, base: Fraction | None) -> float | None:
    return float(ts * base) if ts is not None and base else None


def _why(e: BaseException) -> str:
    """What went wrong, without the URL: FFmpeg's errors carry the address they were given, a
    camera's password included (`rtsp://admin:secret@...`), and these words reach events and the
    broker."""
    text = getattr(e, "strerror", None)
    return str(text) if text else type(e).__name__


class _FullProbe:
    """Network cameras (public specs) whose stream the short probe could not open: opened with
    FFmpeg's full probe from then on, until an open with it fails too (then the probe was not the
    cause, and the next open tries the short one again)."""

    _lock = threading.Lock()
    _specs: set[str] = set()

    @classmethod
    def needed(cls, spec: str) -> bool:
        with cls._lock:
            return spec in cls._specs

    @classmethod
    def mark(cls, spec: str, full: bool) -> None:
        with cls._lock:
            if full and spec not in cls._specs:
                log.info("source %s: the next open uses FFmpeg's full stream probe", spec)
                cls._specs.add(spec)
            elif not full:
                cls._specs.discard(spec)


def open_file(spec: str, fps_hint: float | None) -> AVSource:
    """A video file (see `AVSource`)."""
    check_file(spec)
    try:
        container = av.open(spec)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceError(f"source {spec}: cannot open or decode (not a video, corrupt, or unreadable): "
                          f"{e}") from e
    if not container.streams.video:
        container.close()
        raise SourceError(f"source {spec}: cannot open or decode (no video stream)")
    return AVSource(container, spec, fps_hint, live=False)


def open_stream(target: str, spec: str, fps_hint: float | None, options: dict[str, str]) -> AVSource:
    """A network camera at `target` (named `spec`, its public form, in every message), opened with
    the installer's FFmpeg `options` and, unless they set the probe, the short probe.

    A stream the short probe cannot open (a container that lists its streams later, a format FFmpeg
    must sniff from more than the first bytes) is opened again at once with the full probe, and
    that camera keeps it. An unreachable camera is not tried twice."""
    short = not (PROBE_KEYS & options.keys()) and not _FullProbe.needed(spec)
    if short:
        try:
            container = _open_network(target, spec, {**options, **SHORT_PROBE})
        except _ProbeTooShort:
            _FullProbe.mark(spec, True)
        else:
            return AVSource(container, spec, fps_hint, live=True)
    try:
        container = _open_network(target, spec, options)
    except _ProbeTooShort as e:
        _FullProbe.mark(spec, False)
        raise SourceError(f"source {spec}: cannot open or decode ({e})") from None
    except SourceError:
        _FullProbe.mark(spec, False)
        raise
    return AVSource(container, spec, fps_hint, live=True)


class _ProbeTooShort(Exception):
    """The stream answered but the open found no video in it (or could not tell its format)."""


def _open_network(target: str, spec: str, options: dict[str, str]) -> av.container.InputContainer:
    try:
        container = av.open(target, options=options, timeout=(STREAM_OPEN_TIMEOUT_S, STREAM_READ_TIMEOUT_S))
    except (av.FFmpegError, OSError, ValueError) as e:
        if isinstance(e, _UNREACHABLE) or getattr(e, "errno", None) in _UNREACHABLE_ERRNOS:
            raise SourceError(f"source {spec}: cannot open ({_why(e)})") from None
        raise _ProbeTooShort(_why(e)) from None
    if not container.streams.video:
        container.close()
        raise _ProbeTooShort("no video stream")
    return container


class AVSource:
    """A container decoded with PyAV, damaged stretches withheld (see the module invariants).

    Made by `open_file` or `open_stream`, which name the source (a file by its path, a network
    camera by its public spec, never with its password) and hand over a container with video."""

    def __init__(self, container: av.container.InputContainer, spec: str, fps_hint: float | None,
                 live: bool) -> None:
        self._spec = spec
        self._live = live
        self._container = container
        self._stream = self._container.streams.video[0]
        # One decoding thread. Slice threads would turn FFmpeg's H.264 error
        # concealment, and with it the per-frame corrupt flag, off. Frame threads
        # report an error frames after the packet that caused it, and carry
        # concealment state into the next key frame; they also cost 20-40 MiB more
        # at 1080p and more CPU per frame, so in the pipeline, where the other core
        # encodes or detects, one thread is as fast as OpenCV's decoding or faster.
        # FFmpeg's default error detection: stricter levels ("aggressive") also
        # reject streams that merely leave padding at the end of a slice, which
        # would withhold a lenient camera's every frame.
        self._stream.thread_type = "NONE"
        if live:
            # The stream's declared rate (an RTSP camera's SDP or SPS says it); the live pipeline
            # stamps frames with its own clock, so this only times clips when the config says nothing.
            rate = self._stream.average_rate or self._stream.guessed_rate
            fps, count = (float(rate) if rate else 0.0), 0
        else:
            fps, count = _rate_and_count(self._container, self._stream)
        if not (0 < fps <= 240):
            fps = fps_hint or 10.0
        self.info = SourceInfo(spec, live, fps, count if count > 0 else None)
        self._packets = self._container.demux(self._stream)
        self._peeked: av.Packet | None = None
        self._reformatter = VideoReformatter()
        self._held: deque[_Slot] = deque()
        # pts of packets sent to the decoder whose frame has not come out yet.
        # Frames come out in presentation order, so a pending pts below the
        # frame just decoded is a frame the decoder dropped without saying so
        # (PyAV swallows an error that follows a good frame in one call).
        self._pending_pts: list[int] = []
        # Decode order: pts -> number of the packet that carried it. Damage can
        # show while frames sent before it are still inside the decoder (B-frame
        # reordering, an error PyAV reports late), and those may be built on the
        # damaged one; so every frame sent up to the moment damage was found is
        # suspect, and only a key frame sent after it ends the stretch.
        self._sent: dict[int, int] = {}
        self._packets_sent = 0
        self._suspect_through = -1
        self._flushed_at = 0  # number of the first packet sent after the last decoder reset
        self._errors_unmatched = 0  # decode errors not yet matched to a missing pts
        self._errors_carried = 0  # demux errors waiting for the next position
        # Until the first key frame the decoder has no clean reference either.
        self._recovering = True
        self._recover_why = "before the first key frame"
        self._failed_reads = 0
        self._decoded = 0  # frames the decoder returned at all
        self._eof = False
        self._n = 0  # positions handed out (frames and lost frames)
        # A live camera's backlog: how much later than a prompt reader this reader has each frame.
        self._clock = StreamClock()
        self._behind_s = 0.0
        # While catching up: the backlog a key frame may have at most for decoding to start again.
        self._catch_up: float | None = None

    # -- reading ------------------------------------------------------------------

    def read(self) -> Image | None:
        """Next clean frame, None at the end. Raises DamagedFrameError for a withheld position."""
        while not self._eof and len(self._held) <= _LOOKBEHIND_FRAMES:
            self._pump()
        if not self._held:
            if self._live:
                # A camera never ends: its stream closing is a lost source, opened again with backoff.
                raise SourceError(f"source {self._spec}: stream stopped delivering frames")
            if self._n == 0:
                raise SourceError(f"source {self._spec}: no decodable frames (corrupt or truncated video)")
            return None
        slot = self._held.popleft()
        n = self._n
        self._n += 1
        self._behind_s = slot.behind_s
        if slot.skipped:
            raise FrameSkipped(f"source {self._spec} frame {n}: {slot.why}", slot.behind_s)
        if slot.frame is None or slot.damaged:
            raise DamagedFrameError(f"source {self._spec} frame {n}: {slot.why}", slot.errors)
        return self._image(slot.frame, n)

    def backlog_s(self) -> float:
        """Seconds the frame just read was behind the camera when it came out of the decoder
        (`StreamClock`); 0 for a file. The source's own look-behind is not counted: it holds
        every frame the same few frame intervals, as before the backlog was measured."""
        return self._behind_s

    def catch_up(self, max_behind_s: float) -> None:
        """Catch up with a camera this reader has fallen behind: decode nothing more until a
        key frame no more than `max_behind_s` behind the camera. The packets in between are
        read and dropped, each a position withheld for lag (`FrameSkipped`).

        Decoding them only to withhold them costs a frame's decode each, on a hub that is behind
        because it has no time to spare: a reader that decoded its way through a backlog barely
        kept pace with the camera and never caught up. Dropped whole, a second of stream costs
        next to nothing, and decoding starts again from a key frame, which needs no earlier one.
        A file is never skipped: it has no camera to keep up with."""
        if self._live:
            self._catch_up = max_behind_s

    def close(self) -> None:
        self._held.clear()
        self._container.close()

    # -- decoding -----------------------------------------------------------------

    def _pump(self) -> None:
        """Demux and decode one packet, appending what came out to `_held`."""
        asked = time.monotonic()
        try:
            packet = self._next_packet()
        except StopIteration:
            self._end()
            return
        except av.FFmpegError as e:
            self._demux_failed(e)
            return
        if self._live:
            now = time.monotonic()
            pts_s = _seconds(packet.pts, packet.time_base)
            # While catching up, a packet waited for half a frame interval came live (StreamClock).
            live_wait = None if self._catch_up is None else 0.5 / self.info.fps
            trusted = self._clock.trusted
            self._clock.arrived(now, pts_s, _seconds(packet.dts, packet.time_base), waited_s=now - asked,
                                live_wait_s=live_wait)
            if trusted and not self._clock.trusted:
                log.warning("source %s: its timestamps run slower than its frames come; how far behind the "
                            "camera this hub is can no longer be measured on this connection", self._spec)
            if self._catch_up is not None and self._skipped(packet, self._clock.behind_s(now, pts_s)):
                return
        if not self._live and packet.is_corrupt and packet.size and self._cut_short():
            # The data ends inside this packet: the file was cut (a copy cut short, a
            # recording stopped by power loss). That is truncation, not damage: the
            # source ends where the whole frames end and the pipeline reports
            # `source_truncated`; the partial frame is never decoded.
            return
        if self._recovering and packet.is_keyframe and self._packets_sent > 0:
            self._flush_decoder()
        # A packet the container marks discard (before an edit list's start) is decoded for
        # its references but never shown: it is not owed a frame.
        if packet.size and packet.pts is not None and not packet.is_discard:
            heapq.heappush(self._pending_pts, packet.pts)
            self._sent[packet.pts] = self._packets_sent
        self._packets_sent += 1
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            self._errors_unmatched += 1
            self._failed(f"decode error ({self._what(e)})")
            return
        if packet.is_corrupt:
            # The demuxer knows this packet is damaged (e.g. MPEG-TS continuity errors).
            self._damage("the container marked a packet corrupt")
        for frame in frames:
            self._take(frame)

    def _skipped(self, packet: av.Packet, behind_s: float) -> bool:
        """While catching up: drop `packet` undecoded (True), or decode again from it (False)."""
        limit = self._catch_up
        assert limit is not None
        if packet.is_keyframe and behind_s <= limit:
            self._catch_up = None
            return False
        if self._packets_sent > self._flushed_at:
            # The frames still inside the decoder come out first, in order, and the decoder is
            # reset: the key frame that ends the skip decodes from a clean state.
            self._flush_decoder()
        if not self._recovering:
            # As after damage: only an intra key frame is clean again. A frame of an open GOP
            # that refers to a skipped one is withheld, not decoded from what is not there.
            self._recovering, self._recover_why = True, "follows frames skipped to catch up with the camera"
        if packet.size and not packet.is_discard:
            self._held.append(_Slot(None, False, 0, f"skipped undecoded, {behind_s:.2f}s behind the camera",
                                    behind_s, skipped=True))
        return True

    def _next_packet(self) -> av.Packet:
        if self._peeked is not None:
            packet, self._peeked = self._peeked, None
            return packet
        return next(self._packets)

    def _cut_short(self) -> bool:
        """Whether nothing but the end of the data follows (looks one packet ahead)."""
        try:
            self._peeked = next(self._packets)
        except StopIteration:
            return True
        except av.FFmpegError as e:
            self._demux_failed(e)
            return False
        # The demuxer's empty packet that flushes the decoder: the end.
        return not self._peeked.size

    def _demux_failed(self, e: av.FFmpegError) -> None:
        if self._live:
            # A network demuxer that fails has lost its camera (the connection, a read that timed
            # out): the pipeline opens it again, and nothing decoded after the gap is trusted
            # until a key frame, as after any open.
            raise SourceError(f"source {self._spec}: stream stopped delivering frames ({self._what(e)})") from None
        # The demuxer lost its place in damaged data; a fresh generator reads on from where it is.
        self._packets = self._container.demux(self._stream)
        self._failed(f"unreadable container data ({e})", frame_lost=False)

    def _what(self, e: BaseException) -> str:
        """An FFmpeg error in words: a file's may quote its path; a camera's never names its URL."""
        return _why(e) if self._live else str(e)

    def _flush_decoder(self) -> None:
        """Drain and reset the decoder before the key frame that may end a damaged stretch.

        The frames still in flight come out now (all suspect); the reset makes the
        key frame decode from a clean state, as after a seek, whatever the damage
        left behind in the decoder (with frame threads, for one, concealment state
        leaks into the next key frame without any error being reported).
        """
        cc = self._stream.codec_context
        try:
            frames = cc.decode(None)
        except av.FFmpegError as e:
            frames = []
            self._errors_unmatched += 1
            self._failed(f"decode error ({self._what(e)})")
        for frame in frames:
            self._take(frame)
        cc.flush_buffers()
        self._flushed_at = self._packets_sent

    def _take(self, frame: av.VideoFrame) -> None:
        self._decoded += 1
        self._failed_reads = 0
        missing, latest = self._missing_before(frame.pts)
        if missing:
            # Frames sent before the last decoder reset cannot have tainted anything
            # decoded after it; only later ones start a new damaged stretch.
            if latest is None or latest >= self._flushed_at:
                self._damage(f"{missing} frame(s) dropped by the decoder")
            for _ in range(missing):
                self._hold(_Slot(None, True, 1, "dropped by the decoder (damaged data)"))
        sent = self._sent.pop(frame.pts, None) if frame.pts is not None else None
        behind_s = self._clock.behind_s(time.monotonic(), _seconds(frame.pts, frame.time_base)) if self._live else 0.0
        if frame.is_corrupt:
            self._damage("decoded with errors")
            self._hold(_Slot(frame, True, 1, "decoded with errors", behind_s))
        elif sent is not None and sent <= self._suspect_through:
            self._hold(_Slot(frame, True, 0, f"{self._recover_why}; was being decoded when it was found", behind_s))
        elif self._recovering and frame.key_frame and frame.pict_type == _PICT_I:
            # An intra key frame needs no earlier frame: the decoder is clean again
            # (unless damage turns up within the look-behind, which re-marks it).
            self._recovering = False
            self._hold(_Slot(frame, False, 0, "", behind_s))
        elif self._recovering:
            self._hold(_Slot(frame, True, 0, f"{self._recover_why}; withheld until a clean key frame", behind_s))
        else:
            self._hold(_Slot(frame, False, 0, "", behind_s))

    def _missing_before(self, pts: int | None) -> tuple[int, int | None]:
        """Pending packets presented before `pts` that never came out, less errors already counted,
        and the latest packet number among them (None: unknown or none)."""
        if pts is None:
            return 0, None
        missing = 0
        latest: int | None = -1
        while self._pending_pts and self._pending_pts[0] < pts:
            seq = self._sent.pop(heapq.heappop(self._pending_pts), None)
            latest = None if seq is None or latest is None else max(latest, seq)
            missing += 1
        if self._pending_pts and self._pending_pts[0] == pts:
            heapq.heappop(self._pending_pts)
        matched = min(missing, self._errors_unmatched)
        self._errors_unmatched -= matched
        return missing - matched, latest

    def _damage(self, why: str) -> None:
        """Damage found now: withhold until a clean key frame, and the held-back frames too."""
        self._recovering = True
        self._recover_why = f"follows damage ({why})"
        self._suspect_through = self._packets_sent - 1
        for slot in self._held:
            if not slot.damaged:
                slot.damaged = True
                slot.why = f"decoded just before damage was found ({why})"

    def _hold(self, slot: _Slot) -> None:
        if self._errors_carried:
            # Errors that cost no frame of their own (the demuxer skipping damaged data)
            # are counted on the next position, which is withheld with them.
            slot.errors += self._errors_carried
            self._errors_carried = 0
            if not slot.damaged:
                slot.damaged, slot.why = True, f"{self._recover_why}; right after it"
        self._held.append(slot)

    def _failed(self, why: str, frame_lost: bool = True) -> None:
        self._failed_reads += 1
        if self._failed_reads > MAX_FAILED_READS:
            if self._decoded == 0:
                raise SourceError(f"source {self._spec}: no decodable frames (corrupt or truncated video)")
            raise SourceError(f"source {self._spec}: {self._failed_reads} reads in a row gave no frame after "
                              f"position {self._n + len(self._held)} (last: {why}); giving up on the "
                              f"{'stream' if self._live else 'file'}")
        self._damage(why)
        if frame_lost:
            self._hold(_Slot(None, True, 1, why))
        else:
            self._errors_carried += 1

    def _end(self) -> None:
        # The demuxer's final empty packet has flushed the decoder: anything still
        # pending was lost. Errors already counted stand for some of it.
        self._eof = True
        lost = len(self._pending_pts) - self._errors_unmatched
        self._pending_pts.clear()
        self._sent.clear()
        if lost > 0:
            self._damage(f"{lost} frame(s) never came out of the decoder")
            for _ in range(lost):
                self._hold(_Slot(None, True, 1, "never came out of the decoder (damaged or cut data)"))
        if self._errors_carried:
            self._hold(_Slot(None, True, 0, "unreadable container data at the end of the file"))

    def _image(self, frame: av.VideoFrame, n: int) -> Image:
        if (self._live and frame.format.name == "yuv420p" and not frame.rotation
                and frame.width % 2 == 0 and frame.height % 2 == 0):
            # A camera's usual picture (limited-range 4:2:0): OpenCV's conversion, the BT.601 one
            # OpenCV's own capture applied, at a third of swscale's cost. A file keeps swscale's
            # pixels below, which the lab's fixtures were made with.
            return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
        # BICUBIC is OpenCV's swscale flag; with it the pixels are OpenCV's, 10-bit sources included.
        out = self._reformatter.reformat(frame, format="bgr24", interpolation="BICUBIC")
        img = np.ascontiguousarray(out.to_ndarray())
        turn = _ROTATE.get(int(round(frame.rotation)))
        if turn is not None:
            img = cv2.rotate(img, turn)
        return to_bgr(img, f"source {self._spec} frame {n}")

