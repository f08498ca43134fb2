"""Broker options and helpers shared by every networked command (owner, requester, audit).

`--config FILE` takes host, port, CA and prefix from a hub config's `mqtt:` section;
`--host/--port/--ca-file/--prefix` override; the user name comes from `--username` and the
password from `--password-file` or the `EPA_MQTT_PASSWORD` environment variable (never a
command-line argument: it would show in `ps`). An owner device's decision counter is kept next
to its identity file and only ever grows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.config import MqttConfig
from agent.crypto.keys import HubPublic, load_hub_public
from agent.errors import (
    AccessError,
    ConfigError,
    KeyFileError,
)
from agent.fsutil import atomic_write
from agent.mqtt.client import Message, MqttClient
from agent.topics import DEFAULT_PREFIX, Topics

T = TypeVar("T")


def add_broker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--config", help="hub config file whose `mqtt:` section names the broker")
    g.add_argument("--host", help="broker host (overrides the config)")
    g.add_argument("--port", type=int, help="broker port (default 8883)")
    g.add_argument("--ca-file", help="CA certificate of the broker (PEM)")
    g.add_argument("--prefix", help=f"topic prefix of the hub (default {DEFAULT_PREFIX})")
    g.add_argument("--username", help="broker user name")
    g.add_argument("--password-file", help="file whose first line is the broker password (mode 0600); "
                   "or set EPA_MQTT_PASSWORD")
    g.add_argument("--no-tls", action="store_true", help="plain TCP (test brokers only)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker and answers")


def broker_config(args: argparse.Namespace) -> tuple[MqttConfig, Path | None]:
    base: dict[str, Any] = {}
    base_dir: Path | None = None
    if getattr(args, "config", None):
        from agent.config import load_config

        loaded = load_config(args.config)
        if loaded.config.mqtt is None:
            raise ConfigError(f"{args.config} has no `mqtt:` section")
        base = loaded.config.mqtt.model_dump()
        base_dir = loaded.path.parent
        # The hub's own credentials are not the owner's or requester's.
        base.update({"username": None, "password": None, "password_file": None, "client_id": None})
    for key, attr in (("host", "host"), ("port", "port"), ("ca_file", "ca_file"), ("topic_prefix", "prefix")):
        v = getattr(args, attr, None)
        if v is not None:
            base[key] = v
    if getattr(args, "no_tls", False):
        base["tls"] = False
    if "host" not in base:
        raise ConfigError("name the broker with --host (or --config with an `mqtt:` section)")
    password = os.environ.get("EPA_MQTT_PASSWORD")
    if args.password_file:
        base["password_file"] = str(Path(args.password_file).resolve())
    elif password is not None:
        base["password"] = password
    if args.username:
        base["username"] = args.username
    try:
        return MqttConfig.model_validate(base), base_dir
    except ValueError as e:
        raise ConfigError(f"broker options: {e}") from None


def connect(args: argparse.Namespace, role: str) -> MqttClient:
    cfg, base_dir = broker_config(args)
    client = MqttClient.from_config(cfg, client_id=f"epa-{role}-{os.urandom(4).hex()}", base_dir=base_dir)
    client.start(wait_s=args.timeout)
    return client


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.cond = threading.Condition()

    def __call__(self, m: Message) -> None:
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def first(self, parse: Callable[[bytes], T], accept: Callable[[T], bool], timeout_s: float) -> T | None:
        """Waits up to `timeout_s` for the first message that `parse` takes (it raises `AccessError`
        on anything not signed by the hub: the broker is untrusted, so such a message is never the
        answer) and `accept` keeps. Returns it, or None."""

        def found() -> T | None:
            for m in self.messages:
                try:
                    r = parse(m.payload)
                except AccessError:
                    continue
                if accept(r):
                    return r
            return None

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout_s)
            return found()


def broker_topics(args: argparse.Namespace) -> Topics:
    """The hub's topics under the prefix the broker options name (no connection needed)."""
    cfg, _ = broker_config(args)
    return Topics(cfg.topic_prefix)


def retained(args: argparse.Namespace, topic_filter: str, role: str = "owner") -> list[Message]:
    """The retained (non-empty) messages on `topic_filter`, read once: connect, subscribe, wait for
    the broker to have sent them, disconnect. The caller verifies every one: the broker is untrusted."""
    client = connect(args, role)
    try:
        inbox = Inbox()
        client.subscribe(topic_filter, inbox, wait_s=args.timeout)
        client.sync(args.timeout)
        with inbox.cond:
            return [m for m in inbox.messages if m.payload]
    finally:
        client.stop()


def hub_key(args: argparse.Namespace) -> HubPublic:
    return load_hub_public(args.hub)


def parse_ms(text: str | None, default: int) -> int:
    """A time as ISO 8601 (UTC if no zone) or integer milliseconds since the epoch."""
    if text is None:
        return default
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"time {text!r} must be ISO 8601 (2026-01-31T18:00) or epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def format_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def next_counter(identity_path: Path) -> int:
    """Strictly increasing per device: max(last + 1, now in ms), stored in IDENTITY.counter (0600).

    Using the time as a floor keeps the counter increasing even if the state file is lost."""
    p = identity_path.with_name(identity_path.name + ".counter")
    last = 0
    try:
        last = int(p.read_text().strip() or 0)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise KeyFileError(f"counter file {p} is unreadable: {e}") from None
    n = max(last + 1, now_ms())
    atomic_write(p, f"{n}\n".encode(), 0o600)
    return n


def check_password_file(path: str | None) -> None:
    if path and os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        raise ConfigError(f"password file {path} must be mode 0600")
