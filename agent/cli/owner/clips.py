"""The owner's clip commands: `open`, `verify`, `outbox status|flush` and `clips list|expire`.

`open` verifies the hub's signatures and the whole ciphertext before it decrypts, writes to
`OUT.part` and renames only on success: a tampered or truncated clip leaves no output file. With
an epoch key store beside the identity (`IDENTITY.epochs`) it applies the store's retention first,
then opens epoch-wrapped clips with it; a clip whose epoch key was destroyed is past retention.
Wrong recipient, tampered, truncated, bad signature and malformed clips each get their own error
class, message and exit code (`agent.errors.ExitCode`).

`clips list` reads only the hub's own index (`Outbox.list_clips`): camera names and times come
from what this hub recorded when it sealed each clip, never from a destination, which holds
only opaque object names. It opens the outbox read-only, so it works next to a running `run`.

`clips expire` deletes the clips past their camera's retention now (`agent.storage.deletion`,
recorded in the audit log first); it takes the data-dir lock, so beside a running `run` (which
expires every 10 minutes itself) it exits BUSY; `--dry-run` only lists, read-only. `verify
--audit-log` tells chain gaps the hub recorded as deleted (DELETED) from the rest (MISSING).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.owner.epochs import device_store
from agent.cli.parsing import command_group
from agent.crypto.envelope import check_chain, open_clip, verify_clip
from agent.crypto.keys import (
    EpochStore,
    epoch_span,
    load_device_identity,
    load_hub_public,
    store_path,
)
from agent.crypto.keys.epochstore import utc
from agent.errors import (
    AgentError,
    BadSignature,
    EnvelopeError,
    EpochError,
    ExitCode,
    KeyFileError,
    MalformedEnvelope,
    OutputExists,
    PastRetention,
    TamperedClip,
    TruncatedClip,
    WrongRecipient,
)
from agent.fsutil import create_private, install_file, write_private

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.config import LoadedConfig

# A short word in front of each envelope error so the three cases the owner must tell apart
# (wrong recipient, tampered, truncated) read differently even before the details.
_KIND = (
    (PastRetention, "past retention"),
    (WrongRecipient, "wrong recipient"),
    (TruncatedClip, "truncated"),
    (BadSignature, "bad signature"),
    (TamperedClip, "tampered"),
    (MalformedEnvelope, "malformed"),
)


def _labelled(e: EnvelopeError, clip: Path) -> EnvelopeError:
    kind = next((k for cls, k in _KIND if isinstance(e, cls)), "invalid")
    return type(e)(f"{clip}: {kind}: {e}")


def _open_clip_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EnvelopeError(f"clip {p} does not exist or is not a file")
    return p


def _past_retention(clip: Path, ident_key_id: str, store: EpochStore | None, hub: object) -> PastRetention:
    """The owner's words for a shredded clip: when its key was destroyed (read back from the
    clip's signed header and the store's shred record)."""
    try:
        with open(clip, "rb") as f:
            info = verify_clip(f, hub)  # type: ignore[arg-type]
        epoch = next(s.epoch for s in info.header.stanzas if s.key_id == ident_key_id)
    except (EnvelopeError, OSError, StopIteration):
        return PastRetention(f"{clip}: past retention: its key was destroyed; no copy of this clip can be opened")
    at = store.destroyed_at(epoch) if store is not None and epoch is not None else None
    when = utc(at) if at is not None else "an earlier shred"
    span = f" (recorded {epoch_span(epoch, store.epoch_s)})" if store is not None and epoch is not None else ""
    return PastRetention(f"{clip}: past retention: its key was destroyed on {when}{span}; "
                         "no copy of this clip can be opened, by anyone")


def cmd_open(args: argparse.Namespace) -> int:
    # The video and the metadata (its thumbnail is a frame) are decrypted footage of a home: both
    # are written 0600, and neither replaces an existing file unless --force says so.
    clip = _open_clip_file(args.clip)
    out = Path(args.out)
    meta_path = Path(args.meta) if args.meta else None
    for target in (out, meta_path):
        if target is not None and not args.force and os.path.lexists(target):
            raise OutputExists(f"{target} already exists; pass --force to replace it, or choose another path")
    ident = load_device_identity(args.identity)
    hub = load_hub_public(args.hub) if args.hub else None
    # Retention first: a clip past it must not open just because nobody ran `shred` lately.
    store = device_store(args.identity, ident, time.time())
    part = out.with_name(out.name + ".part")
    try:
        part.unlink(missing_ok=True)  # a crashed open's leftover: its mode is not ours to trust
        with open(clip, "rb") as src, create_private(part) as dst:
            opened = open_clip(src, ident, dst.write, hub, store)
            dst.flush()
            os.fsync(dst.fileno())
        install_file(part, out, replace=args.force)
    except PastRetention:
        part.unlink(missing_ok=True)
        raise _past_retention(clip, ident.key_id, store, hub) from None
    except EnvelopeError as e:
        part.unlink(missing_ok=True)
        raise _labelled(e, clip) from None
    except EpochError as e:
        part.unlink(missing_ok=True)
        where = "" if store is not None else f" (no epoch key store at {store_path(args.identity)})"
        raise EpochError(f"{clip}: {e}{where}") from None
    except FileExistsError:
        part.unlink(missing_ok=True)
        raise OutputExists(f"{out} already exists; pass --force to replace it, or choose another path") from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {out}: {e.strerror or e}") from None
    meta = opened.metadata
    if meta_path is not None:
        try:
            write_private(meta_path, (json.dumps(dict(meta), indent=2, sort_keys=True) + "\n").encode(),
                          replace=args.force)
        except FileExistsError:
            raise OutputExists(f"{meta_path} already exists; pass --force to replace it, or choose another "
                               f"path (the video is in {out})") from None
        except OSError as e:
            raise KeyFileError(f"cannot write {meta_path}: {e.strerror or e} (the video is in {out})") from None
    h = opened.info.header
    pin = "" if hub else " (hub not pinned: pass --hub to check it is your hub)"
    print(f"{clip}: OK, signed by hub {h.hub_key_id}{pin}; clip {h.clip_id.hex()} seq {h.seq}")
    print(f"camera {meta.get('camera_id')!r} name {meta.get('camera_name')!r}, {meta.get('frames')} frames, "
          f"labels {meta.get('labels')}; {opened.payload_bytes} bytes of video written to {out}")
    return ExitCode.OK


def _verify_targets(given: list[str]) -> list[Path]:
    """The clips to verify: files as given, and every `.epaclip` under a directory (recursively,
    in name order). A missing path or a directory without clips is bad input (exit ERROR)."""
    out: list[Path] = []
    for g in given:
        p = Path(g)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.epaclip") if f.is_file())
            if not found:
                raise AgentError(f"{p} is a directory with no .epaclip files in it (searched recursively)")
            out += found
        else:
            out.append(_open_clip_file(g))
    return out


@dataclass(frozen=True)
class _ReceiptEntry:
    """A hub-signed delete receipt, read as the deletion record `explain_gaps` understands."""

    seq: int
    kind: str
    wall_ms: int
    fields: Mapping[str, Any]


def _receipt_entry(path: Path, hub: Any) -> _ReceiptEntry:
    from agent import access as A

    try:
        data = path.read_bytes()
    except OSError as e:
        raise AgentError(f"cannot read delete receipt {path}: {e.strerror or e}") from None
    rc = A.parse_delete_receipt(data, hub)
    clips = [{"clip_id": d.get("clip"), "stream": d.get("stream"), "seq": d.get("seq")} for d in rc.deleted
             if isinstance(d.get("stream"), str) and isinstance(d.get("seq"), int)]
    return _ReceiptEntry(0, "clips_deleted", rc.issued_ms,
                         {"phase": "planned", "reason": "owner (signed receipt)", "by": rc.device, "clips": clips})


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify each clip (a directory: every .epaclip in it), one line each, then the chain.

    Every clip is checked even after one fails. Exit: OK; the failure's own code (MALFORMED_CLIP,
    BAD_SIGNATURE, TAMPERED_CLIP, TRUNCATED_CLIP) when every failed clip failed alike; FAILED for
    failures of different kinds; TAMPERED_CLIP for a gap in an otherwise valid chain."""
    hub = load_hub_public(args.hub)
    clips = _verify_targets(args.clips)
    infos = []
    failed: list[EnvelopeError] = []
    for p in clips:
        try:
            with open(p, "rb") as f:
                info = verify_clip(f, hub)
        except EnvelopeError as e:
            failed.append(e)
            kind = next((k for cls, k in _KIND if isinstance(e, cls)), "invalid")
            print(f"{p}: FAILED, {kind}: {e}", file=sys.stderr)
            continue
        except OSError as e:  # it was there a moment ago (a NAS that went away): this clip fails
            failed.append(EnvelopeError(str(e)))
            print(f"{p}: FAILED, unreadable: {e.strerror or e}", file=sys.stderr)
            continue
        infos.append(info)
        h = info.header
        print(f"{p}: OK, hub {h.hub_key_id}, stream {h.stream_id.hex()[:16]} seq {h.seq}, "
              f"{info.chunk_count} chunks, recipients {', '.join(h.recipient_ids)}")
    problems = check_chain(infos)
    deleted = 0
    receipts = [_receipt_entry(Path(r), hub) for r in args.receipt]
    if args.audit_log or receipts:
        # The first clips of a chain can only be missed against the head the hub recorded, and a
        # gap is explained only by a deletion the hub recorded before it deleted anything (its
        # audit log) or signed afterwards (an owner's delete receipt).
        from agent.access.audit import read_entries
        from agent.storage.gaps import explain_gaps

        entries: list[Any] = []
        if args.audit_log:
            entries, log_problems = read_entries(Path(args.audit_log))
            if log_problems:
                print(f"audit log {args.audit_log}: {log_problems[0]} (run `privacy-agent audit verify`)",
                      file=sys.stderr)
        gaps = explain_gaps(infos, [*entries, *receipts])
        # check_chain's gap lines ("... missing") are replaced by the explained ranges below.
        problems = [p for p in problems if not p.endswith(" missing")]
        if args.audit_log:
            problems += [f"stream {s[:8]}: the audit log records no start for this chain" for s in gaps.unstarted]
            problems += [f"stream {s[:8]}: its first clip is not the one the audit log records"
                         for s in gaps.foreign_heads]
        for g in gaps.deleted:
            print(f"chain: {g.describe()}")
        deleted = sum(g.count for g in gaps.deleted)
        problems += [g.describe() for g in gaps.missing]
    for msg in problems:
        print(f"chain: {msg}", file=sys.stderr)
    if failed:
        print(f"{len(clips)} clip(s) checked: {len(infos)} OK, {len(failed)} failed", file=sys.stderr)
        codes = {e.exit_code for e in failed}
        return codes.pop() if len(codes) == 1 else ExitCode.FAILED
    if problems:
        raise TamperedClip(f"{len(problems)} chain problem(s): a clip is MISSING, reordered or inserted")
    if len(infos) > 1 or deleted:
        note = f"; {deleted} DELETED clip(s) explained by the audit log" if deleted else ""
        print(f"{len(infos)} clips OK; chain intact over {len(infos)} clips{note}")
    return ExitCode.OK


