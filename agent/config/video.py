"""How redacted frames are encoded (`video:` in the homeowner's config).

The H.264 encoder is chosen once per `run`, at start (`agent.media.encoders.select_encoder`):
`auto` uses the hardware V4L2 M2M encoder when a probe encode works and libx264 otherwise;
an explicit choice that cannot work stops the start instead of silently becoming another.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.config.base import StrictModel

#: The values of `video.encoder`.
EncoderSetting = Literal["auto", "libx264", "h264_v4l2m2m"]

X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


class VideoConfig(StrictModel):
    encoder: EncoderSetting = Field(
        default="auto",
        description="H.264 encoder. `auto`: the hardware encoder (`h264_v4l2m2m`, on a Raspberry Pi 4) when a "
        "probe encode at start works, else the software `libx264` (logged, and named by `doctor`). "
        "`libx264` or `h264_v4l2m2m`: that encoder only; if it cannot work, `run` refuses to start and "
        "`doctor` fails, rather than change encoder behind the installer's back.",
    )
    preset: X264Preset = Field(
        default="ultrafast",
        description="libx264 speed preset. Slower presets make smaller files and cost CPU that detection needs.",
    )
    crf: int = Field(
        default=23, ge=0, le=51,
        description="libx264 quality (constant rate factor): lower is better and larger; 23 is FFmpeg's default.",
    )
    bitrate_kbps: int = Field(
        default=2000, ge=100, le=50_000,
        description="Target bitrate of the hardware encoder (`h264_v4l2m2m`) in kbit/s; it has no constant "
        "quality mode. libx264 ignores it.",
    )
