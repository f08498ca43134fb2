"""The `web:` section: the homeowner's page on the hub (off by default).

Invariants: the page listens on one address of the home network, never on every interface and
never on a public address; plain HTTP is allowed only on loopback (a browser on the hub
itself), everything else is HTTPS with the hub's self-signed certificate.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel


class WebConfig(StrictModel):
    enabled: bool = Field(default=False, description="Serve the homeowner's page while `run` runs.")
    listen: str = Field(
        default="127.0.0.1",
        description="IP address to listen on: the hub's address on the home network (for example "
        "`192.168.1.20`), or a loopback address for a browser on the hub itself. Not `0.0.0.0` and no "
        "public address: the page is for the home network only.",
    )
    port: int = Field(default=8443, ge=1, le=65535, description="TCP port of the page.")
    https: bool = Field(
        default=True,
        description="Serve over HTTPS with a self-signed certificate made at first start (its SHA-256 "
        "fingerprint is printed at start). `false` (plain HTTP) is allowed only on a loopback address.",
    )
    session_ttl_s: int = Field(
        default=8 * 3600, ge=60, le=7 * 86400,
        description="Seconds a login stays valid; after that the page asks for the password again.",
    )
    login_max_failures: int = Field(
        default=5, ge=1, le=100,
        description="Wrong passwords allowed per client address within `login_window_s`; further "
        "logins from that address are refused until the window has passed.",
    )
    login_window_s: int = Field(
        default=300, ge=10, le=86400, description="The window of `login_max_failures`, in seconds."
    )

    @field_validator("listen")
    @classmethod
    def _lan_address(cls, v: str) -> str:
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address (give the hub's address, for example "
                             "192.168.1.20, or 127.0.0.1)") from None
        if ip.is_unspecified:
            raise ValueError(f"{v} listens on every interface; give the hub's home-network address")
        if not (ip.is_loopback or ip.is_private or ip.is_link_local):
            raise ValueError(f"{v} is a public address; the page listens on the home network only")
        return v

    @model_validator(mode="after")
    def _plain_http_on_loopback_only(self) -> WebConfig:
        if not self.https and not ipaddress.ip_address(self.listen).is_loopback:
            raise ValueError(f"https: false is allowed only on a loopback address, not on {self.listen}: "
                             "the password and the pictures would cross the network in the clear")
        return self
