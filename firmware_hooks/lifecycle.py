"""The hub's lifecycle hooks: `boot`, `shutdown` and `factory-reset` (firmware_hooks/CONTRACT.md).

- `boot`: the `doctor` checks (non-zero drives the firmware's fault LED; the agent still starts
  and withholds what it cannot protect), and whether the previous power-off was recorded as
  clean. It writes nothing: `run` records its own `boot` entry when it starts.
- `shutdown`: records a clean `shutdown` in the audit log, signs the checkpoint covering it,
  hands it to the broker (best effort: the next `run` republishes it anyway) and syncs the disks.
  It takes the data-dir lock, so the service must be stopped first (systemd's job).
- `factory-reset --yes`: makes the end of the hub's history verifiable, then leaves nothing of
  it readable. In order, under the data-dir lock (BUSY while `run` holds it):
  1. with an `mqtt:` section and without `--offline`, connect to the broker, or stop here with
     nothing changed (NO_ANSWER): the owners' devices pin the checkpoint from the broker, and a
     reset they cannot see the end of would let a hub's history vanish unnoticed;
  2. append a `factory_reset` audit entry and sign the final checkpoint covering it;
  3. publish that checkpoint retained and wait for the broker's acknowledgement (or stop, with
     nothing wiped); print the entry and the checkpoint on stdout;
  4. wipe the data directory (`firmware_hooks.wipe`): keys, epoch material, access state, the
     roster, outboxes, clips, the index, state, events, previews and the audit log itself;
  5. write what the owners need to verify the end of the log into `DATA/factory-reset/`, the
     only directory left beside the lock: `checkpoint` (the signed note, for `audit pin
     --checkpoint`), `entry.json` (the reset's own entry) and `leaves` (the Merkle leaf hashes
     of every entry, hex, one per line: with them a consistency proof from any earlier pin can
     still be computed; a leaf hash reveals nothing of its entry, whose line carries the previous
     entry's hash).
  The audit log is wiped, not kept: it names cameras, clips, devices and times, which is the
  household's history and must not leave with the hardware. The owners keep what proves it: their
  pins and the final checkpoint, which signs the log's size and Merkle root including the reset.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import __version__
from agent.access import merkle
from agent.access.audit import LOG_FILE, AuditEntry, AuditLog, audit_dir, read_entries
from agent.access.checkpoint import Checkpoint
from agent.clock import Clock
from agent.config import LoadedConfig
from agent.crypto.keys import HUB_SECRET_FILE, HubIdentity, keys_dir, load_hub_identity
from agent.errors import AgentError, AuditError, CheckpointNotPublished, ConfigError, MqttError
from agent.fsutil import atomic_write, make_private_dirs
from agent.mqtt.client import MqttClient
from agent.storage.lock import LOCK_FILE, DataDirLock
from firmware_hooks.wipe import WipeReport, wipe_tree

log = logging.getLogger(__name__)

#: What a factory reset leaves beside the lock (module docstring): DATA/factory-reset/.
RESET_DIR = "factory-reset"
#: Seconds the reset and the shutdown wait for the broker (connecting, then acknowledging).
BROKER_TIMEOUT_S = 10.0


def _identity(data_dir: Path) -> HubIdentity | None:
    """The hub's identity; None if it never had one (a plaintext test setup: no log to close)."""
    if not (keys_dir(data_dir) / HUB_SECRET_FILE).exists():
        return None
    return load_hub_identity(data_dir)


# --- boot ------------------------------------------------------------------------------------


def previous_shutdown(data_dir: Path) -> str:
    """One line on how the last run ended, read from the audit log (read-only)."""
    path = audit_dir(data_dir) / LOG_FILE
    if not path.exists():
        return "previous shutdown: none recorded (no audit log yet)"
    try:
        entries, _problems = read_entries(path)
    except AgentError as e:
        return f"previous shutdown: unknown ({e})"
    last = next((e for e in reversed(entries) if e.kind in ("boot", "shutdown", "factory_reset")), None)
    if last is None or last.kind == "factory_reset":
        return "previous shutdown: none recorded (first boot)"
    if last.kind == "shutdown":
        return f"previous shutdown: clean (audit entry {last.seq})"
    return ("previous shutdown: not recorded (power loss, a crash, or firmware that does not call "
            "`python -m firmware_hooks shutdown`)")


# --- the broker --------------------------------------------------------------------------------


@dataclass
class Broker:
    """A connection made only to hand over one checkpoint."""

    client: MqttClient
    timeout_s: float

    @staticmethod
    def connect(loaded: LoadedConfig, hub: HubIdentity, timeout_s: float) -> Broker:
        cfg = loaded.config.mqtt
        if cfg is None:
            raise ConfigError("no `mqtt:` section")
        try:
            client = MqttClient.from_config(cfg, client_id=f"epa-{hub.key_id}-hook", base_dir=loaded.path.parent)
        except MqttError as e:  # the CA file holds no certificate: a setup error, not the broker's
            raise ConfigError(str(e)) from None
        try:
            client.start(wait_s=timeout_s)
        except MqttError as e:
            raise CheckpointNotPublished(f"{e}; nothing was changed") from None
        return Broker(client, timeout_s)

    def publish(self, cp: Checkpoint) -> None:
        try:
            self.client.publish_wait(self.client.topics.audit_checkpoint, cp.encode(), qos=1, retain=True,
                                     timeout_s=self.timeout_s)
        except MqttError as e:
            raise CheckpointNotPublished(str(e)) from None

    def close(self) -> None:
        self.client.stop()


