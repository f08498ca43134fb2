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


# --- keys and envelope (issue 4) --------------------------------------------
# Each envelope failure has its own class and exit code so `open`/`verify`
# tell wrong recipient, tampering and truncation apart.


class KeyFileError(CryptoError):
    """A key file is missing, malformed, or readable by others (permissions looser than 0600)."""


class InvalidKey(CryptoError):
    """A public or secret key has the wrong length, a bad encoding, or is a low-order point."""


class RosterError(CryptoError):
    """A recipient roster is malformed, badly signed, or signed by a device that is not an owner."""


class RosterRollback(RosterError):
    """A roster's version went backwards (or reused a version with other content)."""


class EnvelopeError(CryptoError):
    """Base for clip envelope failures."""


class MalformedEnvelope(EnvelopeError):
    """The clip is not a well-formed envelope (bad magic, version, lengths or encoding)."""

    exit_code = 10


class BadSignature(EnvelopeError):
    """A header or trailer signature does not verify under the expected hub key."""

    exit_code = 11


class TamperedClip(EnvelopeError):
    """Ciphertext, header or trailer was modified (authentication failed)."""

    exit_code = 12


class TruncatedClip(EnvelopeError):
    """The clip ends before its final chunk or trailer (cut in transit or on disk)."""

    exit_code = 13


class WrongRecipient(EnvelopeError):
    """None of the clip's wrapped keys opens with this identity."""

    exit_code = 14


# --- audit log (issue 5) ------------------------------------------------------


class AuditError(AgentError):
    """The audit log cannot be written, or it fails verification (edited, removed, reordered,
    truncated entries, or a checkpoint that does not verify)."""

    exit_code = 20

class FrameDecodeError(SourceError):
    """One frame could not be decoded; the source may continue."""

