"""Build the configured sinks for one camera.

Invariant: a plaintext sink exists only where the config says
`plaintext: true`; every other sink type is encrypted end to end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.clock import Clock
from agent.config import LoadedConfig, is_plaintext
from agent.core.events import EventCallback
from agent.core.ports import Sink
from agent.media.encoders import EncoderChoice
from agent.media.video import encoder_factory
from agent.storage.deletion import AuditFn, EventPurger
from agent.storage.sinks.directory import PlaintextDirectorySink

log = logging.getLogger(__name__)


def plaintext_sinks(loaded: LoadedConfig) -> list[str]:
    """Descriptions of plaintext sinks in the config (for the `run` warning and `doctor`)."""
    return [
        f"sinks[{i}] ({s.type}: {s.path})"
        for i, s in enumerate(loaded.config.sinks)
        if is_plaintext(s)
    ]


def build_sinks(loaded: LoadedConfig, camera_id: str, fps: float, on_event: EventCallback, clock: Clock, *,
                audit: AuditFn | None = None, purger: Callable[[], EventPurger | None] = lambda: None,
                encoder: EncoderChoice | None = None) -> list[Sink]:
    """The camera's sinks. `audit`/`purger`: see `build_clip_sinks` (a full disk's eviction). `encoder`:
    the run's choice (`agent.media.encoders.select_encoder`); None: libx264."""
    sinks: list[Sink] = []
    encrypted = []
    for s in loaded.config.sinks:
        if is_plaintext(s):
            sinks.append(PlaintextDirectorySink(loaded.resolve(s.path), camera_id, fps, s.segment_s,
                                                encoder_factory(encoder, loaded.config.video)))
        else:
            encrypted.append(s)
    if encrypted:
        # Encrypted clips (issue 4): one ClipSink per distinct segment_s, sharing the outbox.
        from agent.storage.sinks.clips import build_clip_sinks

        sinks.extend(build_clip_sinks(loaded, camera_id, fps, on_event, clock, audit=audit, purger=purger,
                                      encoder=encoder))
    return sinks
