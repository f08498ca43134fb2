"""Loading the homeowner's YAML: parse with line numbers, validate, and say where it is wrong.

A validation error names the key path and its YAML line, for example
`cameras[0].zones[1].points: polygon needs at least 3 points (config.yaml:14)`.
`LoadedConfig` carries the file's path and sha256, so every report can say which config made it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from agent.config.root import AgentConfig
from agent.errors import ConfigError


class LoadedConfig(BaseModel):
    """A validated config plus where it came from (for relative paths and the hash)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: AgentConfig
    path: Path
    sha256: str

    def resolve(self, p: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.config.data_dir)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _to_plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_to_plain(v) for v in node]
    return node


def _line_of(root: Any, loc: Sequence[int | str]) -> int | None:
    """1-based YAML line of the deepest node of `loc` that exists in the document."""
    node = root
    line: int | None = None
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            try:
                line = node.lc.item(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        else:
            break
    return line


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    # pydantic adds the discriminator tag ("directory") and "[key]" bits for
    # unions; they are not YAML keys.
    return [p for p in loc if not (isinstance(p, str) and (p in {"directory", "s3"} or p.startswith("function-")))]


def _messages(err: ValidationError, root: Any, fname: str) -> list[str]:
    msgs = []
    for e in err.errors():
        loc = _clean_loc(e["loc"])
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
            # point at the unknown key itself, but name its parent in the path
        line = _line_of(root, loc)
        where = f" ({fname}:{line})" if line else f" ({fname})"
        msgs.append(f"{_format_loc(loc)}: {msg}{where}")
    return msgs


def parse_config_text(text: str, fname: str = "config.yaml") -> AgentConfig:
    """Parse and validate YAML text. Raises ConfigError with key paths and lines."""
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        line = f"{fname}:{mark.line + 1}" if mark is not None else fname
        raise ConfigError(f"malformed YAML: {e.problem or e} ({line})") from None
    except YAMLError as e:
        raise ConfigError(f"malformed YAML in {fname}: {e}") from None
    if root is None:
        raise ConfigError(f"{fname} is empty; it needs at least a `cameras:` list")
    if not isinstance(root, CommentedMap):
        raise ConfigError(f"{fname}: the top level must be a mapping with a `cameras:` key")
    try:
        return AgentConfig.model_validate(_to_plain(root))
    except ValidationError as e:
        msgs = _messages(e, root, fname)
        raise ConfigError("invalid config:\n  " + "\n  ".join(msgs), tuple(msgs)) from None


def config_hash(cfg: AgentConfig) -> str:
    canon = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def at_key(loaded: LoadedConfig, loc: Sequence[int | str], message: str) -> str:
    """`key.path: message (file:line)` about a key of a loaded file, in the form of a validation
    error (for warnings about a config that validates). The file is read again for its lines."""
    try:
        root = _yaml().load(loaded.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError):
        root = None
    line = _line_of(root, loc) if root is not None else None
    fname = loaded.path.name
    return f"{_format_loc(loc)}: {message} " + (f"({fname}:{line})" if line else f"({fname})")


def load_config(path: str | Path) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    cfg = parse_config_text(text, p.name)
    return LoadedConfig(config=cfg, path=p.resolve(), sha256=config_hash(cfg))