def cmd_outbox(args: argparse.Namespace) -> int:
    from agent.access.recorder import EventRecorder, open_hub_audit
    from agent.clock import SystemClock
    from agent.config import is_plaintext, load_config
    from agent.core.events import EventLog
    from agent.crypto.keys import load_hub_identity
    from agent.storage.lock import DataDirLock
    from agent.storage.outbox import Outbox
    from agent.storage.sinks.clips import build_uploaders

    loaded = load_config(args.config)
    clock = SystemClock()
    if args.action == "status":
        # Read-only: it may run next to a running hub, and it neither recovers nor delivers.
        ob = Outbox(loaded.data_dir, clock, exclusive=False)
        try:
            rows = ob.pending()
        finally:
            ob.close()
        for clip_id, dest, attempts in rows:
            print(f"{clip_id} -> {dest} ({attempts} failed attempts)")
        print(f"{len(rows)} queued upload(s)")
        return ExitCode.OK
    with DataDirLock(loaded.data_dir, "outbox flush"):
        # The same records as `run`: what this flush delivers (or finds sealed by a run that was
        # killed before it could say so) goes to events.jsonl and the audit log.
        events = EventLog(loaded.data_dir / "events.jsonl")
        audit = open_hub_audit(loaded.data_dir, clock)
        if audit is not None:
            events.subscribe(EventRecorder(audit))
        ob = Outbox(loaded.data_dir, clock, events)
        try:
            ob.recover()
            cfgs = [s for s in loaded.config.sinks if not is_plaintext(s)]
            ups = build_uploaders(loaded, cfgs, load_hub_identity(loaded.data_dir).public)
            res = ob.drain(ups, force=True)
        finally:
            ob.close()
            if audit is not None:
                audit.close()
    print(f"{res.uploaded} uploaded, {res.failed} failed, {res.rejected} rejected, {res.remaining} remaining")
    return ExitCode.OK if res.remaining == 0 else ExitCode.FAILED


