"""Edge Privacy Agent: private zones never leave the hub.

Invariant of the whole package: a camera frame reaches an encoder, a sink or
the network only as a `agent.core.redact.RedactedFrame`, and only `agent.core.redact`
builds one.
"""

__version__ = "0.1.0"
