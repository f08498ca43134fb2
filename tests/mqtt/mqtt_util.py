"""Test helper: collect messages from a subscription and wait for conditions (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.mqtt.client import Message, MqttClient


class Collector:
    def __init__(self, client: MqttClient, topic_filter: str) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        client.subscribe(topic_filter, self._on)

    def _on(self, m: Message) -> None:
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Message]], bool], timeout_s: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.messages), timeout_s)

    def wait_count(self, n: int, timeout_s: float = 10.0) -> bool:
        return self.wait_for(lambda ms: len(ms) >= n, timeout_s)

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages]
