"""MQTT and access-flow settings (`mqtt:` in the homeowner's config).

Invariants:
- TLS is on unless the homeowner says `tls: false` explicitly; with TLS the
  broker certificate is always verified (against `ca_file`, or the system
  store when `ca_file` is empty). There is no "insecure" switch.
- The password is either inline or in `password_file`, never both; a
  password file readable by group/other is refused when it is read.
- The access policy is a fixed schema, not a policy language: it can only
  ask for more approvals, never fewer than one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.errors import ConfigError, MqttError
from agent.topics import DEFAULT_PREFIX, HA_DISCOVERY_PREFIX, check_prefix
from agent.vocab import REQUESTER_ROLES


class AccessPolicyConfig(StrictModel):
    challenge_ttl_s: int = Field(
        default=600, ge=10, le=86_400,
        description="Seconds an access challenge stays open for owner decisions, timed on the hub's "
        "monotonic clock. After that it expires and a late approval is refused.",
    )
    grant_ttl_s: int = Field(
        default=86_400, ge=60, le=30 * 86_400,
        description="Seconds a grant is valid for the requester (written into the signed grant).",
    )
    two_owner_roles: list[str] = Field(
        default_factory=lambda: ["vendor", "police"],
        description="Requester roles whose requests need approvals from two different owner devices. "
        f"Roles: {', '.join(REQUESTER_ROLES)}.",
    )
    max_pending: int = Field(
        default=32, ge=1, le=1000,
        description="Most challenges open at once; further requests are refused until some close.",
    )
    unknown_requesters: Literal["strict", "refuse"] = Field(
        default="strict",
        description="Requests from a key the owners did not enroll in the roster (`owner enroll "
        "--add-requester`): `strict` opens a challenge that needs two owner approvals and is shown to "
        "owners as UNVERIFIED, whatever role it claims; `refuse` refuses them outright.",
    )
    max_pending_per_requester: int = Field(
        default=4, ge=1, le=100,
        description="Most open challenges for any one enrolled requester key.",
    )
    max_pending_per_role: int = Field(
        default=16, ge=1, le=1000,
        description="Most open challenges for enrolled requesters of any one role.",
    )
    max_pending_unverified: int = Field(
        default=4, ge=0, le=100,
        description="Most open challenges from unenrolled requesters, all keys together (one per key). Kept "
        "below `max_pending` so that a flood of throw-away keys never blocks an enrolled requester.",
    )

    @field_validator("two_owner_roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for r in v:
            if r not in REQUESTER_ROLES:
                raise ValueError(f"unknown requester role {r!r} (known: {', '.join(REQUESTER_ROLES)})")
        return v


class MqttConfig(StrictModel):
    host: str = Field(description="Broker host name or IP address.")
    port: int = Field(default=8883, ge=1, le=65535, description="Broker port (8883 is MQTT over TLS).")
    tls: bool = Field(
        default=True,
        description="Use TLS. Leave on: without it the broker password and all metadata cross the network "
        "in clear. The broker certificate is always verified.",
    )
    ca_file: str | None = Field(
        default=None,
        description="CA certificate (PEM) that signed the broker's certificate. Empty: the system trust store. "
        "Relative paths are relative to the config file.",
    )
    username: str | None = Field(default=None, description="Broker user name for this hub.")
    password: str | None = Field(
        default=None, description="Broker password. Prefer `password_file` so the config can be shared."
    )
    password_file: str | None = Field(
        default=None,
        description="File whose first line is the broker password (mode 0600). Relative to the config file.",
    )
    client_id: str | None = Field(
        default=None,
        description="MQTT client id. Default: `epa-<hub key id>`; it must be unique on the broker.",
    )
    topic_prefix: str = Field(
        default=DEFAULT_PREFIX,
        description="First level(s) of every topic of this hub; see the MQTT section of README.md. One prefix per hub.",
    )
    discovery: bool = Field(
        default=True, description="Publish Home Assistant MQTT discovery so the hub appears as a device."
    )
    discovery_prefix: str = Field(
        default=HA_DISCOVERY_PREFIX, description="Home Assistant's discovery prefix."
    )
    health_interval_s: int = Field(
        default=30, ge=5, le=3600,
        description="Seconds between the hub's health reports (`P/health`, `P/camera/<cam>/health`: heartbeat, "
        "fps, queue depth, analysis lag, withheld counts, disk free, encoder), published retained by `run`. "
        "Home Assistant shows a sensor as unavailable after three intervals without a report.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive interval in seconds.")
    reconnect_min_s: float = Field(
        default=1.0, gt=0, le=60, description="First reconnect delay after the broker is lost; doubles each try."
    )
    reconnect_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest reconnect delay (cap of the doubling backoff)."
    )
    access: AccessPolicyConfig = Field(
        default_factory=AccessPolicyConfig, description="Access-request policy (challenges, approvals, grants)."
    )

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        try:
            check_prefix(v)
        except MqttError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either `password` or `password_file`, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a `username`")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("`reconnect_max_s` must be at least `reconnect_min_s`")
        return self

    def resolved_password(self, base_dir: Path | None = None) -> str | None:
        """The password, reading `password_file` (refused when group/other may read it)."""
        if self.password_file is None:
            return self.password
        p = Path(self.password_file).expanduser()
        if base_dir is not None and not p.is_absolute():
            p = base_dir / p
        try:
            st = os.stat(p)
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise ConfigError(
                    f"mqtt.password_file {p} has mode {stat.S_IMODE(st.st_mode):04o}; "
                    f"it must be 0600 (run: chmod 600 {p})"
                )
            lines = p.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ConfigError(f"mqtt.password_file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read mqtt.password_file {p}: {e}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"mqtt.password_file {p} is empty; its first line must be the password")
        return lines[0]

    def resolved_ca_file(self, base_dir: Path | None = None) -> Path | None:
        if self.ca_file is None:
            return None
        p = Path(self.ca_file).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p
