"""The `retention:` section: how long clips are kept, and (from `epochkeys`) the epoch key settings.

`days` is the hub-wide period; a camera's own `retention_days` overrides it. A clip whose end
is older than its camera's period is deleted by expiry (`agent.storage.deletion.expire`): from
the hub's outbox, from every destination it reached and from the hub's index. `null` (the
default) keeps clips for ever, so configs written before this section stay valid and keep
everything.
"""

from __future__ import annotations

from pydantic import Field

from agent.config.epochkeys import EpochKeySettings

#: The longest period that can be configured (a typo such as 36500000 is an error, not a choice).
RETENTION_MAX_DAYS = 36_500


class RetentionConfig(EpochKeySettings):
    days: int | None = Field(
        default=None, ge=1, le=RETENTION_MAX_DAYS, strict=True,
        description="Delete clips whose end is more than this many days old, everywhere: the hub's outbox, "
        "every sink they were delivered to, and the hub's index. A camera's `retention_days` overrides it. "
        "`null` (default): keep clips for ever. Expiry runs at the start of `run` and every 10 minutes, "
        "and on demand with `privacy-agent clips expire`; each run is recorded in the audit log.",
    )
    min_free_mb: int = Field(
        default=64, ge=0, le=1_000_000, strict=True,
        description="Keep at least this many MiB free on the disk of the hub's data directory. Before each "
        "clip segment (and when a write fails for lack of space) the hub evicts the OLDEST encrypted clips "
        "still queued in its outbox (audited as `clips_evicted`, deleted everywhere like any deletion) to keep "
        "this much plus one segment free; plaintext is never written to make room. When evicting cannot make "
        "room, the camera's frames are withheld (a `storage_full` event) until space returns. 0: evict only "
        "when the disk is actually full.",
    )
