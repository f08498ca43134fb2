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
- The hub's own disk (`agent.storage.space.SpaceGuard`): before a segment starts, and when a write
  or a commit fails for lack of space, the oldest queued ciphertext in the outbox is evicted
  (audited, through `delete_clips`); when nothing can make room the segment is dropped (its
  `.part` removed) and `hold_reason()` withholds the camera's frames (`storage_full`, or
  `storage_read_only` for an outbox that cannot be written) until the disk recovers.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import nacl.utils

from agent.clock import Clock
from agent.config import DirectorySinkConfig, LoadedConfig, S3SinkConfig, SinkConfig, is_plaintext
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
from agent.media.encoders import EncoderChoice
from agent.media.video import EncoderFactory, VideoEncoder
from agent.media.video import encoder_factory as make_encoder_factory
from agent.storage.deletion import AuditFn, EventPurger
from agent.storage.outbox import ClipNotRecorded, Outbox, Uploader
from agent.storage.sinks.epochs import EpochKeyring
from agent.storage.sinks.upload import DirectoryUploader, S3Uploader, read_credentials_file
from agent.storage.space import MIB, SpaceGuard

log = logging.getLogger(__name__)

THUMB_MAX_PX = 160
META_FORMAT = "epa1-clip-meta"


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
        encoder_factory: EncoderFactory | None = None,
        epoch_keys: EpochKeyring | None = None,
        min_free_bytes: int = 0,
        audit: AuditFn | None = None,
        purger: Callable[[], EventPurger | None] = lambda: None,
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
        # Its own factory when none is given: the factory keeps this sink's encoder between clips.
        self._encoder_factory = encoder_factory or make_encoder_factory(None)
        # None: every clip key is wrapped to the devices' long-term keys (as before epoch keys).
        self._epochs = epoch_keys
        self.stream_id = stream_id_for(hub, stream_label or camera_id)
        self.stream = self.stream_id.hex()
        self._seg: _Segment | None = None
        self.committed: list[Path] = []
        #: Frames inside clips committed to the outbox: what was actually stored.
        self.frames_stored = 0
        #: Frames that reached the sink and were not stored because the hub's disk failed them.
        self.frames_dropped = 0
        self._interrupted = False
        # `audit` None: nothing is ever evicted (record, then act); a full disk withholds.
        self._space = SpaceGuard(outbox, self._uploaders, camera_id=camera_id, stream=self.stream, clock=clock,
                                 min_free_bytes=min_free_bytes, audit=audit, purger=purger, on_event=on_event)

    # --- segments ------------------------------------------------------------------

    def _start(self, frame: RedactedFrame) -> _Segment | None:
        # One wall time for the epoch keys and the start sealed into the clip's metadata.
        wall_s = self._clock.wall()
        # Before anything is opened: with `missing_epoch_key: withhold` this raises and no clip
        # is started at all (fail closed).
        recipients: Sequence[DevicePublic | EpochRecipient] = (
            self._recipients if self._epochs is None else self._epochs.recipients(self._recipients, wall_s))
        if not self._space.ready():
            return None  # the disk is full and nothing can be evicted: held, nothing opened
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
        try:
            size = os.fstat(seg.fh.fileno()).st_size
        except (OSError, ValueError):
            size = 0
        self._space.note_partial(size)
        seg.writer.abort()
        self._outbox.discard_part(seg.fh, seg.part)

    def _dropped(self, seg: _Segment | None, err: SinkError) -> None:
        """A segment lost to the disk (room was made for the next one, or the camera is held)."""
        lost = seg.frames if seg is not None else 0
        self.frames_dropped += lost
        log.warning("camera %s: %d frame(s) not stored: %s", self._camera_id, lost, err)

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
            err = SinkError(f"camera {self._camera_id}: finishing a clip failed: {e}")
            if self._space.failed(e) is None:
                raise err from e
            self._dropped(seg, err)
            return
        try:
            self._outbox.seal_part(seg.fh, seg.part, info.clip_id_hex)
        except SinkError as e:
            if self._space.failed(e) is None:
                raise
            self._dropped(seg, e)
            return
        # The outbox reports `clip_sealed` itself, from the same transaction that queues the clip.
        # The times in the hub's index are the very ones sealed into the clip's metadata, so
        # `clips list` and an opened clip agree.
        for attempt in (1, 2):
            try:
                final = self._outbox.record_part(
                    seg.part, info, self._camera_id, list(self._uploaders), keep_unrecorded=True,
                    start_wall_s=meta["start_wall_s"], end_wall_s=meta["end_wall_s"], frames=seg.frames,
                    recipients=list(info.header.recipient_ids))
                break
            except ClipNotRecorded as e:
                # The database could not take the row: on a full disk, evict and try once more.
                retry = self._space.failed(e)
                if retry and attempt == 1:
                    continue
                seg.part.unlink(missing_ok=True)
                if retry is None:
                    raise
                self._dropped(seg, e)
                return
        self.committed.append(final)
        self.frames_stored += seg.frames
        self._space.note_clip(info.size_bytes)
        if not self._interrupted:
            try:
                self._outbox.drain(self._uploaders, self.stream)
            except SinkError as e:
                if self._space.failed(e) is None:
                    raise
                # The clip is safe in the outbox; its delivery is retried on a later drain.
                log.warning("camera %s: delivering clips failed on a full disk: %s", self._camera_id, e)

    # --- Sink protocol ---------------------------------------------------------------

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        if self._space.hold_reason() is not None:
            # A frame that passed the pipeline's check before the hold began: never stored.
            self.frames_dropped += 1
            return
        seg = self._seg
        if seg is not None and (
            (rf.width_px, rf.height_px) != (seg.width_px, seg.height_px)
            or rf.t_s - seg.start_t_s >= self._segment_s
        ):
            self._finish()
        for attempt in (1, 2):
            try:
                self._write_frame(rf)
                return
            except SinkError as e:
                # The segment is already dropped. A full disk made room (try once more with this
                # frame) or holds the camera; anything else is the pipeline's sink failure.
                retry = self._space.failed(e)
                if retry is None:
                    raise
                if not retry or attempt == 2:
                    self.frames_dropped += 1
                    log.warning("camera %s: a frame was not stored: %s", self._camera_id, e)
                    return

    def _write_frame(self, rf: RedactedFrame) -> None:
        seg = self._seg
        if seg is None:
            seg = self._seg = self._start(rf)
            if seg is None:
                self.frames_dropped += 1
                return
        try:
            seg.enc.write(rf)
        except (SinkError, OSError, EnvelopeError) as e:
            self._seg = None
            self._abort(seg)
            self._dropped(seg, SinkError(str(e)))
            raise SinkError(f"camera {self._camera_id}: writing a clip failed: {e}") from e
        seg.frames += 1
        seg.end_t_s = rf.t_s
        for r in rf.decision.regions:
            seg.regions.add(r.name)
            if r.kind == "detection":
                seg.labels.add(r.name.split(":")[0])

    def hold_reason(self) -> str | None:
        """A reason to withhold the camera's frames before they reach any sink, or None: with
        `retention.missing_epoch_key: withhold`, a recipient without an epoch key for now; a full
        (`storage_full`) or read-only (`storage_read_only`) hub disk."""
        hold = None if self._epochs is None else self._epochs.hold_reason(self._recipients)
        return hold or self._space.hold_reason()

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
            key_id, secret = s3_keys(loaded, s)
            up = S3Uploader(
                s.bucket, hub, endpoint=s.endpoint, prefix=s.prefix, region=s.region,
                access_key_id=key_id, secret_access_key=secret,
            )
        else:  # pragma: no cover - the config union is closed
            raise ConfigError(f"unknown sink type {s!r}")
        ups[up.name] = up
    return ups