def _local_time(wall_s: float | None) -> str:
    return "-" if wall_s is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_s))


def _iso_utc(wall_s: float | None) -> str | None:
    return None if wall_s is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_s))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def cmd_clips_list(args: argparse.Namespace) -> int:
    from agent.clock import SystemClock
    from agent.config import load_config
    from agent.storage.outbox import OUTBOX_DIRNAME, Outbox

    loaded = load_config(args.config)
    if (loaded.data_dir / OUTBOX_DIRNAME / "outbox.db").exists():
        # Read-only: no data-dir lock, no recovery, so a running hub is not disturbed.
        ob = Outbox(loaded.data_dir, SystemClock(), exclusive=False)
        try:
            clips = ob.list_clips()
        finally:
            ob.close()
    else:
        clips = []  # nothing sealed yet; a listing must not create the outbox either
    if args.json:
        doc = [
            {
                "clip_id": c.clip_id, "camera_id": c.camera_id, "stream": c.stream, "seq": c.seq,
                "size_bytes": c.size_bytes, "start_wall_s": c.start_wall_s, "end_wall_s": c.end_wall_s,
                "start_utc": _iso_utc(c.start_wall_s), "end_utc": _iso_utc(c.end_wall_s),
                "sealed_wall_s": c.sealed_wall_s, "state": c.state, "queued_for": list(c.queued_for),
                "placements": [
                    {"dest": p.dest, "delivered_wall_s": p.delivered_wall_s, "vanished_wall_s": p.vanished_wall_s}
                    for p in c.placements
                ],
                "quarantined": c.quarantined,
            }
            for c in clips
        ]
        print(json.dumps(doc, indent=2))
        return ExitCode.OK
    if not clips:
        print(f"no clips: the hub in {loaded.data_dir} has not sealed any encrypted clip yet")
        return ExitCode.OK
    table = [("CAMERA", "START", "END", "SIZE", "STATE", "CLIP")]
    table += [
        (c.camera_id, _local_time(c.start_wall_s), _local_time(c.end_wall_s), _size(c.size_bytes), c.state,
         c.clip_id)
        for c in clips
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"{len(clips)} clip(s); times are the hub's local time")
    return ExitCode.OK


