"""A small wrapper around paho-mqtt v2 for the hub and the reference CLIs.

What it adds to paho:
- MQTT v5 over TLS with a verified broker certificate, username/password.
- A retained availability topic (`P/available`): `online` after every
  connect, `offline` as the last will and on a clean stop.
- Subscriptions are remembered and renewed after every reconnect (the broker
  may have restarted without our session), and `on_connect` hooks let the
  owner republish retained state a restarted broker has lost.
- Reconnect with exponential backoff (paho's loop thread does the waiting).
- Incoming messages are handed to ONE dispatcher thread, in arrival order, so
  a handler may publish and wait without blocking paho's network loop.
- Publishing is QoS 1 by default; while disconnected paho keeps the message
  and sends it after reconnecting. `publish_wait` raises when the broker
  refuses a message (MQTT v5 PUBACK reason code, e.g. "Not authorized").

Invariants: passwords are never logged; payloads are never logged (they may
carry wrapped keys); a handler exception is logged and does not stop the
dispatcher.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import MqttError
from agent.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming message, detached from paho's objects."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


Handler = Callable[[Message], None]
PublishAck = Callable[[int, bool], None]  # (mid, refused_by_broker)


def _rc_failed(rc: Any) -> bool:
    if isinstance(rc, ReasonCode):
        return rc.is_failure
    try:
        return int(rc) != 0
    except (TypeError, ValueError):
        return True


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """The TLS settings of every broker connection (and of `doctor`'s handshake check)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as e:
        # A CA file that holds no certificate (an empty file, a key, a DER file) raises here, in
        # OpenSSL's words; the installer needs the file's name and what to do instead.
        raise MqttError(f"mqtt.ca_file {ca_file}: not a readable PEM CA certificate "
                        f"({getattr(e, 'reason', None) or getattr(e, 'strerror', None) or e})") from e
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # check_hostname and CERT_REQUIRED are the defaults of create_default_context; there
    # is deliberately no switch to turn them off.
    return ctx


class MqttClient:
    """One broker connection. Thread-safe for publish/subscribe."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        topics: Topics,
        username: str | None = None,
        password: str | None = None,
        tls: bool = True,
        ca_file: str | Path | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        availability: bool = False,
        session_expiry_s: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.topics = topics
        self._availability = availability
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        if username is not None:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set_context(tls_context(ca_file))
        c.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        c.max_inflight_messages_set(100)
        if availability:
            # The broker publishes this if we vanish without a clean disconnect.
            c.will_set(topics.available, OFFLINE, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        self._c = c
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._ack_listeners: list[PublishAck] = []
        self._connected = threading.Event()
        self._attempted = threading.Condition()
        self._failures = 0
        self._ever_connected = threading.Event()
        self._last_error: str | None = None
        self._refused: dict[int, str] = {}
        self._sub_cond = threading.Condition()
        self._sub_acks: dict[int, bool] = {}
        self._inbox: queue.Queue[Message | Callable[[], None] | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self._started = False
        self._stopping = False
        self.connect_count = 0

    @classmethod
    def from_config(
        cls,
        cfg: MqttConfig,
        *,
        client_id: str,
        base_dir: Path | None = None,
        availability: bool = False,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = 0,
    ) -> MqttClient:
        """Build from `mqtt:` config. `username`/`password` override (for owner/requester CLIs)."""
        return cls(
            cfg.host,
            cfg.port,
            client_id=cfg.client_id or client_id,
            topics=Topics(cfg.topic_prefix, cfg.discovery_prefix),
            username=username if username is not None else cfg.username,
            password=password if password is not None else cfg.resolved_password(base_dir),
            tls=cfg.tls,
            ca_file=cfg.resolved_ca_file(base_dir),
            keepalive_s=cfg.keepalive_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            availability=availability,
            session_expiry_s=session_expiry_s,
        )

    # --- lifecycle -----------------------------------------------------------

    def start(self, wait_s: float | None = 10.0) -> None:
        """Connect in the background; with `wait_s`, raise MqttError if not connected in time."""
        if self._started:
            return
        self._started = True
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"mqtt-dispatch-{self.client_id}", daemon=True)
        self._dispatcher.start()
        try:
            props: Properties | None = None
            if self._session_expiry_s:
                # The broker keeps our subscriptions and queues QoS 1 messages for us while we
                # reconnect; the first connect still starts clean (paho's default).
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self._session_expiry_s
            self._c.connect_async(self.host, self.port, keepalive=self._keepalive_s, properties=props)
        except (OSError, ValueError) as e:
            raise MqttError(f"cannot connect to MQTT broker {self.host}:{self.port}: {e}") from None
        self._c.loop_start()
        if wait_s is not None and not self._wait_first_outcome(wait_s):
            why = self._last_error or "no answer"
            self.stop(clean=False)
            raise MqttError(f"cannot connect to MQTT broker {self.host}:{self.port} as {self.client_id!r}: {why}")

    def _wait_first_outcome(self, timeout_s: float) -> bool:
        """Wait until connected or the first attempt failed (bad password, TLS error, no broker)."""
        with self._attempted:
            self._attempted.wait_for(lambda: self.connected or self._failures > 0, timeout_s)
        return self.connected

    def wait_reconnected(self, after_count: int, timeout_s: float) -> bool:
        """Wait until the client has connected more than `after_count` times (a fresh session)."""
        with self._attempted:
            return self._attempted.wait_for(lambda: self.connect_count > after_count and self.connected, timeout_s)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, clean: bool = True) -> None:
        """Disconnect. With `clean`, first publish `offline` (the will is not sent on a clean disconnect)."""
        if not self._started:
            return
        self._stopping = True
        if clean and self._availability and self.connected:
            info = self._c.publish(self.topics.available, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass  # not connected any more; the broker sends the last will instead
        self._c.disconnect()
        self._c.loop_stop()
        self._inbox.put(None)
        if self._dispatcher is not None:
            self._dispatcher.join(5)
        self._started = False
        self._stopping = False
        self._connected.clear()

    def __enter__(self) -> MqttClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- subscribe / publish -------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, wait_s: float | None = 10.0) -> None:
        """Subscribe now (if connected) and again after every reconnect.

        With `wait_s` and a live connection, wait for the broker's SUBACK, so that a message
        published afterwards is seen; raise MqttError if the broker refused the subscription."""
        with self._lock:
            self._subs[topic_filter] = (qos, handler)
        if not self.connected:
            return
        rc, mid = self._c.subscribe(topic_filter, qos=qos)
        if wait_s is None or rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return
        with self._sub_cond:
            if not self._sub_cond.wait_for(lambda: mid in self._sub_acks, wait_s):
                raise MqttError(f"broker did not acknowledge the subscription to {topic_filter}")
            failed = self._sub_acks.pop(mid)
        if failed:
            raise MqttError(f"broker refused the subscription to {topic_filter}")

    def sync(self, timeout_s: float = 10.0) -> None:
        """Return once every message received so far has been handled by the dispatcher.

        Used after `subscribe` to collect retained messages: the broker sends them before it
        answers a later SUBSCRIBE on the same connection, so a second SUBACK is the barrier."""
        try:
            self.subscribe(self.topics.available, lambda m: None, wait_s=timeout_s)
        except MqttError:
            pass  # refused by the ACL is still an answer, and it is all we need here
        done = threading.Event()
        self._inbox.put(done.set)
        if not done.wait(timeout_s):
            raise MqttError(f"MQTT client {self.client_id} is not processing messages")

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """Run `hook` (on the dispatcher thread) after every successful (re)connect."""
        self._connect_hooks.append(hook)
        if self.connected:
            self._inbox.put(Message("\0hook", b"", 0, False, False))

    def add_ack_listener(self, listener: PublishAck) -> None:
        """Called from paho's thread with (mid, refused) when the broker acknowledges a QoS 1 publish.
        It must not block or publish."""
        self._ack_listeners.append(listener)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue a publish. At QoS 1 paho keeps it across reconnects."""
        info = self._c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise MqttError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        return info

    def publish_wait(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout_s: float = 10.0
    ) -> None:
        """Publish and wait for the broker's acknowledgement; raise MqttError if refused or late."""
        info = self.publish(topic, payload, qos, retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0:
            # paho queued it and sends it after reconnecting (Mosquitto 2.0 drops a v5 client
            # right after refusing one of its messages, so this happens in practice).
            with info._condition:
                info._condition.wait_for(lambda: info._published, timeout_s)
            if not info._published:
                raise MqttError(f"broker did not acknowledge the message on {topic} within {timeout_s:g} s")
        else:
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as e:
                raise MqttError(f"cannot publish to {topic}: {e}") from None
        if not info._published:
            raise MqttError(f"broker did not acknowledge the message on {topic} within {timeout_s:g} s")
        with self._lock:
            why = self._refused.pop(info.mid, None)
        if why is not None:
            raise MqttError(f"broker refused the message on {topic}: {why}")

    # --- paho callbacks (paho's network thread) -------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Properties | None) -> None:
        if _rc_failed(rc):
            self._last_error = str(rc)
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, rc)
            with self._attempted:
                self._failures += 1
                self._attempted.notify_all()
            return
        self._last_error = None
        self.connect_count += 1
        with self._lock:
            subs = list(self._subs.items())
        for f, (qos, _h) in subs:
            client.subscribe(f, qos=qos)
        if self._availability:
            client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        log.info("connected to MQTT broker %s:%d as %s", self.host, self.port, self.client_id)
        self._connected.set()
        self._ever_connected.set()
        with self._attempted:
            self._attempted.notify_all()
        if self._connect_hooks:
            self._inbox.put(Message("\0hook", b"", 0, False, False))

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Small request/answer messages: without TCP_NODELAY, Nagle plus delayed ACKs add
        # ~40 ms per hop to the access flow.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket (unix socket, proxy): nothing to tune

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._last_error = "connection failed (broker down, TLS or network error)"
        with self._attempted:
            self._failures += 1
            self._attempted.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Properties | None
    ) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("lost MQTT broker %s:%d (%s); reconnecting with backoff", self.host, self.port, rc)
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Properties | None) -> None:
        refused = _rc_failed(rc)
        if refused:
            with self._lock:
                self._refused[mid] = str(rc)
            log.error("MQTT broker refused a message (mid %d): %s", mid, rc)
        for lst in self._ack_listeners:
            lst(mid, refused)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[Any], props: Properties | None
    ) -> None:
        with self._sub_cond:
            self._sub_acks[mid] = any(_rc_failed(rc) for rc in rcs)
            if len(self._sub_acks) > 1000:  # acks nobody waits for (resubscribe after reconnect)
                for k in list(self._sub_acks)[:500]:
                    del self._sub_acks[k]
            self._sub_cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup)))

    # --- dispatcher thread -----------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            m = self._inbox.get()
            if m is None:
                return
            if callable(m):
                m()
                continue
            if m.topic == "\0hook":
                for hook in list(self._connect_hooks):
                    try:
                        hook()
                    except Exception:
                        log.exception("MQTT connect hook failed")
                continue
            with self._lock:
                handlers = [h for f, (_q, h) in self._subs.items() if mqtt.topic_matches_sub(f, m.topic)]
            for h in handlers:
                try:
                    h(m)
                except Exception:
                    log.exception("MQTT handler failed for a message on %s", m.topic)
