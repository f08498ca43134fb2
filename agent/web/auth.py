"""The page's login: the password hash file, server-side sessions and the per-address rate limit.

Invariants:
- The password is stored only as an argon2id hash (PyNaCl `pwhash.argon2id`), in the data dir,
  mode 0600; it is runtime state, never config.
- A session is a random 256-bit token known to the server (a cookie alone proves nothing after
  logout or expiry) with its own CSRF token; both compared in constant time.
- A client address that has failed `max_failures` logins within the window is refused before
  its password is even hashed, so guessing costs the attacker time and the hub no memory.
- Time comes from the injected clock (monotonic), so tests never sleep.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash

from agent.clock import Clock
from agent.errors import WebError
from agent.fsutil import atomic_write, make_private_dirs

log = logging.getLogger(__name__)

PASSWORD_FILE = "password.argon2id"
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_BYTES = 1024
#: One argon2id computation at a time: each takes 64 MiB on a hub with little memory.
_HASHING = threading.Semaphore(1)


def web_dir(data_dir: Path) -> Path:
    return data_dir / "web"


def password_file(data_dir: Path) -> Path:
    return web_dir(data_dir) / PASSWORD_FILE


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WebError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise WebError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")


def set_password(data_dir: Path, password: str) -> Path:
    """Hash `password` with argon2id and store it (0600), replacing any earlier one."""
    check_new_password(password)
    with _HASHING:
        hashed = nacl.pwhash.argon2id.str(password.encode())
    path = password_file(data_dir)
    try:
        make_private_dirs(path.parent)
        atomic_write(path, hashed + b"\n")
    except OSError as e:
        raise WebError(f"cannot write the page's password file {path}: {e.strerror or e}") from None
    return path


class PasswordStore:
    """Checks a password against the stored hash (read at each check: `web passwd` takes effect at once)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = password_file(data_dir)

    def is_set(self) -> bool:
        return self.path.is_file()

    def verify(self, password: str) -> bool:
        try:
            stored = self.path.read_bytes().strip()
        except OSError as e:
            log.warning("cannot read the page's password file %s: %s", self.path, e.strerror or e)
            return False
        if len(password.encode()) > MAX_PASSWORD_BYTES or not stored:
            return False
        with _HASHING:
            try:
                return bool(nacl.pwhash.verify(stored, password.encode()))
            except nacl.exceptions.InvalidkeyError:
                return False
            except (nacl.exceptions.CryptoError, ValueError) as e:
                # A damaged hash file: nobody logs in (fail closed) and the log says why.
                log.error("the page's password file %s is not an argon2id hash: %s", self.path, e)
                return False


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    expires_mono_s: float


class Sessions:
    """Server-side sessions: created at login, dropped at logout or expiry (the oldest when full)."""

    MAX_SESSIONS = 16

    def __init__(self, clock: Clock, ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._by_token: dict[str, Session] = {}

    def create(self) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock.monotonic() + self._ttl_s)
        with self._lock:
            self._expire()
            while len(self._by_token) >= self.MAX_SESSIONS:
                del self._by_token[min(self._by_token, key=lambda t: self._by_token[t].expires_mono_s)]
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            self._expire()
            # Constant-time comparison over every live session: the token never leaks by timing.
            for known, s in self._by_token.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return s
        return None

    def drop(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = self._clock.monotonic()
        for t in [t for t, s in self._by_token.items() if s.expires_mono_s <= now]:
            del self._by_token[t]


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())


class LoginLimiter:
    """At most `max_failures` failed logins per client address per `window_s` (sliding window)."""

    MAX_ADDRESSES = 1024

    def __init__(self, clock: Clock, max_failures: int, window_s: float) -> None:
        self._clock = clock
        self._max = max_failures
        self._window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def retry_after_s(self, address: str) -> float:
        """0 when `address` may try a password now; else seconds until it may."""
        with self._lock:
            q = self._trim(address)
            if q is None or len(q) < self._max:
                return 0.0
            return max(1.0, q[0] + self._window_s - self._clock.monotonic())

    def failed(self, address: str) -> None:
        with self._lock:
            q = self._trim(address)
            if q is None:
                if len(self._failures) >= self.MAX_ADDRESSES:
                    # Bounded memory: forget the address whose last failure is oldest.
                    del self._failures[min(self._failures, key=lambda a: self._failures[a][-1])]
                q = self._failures[address] = deque()
            q.append(self._clock.monotonic())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _trim(self, address: str) -> deque[float] | None:
        q = self._failures.get(address)
        if q is None:
            return None
        cutoff = self._clock.monotonic() - self._window_s
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._failures[address]
            return None
        return q
