"""Storage fault campaign: how many sealed clips the OLD and the NEW tree lose, side by side.

Each scenario drives one tree only through its command line (`python -m agent ...`), so the
same steps measure any checkout, before or after the storage fixes:

1. full sink: a directory sink on a small tmpfs fills up during `run`; then the tmpfs grows
   (`mount -o remount,size=...`) and `outbox flush` delivers what is left.
2. unmounted NAS: the sink path is a bind mount of a "NAS" directory. (a) unmounted between two
   `run`s, (b) unmounted while a `run` is writing, (c) as (a) but the NEW tree relies on the
   sink marker alone (no `require_mount`); then remounted and flushed. Clips written into the bare
   mount point land on the hub's own disk and are missing from the NAS.
3. concurrent flush: `outbox flush` called repeatedly while a `run` on a long file source is
   sealing clips; every delivered clip is then verified as one chain (`verify CLIP... --hub`).

For every scenario and tree the script counts, from the files on disk and the commands' output:
delivered (`*.epaclip` in the sink, or on the real NAS directory), queued (`outbox status`:
"N queued upload(s)"; a queued clip whose file is gone from the outbox counts as lost),
quarantined (files under DATA/outbox/quarantine/) and lost (sequence numbers of the camera's
chain that are none of those: a chain gap, or a clip stranded in a bare mount point).

The NEW tree needs a marker in every directory sink (`sink init PATH`, run on the mounted path);
the OLD tree has no such command: its usage error is detected and the step skipped. Only the NEW
tree's config gets `require_mount: true` (the OLD schema forbids unknown keys).

It mounts tmpfs and bind mounts, so it needs root. Everything lives in a temporary directory
under /tmp; every mount is unmounted (`umount -l`) on every exit path. Run it from the new tree:

    sudo .venv/bin/python scripts/fault_campaign.py --old /tmp/oldtree --new .

Options: `--keep` keeps the work directory (with one log per command), `--only 1,2a` picks
scenarios, `--sink-kib` sizes the full-sink tmpfs. Exit code 0 when the campaign ran (whatever
it found), 2 when it could not run (not root, a tree that does not import from where it should).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CMD_TIMEOUT_S = 120.0
FPS = 10
SHORT_S = 60  # 6 clips of 10 s
LONG_S = 240  # 24 clips: a run long enough to act on while it works
CLIP_RE = re.compile(r"^(\d{12})-([0-9a-f]{32})\.epaclip$")
QUEUED_RE = re.compile(r"(\d+) queued upload")
QUEUED_ROW_RE = re.compile(r"^([0-9a-f]{32}) -> ", re.M)


class CampaignError(Exception):
    """A step of the campaign itself failed (not a finding about the code under test)."""


class Terminated(Exception):
    """SIGTERM: unwinds through every `finally`, so mounts are undone and children killed."""


# --- mounts ------------------------------------------------------------------------------------


class Mounts:
    """Every mount this script made, so that all of them are undone on any exit path."""

    def __init__(self) -> None:
        self.active: list[Path] = []

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise CampaignError(f"{' '.join(cmd)} failed: {r.stderr.strip() or r.returncode}")

    def tmpfs(self, path: Path, size_kib: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(path)])
        self.active.append(path)

    def resize(self, path: Path, size_kib: int) -> None:
        self._run(["mount", "-o", f"remount,size={size_kib}k", str(path)])

    def bind(self, src: Path, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._run(["mount", "--bind", str(src), str(path)])
        self.active.append(path)

    def umount(self, path: Path) -> str:
        """Unmount now; lazily (`-l`) if a process still has files open there. Returns how."""
        how = "umount"
        r = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            how = "umount -l"
            self._run(["umount", "-l", str(path)])
        if path in self.active:
            self.active.remove(path)
        return how

    def cleanup(self) -> list[str]:
        problems = []
        for p in reversed(self.active):
            r = subprocess.run(["umount", "-l", str(p)], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                problems.append(f"umount -l {p}: {r.stderr.strip()}")
        self.active.clear()
        return problems


def mounted_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
    return [p for p in points if (p + "/").startswith(prefix)]


# --- the trees -----------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int | None  # None: timed out and killed
    out: str
    err: str

    @property
    def code(self) -> str:
        return "timeout" if self.rc is None else str(self.rc)


@dataclass
class Tree:
    name: str
    root: Path
    python: str
    logs: Path
    has_sink_init: bool | None = None
    n: int = 0

    def env(self) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        e["PYTHONPATH"] = str(self.root)
        e["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the checkouts as they are
        return e

    def argv(self, args: list[str]) -> list[str]:
        return [self.python, "-m", "agent", *args]

    def _log(self, args: list[str], res: Result) -> None:
        self.n += 1
        label = "-".join(a for a in args[:2] if not a.startswith("/"))
        (self.logs / f"{self.name}-{self.n:03d}-{label}.txt").write_text(
            f"$ {' '.join(args)}\nexit: {res.code}\n--- stdout\n{res.out}\n--- stderr\n{res.err}\n")

    def agent(self, *args: str, timeout: float = CMD_TIMEOUT_S) -> Result:
        try:
            p = subprocess.run(self.argv(list(args)), cwd=self.root, env=self.env(), capture_output=True,
                               text=True, timeout=timeout)
            res = Result(p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired as e:
            res = Result(None, _text(e.stdout), _text(e.stderr))
        self._log(list(args), res)
        return res

    def start(self, *args: str) -> Background:
        return Background(self, list(args))

    def where(self) -> Path:
        p = subprocess.run([self.python, "-c", "import agent; print(agent.__file__)"], cwd=self.root,
                           env=self.env(), capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise CampaignError(f"{self.name} tree: `import agent` failed: {p.stderr.strip()[-300:]}")
        return Path(p.stdout.strip())


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


class Background:
    """`python -m agent ...` in the background, its output in files; killed by pid if it overruns."""

    def __init__(self, tree: Tree, args: list[str]) -> None:
        self.tree, self.args = tree, args
        tree.n += 1
        self._out = tree.logs / f"{tree.name}-{tree.n:03d}-bg-{args[0]}.out"
        self._err = tree.logs / f"{tree.name}-{tree.n:03d}-bg-{args[0]}.err"
        with open(self._out, "w") as o, open(self._err, "w") as e:
            self.proc = subprocess.Popen(tree.argv(args), cwd=tree.root, env=tree.env(), stdout=o, stderr=e,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = CMD_TIMEOUT_S) -> Result:
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        return Result(rc, self._out.read_text(), self._err.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
            except ProcessLookupError:
                pass
            self.proc.wait(10)


# --- one hub per scenario and tree -----------------------------------------------------------------


@dataclass
class Hub:
    tree: Tree
    dir: Path
    video: Path
    sink: Path
    sink_extra: dict[str, object] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    def note(self, label: str, res: Result) -> Result:
        self.codes.append(f"{label}={res.code}")
        return res

    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for args in (["keys", "init", "--data", str(self.data)],
                     ["owner", "keygen", "--out", str(self.dir / "owner.key")]):
            r = self.tree.agent(*args)
            if r.rc != 0:
                raise CampaignError(f"{self.tree.name}: {' '.join(args[:2])} failed ({r.code}): {r.err[-300:]}")
        sink: dict[str, object] = {"type": "directory", "path": str(self.sink), "segment_s": 10, **self.sink_extra}
        cfg = {
            "data_dir": str(self.data),
            "recipients": [str(self.dir / "owner.key.pub")],
            "detection": {"enabled": False},
            "analysis": {"tamper": {"moved_enabled": False}},
            "cameras": [{"id": "cam", "source": str(self.video)}],
            "sinks": [sink],
        }
        self.config.write_text(json.dumps(cfg, indent=1) + "\n")  # JSON is YAML

    def sink_init(self) -> str:
        """`sink init` on the sink path where the tree has the command. Returns a note."""
        r = self.tree.agent("sink", "init", str(self.sink))
        if r.rc == 2 and "invalid choice" in r.err:
            self.tree.has_sink_init = False
            return "no `sink init` (skipped)"
        self.tree.has_sink_init = True
        self.note("init", r)
        if r.rc != 0:
            return f"sink init failed: {r.err.strip()[-120:]}"
        return ""

    def run(self) -> Result:
        return self.note("run", self.tree.agent("run", "--config", str(self.config)))

    def flush(self, label: str = "flush") -> Result:
        return self.note(label, self.tree.agent("outbox", "flush", "--config", str(self.config)))

    def status(self) -> tuple[int | None, set[str]]:
        r = self.tree.agent("outbox", "status", "--config", str(self.config))
        m = QUEUED_RE.search(r.out)
        return (int(m.group(1)) if m else None), set(QUEUED_ROW_RE.findall(r.out))

    def events(self) -> list[dict[str, object]]:
        try:
            lines = (self.data / "events.jsonl").read_text(errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for ln in lines:
            try:
                ev = json.loads(ln)
            except ValueError:
                continue  # a torn line
            if isinstance(ev, dict):
                out.append(ev)
        return out

    def sealed(self) -> dict[str, int]:
        """clip_id -> seq of every clip the hub reported sealed (events.jsonl)."""
        out: dict[str, int] = {}
        for ev in self.events():
            d = ev.get("details")
            if ev.get("kind") == "clip_sealed" and isinstance(d, dict) and "clip_id" in d:
                out[str(d["clip_id"])] = int(d.get("seq", -1))
        return out

    def first_event_detail(self, kind: str, key: str) -> str:
        for ev in self.events():
            d = ev.get("details")
            if ev.get("kind") == kind and isinstance(d, dict) and key in d:
                return str(d[key])
        return ""

    def verify(self, clips: list[Path]) -> Result | None:
        if not clips:
            return None
        return self.note("verify", self.tree.agent("verify", *map(str, clips), "--hub", str(self.data)))


def clips_in(root: Path) -> dict[str, tuple[int, Path]]:
    """clip_id -> (seq, path) of the delivered `*.epaclip` files under a sink directory."""
    found: dict[str, tuple[int, Path]] = {}
    if not root.is_dir():
        return found
    for p in root.rglob("*.epaclip"):
        m = CLIP_RE.match(p.name)
        if m:
            found[m.group(2)] = (int(m.group(1)), p)
    return found


def outbox_rows(data: Path) -> tuple[dict[str, int], int]:
    """(clip_id -> seq of the outbox's clip rows, highest seq the chain head has issued).

    Read only, after every command has ended: `outbox status` names queued clips but not their
    sequence numbers, and a clip whose commit failed may never have reported one.
    """
    db = data / "outbox" / "outbox.db"
    if not db.is_file():
        return {}, -1
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = {str(c): int(q) for c, q in con.execute("SELECT clip_id, seq FROM clips")}
            head = con.execute("SELECT MAX(seq) FROM chain").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return {}, -1
    return rows, -1 if head is None else int(head)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


@dataclass
class Count:
    scenario: str
    tree: str
    delivered: int
    queued: str
    quarantined: int
    lost: int
    notes: list[str]
    codes: list[str]


def count(hub: Hub, scenario: str, delivered_root: Path, notes: list[str], expected: int,
          stranded: dict[str, tuple[int, Path]] | None = None, verify: bool = True) -> Count:
    """Account for every sequence number of the camera's chain.

    Lost: a seq up to the highest one issued (the outbox's chain head) that is neither
    delivered, nor queued with its file still in the outbox, nor quarantined. A queued row whose
    file is gone therefore counts as lost; a clip with no seq at all cannot be counted.
    """
    sealed = hub.sealed()
    delivered = clips_in(delivered_root)
    n_queued, queued_ids = hub.status()
    outbox_files = {p.name[: -len(".epaclip")] for p in (hub.data / "outbox" / "clips").rglob("*.epaclip")}
    quarantine = files_under(hub.data / "outbox" / "quarantine")
    quarantined_ids = {p.name.split(".")[0] for p in quarantine}
    rows, head = outbox_rows(hub.data)
    seq_of = {**rows, **sealed}
    for cid, (seq, _) in {**delivered, **(stranded or {})}.items():
        seq_of[cid] = seq
    queued_ok = {c for c in queued_ids if c in outbox_files}
    queued_gone = queued_ids - outbox_files
    accounted = {seq_of[c] for c in set(delivered) | queued_ok | quarantined_ids if c in seq_of}
    known = (set(seq_of.values()) | {head}) - {-1}
    top = max(known) if known else -1
    missing = sorted(set(range(top + 1)) - accounted)
    gone_unseen = [c for c in queued_gone if c not in seq_of]
    notes = list(notes)
    notes.append(f"sealed {len(sealed)} of {expected} expected")
    if queued_gone:
        notes.append(f"{len(queued_gone)} queued row(s) whose outbox file is gone (counted lost)")
    if reason := hub.first_event_detail("clip_rejected", "error"):
        notes.append(f"quarantined as: {reason[:70]}")
    if stranded:
        notes.append(f"{len(stranded)} written into the bare mount point (local disk, not the NAS)")
    dup = len(delivered) - len({s for s, _ in delivered.values()})
    if dup:
        notes.append(f"{dup} delivered clip(s) share a seq with another")
    if missing:
        notes.append("missing seq " + _ranges(missing))
    if verify and len(delivered) > 1:
        r = hub.verify([p for _, p in sorted(delivered.values())])
        if r is not None and r.rc != 0:
            gap = [ln for ln in r.err.splitlines() if "chain" in ln or "error" in ln.lower()]
            notes.append("verify: " + (gap[0].strip()[:110] if gap else f"exit {r.code}"))
    return Count(scenario, hub.tree.name, len(delivered), "?" if n_queued is None else str(n_queued),
                 len(quarantine), len(missing) + len(gone_unseen), notes, list(hub.codes))


def _ranges(xs: list[int]) -> str:
    out, start = [], xs[0]
    for a, b in zip(xs, [*xs[1:], None], strict=True):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b if b is not None else start
    return ",".join(out)


def wait_for(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return False


# --- the scenarios -----------------------------------------------------------------------------------


def scenario_full_sink(tree: Tree, work: Path, video: Path, mounts: Mounts, size_kib: int) -> list[Count]:
    d = work / f"s1-{tree.name}"
    nas = d / "nas"
    mounts.tmpfs(nas, size_kib)
    try:
        hub = Hub(tree, d, video, nas)
        hub.setup()
        notes = [n for n in [hub.sink_init()] if n]
        hub.run()
        n = SHORT_S // 10
        first = count(hub, "1 full sink: after run", nas, [*notes, f"tmpfs {size_kib} KiB"], n, verify=False)
        mounts.resize(nas, size_kib * 16)
        hub.flush()
        final = count(hub, "1 full sink: after grow+flush", nas, notes, n)
        return [first, final]
    finally:
        mounts.umount(nas)


def _nas_hub(tree: Tree, d: Path, video: Path, mounts: Mounts,
             require_mount: bool = True) -> tuple[Hub, Path, Path, list[str]]:
    real, mnt = d / "nas-disk", d / "mnt"
    real.mkdir(parents=True)
    mounts.bind(real, mnt)
    # Only the new schema knows require_mount; the old one forbids unknown keys.
    extra: dict[str, object] = {"require_mount": True} if require_mount and tree.has_sink_init is not False else {}
    hub = Hub(tree, d, video, mnt, sink_extra=extra)
    note = hub.sink_init()  # decides has_sink_init for this tree on first use
    if tree.has_sink_init is False and extra:
        hub.sink_extra = {}
    hub.setup()
    notes = [n for n in [note] if n]
    if hub.sink_extra:
        notes.append("require_mount: true")
    return hub, real, mnt, notes


def scenario_nas_between_runs(tree: Tree, work: Path, video: Path, mounts: Mounts,
                              require_mount: bool = True) -> list[Count]:
    tag = "2a" if require_mount else "2c"
    hub, real, mnt, notes = _nas_hub(tree, work / f"s{tag}-{tree.name}", video, mounts, require_mount)
    if not require_mount:
        notes.append("marker only, no require_mount")
    try:
        hub.run()
        on_nas_before = len(clips_in(real))
        mounts.umount(mnt)
        hub.run()
        stranded = clips_in(mnt)
        mounts.bind(real, mnt)
        hub.flush()
        notes.append(f"{on_nas_before} on NAS after run 1")
        label = "2a NAS unmounted between runs" if require_mount else "2c same, without require_mount"
        return [count(hub, label, real, notes, 2 * SHORT_S // 10, stranded)]
    finally:
        if mnt in mounts.active:
            mounts.umount(mnt)


def scenario_nas_during_run(tree: Tree, work: Path, video: Path, mounts: Mounts) -> list[Count]:
    hub, real, mnt, notes = _nas_hub(tree, work / f"s2b-{tree.name}", video, mounts)
    try:
        bg = tree.start("run", "--config", str(hub.config))
        try:
            if wait_for(lambda: len(clips_in(real)) >= 3 or not bg.running(), 60):
                if bg.running():
                    notes.append(f"{mounts.umount(mnt)} after {len(clips_in(real))} clip(s)")
                else:
                    notes.append("run ended before the unmount")
                    mounts.umount(mnt)
            else:
                notes.append("no clip reached the NAS within 60 s")
                mounts.umount(mnt)
            hub.note("run", bg.wait())
        finally:
            bg.kill()
        stranded = clips_in(mnt)
        mounts.bind(real, mnt)
        hub.flush()
        return [count(hub, "2b NAS unmounted during run", real, notes, LONG_S // 10, stranded)]
    finally:
        if mnt in mounts.active:
            mounts.umount(mnt)


def scenario_concurrent_flush(tree: Tree, work: Path, video: Path, flushes: int) -> list[Count]:
    d = work / f"s3-{tree.name}"
    nas = d / "nas"
    nas.mkdir(parents=True)
    hub = Hub(tree, d, video, nas)
    hub.setup()
    notes = [n for n in [hub.sink_init()] if n]
    bg = tree.start("run", "--config", str(hub.config))
    codes: list[str] = []
    busy_named = 0
    try:
        wait_for(lambda: bool(hub.sealed()) or not bg.running(), 60)
        while bg.running() and len(codes) < flushes:
            r = tree.agent("outbox", "flush", "--config", str(hub.config))
            codes.append(r.code)
            if r.rc == 5 and f"pid {bg.pid}" in r.err:
                busy_named += 1
        run = bg.wait()
    finally:
        bg.kill()
    hub.note("run", run)
    hub.codes.append("flushes=" + ",".join(codes))
    if m := re.search(r"(\d+) frames in, (\d+) out, .*?(\d+) withheld, (\d+) sink errors", run.out):
        notes.append(f"run: {m[1]} frames in, {m[2]} out, {m[3]} withheld, {m[4]} sink errors")
    if not codes:
        notes.append("run ended before any flush")
    if busy_named:
        notes.append(f"{busy_named} flush(es) BUSY naming the run's pid")
    tb = "Traceback" in run.err
    if tb:
        notes.append("run printed a traceback")
    errs = sorted({m for m in re.findall(r"(cannot rename[^;\n]*|No such file[^;\n]*)", run.err)})
    if errs:
        notes.append(f"run: {errs[0][:90]}")
    hub.flush("final-flush")
    return [count(hub, "3 concurrent flush", nas, notes, LONG_S // 10)]


# --- video, table, main ------------------------------------------------------------------------------


def make_video(path: Path, seconds: int) -> None:
    """320x240 at 10 fps: a panning noise texture plus a moving disc, so clips are not tiny."""
    try:
        import cv2
        import numpy as np
    except ImportError as e:
        raise CampaignError(f"generating the test video needs OpenCV and NumPy (the project's venv): {e}") from e

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (320, 240))
    if not w.isOpened():
        raise CampaignError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (240, 640, 3), dtype=np.uint8)
    try:
        for i in range(seconds * FPS):
            x = (i * 3) % 320
            f = cv2.add(np.ascontiguousarray(base[:, x:x + 320]), rng.integers(0, 40, (240, 320, 3), dtype=np.uint8))
            cv2.circle(f, (int(160 + 100 * np.sin(i / 10)), 120), 30, (255, 255, 255), -1)
            w.write(f)
    finally:
        w.release()


def print_table(rows: list[Count]) -> None:
    head = ["scenario", "tree", "delivered", "queued", "quarantined", "lost", "notes", "exit codes"]
    body = [[r.scenario, r.tree, str(r.delivered), r.queued, str(r.quarantined), str(r.lost),
             "; ".join(r.notes), " ".join(r.codes)] for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for b in body:
        print(" | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))


SCENARIOS = ("1", "2a", "2b", "2c", "3")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="checkout of the old code")
    ap.add_argument("--new", required=True, type=Path, help="checkout of the new code")
    ap.add_argument("--python", default=sys.executable, help="interpreter for both trees (default: this one)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios to run, of {','.join(SCENARIOS)}")
    ap.add_argument("--sink-kib", type=int, default=8192, help="size of the full-sink tmpfs (default 8192 KiB)")
    ap.add_argument("--flushes", type=int, default=8, help="concurrent flushes in scenario 3 (default 8)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and its command logs")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if bad := [s for s in only if s not in SCENARIOS]:
        ap.error(f"unknown scenario(s) {bad}; choose from {SCENARIOS}")
    if os.geteuid() != 0:
        print("fault_campaign: needs root for tmpfs and bind mounts (run it with sudo)", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="fault_campaign-", dir="/tmp"))
    logs = work / "logs"
    logs.mkdir()
    mounts = Mounts()
    rows: list[Count] = []
    failures: list[str] = []
    try:
        trees = [Tree("old", args.old.resolve(), args.python, logs), Tree("new", args.new.resolve(), args.python, logs)]
        for t in trees:
            if not (t.root / "agent" / "__init__.py").is_file():
                raise CampaignError(f"{t.name} tree: {t.root} has no agent/__init__.py")
            where = t.where()
            print(f"{t.name}: agent imported from {where}")
            if not where.resolve().is_relative_to(t.root):
                raise CampaignError(f"{t.name} tree: agent comes from {where}, not from {t.root}")
        short, long = work / "short.mp4", work / "long.mp4"
        make_video(short, SHORT_S)
        make_video(long, LONG_S)
        print(f"videos: {SHORT_S} s and {LONG_S} s at {FPS} fps in {work}", flush=True)
        for sc in only:
            for t in trees:
                t0 = time.monotonic()
                try:
                    if sc == "1":
                        got = scenario_full_sink(t, work, short, mounts, args.sink_kib)
                    elif sc == "2a":
                        got = scenario_nas_between_runs(t, work, short, mounts)
                    elif sc == "2c":
                        got = scenario_nas_between_runs(t, work, short, mounts, require_mount=False)
                    elif sc == "2b":
                        got = scenario_nas_during_run(t, work, long, mounts)
                    else:
                        got = scenario_concurrent_flush(t, work, long, args.flushes)
                except (CampaignError, OSError, subprocess.SubprocessError) as e:
                    failures.append(f"scenario {sc} / {t.name}: {e}")
                    print(f"scenario {sc} / {t.name}: could not run: {e}", file=sys.stderr)
                    continue
                rows.extend(got)
                print(f"scenario {sc} / {t.name}: done in {time.monotonic() - t0:.1f} s", flush=True)
    except (CampaignError, OSError, subprocess.SubprocessError) as e:
        print(f"fault_campaign: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        print(f"fault_campaign: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; "
              "mounts undone, partial results follow", file=sys.stderr)
        print_table(rows)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        for p in mounts.cleanup():
            print(f"fault_campaign: cleanup: {p}", file=sys.stderr)
        left = mounted_under(work)
        if args.keep or left:
            if left:
                print(f"fault_campaign: still mounted, so {work} is kept: {left}", file=sys.stderr)
            else:
                print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(rows)
    for f in failures:
        print(f"not measured: {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
