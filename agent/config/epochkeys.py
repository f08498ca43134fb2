"""Epoch key settings of the `retention:` section: what the hub does when a household device has no
epoch key for a clip, and how early it warns that a device's list runs out.

`EpochKeySettings` is a base of the `retention:` model (the section's other fields, such as the
retention period, live with it); on its own it is the whole section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.config.base import StrictModel

MissingEpochKey = Literal["longterm", "withhold"]


class EpochKeySettings(StrictModel):
    missing_epoch_key: MissingEpochKey = Field(
        default="longterm",
        description="When a recipient device has no installed epoch key for a clip's start time (its list ran "
        "out, or it never published one): `longterm` wraps that clip's key to the device's long-term key (the "
        "clip can then not be made unopenable by `owner shred`; an `epoch_key_missing` event says so once per "
        "camera and device per run); `withhold` withholds the camera's frames (nothing is sealed for anyone) "
        "until a list with a key for the current time is installed. Default `longterm`: hubs set up before "
        "epoch keys keep recording.",
    )
    epoch_warn_days: float = Field(
        default=7.0, ge=0, le=365,
        description="Raise an `epoch_horizon_near` event (and show it in `doctor`) when a recipient device's "
        "installed epoch keys run out within this many days. 0: no warning.",
    )
