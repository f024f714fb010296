"""Password guessing made slow: a delay that doubles with each failed login, per client address and per login.

Dovecot's ``auth_penalty`` is the anchor: after N failures the next attempt
waits ``base * 2**(N-1)`` seconds, at most ``cap`` (Dovecot: 2**(N-1) s, at
most 15 s). Failures count per client IP and per login name, whichever is
worse, so neither many logins from one address nor one login from many
addresses guesses faster; a success clears both, and failures older than
``forget`` no longer count. The argon2 checks run on a small executor of
their own: each takes 64 MiB, so a burst of attempts cannot exhaust memory
or the default thread pool the rest of the gateway uses.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from typing import Callable, TypeVar

T = TypeVar("T")

_MAX_ENTRIES = 100_000  # remembered addresses and logins; the oldest are dropped past it


class AuthPenalty:
    def __init__(self, base: float = 1.0, cap: float = 15.0, forget: float = 900.0, workers: int = 2):
        self.base, self.cap, self.forget = base, cap, forget
        self._failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailgw-auth")

    def delay(self, client_ip: str, login: str) -> float:
        """Seconds the next attempt from ``client_ip`` for ``login`` waits before it is checked."""
        n = max(self._count("ip:" + client_ip), self._count("login:" + login.lower()))
        return 0.0 if n == 0 else min(self.cap, self.base * 2 ** (n - 1))

    def failed(self, client_ip: str, login: str) -> int:
        """Record a failure; the failures now counted against this address."""
        now = time.monotonic()
        for key in ("ip:" + client_ip, "login:" + login.lower()):
            self._failures[key] = (self._count(key) + 1, now)
            self._failures.move_to_end(key)
        while len(self._failures) > _MAX_ENTRIES:
            self._failures.popitem(last=False)
        return self._count("ip:" + client_ip)

    def succeeded(self, client_ip: str, login: str) -> None:
        self._failures.pop("ip:" + client_ip, None)
        self._failures.pop("login:" + login.lower(), None)

    async def check(self, verify: Callable[[], T]) -> T:
        """Run the (slow, memory-hungry) password check on the penalty's own executor."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, verify)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _count(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        count, last = entry
        if time.monotonic() - last > self.forget:
            del self._failures[key]
            return 0
        return count