def cmd_clips_expire(args: argparse.Namespace) -> int:
    """Delete the clips past their camera's retention now (or, `--dry-run`, only list them)."""
    from agent.clock import SystemClock
    from agent.config import load_config
    from agent.storage.deletion import due_for_expiry, pending_deletions
    from agent.storage.outbox import OUTBOX_DIRNAME, Outbox

    loaded = load_config(args.config)
    cfg = loaded.config
    clock = SystemClock()
    periods = ", ".join(f"{c.id}: {_days(cfg.retention_days_for(c.id))}" for c in cfg.cameras)
    print(f"retention: {periods} (other cameras: {_days(cfg.retention.days)})")
    if not (loaded.data_dir / OUTBOX_DIRNAME / "outbox.db").exists():
        print(f"nothing to expire: the hub in {loaded.data_dir} has not sealed any encrypted clip yet")
        return ExitCode.OK
    if args.dry_run:
        ob = Outbox(loaded.data_dir, clock, exclusive=False)  # read-only, beside a running hub
        try:
            due = due_for_expiry(ob.list_clips(), cfg.retention_days_for, clock.wall())
            pending = pending_deletions(ob)
        finally:
            ob.close()
        for c in due:
            print(f"would delete {c.clip_id}  {c.camera_id}  ended {_local_time(c.end_wall_s or c.sealed_wall_s)}  "
                  f"{c.state}")
        print(f"{len(due)} clip(s) past retention would be deleted; {len(pending)} earlier deletion place(s) "
              "still pending (dry run: nothing deleted)")
        return ExitCode.OK
    return _expire_now(loaded, clock)


def _days(d: int | None) -> str:
    return "for ever" if d is None else f"{d} day(s)"


