"""Device-side epoch key commands: `owner epochs generate|show` and `owner shred`.

Run on a household device, next to its identity file. The epoch secrets live in `IDENTITY.epochs`
(0600, `agent.crypto.keys.EpochStore`); `generate` adds keys for the coming horizon and writes the
signed PUBLIC list for the hub; `shred` destroys past epochs' secrets, after which no copy of
any clip of those epochs opens, for anyone. `--retention-days` makes that automatic: every owner
command that loads the store (`open`, `epochs generate`, `shred`) applies it first.

The store is written (and fsynced) before anything is printed or the list file is written:
record, then act.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent.cli.mqttargs import parse_ms
from agent.cli.owner import epochpublish
from agent.cli.parsing import command_group
from agent.crypto.keys import (
    DEFAULT_HORIZON_S,
    DeviceIdentity,
    EpochStore,
    ShredResult,
    load_device_identity,
    load_hub_public,
    store_path,
)
from agent.crypto.keys.epochstore import utc
from agent.errors import AgentError, EpochError, ExitCode
from agent.fsutil import atomic_write


def _epoch_words(epoch_s: int) -> str:
    if epoch_s % 3600 == 0:
        return "hourly" if epoch_s == 3600 else f"{epoch_s // 3600}-hour"
    return f"{epoch_s // 60}-minute" if epoch_s % 60 == 0 else f"{epoch_s}-second"


def _shred_lines(res: ShredResult, why: str) -> list[str]:
    if not res.destroyed:
        return []
    n = len(res.destroyed)
    lines = [f"{why}: destroyed the keys of {n} epoch{'s' if n != 1 else ''}, "
             f"{utc(res.destroyed_from_s or 0)} to {utc(res.destroyed_to_s or 0)}"]
    gaps = res.destroyed[-1] - res.destroyed[0] + 1 - n
    if gaps:
        lines[0] += f" ({gaps} epochs in between had no key left)"
    lines.append("  clips of that time can no longer be opened by anyone, from any copy")
    return lines


def device_store(identity_path: str | Path, identity: DeviceIdentity, now_s: float,
                 *, required: bool = False) -> EpochStore | None:
    """The device's epoch store beside its identity file, with its retention applied (printed).
    None if there is none and it is not `required`."""
    path = store_path(identity_path)
    if not path.exists() and not required:
        return None
    store = EpochStore.load(path)
    if store.device != identity.key_id:
        raise EpochError(f"epoch key store {path} belongs to device {store.device}, not {identity.key_id}")
    for line in _shred_lines(store.auto_shred(now_s), f"retention ({store.retention_days} days)"):
        print(line)
    return store


def cmd_epochs_generate(args: argparse.Namespace) -> int:
    now_s = time.time()
    ident = load_device_identity(args.identity)
    hub = load_hub_public(args.hub).key_id if args.hub else None
    if args.horizon_days < 1 or args.horizon_days > 365:
        raise AgentError("--horizon-days must be 1..365")
    path = store_path(args.identity)
    existed = path.exists()
    store = (device_store(args.identity, ident, now_s, required=True) if existed
             else EpochStore.create(path, ident, 60 * (args.epoch_minutes or 60)))
    if store is None:  # required=True: never
        raise EpochError(f"no epoch key store {path}")
    epoch_s = 60 * args.epoch_minutes if args.epoch_minutes else store.epoch_s
    previous = store.current_list
    lst = store.generate(ident, now_s, horizon_s=args.horizon_days * 86_400, epoch_s=epoch_s, hub=hub)
    out = Path(args.out)
    try:
        atomic_write(out, lst.encode(), 0o600)
    except OSError as e:
        raise EpochError(f"cannot write {out}: {e.strerror or e} (the keys are kept in {path}; "
                         "run the command again)") from None
    kept = 0 if previous is None else max(0, min(previous.last, lst.last) - max(previous.first, lst.first) + 1)
    runs_out = lst.horizon_end_s
    print(f"epoch keys of device {ident.key_id} ({ident.public.name or 'unnamed'}): list version {lst.version}, "
          f"{len(lst.keys)} {_epoch_words(lst.epoch_s)} keys ({len(lst.keys) - kept} new)")
    print(f"covers {utc(lst.first * lst.epoch_s)} to {utc(runs_out)}")
    print(f"runs out {utc(runs_out)}, in {(runs_out - now_s) / 86_400:.1f} days: generate again before then, "
          "or the hub has no epoch key for this device's new clips (retention.missing_epoch_key)")
    print(f"public list written to {out}: publish it to the hub" + (f" {hub}" if hub else "")
          + " (`owner epochs publish`, or `keys epochs install` on the hub)")
    print(f"secrets kept in {path} (mode 0600; {'updated' if existed else 'created'})")
    return ExitCode.OK


def cmd_epochs_show(args: argparse.Namespace) -> int:
    now_s = time.time()
    ident = load_device_identity(args.identity)
    store = device_store(args.identity, ident, now_s, required=True)
    if store is None:  # required=True: never
        raise EpochError(f"no epoch key store {store_path(args.identity)}")
    live = store.live_epochs
    print(f"epoch key store {store.path}: device {store.device}, {_epoch_words(store.epoch_s)} epochs")
    if live:
        print(f"keys held: {len(live)}, {utc(live[0] * store.epoch_s)} to {utc((live[-1] + 1) * store.epoch_s)}")
    else:
        print("keys held: none")
    lst = store.current_list
    if lst is not None:
        print(f"last list: version {lst.version}, runs out {utc(lst.horizon_end_s)}")
    for r in store.shredded:
        print(f"destroyed on {utc(r.at_s)}: {utc(r.first * store.epoch_s)} to {utc((r.last + 1) * store.epoch_s)}")
    ret = store.retention_days
    print(f"retention: {f'{ret} days (applied by every owner command)' if ret else 'off (keys kept until shredded)'}")
    return ExitCode.OK


def cmd_shred(args: argparse.Namespace) -> int:
    now_s = time.time()
    ident = load_device_identity(args.identity)
    if args.before is None and args.retention_days is None and args.range_from is None:
        raise AgentError("give --before DATE, --from DATE --to DATE, or --retention-days N")
    if (args.range_from is None) != (args.range_to is None):
        raise AgentError("--from and --to go together")
    if args.before is not None and args.range_from is not None:
        raise AgentError("give either --before or --from/--to, not both")
    store = device_store(args.identity, ident, now_s, required=True)
    if store is None:  # required=True: never
        raise EpochError(f"no epoch key store {store_path(args.identity)}")
    if args.retention_days is not None:
        if args.retention_days < 0:
            raise AgentError("--retention-days must be 0 (off) or more")
        res = store.set_retention(args.retention_days or None, now_s)
        if args.retention_days:
            print(f"retention set to {args.retention_days} days: keys older than that are destroyed now and by "
                  "every later owner command")
        else:
            print("retention off: keys are kept until `owner shred`")
        for line in _shred_lines(res, "retention"):
            print(line)
    if args.before is not None:
        before_s = parse_ms(args.before, 0) / 1000
        res = store.shred_before(before_s, now_s)
        lines = _shred_lines(res, f"shred before {utc(before_s)}")
        print("\n".join(lines) if lines else f"nothing to destroy: no key held ends before {utc(before_s)}")
        e = int(before_s // store.epoch_s)
        if e in store.live_epochs and before_s > e * store.epoch_s:
            # Whole epochs only: the epoch holding DATE also protects clips after DATE.
            end = (e + 1) * store.epoch_s
            print(f"note: the epoch {utc(e * store.epoch_s)} .. {utc(end)} holds DATE and is kept (it also covers "
                  f"clips after DATE); its clips stay openable until it is shredded: run again with --before "
                  f"{utc(end)} once that time has passed, or set --retention-days")
    if args.range_from is not None:
        from_s, to_s = parse_ms(args.range_from, 0) / 1000, parse_ms(args.range_to, 0) / 1000
        res = store.shred_range(from_s, to_s, now_s)
        lines = _shred_lines(res, f"shred {utc(from_s)} to {utc(to_s)}")
        print("\n".join(lines) if lines else "nothing to destroy: no epoch with a key lies wholly in that range")
        for e in res.kept_partial:
            print(f"  kept epoch {utc(e * store.epoch_s)} to {utc((e + 1) * store.epoch_s)}: only partly in the "
                  "range, its other clips must still open")
    return ExitCode.OK


def register_owner(osub: argparse._SubParsersAction) -> None:
    """`owner epochs generate|show` and `owner shred` (run on a household device)."""
    esub = command_group(osub, "epochs", "this device's forward-secure epoch keys (IDENTITY.epochs)")
    p = esub.add_parser("generate", help="add epoch keys for the coming days and write the signed public list")
    p.add_argument("--identity", required=True, help="this device's identity file; secrets go to IDENTITY.epochs")
    p.add_argument("--horizon-days", type=int, default=DEFAULT_HORIZON_S // 86_400,
                   help="how far ahead to generate keys (default: %(default)s days)")
    p.add_argument("--epoch-minutes", type=int, help="epoch length for a new store (default 60); "
                   "an existing store keeps its own")
    p.add_argument("--hub", help="bind the list to this hub (hub.pub file, epa1hub: value or data dir)")
    p.add_argument("--out", required=True, help="where to write the signed public list (JSON, mode 0600)")
    p.set_defaults(func=cmd_epochs_generate)
    p = esub.add_parser("show", help="what the store holds: keys, destroyed epochs, retention")
    p.add_argument("--identity", required=True, help="this device's identity file")
    p.set_defaults(func=cmd_epochs_show)
    epochpublish.add_publish_parser(esub)  # `owner epochs publish` (MQTT) lives with the broker code

    p = osub.add_parser("shred", help="destroy past epoch keys: no copy of those clips opens any more, anywhere")
    p.add_argument("--identity", required=True, help="this device's identity file (its IDENTITY.epochs is changed)")
    p.add_argument("--before", metavar="DATE",
                   help="destroy every epoch that ends at or before DATE (ISO 8601, UTC if no zone, or epoch ms)")
    p.add_argument("--from", dest="range_from", metavar="DATE", help="with --to: destroy the epochs wholly inside")
    p.add_argument("--to", dest="range_to", metavar="DATE", help="end of the --from range")
    p.add_argument("--retention-days", type=int, metavar="N",
                   help="keep keys N days, destroying older ones now and on every owner command (0: off)")
    p.set_defaults(func=cmd_shred)
