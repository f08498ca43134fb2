"""The one error hierarchy of the agent, and the one table of exit codes.

Every error the agent raises on purpose is an `AgentError`. The command line
turns an `AgentError` into a one-line message and its exit code; any other
exception is a bug. Stage boundaries in the pipeline catch broadly and turn
the failure into WITHHOLD plus an event, never into a passed frame.

`ExitCode` is the only place exit codes are defined: every command, the
firmware hooks and `python -m models.install` return one of them, and the
README's table is checked against it by a test.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What every `privacy-agent` command (and firmware hook) exits with."""

    OK = 0
    #: The command ran and found a problem: a camera or sink failed, `doctor` found a fault, uploads
    #: are still queued, a model is missing, the mode state is unreadable, or the user said no.
    FAILED = 1
    #: Bad input or setup: config, arguments, files, keys, models, storage, the broker (every
    #: `AgentError` without a code of its own), or a command group given without its sub-command.
    ERROR = 2
    #: A networked command got no answer in time; the hub may still act on what was sent.
    NO_ANSWER = 3
    #: The hub refused an owner's decision (`owner approve` / `owner deny`), or a mode change was
    #: refused because the physical privacy switch is on.
    REFUSED = 4
    #: Another process holds the hub's data directory (`run`, `outbox flush`, `hub serve`).
    BUSY = 5
    #: The clip is not a well-formed envelope (bad magic, version, lengths or encoding).
    MALFORMED_CLIP = 10
    #: A clip's header or trailer signature does not verify under the expected hub key.
    BAD_SIGNATURE = 11
    #: A clip's ciphertext, header or trailer was modified.
    TAMPERED_CLIP = 12
    #: A clip ends before its final chunk or trailer.
    TRUNCATED_CLIP = 13
    #: None of the clip's wrapped keys opens with this identity.
    WRONG_RECIPIENT = 14
    #: The clip is past retention: the key of its epoch was destroyed (`owner shred`).
    PAST_RETENTION = 15
    #: The audit log cannot be written, or it fails verification.
    AUDIT_FAILED = 20
    #: Code tried to bypass redaction: a bug, reported loudly.
    PRIVACY_VIOLATION = 70
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


class AgentError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(AgentError):
    """The homeowner's config is malformed or unsafe. Message names key path and YAML line.

    `problems` holds one line per problem, each naming its key path and YAML line: what the
    homeowner's page lists under a refused save. An error with a single cause has itself as its one
    problem."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class WebError(AgentError):
    """The homeowner's page cannot start or be set up (no password set, the certificate, the port)."""


class SourceError(AgentError):
    """A camera source cannot be opened or decoded."""


class FrameDecodeError(SourceError):
    """One frame could not be decoded; the source may continue."""


class DamagedFrameError(FrameDecodeError):
    """A video frame in a damaged stretch: lost, decoded with errors, or decoded after damage
    before the decoder is known to be clean again. Its pixels are not handed out; the frame
    is withheld. `errors` is how many decode errors this frame stands for (0 for a frame that
    decoded without error but may show garbage inherited from a damaged reference frame)."""

    reason = "decode_damaged"  # the withhold reason the pipeline records

    def __init__(self, message: str, errors: int) -> None:
        super().__init__(message)
        self.errors = errors


class FrameSkipped(FrameDecodeError):
    """A live camera's frame the source skipped undecoded to catch up with the camera (see
    `AVSource.catch_up`): the frame is withheld for lag. `behind_s` is how far behind the
    camera the reader was when it skipped it."""

    def __init__(self, message: str, behind_s: float) -> None:
        super().__init__(message)
        self.behind_s = behind_s


class SinkError(AgentError):
    """A sink cannot store or upload redacted output (unwritable dir, full disk, ...)."""


class OutputExists(AgentError):
    """An output file is there already and the command was not told to replace it (`--force`):
    decrypted video is never written over a file by surprise."""


class PrivacySwitchOn(AgentError):
    """A mode other than privacy was asked for while the physical privacy switch is on.

    The switch wins over every other source of mode (the CLI, MQTT, the schedule); the request
    is refused rather than stored for later, and the message says so."""

    exit_code = ExitCode.REFUSED


class JsonLimitError(AgentError, ValueError):
    """Untrusted JSON is larger or nested deeper than its limit (`agent.jsonlimits`).

    Also a ValueError, so a parser that already turns `json.JSONDecodeError` into its own
    error catches it unchanged."""


class DataDirBusy(AgentError):
    """Another process holds the data directory's lock; the message names it."""

    exit_code = ExitCode.BUSY


class PrivacyViolation(AgentError):
    """Code tried to bypass redaction (for example, building a RedactedFrame outside redact.py)."""

    exit_code = ExitCode.PRIVACY_VIOLATION


class AnalysisError(AgentError):
    """Analysis of a frame failed; the frame is withheld."""


class SceneStateError(AnalysisError):
    """A camera's stored scene (`DATA/state/scene/<camera>/`) or relearn request is unreadable or
    corrupt: the camera is withheld until `privacy-agent camera relearn` replaces it."""


class ModelError(AgentError):
    """A model is missing, corrupt, or does not match the manifest."""


class CryptoError(AgentError):
    """Base for envelope, key and signature failures."""


class AccessError(AgentError):
    """An access request, challenge or approval was refused."""


class AccessStateError(AccessError):
    """The hub's access counters are missing or unreadable: refuse to start rather than let old
    decisions replay."""

    exit_code = ExitCode.REFUSED


class MqttError(AgentError):
    """The broker is unreachable or a message on it is malformed."""


class CheckpointNotPublished(MqttError):
    """A factory reset could not hand its final audit checkpoint to the broker (unreachable, or no
    acknowledgement in time). Nothing was wiped: the owners could not have pinned the end of the
    log. `--offline` resets anyway, with the checkpoint on stdout and in the data dir only."""

    exit_code = ExitCode.NO_ANSWER


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

    exit_code = ExitCode.MALFORMED_CLIP


class BadSignature(EnvelopeError):
    """A header or trailer signature does not verify under the expected hub key."""

    exit_code = ExitCode.BAD_SIGNATURE


class TamperedClip(EnvelopeError):
    """Ciphertext, header or trailer was modified (authentication failed)."""

    exit_code = ExitCode.TAMPERED_CLIP


class TruncatedClip(EnvelopeError):
    """The clip ends before its final chunk or trailer (cut in transit or on disk)."""

    exit_code = ExitCode.TRUNCATED_CLIP


class WrongRecipient(EnvelopeError):
    """None of the clip's wrapped keys opens with this identity."""

    exit_code = ExitCode.WRONG_RECIPIENT


# --- audit log (issue 5) ------------------------------------------------------


class EpochError(CryptoError):
    """An epoch key list or an epoch key store is malformed, forged, rolled back or unusable."""


class PastRetention(EnvelopeError):
    """The clip's epoch key was destroyed: no copy of this clip can be opened any more."""

    exit_code = ExitCode.PAST_RETENTION


class AuditError(AgentError):
    """The audit log cannot be written, or it fails verification (edited, removed, reordered,
    truncated entries, or a checkpoint that does not verify)."""

    exit_code = ExitCode.AUDIT_FAILED
