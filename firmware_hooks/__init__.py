"""Entry points that hub firmware calls: boot check, the physical privacy switch, shutdown.

Firmware (init scripts, a GPIO daemon, udev rules) calls these as
`python -m firmware_hooks HOOK ...`; each exits 0 on success and non-zero
with a one-line reason otherwise, so firmware can light an LED.
"""

# Imported first, before anything here can load ONNX Runtime (boot-check runs the doctor,
# which imports it): `agent` forces ORT_DISABLE_TELEMETRY=1 so the hub never phones home.
import agent  # noqa: F401
