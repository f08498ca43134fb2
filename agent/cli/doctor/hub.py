"""Doctor checks of what the config asks of this hub: each camera's source, the models, the
hub's keys and recipients, the access state, each device's epoch keys, and the data dir's modes
(every directory 0700, every file 0600: events, keys and the outbox name the household).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from agent.analysis.scenestore import scene_findings
from agent.cli.doctor.result import CheckResult
from agent.config import LoadedConfig
from agent.errors import AgentError
from agent.media.sources import SourceOpener, public_spec, read_clean


def check_sources(loaded: LoadedConfig | None) -> list[CheckResult]:
    if loaded is None:
        return []

    out = []
    for cam in loaded.config.cameras:
        opener = SourceOpener(cam.source, loaded.path.parent, cam.fps)
        if opener.live:
            out.append(CheckResult(f"camera {cam.id} source", "warn", f"{public_spec(cam.source)}: live source not probed",
                                   "run `privacy-agent run` and watch events for source_lost"))
            continue
        try:
            src = opener()
            try:
                img = read_clean(src)
            finally:
                src.close()
            if img is None:
                raise AgentError("no frames")
            out.append(CheckResult(f"camera {cam.id} source", "ok",
                                   f"{img.shape[1]}x{img.shape[0]} at {src.info.fps:g} fps"))
        except AgentError as e:
            out.append(CheckResult(f"camera {cam.id} source", "fail", str(e),
                                   "fix `source:` in the config or the file it points at"))
    return out


def check_models(loaded: LoadedConfig | None) -> list[CheckResult]:
    """The models each camera's detection uses are installed and match their sha256."""
    from agent.analysis.factory import model_cache_path
    from agent.config import DetectionConfig, effective_detection
    from models.install import verify

    det = loaded.config.detection if loaded else DetectionConfig()
    wanted: dict[str, str] = {}
    cams = loaded.config.cameras if loaded else []
    for eff in [effective_detection(det, c.detection) for c in cams] or [det]:
        if eff.enabled and eff.faces.enabled:
            wanted[eff.faces.model] = "faces"
        if eff.enabled and eff.objects_active:
            wanted[eff.objects.model] = "objects"
    if not wanted:
        return [CheckResult("models", "warn", "detection is off for every camera",
                            "faces, persons and private objects are not protected")]
    cache = model_cache_path(det, loaded.path.parent if loaded else None)
    out = []
    for r in verify(sorted(wanted), cache=cache):
        out.append(CheckResult(f"model {r.name}", "ok" if r.ok else "fail",
                               str(r.path) if r.ok else r.problem,
                               "" if r.ok else f"privacy-agent models install {r.name} (offline: --from DIR); "
                               "until then that camera withholds every frame"))
    return out


def check_keys(loaded: LoadedConfig | None) -> list[CheckResult]:
    """Hub identity present with safe permissions; every camera has recipients that load."""
    if loaded is None:
        return []
    from agent.config import is_plaintext
    from agent.crypto.keys import load_hub_identity
    from agent.storage.sinks.clips import camera_recipients

    encrypted = [s for s in loaded.config.sinks if not is_plaintext(s)]
    if not encrypted:
        return []
    out = []
    try:
        hub = load_hub_identity(loaded.data_dir)
        out.append(CheckResult("hub identity", "ok", f"key id {hub.public.key_id}"))
    except AgentError as e:
        out.append(CheckResult("hub identity", "fail", str(e),
                               f"privacy-agent keys init --data {loaded.data_dir}"))
    for cam in loaded.config.cameras:
        try:
            rec = camera_recipients(loaded, cam.id)
            out.append(CheckResult(f"camera {cam.id} recipients", "ok" if rec else "fail",
                                   ", ".join(r.key_id for r in rec) or "none",
                                   "" if rec else "add `recipients:` or enroll devices in the roster"))
        except AgentError as e:
            out.append(CheckResult(f"camera {cam.id} recipients", "fail", str(e),
                                   "fix `recipients:` (paths to .pub files or epa1pub: values)"))
    return out


def check_access(loaded: LoadedConfig | None) -> list[CheckResult]:
    """With a roster installed, the access counters must be there (the hub refuses to start
    without them) and requesters should be enrolled (unenrolled ones need two owners)."""
    if loaded is None:
        return []
    from agent.access.state import load_state, state_path
    from agent.crypto.keys import load_roster

    try:
        roster = load_roster(loaded.data_dir)
    except AgentError as e:
        return [CheckResult("roster", "fail", str(e), "install a roster again: privacy-agent keys roster")]
    if roster is None:
        return []
    out = [CheckResult("roster", "ok", f"version {roster.version}: {len(roster.owners())} owner device(s), "
                       f"{len(roster.requesters)} enrolled requester(s)")]
    try:
        c = load_state(state_path(loaded.data_dir), roster_installed=True)
        out.append(CheckResult("access counters", "ok", f"{len(c.by_device)} device(s) on record"))
    except AgentError as e:
        out.append(CheckResult("access counters", "fail", str(e).split(". ")[0],
                               f"if you know why they are gone: privacy-agent keys reset-access-state "
                               f"--data {loaded.data_dir}"))
    if loaded.config.mqtt is not None and not roster.requesters:
        out.append(CheckResult("requesters", "warn", "no requester is enrolled: every request is UNVERIFIED "
                               "and needs two owner approvals",
                               "owner enroll --add-requester PUB --requester-role ROLE"))
    return out


