"""Edge Privacy Agent: private zones never leave the hub.

Invariant of the whole package: a camera frame reaches an encoder, a sink or
the network only as a `agent.core.redact.RedactedFrame`, and only `agent.core.redact`
builds one.

Second invariant: no code path phones home. The PyPI build of ONNX Runtime ships
Microsoft's 1DS telemetry: on first import it writes a persistent device id and a
queue of events meant for upload to `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`
(or under `$XDG_CACHE_HOME`). Only `ORT_DISABLE_TELEMETRY=1`, set before ONNX Runtime
initialises, stops the uploader, the events and the device id from being created; the
runtime API (`disable_telemetry_events()`, called in `agent.detect.session`) comes too
late for the start-up event. Every entry point (the CLI, `python -m agent`,
`firmware_hooks`, library use) imports this package before anything else in it, so the
variable is forced here, overriding any other value the environment carries. Child
processes (e.g. the deface comparison) inherit it.
"""

import os

ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
os.environ[ORT_TELEMETRY_ENV] = "1"

__version__ = "0.1.0"
