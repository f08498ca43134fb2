"""The hub's own hardware (`hardware:` in the homeowner's config): the privacy LED and switch.

Both are GPIO lines on the Linux GPIO character device (`/dev/gpiochipN`, driven through
libgpiod's Python bindings, `agent.gpio`). Both are optional: a hub without an LED has none to
light, and a hub without a switch wired to a GPIO line may still have one that calls
`python -m firmware_hooks privacy-switch on|off` (firmware_hooks/CONTRACT.md).
"""

from __future__ import annotations

from pydantic import Field

from agent.config.base import StrictModel


class GpioLineConfig(StrictModel):
    chip: str = Field(
        default="/dev/gpiochip0",
        description="The GPIO character device the line is on (`gpiodetect` lists them; on a Raspberry Pi the "
        "header's pins are on /dev/gpiochip0, on a Pi 5 /dev/gpiochip4 with older kernels).",
    )
    line: int = Field(
        ge=0, le=1023,
        description="The line's offset on that chip (`gpioinfo` lists them; on a Raspberry Pi the BCM GPIO "
        "number, for example 17 for header pin 11).",
    )
    active_low: bool = Field(
        default=False,
        description="True when the line is active at 0 V: an LED wired from 3.3 V to the pin, or a switch that "
        "pulls the pin to ground in its privacy position.",
    )


class HardwareConfig(StrictModel):
    indicator_led: GpioLineConfig | None = Field(
        default=None,
        description="The privacy LED: lit by `run` whenever frames are being recorded or streamed, or an access "
        "grant is active, and off otherwise. Absent: no LED is driven.",
    )
    privacy_switch: GpioLineConfig | None = Field(
        default=None,
        description="The physical privacy switch, read by `python -m firmware_hooks watch-switch`: while it is "
        "in its privacy position every camera is withheld and nothing remote can change that. A line that "
        "cannot be read counts as privacy. Absent: `watch-switch` needs --chip/--line or --gpio-value.",
    )
