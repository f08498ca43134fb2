"""`check-config`'s warnings: things a config that validates still gets wrong.

A file source that does not exist, a source that is not a video (no frame can be read from it),
an image glob that matches nothing, a recipient value that does not parse, an encrypted
sink with a camera that has nobody to seal its clips to, and a hub that would withhold frames for
lag before it sheds detector runs (`detection.under_load.behind_s`). Each warning names the key path and its
YAML line, like a validation error. Warnings do not change the exit code unless `--strict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.config import LoadedConfig, at_key, is_plaintext
from agent.errors import AgentError
from agent.media.sources import SourceOpener, read_clean


def config_warnings(loaded: LoadedConfig) -> list[str]:
    """Each warning as `key.path: message (file:line)`."""
    out: list[tuple[Sequence[int | str], str]] = []
    cfg = loaded.config
    for j, cam in enumerate(cfg.cameras):
        why = _source_problem(loaded, cam.source, cam.fps)
        if why:
            out.append((["cameras", j, "source"], why))
    out += _recipient_problems(loaded)
    out += _load_problems(loaded)
    return [at_key(loaded, loc, msg) for loc, msg in out]


def _load_problems(loaded: LoadedConfig) -> list[tuple[Sequence[int | str], str]]:
    """A hub behind a camera sheds detector runs from `under_load.behind_s`, and withholds frames
    for lag from `CATCH_UP_AT` of `max_lag_s`: a `behind_s` past that sheds nothing before frames go."""
    from agent.core.pipeline import CATCH_UP_AT

    ul = loaded.config.detection.under_load
    catch_up_s = loaded.config.analysis.max_lag_s * CATCH_UP_AT
    if not ul.enabled or ul.behind_s < catch_up_s:
        return []
    return [(["detection", "under_load", "behind_s"],
             f"{ul.behind_s:g} s is not under {catch_up_s:g} s (half of analysis.max_lag_s), where a hub behind a "
             "camera starts withholding its frames for lag: it would withhold them before it sheds any detector run")]


def _source_problem(loaded: LoadedConfig, source: str, fps: float | None) -> str | None:
    opener = SourceOpener(source, loaded.path.parent, fps)
    if opener.live:
        return None  # a camera on the network or a device: `doctor` and `run` report it
    spec = opener.spec
    is_glob = any(ch in spec for ch in "*?[")
    if not is_glob:
        p = Path(spec)
        if not p.exists():
            return f"source file {spec} does not exist"
        if not p.is_file():
            return f"source {spec} is not a file"
    try:
        src = opener()
    except AgentError as e:
        return f"{e}" if is_glob else f"{spec} is not a video that can be read: {e}"
    try:
        img = read_clean(src)
    except AgentError as e:
        return f"{spec} is not a video that can be read: {e}"
    finally:
        src.close()
    if img is None:
        return f"{spec} has no frame to read (not a video, or empty)"
    return None


def _recipient_problems(loaded: LoadedConfig) -> list[tuple[Sequence[int | str], str]]:
    from agent.crypto.keys import load_device_public, load_roster

    cfg = loaded.config
    base = loaded.path.parent
    out: list[tuple[Sequence[int | str], str]] = []
    lists: list[tuple[list[int | str], list[str]]] = [(["recipients"], cfg.recipients)]
    lists += [(["cameras", j, "recipients"], c.recipients) for j, c in enumerate(cfg.cameras)
              if c.recipients is not None]
    for loc, values in lists:
        for k, v in enumerate(values):
            try:
                load_device_public(v, base)
            except AgentError as e:
                # A value that looks like a key and is not one, or a path to a .pub file that is missing.
                what = "does not parse" if v.startswith("epa1pub:") else "cannot be read"
                out.append(([*loc, k], f"recipient {v!r} {what}: {e}"))
    encrypted = [i for i, s in enumerate(cfg.sinks) if not is_plaintext(s)]
    if not encrypted:
        return out
    try:
        roster = load_roster(loaded.data_dir)
    except AgentError:
        roster = None  # unreadable: then it cannot supply recipients either (doctor says why)
    for c in cfg.cameras:
        values = c.recipients if c.recipients is not None else cfg.recipients
        if not values and (roster is None or not roster.devices):
            out.append((["sinks", encrypted[0]],
                        f"encrypted, but camera {c.id!r} has no recipients (no `recipients:` and no roster "
                        f"installed in {loaded.data_dir}): nobody could open its clips, so `run` refuses it"))
    return out
