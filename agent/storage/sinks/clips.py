"""The encrypted clip sink (the default): redacted frames -> H.264/MP4 -> envelope -> outbox -> uploads.

Invariants:
- Accepts only `RedactedFrame` (`require_redacted`); raw frames cannot reach the encoder.
- No plaintext segment touches persistent storage: the encoder writes into `ClipWriter`, which
  encrypts each 64 KiB as it fills and streams only ciphertext into the outbox's `.part` file.
  The only plaintext is the 64 KiB buffer in memory. The thumbnail and the camera's name and
  labels travel inside the encrypted final chunk.
- Segments are cut on stream time (`segment_s`, 10-60 s in the config), also across withheld
  stretches, and on a resolution change.
- Each camera's clips form a hash chain (sequence number + previous clip hash, kept in the
  outbox database and advanced in the same transaction that queues the clip).
- A failed upload never loses a clip: it stays in the outbox and is retried; `close()` flushes
  and raises `SinkError` if clips remain queued.
- Each clip key is wrapped to every recipient's EPOCH key for the segment's start wall time
  (`agent.storage.sinks.epochs.EpochKeyring`); a device without one follows
  `retention.missing_epoch_key` (long-term key with an event, or nothing sealed and the
  camera's frames withheld: `hold_reason()`, which the pipeline asks for every frame).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import nacl.utils

from agent.clock import Clock
from agent.config import DirectorySinkConfig, LoadedConfig, S3SinkConfig, SinkConfig
from agent.core.events import EventCallback
from agent.core.redact import RedactedFrame, require_redacted
from agent.crypto.envelope import CLIP_ID_BYTES, ClipWriter, stream_id_for
from agent.crypto.keys import (
    DevicePublic,
    EpochRecipient,
    HubIdentity,
    HubPublic,
    load_hub_identity,
    load_roster,
    resolve_recipients,
)
from agent.errors import ConfigError, EnvelopeError, SinkError
from agent.media.video import VideoEncoder
from agent.storage.outbox import Outbox, Uploader
from agent.storage.sinks.epochs import EpochKeyring
from agent.storage.sinks.upload import DirectoryUploader, S3Uploader, read_credentials_file

log = logging.getLogger(__name__)

THUMB_MAX_PX = 160
META_FORMAT = "epa1-clip-meta"

EncoderFactory = Callable[[BinaryIO, int, int, float], VideoEncoder]


def _default_encoder(out: BinaryIO, w: int, h: int, fps: float) -> VideoEncoder:
    return VideoEncoder(out, w, h, fps)


def _thumbnail(frame: RedactedFrame) -> str | None:
    """A small JPEG of the (already redacted) first frame, for the encrypted metadata."""
    img = frame.image
    h, w = img.shape[:2]
    scale = min(1.0, THUMB_MAX_PX / max(h, w))
    small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


class _Segment:
    """The clip being written: encoder -> ClipWriter -> `.part` file in the outbox (ciphertext only)."""

    def __init__(
        self, fh: BinaryIO, part: Path, writer: ClipWriter, enc: VideoEncoder, first: RedactedFrame, wall_s: float
    ) -> None:
        self.fh = fh
        self.part = part
        self.writer = writer
        self.enc = enc
        self.start_t_s = self.end_t_s = first.t_s
        self.start_wall_s = wall_s
        self.width_px, self.height_px = first.width_px, first.height_px
        self.frames = 0
        self.labels: set[str] = set()
        self.regions: set[str] = set()
        self.thumb: str | None = _thumbnail(first)


class ClipSink:
    """Encrypted clips for one camera, queued in the outbox for every configured destination."""

    plaintext = False

    def __init__(
        self,
        *,
        hub: HubIdentity,
        recipients: Sequence[DevicePublic],
        camera_id: str,
        fps: float,
        segment_s: float,
        outbox: Outbox,
        uploaders: Mapping[str, Uploader],
        clock: Clock,
        on_event: EventCallback | None = None,
        camera_name: str | None = None,
        stream_label: str | None = None,
        encoder_factory: EncoderFactory = _default_encoder,
        epoch_keys: EpochKeyring | None = None,
    ) -> None:
        if not recipients:
            raise SinkError(f"camera {camera_id}: encrypted clips need at least one recipient")
        if segment_s <= 0:
            raise SinkError("segment_s must be positive")
        self.name = "clips:" + ",".join(uploaders) if uploaders else "clips:outbox"
        self._hub = hub
        self._recipients = tuple(recipients)
        self._camera_id = camera_id
        self._camera_name = camera_name
        self._fps = fps if fps > 0 else 10.0
        self._segment_s = segment_s
        self._outbox = outbox
        self._uploaders = dict(uploaders)
        self._clock = clock
        self._on_event = on_event
        self._encoder_factory = encoder_factory
        # None: every clip key is wrapped to the devices' long-term keys (as before epoch keys).
        self._epochs = epoch_keys
        self.stream_id = stream_id_for(hub, stream_label or camera_id)
        self.stream = self.stream_id.hex()
        self._seg: _Segment | None = None
        self.committed: list[Path] = []
        #: Frames inside clips committed to the outbox: what was actually stored.
        self.frames_stored = 0
        self._interrupted = False

    # --- segments ------------------------------------------------------------------

    def _start(self, frame: RedactedFrame) -> _Segment:
        # One wall time for the epoch keys and the start sealed into the clip's metadata.
        wall_s = self._clock.wall()
        # Before anything is opened: with `missing_epoch_key: withhold` this raises and no clip
        # is started at all (fail closed).
        recipients: Sequence[DevicePublic | EpochRecipient] = (
            self._recipients if self._epochs is None else self._epochs.recipients(self._recipients, wall_s))
        cid = nacl.utils.random(CLIP_ID_BYTES)
        fh, part = self._outbox.open_part(self.stream, cid.hex())
        try:
            seq, prev = self._outbox.chain_head(self.stream)
            writer = ClipWriter(fh, self._hub, recipients, self.stream_id, seq, prev, clip_id=cid)
            enc = self._encoder_factory(writer, frame.width_px, frame.height_px, self._fps)  # type: ignore[arg-type]
        except (SinkError, EnvelopeError, OSError) as e:
            self._outbox.discard_part(fh, part)
            raise SinkError(f"camera {self._camera_id}: cannot start a clip: {e}") from e
        return _Segment(fh, part, writer, enc, frame, wall_s)

    def _abort(self, seg: _Segment) -> None:
        seg.writer.abort()
        self._outbox.discard_part(seg.fh, seg.part)

    def _metadata(self, seg: _Segment) -> dict[str, Any]:
        return {
            "format": META_FORMAT,
            "camera_id": self._camera_id,
            "camera_name": self._camera_name,
            "content_type": "video/mp4",
            "start_t_s": round(seg.start_t_s, 6),
            "end_t_s": round(seg.end_t_s, 6),
            "start_wall_s": round(seg.start_wall_s, 3),
            "end_wall_s": round(self._clock.wall(), 3),
            "frames": seg.frames,
            "fps": self._fps,
            "width_px": seg.width_px,
            "height_px": seg.height_px,
            "labels": sorted(seg.labels),
            "masked_regions": sorted(seg.regions),
            "thumbnail_jpeg_b64": seg.thumb,
        }

    def _finish(self) -> None:
        seg, self._seg = self._seg, None
        if seg is None:
            return
        try:
            seg.enc.close()
            meta = self._metadata(seg)
            info = seg.writer.finish(meta)
        except (SinkError, EnvelopeError, OSError) as e:
            self._abort(seg)
            raise SinkError(f"camera {self._camera_id}: finishing a clip failed: {e}") from e
        # The outbox reports `clip_sealed` itself, from the same transaction that queues the clip.
        # The times in the hub's index are the very ones sealed into the clip's metadata, so
        # `clips list` and an opened clip agree.
        final = self._outbox.commit(seg.fh, seg.part, info, self._camera_id, list(self._uploaders),
                                    start_wall_s=meta["start_wall_s"], end_wall_s=meta["end_wall_s"],
                                    frames=seg.frames, recipients=list(info.header.recipient_ids))
        self.committed.append(final)
        self.frames_stored += seg.frames
        if not self._interrupted:
            self._outbox.drain(self._uploaders, self.stream)

    # --- Sink protocol ---------------------------------------------------------------

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        seg = self._seg
        if seg is not None and (
            (rf.width_px, rf.height_px) != (seg.width_px, seg.height_px)
            or rf.t_s - seg.start_t_s >= self._segment_s
        ):
            self._finish()
            seg = None
        if seg is None:
            seg = self._seg = self._start(rf)
        try:
            seg.enc.write(rf)
        except (SinkError, OSError, EnvelopeError) as e:
            self._seg = None
            self._abort(seg)
            raise SinkError(f"camera {self._camera_id}: writing a clip failed: {e}") from e
        seg.frames += 1
        seg.end_t_s = rf.t_s
        for r in rf.decision.regions:
            seg.regions.add(r.name)
            if r.kind == "detection":
                seg.labels.add(r.name.split(":")[0])

    def hold_reason(self) -> str | None:
        """A reason to withhold the camera's frames before they reach any sink, or None: with
        `retention.missing_epoch_key: withhold`, a recipient without an epoch key for now."""
        return None if self._epochs is None else self._epochs.hold_reason(self._recipients)

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        if self._seg is not None and t_s - self._seg.start_t_s >= self._segment_s:
            self._finish()

    def interrupt(self) -> None:
        """The process is stopping (SIGTERM): seal locally from now on, leave uploads queued.

        Called from another thread; the flag is only read, so no lock is needed.
        """
        self._interrupted = True

    def flush_outbox(self, force: bool = True) -> int:
        """Try every queued delivery of this camera now; returns how many remain."""
        return self._outbox.drain(self._uploaders, self.stream, force=force).remaining

    def close(self) -> None:
        err: SinkError | None = None
        try:
            self._finish()
        except SinkError as e:
            err = e
        # Stopping on a signal: the sealed clips are safe in the outbox and go out on the next
        # run; uploading now could keep the process alive far past its stop deadline.
        remaining = self._outbox.pending_count(self.stream) if self._interrupted else self.flush_outbox(force=True)
        if err is not None:
            raise err
        if remaining and self._interrupted:
            log.info("camera %s: %d clip upload(s) stay queued for the next run", self._camera_id, remaining)
            return
        if remaining:
            raise SinkError(
                f"camera {self._camera_id}: {remaining} clip upload(s) failed and remain in the outbox "
                f"{self._outbox.root}; they are retried on the next run"
            )


# --- building from the config --------------------------------------------------------


def build_uploaders(loaded: LoadedConfig, sink_cfgs: Sequence[SinkConfig], hub: HubPublic) -> dict[str, Uploader]:
    ups: dict[str, Uploader] = {}
    for s in sink_cfgs:
        up: Uploader
        if isinstance(s, DirectorySinkConfig):
            up = DirectoryUploader(loaded.resolve(s.path), hub, require_mount=s.require_mount)
        elif isinstance(s, S3SinkConfig):
            key_id, secret = s.access_key_id, s.secret_access_key
            if s.credentials_file is not None:
                key_id, secret = read_credentials_file(loaded.resolve(s.credentials_file))
            up = S3Uploader(
                s.bucket, hub, endpoint=s.endpoint, prefix=s.prefix, region=s.region,
                access_key_id=key_id, secret_access_key=secret,
            )
        else:  # pragma: no cover - the config union is closed
            raise ConfigError(f"unknown sink type {s!r}")
        ups[up.name] = up
    return ups


def camera_recipients(loaded: LoadedConfig, camera_id: str) -> tuple[DevicePublic, ...]:
    """Recipients for one camera: its own list, else the hub-wide list, filtered by the roster."""
    cfg = loaded.config
    cam = cfg.camera(camera_id)
    values = cam.recipients if cam.recipients is not None else cfg.recipients
    roster = load_roster(loaded.data_dir)
    recips = resolve_recipients(values, loaded.path.parent, roster)
    if not recips:
        raise ConfigError(
            f"camera {camera_id}: encrypted sinks need recipients: list public keys under `recipients:` "
            "or install an owner-signed roster (`privacy-agent owner enroll`)"
        )
    return recips


def build_clip_sinks(
    loaded: LoadedConfig, camera_id: str, fps: float, on_event: EventCallback, clock: Clock
) -> list[ClipSink]:
    """One ClipSink per distinct `segment_s` among the encrypted sinks of the config."""
    encrypted = [
        s for s in loaded.config.sinks if not (isinstance(s, DirectorySinkConfig) and s.plaintext)
    ]
    if not encrypted:
        return []
    hub = load_hub_identity(loaded.data_dir)
    recips = camera_recipients(loaded, camera_id)
    # One keyring for the camera's sinks: its events come once per camera, not once per sink.
    keyring = EpochKeyring(loaded.data_dir, camera_id, loaded.config.retention, clock, on_event)
    groups: dict[float, list[SinkConfig]] = {}
    for s in encrypted:
        groups.setdefault(s.segment_s, []).append(s)
    cam = loaded.config.camera(camera_id)
    sinks = []
    for seg_s, cfgs in groups.items():
        label = camera_id if len(groups) == 1 else f"{camera_id}/{seg_s:g}s"
        sinks.append(
            ClipSink(
                hub=hub, recipients=recips, camera_id=camera_id, fps=fps, segment_s=seg_s,
                outbox=Outbox(loaded.data_dir, clock, on_event),
                uploaders=build_uploaders(loaded, cfgs, hub.public), clock=clock, on_event=on_event,
                camera_name=cam.name, stream_label=label, epoch_keys=keyring,
            )
        )
    log.info("camera %s: encrypted clips for %d recipient(s)", camera_id, len(recips))
    return sinks
