"""A camera's learned scene on disk, and the owner's requests to learn it again.

Layout (`DATA/state/scene/<camera>/`, 0700; every file 0600, written atomically):
- `<name>.scene`: one learned array (the tamper edge reference, ...): a magic line, the SHA-256
  of the payload, then the payload (NumPy `.npy`, read with `allow_pickle=False`). A file that
  is too large, truncated, fails its checksum or holds another shape or dtype raises
  `SceneStateError`: the analyzer withholds the camera and names the file (fail closed), it
  never quietly learns a new scene in its place.
- `moved`: present while the tamper analyzer says the camera was moved: a restart does not
  clear it, only a relearn does.
- `room`: the private room the object detector latched under `privacy_room: auto` (`bathroom`
  or `bedroom`): a restart does not clear it either, only a relearn does.
- `relearn`: a pending relearn request (JSON: id, who asked, when, and whether the hub's audit
  log has it already). `camera relearn` (local) and the hub's MQTT side (an owner's signed
  `relearn`) write it; `run` picks it up (`RelearnWatcher`), records it in the audit log if it
  is not there yet (record, then act), tells the camera's pipeline to relearn between frames,
  then removes it. Without `run` the next start honours it.

Why files and not memory: a restart, or a power cycle by someone who turned the camera, must
not learn the new view as the right one. Relearning is never automatic; it is the owner's act.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.errors import SceneStateError
from agent.fsutil import PRIVATE_FILE_MODE, atomic_write, make_private_dirs
from agent.jsonlimits import loads_bounded

log = logging.getLogger(__name__)

_MAGIC = b"epa-scene/1\n"
_DIGEST_BYTES = 32
#: The largest stored array a camera may have (a 160x120 float32 reference is 77 kB).
MAX_SCENE_BYTES = 4 << 20
_MAX_REQUEST_BYTES = 4096
_REQUEST = "relearn"
_MOVED = "moved"
_ROOM = "room"


def scene_dir(data_dir: Path, camera_id: str) -> Path:
    return Path(data_dir) / "state" / "scene" / camera_id


def relearn_hint(camera_id: str) -> str:
    return f"run `privacy-agent camera relearn {camera_id} --config CONFIG` once the view is right"


class SceneStore:
    """One camera's stored scene. Methods raise `SceneStateError` (reading) or OSError (writing)."""

    def __init__(self, data_dir: Path, camera_id: str) -> None:
        self.camera_id = camera_id
        self.dir = scene_dir(data_dir, camera_id)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.scene"

    def load(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
        """The stored array, None when there is none (first start). Anything else wrong raises."""
        path = self._path(name)
        arr = _decode(path, self.camera_id)
        if arr is None:
            return None
        what = f"stored scene {path}"
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise SceneStateError(f"{what} holds {arr.dtype}{arr.shape}, "
                                  f"not {dtype}{shape}; {relearn_hint(self.camera_id)}")
        return arr

    def save(self, name: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        payload = buf.getvalue()
        make_private_dirs(self.dir)
        atomic_write(self._path(name), _MAGIC + hashlib.sha256(payload).digest() + payload, PRIVATE_FILE_MODE)

    @property
    def moved(self) -> bool:
        return (self.dir / _MOVED).exists()

    @property
    def room(self) -> str | None:
        """The private room the detector latched (`bathroom`, `bedroom`), kept across restarts:
        a bathroom whose sink is behind a towel after a power cycle is still a bathroom. A file
        that cannot be read or holds anything else counts as the strictest kind (fail closed)."""
        path = self.dir / _ROOM
        try:
            kind = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeError):
            return "bathroom"
        return kind if kind in ("bathroom", "bedroom") else "bathroom"

    def set_room(self, kind: str | None) -> None:
        """Record the latched room (None: forget it, on the owner's relearn). Raises OSError."""
        path = self.dir / _ROOM
        if kind is None:
            path.unlink(missing_ok=True)
            return
        make_private_dirs(self.dir)
        atomic_write(path, kind.encode("ascii"), PRIVATE_FILE_MODE)

    def set_moved(self, moved: bool, detail: Mapping[str, Any] | None = None) -> None:
        path = self.dir / _MOVED
        if moved:
            make_private_dirs(self.dir)
            atomic_write(path, json.dumps(dict(detail or {}), sort_keys=True).encode(), PRIVATE_FILE_MODE)
        else:
            path.unlink(missing_ok=True)


# -- relearn requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelearnRequest:
    camera_id: str
    request_id: str
    by: str  # "local" or the owner device's key id
    requested_ms: int
    #: True when the hub's audit log has it already (an owner's signed MQTT request).
    recorded: bool


def write_request(data_dir: Path, camera_id: str, by: str, now_ms: int, *, recorded: bool) -> RelearnRequest:
    """Ask for a relearn: durable (fsynced) before this returns. Raises OSError."""
    req = RelearnRequest(camera_id, secrets.token_hex(8), by, now_ms, recorded)
    d = scene_dir(data_dir, camera_id)
    make_private_dirs(d)
    body = {"id": req.request_id, "by": by, "requested_ms": now_ms, "recorded": recorded}
    atomic_write(d / _REQUEST, json.dumps(body, sort_keys=True).encode(), PRIVATE_FILE_MODE)
    return req


def read_request(data_dir: Path, camera_id: str) -> RelearnRequest | None:
    """The pending request, None if none. A file that cannot be read or parsed raises."""
    path = scene_dir(data_dir, camera_id) / _REQUEST
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_REQUEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SceneStateError(f"relearn request {path} cannot be read: {e.strerror or e}") from None
    try:
        doc = loads_bounded(data, max_bytes=_MAX_REQUEST_BYTES, max_depth=2, what=f"relearn request {path}")
        if not isinstance(doc, dict) or set(doc) != {"id", "by", "requested_ms", "recorded"}:
            raise ValueError("expected exactly id, by, requested_ms, recorded")
        rid, by, at, rec = doc["id"], doc["by"], doc["requested_ms"], doc["recorded"]
        if not (isinstance(rid, str) and isinstance(by, str) and len(by) <= 64 and isinstance(at, int)
                and isinstance(rec, bool)):
            raise ValueError("wrong field types")
    except ValueError as e:
        raise SceneStateError(f"relearn request {path} is malformed ({e}); ask again with "
                              "`privacy-agent camera relearn`") from None
    return RelearnRequest(camera_id, rid, by, at, rec)


def clear_request(data_dir: Path, camera_id: str, request_id: str) -> None:
    """Remove the request if it is still `request_id` (a newer one stays for the next poll)."""
    try:
        current = read_request(data_dir, camera_id)
    except SceneStateError:
        current = None
    if current is not None and current.request_id == request_id:
        (scene_dir(data_dir, camera_id) / _REQUEST).unlink(missing_ok=True)


class Relearnable(Protocol):
    camera_id: str

    def request_relearn(self) -> None: ...


class RelearnWatcher:
    """`run`'s side of relearning: hands pending requests to the cameras' pipelines.

    `poll_once()` before the cameras start honours requests made while `run` was not running;
    `start()` then polls every `interval_s`. `record(kind, fields)` appends to the hub's audit
    log (None when the hub has no log); it runs before the pipeline is told (record, then act),
    and a request it cannot record stays pending and is not acted on.
    """

    def __init__(self, data_dir: Path, pipelines: Mapping[str, Relearnable],
                 record: Callable[[str, Mapping[str, Any]], object] | None,
                 on_problem: Callable[[str, str], None] | None = None, interval_s: float = 1.0) -> None:
        self._data_dir = Path(data_dir)
        self._pipes = dict(pipelines)
        self._record = record
        self._on_problem = on_problem or (lambda cam, msg: log.error("camera %s: %s", cam, msg))
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[str] = set()

    def poll_once(self) -> list[RelearnRequest]:
        """Honour every pending request; returns those handed to a pipeline."""
        done = []
        for cam, pipe in self._pipes.items():
            try:
                req = read_request(self._data_dir, cam)
            except SceneStateError as e:
                if cam not in self._reported:
                    self._reported.add(cam)
                    self._on_problem(cam, str(e))
                continue
            if req is None:
                continue
            try:
                if not req.recorded and self._record is not None:
                    self._record("camera_relearned", {"camera": cam, "by": req.by, "via": "local",
                                                      "request_id": req.request_id})
                pipe.request_relearn()
                clear_request(self._data_dir, cam, req.request_id)
            except Exception as e:  # noqa: BLE001 - a request that cannot be recorded is not acted on
                if cam not in self._reported:
                    self._reported.add(cam)
                    self._on_problem(cam, f"relearn request not honoured: {type(e).__name__}: {e}")
                continue
            self._reported.discard(cam)
            done.append(req)
        return done

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self._interval_s):
                self.poll_once()

        self._thread = threading.Thread(target=loop, name="relearn-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def _read_scene(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(array, None) for a good scene file, (None, None) when there is none (first start), else
    (None, what is wrong with it), worded to follow the file's name."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SCENE_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if len(data) > MAX_SCENE_BYTES:
        return None, f"is larger than {MAX_SCENE_BYTES} bytes"
    head = len(_MAGIC) + _DIGEST_BYTES
    if not data.startswith(_MAGIC) or len(data) < head:
        return None, "is not a scene file"
    payload = data[head:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC):head]:
        return None, "is corrupt (checksum)"
    try:
        arr = np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        return None, f"is corrupt ({e})"
    if not isinstance(arr, np.ndarray) or not np.isfinite(arr).all():
        return None, "holds no finite array"
    return arr, None


