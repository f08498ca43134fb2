"""Editing the homeowner's YAML in place: merge proposed zones, keep comments and quotes, write atomically.

Used by `zones discover --apply`. The merged text is validated with the same models as
`check-config` before it replaces the file, so an edit never leaves an invalid config behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from agent.config.loader import parse_config_text
from agent.errors import ConfigError


@dataclass(frozen=True, slots=True)
class NewZone:
    """A zone to add to a camera: a name, relative `[x, y]` points, and a note kept as a comment.

    The editor knows nothing of where a zone came from (discovery, a drawing): callers describe it
    in `note`, so the config package never imports the tools that propose zones.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    note: str = ""


def _zone_map(z: NewZone, action: str) -> CommentedMap:
    m = CommentedMap()
    m["name"] = z.name
    pts = CommentedSeq()
    for xy in z.points:
        pair = CommentedSeq(list(xy))
        pair.fa.set_flow_style()
        pts.append(pair)
    pts.fa.set_flow_style()
    m["points"] = pts
    m["action"] = action
    if z.note:
        m.yaml_add_eol_comment(z.note, "name")
    return m


def _mapping_indent(text: str) -> int:
    """Indentation the file uses for nested mappings (ruamel's guess only knows sequences)."""
    prev: tuple[int, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(line) - len(line.lstrip(" "))
        if prev is not None and prev[1].endswith(":") and col > prev[0] and not stripped.startswith("-"):
            return col - prev[0]
        prev = (col, stripped.split("#")[0].rstrip())
    return 2


def snippet_text(camera_id: str, zones: Sequence[NewZone], action: str) -> str:
    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    seq = CommentedSeq([_zone_map(z, action) for z in zones])
    with tempfile.SpooledTemporaryFile(mode="w+") as buf:
        y.dump(seq, buf)
        buf.seek(0)
        body = buf.read()
    head = (f"# Proposed privacy zones for camera {camera_id!r} (privacy-agent zones discover).\n"
            "# Check them on the preview image, then add them under the camera's `zones:`\n"
            "# or run the same command again with --apply.\n")
    return head + (body if zones else "[]\n")


def edit_camera(path: Path, camera_id: str, change: Callable[[CommentedMap], None]) -> str:
    """The config file's text after `change` edited the camera's mapping in place: the one editor of
    the homeowner's file (`zones discover --apply`, the homeowner's page). Comments, quotes and the
    file's indentation are kept, so a diff shows only what `change` did."""
    text = path.read_text(encoding="utf-8")
    # Round-trip the homeowner's file as written: quoted scalars stay quoted (`source: "frames/*.jpg"`),
    # so everything outside the edit comes back byte for byte.
    loader = YAML(typ="rt")
    loader.preserve_quotes = True
    try:
        root, indent, block_seq_indent = load_yaml_guess_indent(text, yaml=loader)
    except Exception as e:  # noqa: BLE001  (ruamel raises many types; the loader already reported details)
        raise ConfigError(f"{path}: cannot parse for editing: {e}") from None
    cams = root.get("cameras") if isinstance(root, CommentedMap) else None
    cam = next((c for c in cams or [] if isinstance(c, CommentedMap) and c.get("id") == camera_id), None)
    if cam is None:
        raise ConfigError(f"{path}: no camera with id {camera_id!r}")
    change(cam)
    y = YAML(typ="rt")
    y.preserve_quotes = True
    # ruamel's guess: `indent` is where a sequence item's content starts, `block_seq_indent` where its dash is.
    y.indent(mapping=_mapping_indent(text), sequence=indent or 2, offset=block_seq_indent or 0)
    y.width = 4096
    with tempfile.SpooledTemporaryFile(mode="w+") as buf:
        y.dump(root, buf)
        buf.seek(0)
        return str(buf.read())


def merge_into_config(path: Path, camera_id: str, new_zones: Sequence[NewZone], action: str) -> str:
    """The config file's text with `new_zones` appended to the camera's zones (comments kept)."""

    def append(cam: CommentedMap) -> None:
        zones = cam.get("zones")
        if zones is None:
            zones = CommentedSeq()
            cam["zones"] = zones
        if not isinstance(zones, CommentedSeq):
            raise ConfigError(f"{path}: cameras[{camera_id}].zones is not a list")
        for z in new_zones:
            zones.append(_zone_map(z, action))

    return edit_camera(path, camera_id, append)


def write_config_atomically(path: Path, text: str) -> Path:
    """Validate, back up the old file, and replace it in one rename."""
    parse_config_text(text, path.name)  # raises ConfigError: never write a config the agent cannot load
    backup = path.with_name(path.name + ".bak")
    backup.write_bytes(path.read_bytes())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return backup
