"""S3 uploads against moto's S3 server over real HTTP on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from clip_helpers import device_from, hub_from, moving_image, redacted

from agent.clock import FakeClock
from agent.config import load_config
from agent.core.events import EventLog
from agent.crypto import envelope as env
from agent.crypto.keys import hub_public, init_hub, write_device_identity
from agent.errors import ConfigError, EnvelopeError, KeyFileError, SinkError
from agent.storage.outbox import Outbox
from agent.storage.sinks.clips import build_clip_sinks
from agent.storage.sinks.upload import S3Uploader

OWNER = device_from(2, "owner")
AK, SK = "AKIDTESTEPA", "secret-test-key"


# `s3_endpoint` (a moto server over real HTTP) is the shared fixture in tests/conftest.py.


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=AK, aws_secret_access_key=SK)


def _config(tmp_path: Path, endpoint: str, bucket: str, creds_mode: int = 0o600) -> Path:
    init_hub(tmp_path / "data")
    write_device_identity(OWNER, tmp_path / "owner.key")
    creds = tmp_path / "s3.credentials"
    creds.write_text(f"[default]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n")
    os.chmod(creds, creds_mode)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data_dir: ./data\nrecipients: [owner.key.pub]\n"
        "cameras:\n  - id: bedroom\n    name: Bedroom\n    source: v.mp4\n"
        f"sinks:\n  - type: s3\n    endpoint: {endpoint}\n    bucket: {bucket}\n    prefix: hub1/\n"
        "    credentials_file: s3.credentials\n    segment_s: 10\n"
    )
    return cfg


def _feed(sink, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        sink.write(redacted("bedroom", i, i / 10, moving_image(i), masked=True))


def test_clips_upload_to_s3_and_open(tmp_path: Path, s3_endpoint: str) -> None:
    c = _client(s3_endpoint)
    c.create_bucket(Bucket="clips-ok")
    loaded = load_config(_config(tmp_path, s3_endpoint, "clips-ok"))
    [sink] = build_clip_sinks(loaded, "bedroom", 10, EventLog(), FakeClock())
    _feed(sink, 150)  # 15 s, 10 s segments -> 2 clips
    sink.close()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket="clips-ok")["Contents"])
    assert len(keys) == 2 and all(k.startswith("hub1/") and "bedroom" not in k for k in keys)
    hub = hub_public(tmp_path / "data")
    infos = []
    for k in keys:
        data = c.get_object(Bucket="clips-ok", Key=k)["Body"].read()
        video, opened = env.open_clip_bytes(data, OWNER, hub)
        assert video[4:8] == b"ftyp" and opened.metadata["camera_name"] == "Bedroom"
        assert b"Bedroom" not in data
        infos.append(opened.info)
    assert env.check_chain(infos) == []
    assert Outbox(tmp_path / "data", FakeClock()).pending_count() == 0


def test_missing_bucket_keeps_clip_then_delivers(tmp_path: Path, s3_endpoint: str) -> None:
    loaded = load_config(_config(tmp_path, s3_endpoint, "clips-later"))
    clock = FakeClock()
    [sink] = build_clip_sinks(loaded, "bedroom", 10, EventLog(), clock)
    _feed(sink, 20)
    with pytest.raises(SinkError, match="remain in the outbox"):
        sink.close()
    assert Outbox(tmp_path / "data", clock).pending_count() == 1
    _client(s3_endpoint).create_bucket(Bucket="clips-later")
    assert sink.flush_outbox() == 0
    assert _client(s3_endpoint).list_objects_v2(Bucket="clips-later")["KeyCount"] == 1


def test_gate_refuses_foreign_clip_before_any_request(tmp_path: Path, s3_endpoint: str) -> None:
    c = _client(s3_endpoint)
    c.create_bucket(Bucket="clips-gate")
    hub = init_hub(tmp_path / "data")
    up = S3Uploader("clips-gate", hub.public, endpoint=s3_endpoint, access_key_id=AK, secret_access_key=SK)
    other = hub_from(9)
    data, info = env.seal(b"forged", {}, other, [OWNER.public], env.stream_id_for(other, "x"))
    p = tmp_path / "forged.epaclip"
    p.write_bytes(data)
    from agent.storage.outbox import object_name_for

    with pytest.raises(EnvelopeError):
        up.put(object_name_for(info), p)
    assert c.list_objects_v2(Bucket="clips-gate")["KeyCount"] == 0


def test_credentials_file_must_be_private(tmp_path: Path, s3_endpoint: str) -> None:
    loaded = load_config(_config(tmp_path, s3_endpoint, "clips-x", creds_mode=0o644))
    with pytest.raises(KeyFileError, match="0644"):
        build_clip_sinks(loaded, "bedroom", 10, EventLog(), FakeClock())


def test_s3_config_validation(tmp_path: Path) -> None:
    from agent.config import parse_config_text

    base = "cameras:\n  - id: a\n    source: x.mp4\nsinks:\n  - type: s3\n    bucket: bkt\n"
    parse_config_text(base)
    with pytest.raises(ConfigError, match="both"):
        parse_config_text(base + "    access_key_id: A\n")
    with pytest.raises(ConfigError, match="segment_s"):
        parse_config_text(base + "    segment_s: 5\n")
    with pytest.raises(ConfigError, match="segment_s"):
        parse_config_text("cameras:\n  - id: a\n    source: x.mp4\nsinks:\n  - type: directory\n"
                          "    path: out\n    segment_s: 120\n")
    parse_config_text("cameras:\n  - id: a\n    source: x.mp4\nsinks:\n  - type: directory\n"
                      "    path: out\n    plaintext: true\n    segment_s: 2\n")
