"""`doctor` on an S3 sink, against moto's S3 server over real HTTP: credentials present, the
bucket there, the credentials accepted, the endpoint reachable; each failure with its fix."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from clip_helpers import free_port

from agent.cli.doctor import CheckResult
from agent.cli.doctor.storage import check_s3_sink
from agent.config import S3SinkConfig, load_config

AK, SK = "AKIDDOCTOR", "doctor-secret-key"


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the credentials a test gives: none from the environment, ~/.aws or an instance."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def check(tmp_path: Path, endpoint: str, bucket: str, creds: str | None = "file") -> list[CheckResult]:
    extra = ""
    if creds == "file":
        f = tmp_path / "s3.credentials"
        f.write_text(f"[default]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n")
        os.chmod(f, 0o600)
        extra = "    credentials_file: s3.credentials\n"
    elif creds is not None:
        extra = f"    access_key_id: {creds}\n    secret_access_key: wrong-secret\n"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cameras: [{{id: cam, source: v.mp4}}]\nsinks:\n  - type: s3\n    endpoint: {endpoint}\n"
                   f"    bucket: {bucket}\n" + extra)
    loaded = load_config(cfg)
    s = loaded.config.sinks[0]
    assert isinstance(s, S3SinkConfig)
    return check_s3_sink(loaded, "sinks[0]", s, timeout_s=2.0)


def test_good_credentials_and_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=AK,
                 aws_secret_access_key=SK).create_bucket(Bucket="doctor-ok")
    res = check(tmp_path, s3_endpoint, "doctor-ok")
    assert [(r.name, r.status) for r in res] == [("sinks[0] credentials", "ok"), ("sinks[0] bucket", "ok")]
    assert "credentials_file" in res[0].detail


def test_no_bucket(tmp_path: Path, s3_endpoint: str) -> None:
    (r,) = check(tmp_path, s3_endpoint, "doctor-nosuch")
    assert r.status == "fail" and "does not exist" in r.detail
    assert "create the bucket 'doctor-nosuch'" in r.hint


def test_no_credentials_anywhere(tmp_path: Path, s3_endpoint: str) -> None:
    (r,) = check(tmp_path, s3_endpoint, "doctor-ok", creds=None)
    assert r.name == "sinks[0] credentials" and r.status == "fail" and "no S3 credentials" in r.detail
    assert "credentials_file" in r.hint


def test_credentials_from_the_environment_count(tmp_path: Path, s3_endpoint: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SK)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="doctor-env")
    res = check(tmp_path, s3_endpoint, "doctor-env", creds=None)
    assert [r.status for r in res] == ["ok", "ok"] and "environment" in res[0].detail


def test_unreadable_credentials_file(tmp_path: Path, s3_endpoint: str) -> None:
    check(tmp_path, s3_endpoint, "doctor-ok")
    os.chmod(tmp_path / "s3.credentials", 0o644)
    (r,) = check_s3_sink(load_config(tmp_path / "c.yaml"), "sinks[0]",
                         load_config(tmp_path / "c.yaml").config.sinks[0])  # type: ignore[arg-type]
    assert r.status == "fail" and r.name == "sinks[0] credentials" and r.hint


def test_unreachable_endpoint(tmp_path: Path) -> None:
    (r,) = check(tmp_path, f"http://127.0.0.1:{free_port()}", "doctor-ok")
    assert r.status == "fail" and "cannot reach" in r.detail and "endpoint" in r.hint


@pytest.fixture
def iam_auth(s3_endpoint: str) -> Iterator[tuple[str, str]]:
    """moto checks signatures and IAM permissions from now on; yields a real user's keys."""
    iam = boto3.client("iam", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=AK,
                       aws_secret_access_key=SK)
    iam.create_user(UserName="hub")
    key = iam.create_access_key(UserName="hub")["AccessKey"]
    requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=str(float("inf")).encode(), timeout=5)


def test_wrong_credentials(tmp_path: Path, s3_endpoint: str, iam_auth: tuple[str, str]) -> None:
    key_id, _secret = iam_auth
    (r,) = check(tmp_path, s3_endpoint, "doctor-ok", creds=key_id)  # the right key id, a wrong secret
    assert r.status == "fail" and "refused the credentials (403)" in r.detail
    assert "access key id and secret" in r.hint