def check_epochs(loaded: LoadedConfig | None) -> list[CheckResult]:
    """Each household device's installed epoch key list: how long it still covers. Missing or
    run out: a warning (clips go to the long-term key), a failure under
    `retention.missing_epoch_key: withhold` (the cameras withhold); running out soon: a warning."""
    if loaded is None:
        return []
    import datetime as dt

    from agent.config import is_plaintext
    from agent.crypto.keys import load_epoch_lists, load_roster

    if all(is_plaintext(s) for s in loaded.config.sinks):
        return []
    settings = loaded.config.retention
    bad = "fail" if settings.missing_epoch_key == "withhold" else "warn"
    effect = ("the cameras withhold their frames" if bad == "fail"
              else "clips are sealed to its long-term key and cannot be shredded")
    hint = ("on the device: privacy-agent owner epochs generate, then owner epochs publish "
            f"(or privacy-agent keys epochs install --data {loaded.data_dir} LIST)")
    try:
        roster = load_roster(loaded.data_dir)
    except AgentError:
        return []  # check_access reports the roster
    if roster is None:
        return [CheckResult("epoch keys", bad, f"no roster is installed, so no epoch key list can be: {effect}",
                            "install a roster (privacy-agent keys roster), then the devices' epoch key lists")]
    lists = load_epoch_lists(loaded.data_dir, roster)
    now = time.time()
    out = []
    for d in roster.devices:
        name = f"epoch keys {d.name or d.key_id}"
        lst = lists.get(d.key_id)
        if lst is None:
            out.append(CheckResult(name, bad, f"device {d.key_id} has no installed epoch key list: {effect}", hint))
            continue
        left_d = (lst.horizon_end_s - now) / 86_400
        until = dt.datetime.fromtimestamp(lst.horizon_end_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        detail = f"version {lst.version}, keys until {until}"
        if left_d <= 0:
            out.append(CheckResult(name, bad, f"{detail}: ran out {-left_d:.1f} days ago; {effect}", hint))
        elif lst.key_for(now) is None:
            out.append(CheckResult(name, bad, f"{detail}: no key for now (the list starts later); {effect}", hint))
        elif left_d <= settings.epoch_warn_days:
            out.append(CheckResult(name, "warn", f"{detail}: runs out in {left_d:.1f} days", hint))
        else:
            out.append(CheckResult(name, "ok", f"{detail} ({left_d:.0f} days)"))
    return out


#: Paths named in one result before the rest are counted.
_SHOW = 3


def loose_private_paths(root: Path) -> list[tuple[Path, int]]:
    """Directories and files under `root` (itself included) that group or others may use, with
    their modes. Symlinks are not followed (`tighten_private_tree` leaves them too)."""
    found: list[tuple[Path, int]] = []
    try:
        st = os.stat(root)
    except OSError:
        return found
    if stat.S_IMODE(st.st_mode) & 0o077:
        found.append((root, stat.S_IMODE(st.st_mode)))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            try:
                lst = os.lstat(p)
            except OSError:
                continue
            if (stat.S_ISDIR(lst.st_mode) or stat.S_ISREG(lst.st_mode)) and stat.S_IMODE(lst.st_mode) & 0o077:
                found.append((p, stat.S_IMODE(lst.st_mode)))
    return found


def check_data_dir_modes(loaded: LoadedConfig | None) -> list[CheckResult]:
    if loaded is None or not loaded.data_dir.exists():
        return []
    d = loaded.data_dir
    loose = loose_private_paths(d)
    if not loose:
        return [CheckResult("data_dir modes", "ok", f"{d}: directories 0700, files 0600")]
    shown = ", ".join(f"{p} ({mode:04o})" for p, mode in loose[:_SHOW])
    more = f" and {len(loose) - _SHOW} more" if len(loose) > _SHOW else ""
    return [CheckResult("data_dir modes", "fail", f"group or others may read: {shown}{more}",
                        f"chmod -R go-rwx {d} (or start `privacy-agent run` once, which tightens it)")]


def check_scenes(loaded: LoadedConfig | None) -> list[CheckResult]:
    """`doctor`: each camera's stored scene (readable, not moved) and pending relearn request."""
    if loaded is None:
        return []
    cams = [c.id for c in loaded.config.cameras]
    problems = scene_findings(loaded.data_dir, cams)
    if not problems:
        return [CheckResult("learned scenes", "ok", f"{len(cams)} camera(s): none moved, every stored scene readable")]
    # A moved camera is the check working (withheld until its owner relearns); a file that cannot
    # be read is a fault to fix.
    return [CheckResult(f"camera {p.camera_id} scene", "warn" if p.moved else "fail", p.what,
                        p.fix or "privacy-agent camera relearn CAMERA --config CONFIG") for p in problems]
