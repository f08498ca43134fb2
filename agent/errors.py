"""The one error hierarchy of the agent.

Every error the agent raises on purpose is an `AgentError`. The command line
turns an `AgentError` into a one-line message and a non-zero exit code; any
other exception is a bug. Stage boundaries in the pipeline catch broadly and
turn the failure into WITHHOLD plus an event, never into a passed frame.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 2


class ConfigError(AgentError):
    """The homeowner's config is malformed or unsafe. Message names key path and YAML line."""


class SourceError(AgentError):
    """A camera source cannot be opened or decoded."""


class SinkError(AgentError):
    """A sink cannot store or upload redacted output (unwritable dir, full disk, ...)."""


class PrivacyViolation(AgentError):
    """Code tried to bypass redaction (for example, building a RedactedFrame outside redact.py)."""

    exit_code = 70


class AnalysisError(AgentError):
    """Analysis of a frame failed; the frame is withheld."""


class ModelError(AgentError):
    """A model is missing, corrupt, or does not match the manifest."""


class CryptoError(AgentError):
    """Base for envelope, key and signature failures."""


class AccessError(AgentError):
    """An access request, challenge or approval was refused."""


class MqttError(AgentError):
    """The broker is unreachable or a message on it is malformed."""


class FixtureError(AgentError):
    """A fixture cannot be generated or evaluated (missing shared file, sha256 mismatch)."""