def _expire_now(loaded: LoadedConfig, clock: Clock) -> int:
    from agent.access.recorder import open_hub_audit
    from agent.storage.lock import DataDirLock
    from agent.storage.outbox import Outbox
    from agent.storage.retention import expire_once

    data_dir = loaded.data_dir
    with DataDirLock(data_dir, "clips expire"):  # DataDirBusy (naming `run`) while the hub runs
        audit = open_hub_audit(data_dir, clock)
        if audit is None:
            print(f"nothing to expire: the hub in {data_dir} has no identity, so it sealed no clips")
            return ExitCode.OK
        events = None
        mqtt_db = data_dir / "mqtt" / "outbox.sqlite"
        ob = None
        try:
            if mqtt_db.exists():
                from agent.mqtt.outbox import Outbox as EventOutbox

                events = EventOutbox(mqtt_db, clock)
            ob = Outbox(data_dir, clock)
            res = expire_once(loaded, ob, audit.append, clock.wall(), events=events)
        finally:
            if ob is not None:
                ob.close()
            if events is not None:
                events.close()
            audit.close()
    rep, retried = res.report, res.retried
    if retried is not None and retried.clips:
        print(f"finished earlier deletions: {len(retried.clips) - len(retried.pending)} of {len(retried.clips)} clip(s)")
    if rep is None:
        print("no clip is past its camera's retention")
    else:
        for c in rep.clips:
            where = ", ".join(f"{p.label}: {p.outcome}" + (f" ({p.error})" if p.error else "") for p in c.places)
            print(f"deleted {c.clip_id}  {c.camera_id}  seq {c.seq}  ended {_local_time(c.end_wall_s)}  [{where}]")
        print(f"{len(rep.clips)} clip(s) expired: {rep.count('deleted')} copies deleted, {rep.count('absent')} "
              f"already gone, {rep.count('failed')} failed; {rep.events_removed} queued event(s) removed"
              + ("; more are past retention: run again" if res.more else ""))
    pending = [c for r in (retried, rep) if r is not None for c in r.pending]
    if pending:
        print(f"{len(pending)} clip(s) could not be deleted everywhere yet: the deletion is recorded and "
              "finishes on the next pass (`run` retries every 10 minutes, or run this again)", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def register(sub: argparse._SubParsersAction) -> None:
    """`open`, `verify`, `outbox` and `clips`."""
    p = sub.add_parser("open", help="verify, then decrypt a clip with an owner device identity")
    p.add_argument("clip", help="the .epaclip file")
    p.add_argument("--identity", required=True, help="owner device identity file (from `owner keygen`)")
    p.add_argument("--out", required=True,
                   help="where to write the video (MP4; mode 0600, never over an existing file without --force)")
    p.add_argument("--hub", help="expected hub public key (hub.pub, epa1hub: value or data dir); "
                   "without it only the key named in the clip is checked")
    p.add_argument("--meta", help="also write the decrypted metadata (JSON, thumbnail included) here (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace --out (and --meta) if they exist")
    p.set_defaults(func=cmd_open)

    p = sub.add_parser("verify", help="check clip signatures and chain without any secret key")
    p.add_argument("clips", nargs="+",
                   help="one or more .epaclip files or directories (every .epaclip under a directory, "
                   "recursively); several clips: the chain is checked too")
    p.add_argument("--hub", required=True, help="hub public key (hub.pub, epa1hub: value or data dir)")
    p.add_argument("--receipt", action="append", default=[], metavar="FILE",
                   help="a hub-signed delete receipt (saved by `owner delete`): its clips count as DELETED; "
                   "repeatable")
    p.add_argument("--audit-log", help="the hub's audit log (DATA/audit/log.jsonl): also detect that the FIRST "
                   "clips of a chain were deleted, against the chain start it records, and tell clips DELETED "
                   "by retention or a signed deletion (recorded there) from clips MISSING")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("outbox", help="show or flush queued clip uploads")
    p.add_argument("action", choices=["status", "flush"], help="status: list queued uploads; flush: retry now")
    p.add_argument("--config", required=True, help="config file (for data_dir and sinks)")
    p.set_defaults(func=cmd_outbox)

    csub = command_group(sub, "clips", "the clips this hub has sealed or still holds")
    p = csub.add_parser("list", help="list clips from the hub's own index: camera, times, size, where they went")
    p.add_argument("--config", default="config.yaml",
                   help="config file (for data_dir); default: config.yaml in the current directory")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(func=cmd_clips_list)
    p = csub.add_parser("expire", help="delete clips past their camera's retention now, everywhere (outbox, "
                        "every sink, the hub's index); `run` does this every 10 minutes")
    p.add_argument("--config", default="config.yaml",
                   help="config file (data_dir, sinks, retention); default: config.yaml in the current directory")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=cmd_clips_expire)
