"""Fixtures for tests against a real Mosquitto (TLS, password file, ACL).

- `broker`: one broker for the whole session (fast: ~0.1 s to start).
- `own_broker`: a broker for one test, which that test may stop and restart.
- `connect(broker, user, ...)`: a started `MqttClient` for one of the test users,
  stopped at teardown.

Waiting here is on events with timeouts (real I/O), never a bare sleep.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosquitto import USERS, Broker

from agent.mqtt.client import MqttClient
from agent.topics import Topics

PREFIX = "epa-test"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"), prefix=PREFIX)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto", prefix=PREFIX)
    b.start()
    yield b
    b.stop()


_counter = [0]

Connect = Callable[..., MqttClient]


@pytest.fixture
def connect() -> Iterator[Connect]:
    made: list[MqttClient] = []

    def _connect(
        b: Broker,
        user: str,
        *,
        password: str | None = None,
        availability: bool = False,
        client_id: str | None = None,
        start: bool = True,
        wait_s: float | None = 10.0,
        session_expiry_s: int = 0,
    ) -> MqttClient:
        _counter[0] += 1
        c = MqttClient(
            b.host,
            b.port,
            client_id=client_id or f"{user}-{_counter[0]}",
            topics=Topics(PREFIX),
            username=user,
            password=USERS.get(user, "") if password is None else password,
            ca_file=b.ca_file,
            reconnect_min_s=0.05,
            reconnect_max_s=0.2,
            availability=availability,
            session_expiry_s=session_expiry_s,
        )
        made.append(c)
        if start:
            c.start(wait_s=wait_s)
        return c

    yield _connect
    for c in made:
        c.stop(clean=False)