def s3_keys(loaded: LoadedConfig, s: S3SinkConfig) -> tuple[str | None, str | None]:
    """The S3 sink's keys: from the config, its `credentials_file` (SinkError if unreadable), or
    (None, None) for boto3's own chain (environment variables, ~/.aws)."""
    if s.credentials_file is not None:
        return read_credentials_file(loaded.resolve(s.credentials_file))
    return s.access_key_id, s.secret_access_key


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
    loaded: LoadedConfig, camera_id: str, fps: float, on_event: EventCallback, clock: Clock, *,
    audit: AuditFn | None = None, purger: Callable[[], EventPurger | None] = lambda: None,
    encoder: EncoderChoice | None = None,
) -> list[ClipSink]:
    """One ClipSink per distinct `segment_s` among the encrypted sinks of the config. `audit`
    (the hub's audit log) lets a full disk evict the oldest queued clips; without it a full disk
    withholds. `purger`: the MQTT event outbox, whose events of evicted clips go with them."""
    encrypted = [
        s for s in loaded.config.sinks if not is_plaintext(s)
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
                min_free_bytes=loaded.config.retention.min_free_mb * MIB, audit=audit, purger=purger,
                encoder_factory=make_encoder_factory(encoder, loaded.config.video),
            )
        )
    log.info("camera %s: encrypted clips for %d recipient(s)", camera_id, len(recips))
    return sinks