def _decode(path: Path, camera_id: str) -> np.ndarray | None:
    """A scene file's array (bounded read, magic, checksum, a plain finite array), None if there is
    no file. Anything else wrong raises `SceneStateError`; `run` and `doctor` judge files alike."""
    arr, fault = _read_scene(path)
    if fault is not None:
        raise SceneStateError(f"stored scene {path} {fault}; {relearn_hint(camera_id)}")
    return arr


def _bad_files(store: SceneStore) -> list[tuple[Path, str]]:
    """Each stored scene file of the camera that `run` would refuse, with what is wrong with it."""
    files = sorted(store.dir.glob("*.scene")) if store.dir.is_dir() else []
    out = []
    for p in files:
        fault = _read_scene(p)[1]
        if fault is not None:
            out.append((p, fault))
    return out


def stored_scene_state(data_dir: Path, camera_id: str) -> str | None:
    """What the stored scene says without running the camera: "unreadable", "moved" or None."""
    store = SceneStore(data_dir, camera_id)
    if _bad_files(store):
        return "unreadable"
    return "moved" if store.moved else None


@dataclass(frozen=True, slots=True)
class SceneProblem:
    """One camera's stored-scene finding for `doctor`. `moved` is the check working (the camera is
    withheld until its owner relearns it), not a fault; `fix` may be empty."""

    camera_id: str
    what: str
    fix: str
    moved: bool = False

    def __str__(self) -> str:
        return f"camera {self.camera_id}: {self.what}" + (f"; {self.fix}" if self.fix else "")


def scene_findings(data_dir: Path, camera_ids: list[str]) -> list[SceneProblem]:
    """Every camera whose stored scene is unreadable, that waits for a relearn, or whose relearn
    request cannot be read."""
    out = []
    for cam in camera_ids:
        store = SceneStore(data_dir, cam)
        for path, fault in _bad_files(store):
            # The cause, not just the verdict: an unreadable file (permissions, a failing card) is
            # fixed differently from one whose bytes were changed.
            out.append(SceneProblem(cam, f"stored scene {path} is unreadable or corrupt: it {fault}",
                                    relearn_hint(cam)))
        if store.moved:
            out.append(SceneProblem(cam, "moved (its view no longer matches the learned scene) and withheld",
                                    f"check the zones with `privacy-agent zones preview`, then {relearn_hint(cam)}",
                                    moved=True))
        try:
            read_request(data_dir, cam)
        except SceneStateError as e:
            out.append(SceneProblem(cam, str(e), ""))
    return out
