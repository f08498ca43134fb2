"""Entry points that hub firmware calls: boot, shutdown, factory reset, the pre-upload gate, the
privacy switch and the privacy LED (firmware_hooks/CONTRACT.md is the contract).

Firmware (init scripts, a GPIO daemon, the vendor's uploader, udev rules) calls these as
`python -m firmware_hooks HOOK ...`; each exits 0 on success and non-zero with a one-line reason
otherwise. Modules: `hooks` (the command line), `gate` (upload-gate), `lifecycle` (boot, shutdown,
factory-reset) with `wipe`, `switch` (privacy-switch, watch-switch), `indicator` (led-test).
"""

# Imported first, before anything here can load ONNX Runtime (boot-check runs the doctor,
# which imports it): `agent` forces ORT_DISABLE_TELEMETRY=1 so the hub never phones home.
import agent  # noqa: F401
