"""Sessions, CSRF tokens and the login throttle of the console, kept in the console's memory.

A session is a random token in a cookie (HttpOnly, SameSite=Strict, Secure under
TLS or behind a TLS proxy); the server keeps who it is and its CSRF token, so a
restart of the console logs everyone out. Every POST carries the session's CSRF
token in a form field; the login form, before any session, carries a token that
must equal the one in its own cookie (double submit).

Throttle: each failed login counts against the login name and against the client
address. From the fifth failure on, that name or address is locked out for a time
that doubles with each further failure (30 s, 1 min, 2 min, ... at most 15 min);
a success clears the name's count. Passwords are never tried while locked out, so a
guesser gains nothing by trying faster.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time

from mailgw.console.accounts import Account

COOKIE = "mailgw_console"
LOGIN_COOKIE = "mailgw_console_login"
FREE_FAILURES = 5
FIRST_LOCK = 30.0
LONGEST_LOCK = 900.0
_FORGET_AFTER = 86400.0


@dataclasses.dataclass
class Session:
    token: str
    account: Account
    csrf: str
    client: str
    started: float
    seen: float


class Sessions:
    def __init__(self, idle: float, clock: object = time.monotonic):
        self.idle = idle
        self._clock = clock
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def start(self, account: Account, client: str) -> Session:
        now = self._now()
        s = Session(secrets.token_urlsafe(32), account, secrets.token_urlsafe(32), client, now, now)
        with self._lock:
            self._by_token = {t: v for t, v in self._by_token.items() if now - v.seen < self.idle}
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self._now()
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if now - s.seen >= self.idle:
                del self._by_token[token]
                return None
            s.seen = now
            return s

    def end(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; a missing one never matches."""
    return bool(a) and bool(b) and secrets.compare_digest(str(a), str(b))


@dataclasses.dataclass
class _Count:
    failures: int = 0
    last: float = 0.0


class Throttle:
    """Failed logins per login name and per client address, and how long each is locked out."""

    def __init__(self, clock: object = time.monotonic):
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def wait(self, *keys: str) -> float:
        """Seconds before any of ``keys`` may try again (0: now)."""
        now = self._now()
        with self._lock:
            return max((self._locked_until(self._counts.get(k)) - now for k in keys), default=0.0) if keys else 0.0

    @staticmethod
    def _locked_until(c: _Count | None) -> float:
        if c is None or c.failures < FREE_FAILURES:
            return 0.0
        return c.last + min(FIRST_LOCK * 2.0 ** (c.failures - FREE_FAILURES), LONGEST_LOCK)

    def failed(self, *keys: str) -> None:
        now = self._now()
        with self._lock:
            if len(self._counts) > 10000:  # forget old entries: a flood of addresses must not grow memory forever
                self._counts = {k: v for k, v in self._counts.items() if now - v.last < _FORGET_AFTER}
            for k in keys:
                c = self._counts.setdefault(k, _Count())
                c.failures += 1
                c.last = now

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)
