#!/usr/bin/python3
"""Serve recorded H.264 clips as live RTSP cameras on loopback, at their real frame rate, looping.

Runs under the system Python with GStreamer's RTSP server (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base/-good/-bad); the agent's venv never imports
gi. `bench/bench_live.py` starts it. Each clip is an H.264 Annex-B elementary stream whose first
access unit is an IDR frame. It is split into access units once, at start, and held in memory, so
serving costs no decode and no encode: the machine's cores stay with the agent under test.

Each client connection gets its own media (not shared) fed by one thread that pushes access unit
k at `start + k / fps` on the monotonic clock, as a camera would: a live `appsrc` stamped with
the pipeline's running time, so a slow client falls behind a stream that does not wait for it. The
clip loops from its first access unit (an IDR frame), so a decoder picks up again at the seam.

    /usr/bin/python3 bench/rtsp_serve.py --clip cam0=/tmp/a.h264 --clip cam1=/tmp/b.h264 --fps 15 \
        [--port 0] [--ready FILE] [--stamp-scale 1.0]

`--port 0` (the default) takes a free port; the bound port is written to `--ready` (or printed as
`ready PORT`) once the server listens. SIGTERM or SIGINT stops it; on stop it prints, per clip,
the access units pushed to all clients. `--stamp-scale S` stamps the frames as if time ran at S
of the real pace while still sending them at the frame rate: a camera whose timestamps are wrong
(the tests' camera that stamps a nominal rate it does not send at).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"
#: The stream's timestamps run at this share of real time (`--stamp-scale`; 1: a camera's own clock).
STAMP_SCALE = 1.0


def load_access_units(path: str) -> list[bytes]:
    """Split an Annex-B H.264 file into access units with GStreamer's own parser."""
    pipe = Gst.parse_launch(f'filesrc location="{path}" ! h264parse ! {CAPS} ! appsink name=out sync=false')
    sink = pipe.get_by_name("out")
    pipe.set_state(Gst.State.PLAYING)
    units: list[bytes] = []
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if ok:
            units.append(bytes(info.data))
            buf.unmap(info)
    pipe.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"rtsp_serve: {path}: no H.264 access units")
    return units


class Pusher:
    """One client's media: pushes the clip's access units at the frame rate until the media ends."""

    def __init__(self, name: str, units: list[bytes], fps: float, counts: dict[str, int],
                 lock: threading.Lock) -> None:
        self.name, self.units, self.fps = name, units, fps
        self.counts, self.lock = counts, lock
        self.stop = threading.Event()
        self.src: GstApp.AppSrc | None = None
        self.playing = threading.Event()

    def configure(self, media: GstRtspServer.RTSPMedia) -> None:
        self.src = media.get_element().get_by_name("src")
        media.connect("unprepared", lambda *_: self.stop.set())
        media.connect("new-state", self._state)
        threading.Thread(target=self.run, name=f"push-{self.name}", daemon=True).start()

    def _state(self, _media: object, state: int) -> None:
        if state == Gst.State.PLAYING:
            self.playing.set()

    def run(self) -> None:
        assert self.src is not None
        frame_s = 1.0 / self.fps
        # The first access unit (an IDR with SPS/PPS) at once: DESCRIBE needs it for the SDP. The
        # rest from PLAY on: frames pushed before would reach the client in a burst.
        k = 0
        while not self.stop.is_set():
            if k == 1:
                while not self.playing.wait(0.1):
                    if self.stop.is_set():
                        return
                start = time.monotonic() - frame_s
            if k >= 1:
                wait = start + k * frame_s - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
            buf = Gst.Buffer.new_wrapped(self.units[k % len(self.units)])
            buf.duration = int(frame_s * STAMP_SCALE * Gst.SECOND)
            if STAMP_SCALE != 1.0:
                # A camera that stamps its frames wrongly (tests): time runs at this share of the real.
                buf.pts = buf.dts = int(k * frame_s * STAMP_SCALE * Gst.SECOND)
            if self.src.push_buffer(buf) != Gst.FlowReturn.OK:
                break  # the client went away: the media is being torn down
            with self.lock:
                self.counts[self.name] = self.counts.get(self.name, 0) + 1
            k += 1


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, name: str, units: list[bytes], fps: float, counts: dict[str, int],
                 lock: threading.Lock) -> None:
        super().__init__()
        self.name, self.units, self.fps, self.counts, self.lock = name, units, fps, counts, lock
        num, den = Gst.util_double_to_fraction(fps)
        # A live source stamped with running time: the stream plays at the clock, like a camera.
        # A client that falls 2 s behind loses the oldest frames, as from a camera's own buffer.
        stamp = "true" if STAMP_SCALE == 1.0 else "false"
        self.set_launch(f"( appsrc name=src is-live=true do-timestamp={stamp} format=time block=false "
                        f"max-buffers=30 leaky-type=downstream caps={CAPS},framerate={num}/{den} ! h264parse ! "
                        "rtph264pay name=pay0 pt=96 config-interval=-1 )")
        self.set_shared(False)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        Pusher(self.name, self.units, self.fps, self.counts, self.lock).configure(media)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", required=True, help="NAME=PATH of an Annex-B H.264 file")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--stamp-scale", type=float, default=1.0,
                    help="stamp frames as if time ran at this share of real time (a camera with a wrong clock)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready", help="file to write the bound port to once listening")
    a = ap.parse_args()
    global STAMP_SCALE
    STAMP_SCALE = a.stamp_scale
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    counts: dict[str, int] = {}
    lock = threading.Lock()
    for spec in a.clip:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"rtsp_serve: --clip {spec!r}: expected NAME=PATH")
        mounts.add_factory(f"/{name}", ClipFactory(name, load_access_units(path), a.fps, counts, lock))
    if server.attach(None) == 0:
        raise SystemExit(f"rtsp_serve: cannot listen on 127.0.0.1:{a.port}")
    port = server.get_bound_port()
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    if a.ready:
        tmp = a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, a.ready)
    else:
        print(f"ready {port}", flush=True)
    loop.run()
    with lock:
        for name in sorted(counts):
            print(f"served {name} {counts[name]}", flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
