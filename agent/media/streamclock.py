"""How far a live camera's reader is behind the camera, from the stream's own timestamps.

A reader that falls behind a network camera loses no frame at first: the camera's packets wait
in the socket and in the sender's buffers, and come out in order, later and later. Measured
here: a reader taking 12.5 frames a second from a 15 fps RTSP camera over TCP was 12.7 s behind
after a minute, and had not lost a frame. Stamped when read, each of those frames looked fresh,
so `analysis.max_lag_s` never saw the backlog, and a hub that could not keep up released video
seconds old as live.

The stream's timestamps say when each frame was sent, on the camera's clock. `StreamClock`
keeps the least `arrival - stream time` seen, the delay of a packet read as soon as it came
(`floor`), and a frame is behind by how much later than that it is read. Three things move the
floor other than a quicker packet:
- clock drift: a camera's clock may run slower than the hub's, which makes every packet look a
  little later. The floor may rise by `RISE_PER_S` (1 ms a second, ten times a cheap crystal's
  100 ppm), so drift never reads as lag, while a reader falling behind (a frame interval every
  few frames: hundreds of ms a second) does;
- a discontinuity: a decode timestamp that goes back (a camera restarting its clock, a new
  stream on the same connection) starts a new floor at that packet. A jump forward lowers the
  floor by itself;
- a packet the reader had to wait for, while it catches up: a reader behind its camera finds
  the next packet already waiting, so three in a row that it had to wait for (`LIVE_WAITS`,
  each for half a frame interval or more) came live off the network, and the floor starts again
  at the third. Without it, a camera whose timestamps run slower than its frames (one that stamps
  a nominal 30 fps and sends 15) would look further behind with every frame, and be skipped for
  ever. Only while catching up: elsewhere a read held up by other threads could pass for a wait
  and hide a backlog. With right timestamps a caught-up reader's floor hardly moves; one that
  has to rise by more than `UNTRUSTED_RISE_S` says the timestamps run slow, and from then on
  they place no frame (`trusted` False: no backlog is measured, as for a source without
  timestamps), rather than withhold a fresh picture every few seconds.

Pure: times come in as arguments, in seconds (the hub's monotonic clock, the stream's time
base), so tests drive it without a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How fast the floor may rise, seconds per second: absorbs a camera clock slower than the hub's.
RISE_PER_S = 0.001
#: Packets in a row a catching-up reader had to wait for before it counts as caught up.
LIVE_WAITS = 3
#: How far a caught-up reader's floor may rise before the stream's timestamps are not trusted.
UNTRUSTED_RISE_S = 0.25


@dataclass(slots=True)
class StreamClock:
    """One stream's floor (see the module). A new stream (a reconnect) gets a new one."""

    floor_s: float | None = None
    _last_arrival_s: float = 0.0
    _last_dts_s: float | None = None
    _waits: int = 0
    #: False once the timestamps were found to run slow (see the module): no backlog from them.
    trusted: bool = True

    def arrived(self, now_s: float, pts_s: float | None, dts_s: float | None = None, *,
                waited_s: float = 0.0, live_wait_s: float | None = None) -> None:
        """A packet with presentation time `pts_s` (decode time `dts_s`) was read at `now_s`,
        after waiting `waited_s` for it. `live_wait_s` is given while the reader catches up: a
        wait that long or longer means the packet came live off the network (see the module)."""
        if pts_s is None:
            return
        order = dts_s if dts_s is not None else pts_s
        delay = now_s - pts_s
        live = live_wait_s is not None and waited_s >= live_wait_s
        self._waits = self._waits + 1 if live else 0
        if self._waits >= LIVE_WAITS and self.floor_s is not None:
            if delay - self.floor_s > UNTRUSTED_RISE_S:
                self.trusted = False
            self.floor_s = delay
        elif self.floor_s is None or (self._last_dts_s is not None and order < self._last_dts_s):
            self.floor_s = delay
        else:
            risen = self.floor_s + RISE_PER_S * max(0.0, now_s - self._last_arrival_s)
            self.floor_s = min(risen, delay)
        self._last_arrival_s = now_s
        self._last_dts_s = order

    def behind_s(self, now_s: float, pts_s: float | None) -> float:
        """Seconds the frame presented at `pts_s`, read at `now_s`, is later than a prompt read
        would have had it: 0 when unknown (no timestamps yet, or none to trust)."""
        if pts_s is None or self.floor_s is None or not self.trusted:
            return 0.0
        return max(0.0, now_s - (pts_s + self.floor_s))
