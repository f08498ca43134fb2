"""Video files decoded with PyAV, with damaged stretches flagged rather than handed out.

PyAV reports what OpenCV hides: packets the decoder rejects, frames it marks corrupt, frames it
drops. A frame in a damaged stretch, and every frame after it until a clean key frame, raises
`DamagedFrameError`, which the pipeline turns into a withheld frame. Pixels, rotation, fps and
frame counts follow OpenCV's rules, so detection sees exactly what it saw before.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from agent.core.datatypes import Image
from agent.core.ports import SourceInfo
from agent.errors import DamagedFrameError, SourceError
from agent.media.frames import MAX_FAILED_READS, check_file, to_bgr

# Decoded frames held back before they are handed out. Damage that starts
# inside a packet often decodes "cleanly" into garbage just before the first
# packet that fails, and some losses show only when a later frame comes out;
# holding two frames lets damage found that late still withhold them. Kept as
# decoded YUV frames (a few MiB at 1080p), converted to BGR only when handed out.
_LOOKBEHIND_FRAMES = 2


_PICT_I = 1  # AVPictureType AV_PICTURE_TYPE_I, as PyAV reports `VideoFrame.pict_type`


# OpenCV's automatic orientation: the display matrix angle (counter-clockwise) undone.
_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, -90: cv2.ROTATE_90_CLOCKWISE, 270: cv2.ROTATE_90_CLOCKWISE,
           180: cv2.ROTATE_180, -180: cv2.ROTATE_180}


_AV_TIME_BASE = 1_000_000


@dataclass(slots=True)
class _Slot:
    """One frame position on its way out: a decoded frame, or None for one lost to an error."""

    frame: av.VideoFrame | None
    damaged: bool
    errors: int  # decode errors this position stands for
    why: str


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


class VideoFileSource:
    """A video file decoded with PyAV, damaged stretches withheld (see the module invariants)."""

    def __init__(self, spec: str, fps_hint: float | None) -> None:
        self._spec = spec
        check_file(spec)
        try:
            self._container = av.open(spec)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SourceError(f"source {spec}: cannot open or decode (not a video, corrupt, or unreadable): "
                              f"{e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"source {spec}: cannot open or decode (no video stream)")
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
        fps, count = _rate_and_count(self._container, self._stream)
        if not (0 < fps <= 240):
            fps = fps_hint or 10.0
        self.info = SourceInfo(spec, False, fps, count if count > 0 else None)
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

    # -- reading ------------------------------------------------------------------

    def read(self) -> Image | None:
        """Next clean frame, None at the end. Raises DamagedFrameError for a withheld position."""
        while not self._eof and len(self._held) <= _LOOKBEHIND_FRAMES:
            self._pump()
        if not self._held:
            if self._n == 0:
                raise SourceError(f"source {self._spec}: no decodable frames (corrupt or truncated video)")
            return None
        slot = self._held.popleft()
        n = self._n
        self._n += 1
        if slot.frame is None or slot.damaged:
            raise DamagedFrameError(f"source {self._spec} frame {n}: {slot.why}", slot.errors)
        return self._image(slot.frame, n)

    def close(self) -> None:
        self._held.clear()
        self._container.close()

    # -- decoding -----------------------------------------------------------------

    def _pump(self) -> None:
        """Demux and decode one packet, appending what came out to `_held`."""
        try:
            packet = self._next_packet()
        except StopIteration:
            self._end()
            return
        except av.FFmpegError as e:
            self._demux_failed(e)
            return
        if packet.is_corrupt and packet.size and self._cut_short():
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
            self._failed(f"decode error ({e})")
            return
        if packet.is_corrupt:
            # The demuxer knows this packet is damaged (e.g. MPEG-TS continuity errors).
            self._damage("the container marked a packet corrupt")
        for frame in frames:
            self._take(frame)

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
        # The demuxer lost its place in damaged data; a fresh generator reads on from where it is.
        self._packets = self._container.demux(self._stream)
        self._failed(f"unreadable container data ({e})", frame_lost=False)

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
            self._failed(f"decode error ({e})")
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
        if frame.is_corrupt:
            self._damage("decoded with errors")
            self._hold(_Slot(frame, True, 1, "decoded with errors"))
        elif sent is not None and sent <= self._suspect_through:
            self._hold(_Slot(frame, True, 0, f"{self._recover_why}; was being decoded when it was found"))
        elif self._recovering and frame.key_frame and frame.pict_type == _PICT_I:
            # An intra key frame needs no earlier frame: the decoder is clean again
            # (unless damage turns up within the look-behind, which re-marks it).
            self._recovering = False
            self._hold(_Slot(frame, False, 0, ""))
        elif self._recovering:
            self._hold(_Slot(frame, True, 0, f"{self._recover_why}; withheld until a clean key frame"))
        else:
            self._hold(_Slot(frame, False, 0, ""))

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
                              f"position {self._n + len(self._held)} (last: {why}); giving up on the file")
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
        # BICUBIC is OpenCV's swscale flag; with it the pixels are OpenCV's, 10-bit sources included.
        out = self._reformatter.reformat(frame, format="bgr24", interpolation="BICUBIC")
        img = np.ascontiguousarray(out.to_ndarray())
        turn = _ROTATE.get(int(round(frame.rotation)))
        if turn is not None:
            img = cv2.rotate(img, turn)
        return to_bgr(img, f"source {self._spec} frame {n}")

