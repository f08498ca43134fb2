"""Sinks: where redacted output goes.

Invariant: a sink's `write` takes only `RedactedFrame` and checks it with
`agent.core.redact.require_redacted`. A sink that fails raises `SinkError`; the
pipeline reports it as an event and never falls back to writing raw frames.
"""