# --- shutdown ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Closing:
    """What `shutdown` and `factory-reset` recorded: the entry and the checkpoint covering it."""

    entry: AuditEntry
    checkpoint: Checkpoint
    #: Merkle leaf hashes of every entry up to and including `entry` (factory reset only).
    leaves: tuple[bytes, ...] = ()

    def text(self) -> str:
        return self.entry.line().decode() + self.checkpoint.encode().decode()


def _record(data_dir: Path, hub: HubIdentity, clock: Clock, kind: str, fields: dict[str, object]) -> Closing:
    audit = AuditLog(audit_dir(data_dir), clock, hub)
    try:
        entry = audit.append(kind, fields)  # fsynced, and the checkpoint covering it signed and stored
        cp = audit.latest_checkpoint()
    finally:
        audit.close()
    assert cp is not None and cp.size == entry.seq
    return Closing(entry, cp)


def _leaves(data_dir: Path, size: int) -> tuple[bytes, ...]:
    """The leaf hashes of the log's first `size` lines, as the hub's own tree has them."""
    try:
        raw = (audit_dir(data_dir) / LOG_FILE).read_bytes()
    except OSError as e:
        raise AuditError(f"cannot read the audit log back: {e.strerror or e}") from None
    lines = raw.split(b"\n")[:size]
    leaves = tuple(merkle.leaf_hash(ln) for ln in lines)
    if len(leaves) != size:
        raise AuditError(f"the audit log has {len(leaves)} entries, not the {size} just signed")
    return leaves


def shutdown(loaded: LoadedConfig, clock: Clock, *, timeout_s: float = BROKER_TIMEOUT_S) -> Closing | None:
    """Record a clean shutdown; None when the hub has no identity (nothing to record)."""
    data_dir = loaded.data_dir
    with DataDirLock(data_dir, "shutdown"):
        hub = _identity(data_dir)
        closing = None
        if hub is not None:
            closing = _record(data_dir, hub, clock, "shutdown", {"version": __version__, "clean": True})
            if loaded.config.mqtt is not None:
                try:
                    broker = Broker.connect(loaded, hub, timeout_s)
                    try:
                        broker.publish(closing.checkpoint)
                    finally:
                        broker.close()
                except AgentError as e:  # the broker, or its TLS setup
                    # The checkpoint is stored; the next `run` republishes it. Power-off must not wait.
                    log.warning("shutdown: the checkpoint was not published (%s); the next run publishes it", e)
        os.sync()
    return closing


# --- factory reset -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResetResult:
    closing: Closing | None
    published: bool
    wiped: WipeReport
    kept: Path


def factory_reset(loaded: LoadedConfig, clock: Clock, *, offline: bool = False,
                  timeout_s: float = BROKER_TIMEOUT_S,
                  announce: Callable[[str], None] = print) -> ResetResult:
    """Record, sign and publish the end of the log, then wipe the data directory (module docstring).

    `announce` gets the final entry and checkpoint before anything is wiped."""
    data_dir = loaded.data_dir
    with DataDirLock(data_dir, "factory-reset"):
        hub = _identity(data_dir)
        broker = None
        if hub is not None and loaded.config.mqtt is not None and not offline:
            broker = Broker.connect(loaded, hub, timeout_s)  # before anything is recorded
        try:
            closing = None
            if hub is not None:
                closing = _record(data_dir, hub, clock, "factory_reset",
                                  {"version": __version__, "config_sha256": loaded.sha256,
                                   "broker": broker is not None})
                closing = dataclasses.replace(closing, leaves=_leaves(data_dir, closing.checkpoint.size))
                if merkle.root(closing.leaves).hex() != closing.checkpoint.root:
                    raise AuditError("the audit log read back does not match the checkpoint just signed")
                if broker is not None:
                    broker.publish(closing.checkpoint)  # raises: nothing wiped
                announce(closing.text().rstrip("\n"))
        finally:
            if broker is not None:
                broker.close()
        report = wipe_tree(data_dir, keep={data_dir / LOCK_FILE})
        kept = data_dir / RESET_DIR
        if closing is not None:
            _keep_for_owners(kept, closing)
        os.sync()
    return ResetResult(closing, broker is not None, report, kept)


def _keep_for_owners(kept: Path, closing: Closing) -> None:
    try:
        make_private_dirs(kept)
        atomic_write(kept / "checkpoint", closing.checkpoint.encode(), 0o600)
        atomic_write(kept / "entry.json", closing.entry.line(), 0o600)
        atomic_write(kept / "leaves", b"".join(h.hex().encode() + b"\n" for h in closing.leaves), 0o600)
    except OSError as e:
        # Wiped already; the checkpoint was printed (and published). Say so rather than pretend.
        raise AuditError(f"reset done, but the final checkpoint cannot be kept in {kept}: "
                         f"{e.strerror or e}; it was printed above") from None
