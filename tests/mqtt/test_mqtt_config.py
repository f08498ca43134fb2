"""The `mqtt:` config section: validation, password files, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import parse_config_text
from agent.errors import ConfigError

BASE = "cameras:\n  - id: porch\n    source: porch.mp4\n"


def test_mqtt_is_optional_and_defaults_are_private() -> None:
    assert parse_config_text(BASE).mqtt is None
    cfg = parse_config_text(BASE + "mqtt:\n  host: broker.lan\n").mqtt
    assert cfg is not None and cfg.tls and cfg.port == 8883 and cfg.discovery
    assert cfg.access.two_owner_roles == ["vendor", "police"]


@pytest.mark.parametrize("extra, msg", [
    ("  hots: x\n", "unknown key 'hots'"),
    ("  username: hub\n  password: a\n  password_file: b\n", "either `password` or `password_file`"),
    ("  password: a\n", "needs a `username`"),
    ("  topic_prefix: 'a/#'\n", "topic prefix"),
    ("  access:\n    two_owner_roles: [neighbour]\n", "unknown requester role"),
    ("  access:\n    challenge_ttl_s: 1\n", "greater than or equal to 10"),
])
def test_bad_mqtt_config_names_key_and_line(extra: str, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config_text(BASE + "mqtt:\n  host: broker.lan\n" + extra)
    assert msg in str(e.value) and "mqtt" in str(e.value) and "config.yaml:" in str(e.value)


def test_password_file_must_be_private(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    os.chmod(pw, 0o644)
    cfg = parse_config_text(BASE + f"mqtt:\n  host: b\n  username: hub\n  password_file: {pw}\n").mqtt
    assert cfg is not None
    with pytest.raises(ConfigError, match="0600"):
        cfg.resolved_password()
    os.chmod(pw, 0o600)
    assert cfg.resolved_password() == "s3cret"
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.model_copy(update={"password_file": str(tmp_path / "nope")}).resolved_password()
