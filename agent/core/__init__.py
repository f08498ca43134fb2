"""The privacy core: frozen stage data, zones, policy, redaction, modes, events and the
per-camera pipeline.

Invariants: policy and redaction are pure functions over frozen dataclasses; the clock, sources,
analyzers and sinks are injected (`agent.core.ports`). Only `agent.core.redact` builds a
`RedactedFrame`, and only a `RedactedFrame` reaches a sink. The core never imports `cli`, `mqtt`,
`storage`, `lab` or `access`.
"""
