"""Where redacted, encrypted clips go: a local or NAS directory, and S3-compatible storage."""

from __future__ import annotations

from typing import Annotated, Literal, TypeGuard

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from agent.config.base import StrictModel


class DirectorySinkConfig(StrictModel):
    type: Literal["directory"] = Field(description="Write segments to a local or NAS directory.")
    path: str = Field(description="Directory for output. Relative paths are relative to the config file.")
    plaintext: bool = Field(
        default=False,
        description="Must be `true` to write unencrypted video. Plaintext output is for testing; "
        "`run` warns about it.",
    )
    segment_s: float = Field(
        default=10.0, ge=1, le=600,
        description="Length of each segment in seconds. Encrypted clips (`plaintext: false`) take 10 to 60.",
    )
    require_mount: bool = Field(
        default=False,
        description="Deliver encrypted clips only while `path` is a mount point (a NAS share). Either way "
        "the directory must exist and carry the marker written by `privacy-agent sink init PATH`; "
        "until it does, clips wait in the outbox.",
    )

    @model_validator(mode="after")
    def _encrypted_segment(self) -> DirectorySinkConfig:
        if not self.plaintext:
            _check_clip_segment(self.segment_s)
        return self


# Encrypted clips are cut into 10-60 s segments: shorter wastes a header and signatures per
# clip, longer delays upload and makes one lost clip cost more (secretstream cannot seek).
CLIP_SEGMENT_MIN_S = 10.0


CLIP_SEGMENT_MAX_S = 60.0


def _check_clip_segment(v: float) -> None:
    if not (CLIP_SEGMENT_MIN_S <= v <= CLIP_SEGMENT_MAX_S):
        raise ValueError(
            f"segment_s {v:g} is outside {CLIP_SEGMENT_MIN_S:g}..{CLIP_SEGMENT_MAX_S:g} s for encrypted clips"
        )


class S3SinkConfig(StrictModel):
    type: Literal["s3"] = Field(description="Upload encrypted clips to S3-compatible object storage.")
    bucket: str = Field(min_length=3, max_length=63, description="Bucket name. It must exist.")
    endpoint: str | None = Field(
        default=None,
        description="Endpoint URL of an S3-compatible service (MinIO, Garage, a NAS, ...), for example "
        "`https://s3.example.net`. Absent: AWS S3 for `region`.",
    )
    prefix: str = Field(
        default="",
        description="Key prefix for uploaded clips, for example `hub1/`. Object names carry only an opaque "
        "stream id and sequence number, never the camera name.",
    )
    region: str = Field(default="us-east-1", description="Region name passed to the S3 client.")
    access_key_id: str | None = Field(
        default=None, description="Access key id. Prefer `credentials_file` so secrets stay out of the config."
    )
    secret_access_key: str | None = Field(
        default=None, description="Secret access key (with `access_key_id`). Prefer `credentials_file`."
    )
    credentials_file: str | None = Field(
        default=None,
        description="File (mode 0600) in AWS shared-credentials format with `aws_access_key_id` and "
        "`aws_secret_access_key` under `[default]`. Relative paths are relative to the config file. "
        "Absent with no keys given: the usual AWS environment variables.",
    )
    segment_s: float = Field(default=10.0, description="Length of each encrypted clip in seconds (10 to 60).")

    @field_validator("segment_s")
    @classmethod
    def _segment(cls, v: float) -> float:
        _check_clip_segment(v)
        return v

    @model_validator(mode="after")
    def _credentials(self) -> S3SinkConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.credentials_file is not None and self.access_key_id is not None:
            raise ValueError("give either credentials_file or access_key_id/secret_access_key, not both")
        return self


SinkConfig = Annotated[DirectorySinkConfig | S3SinkConfig, Field(discriminator="type")]


def is_plaintext(sink: DirectorySinkConfig | S3SinkConfig) -> TypeGuard[DirectorySinkConfig]:
    """A test sink that writes redacted MP4 unencrypted; every other sink gets sealed clips."""
    return isinstance(sink, DirectorySinkConfig) and sink.plaintext
