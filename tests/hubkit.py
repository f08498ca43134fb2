"""A hub as the end-to-end tests set one up: hub keys, an enrolled owner, the hub's broker password."""

from __future__ import annotations

from pathlib import Path

from mosquitto import USERS

from agent.cli.main import main


def enrolled_hub(tmp_path: Path) -> Path:
    """`keys init` in tmp_path/data, an owner key at tmp_path/owner.key enrolled in tmp_path/roster.json and
    installed on the hub. Returns the data dir."""
    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    assert main(["owner", "keygen", "--out", str(tmp_path / "owner.key")]) == 0
    assert main(["owner", "enroll", "--identity", str(tmp_path / "owner.key"), "--roster",
                 str(tmp_path / "roster.json"), "--hub", str(data), "--install", str(data)]) == 0
    return data


def hub_password_file(tmp_path: Path) -> Path:
    """The hub's broker password, in a 0600 file as `mqtt.password_file` wants it."""
    pw = tmp_path / "hub.pw"
    pw.write_text(USERS["hub"])
    pw.chmod(0o600)
    return pw
