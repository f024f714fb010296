"""systemd's readiness protocol (sd_notify(3)): a datagram to ``$NOTIFY_SOCKET``, no library needed.

``Type=notify`` units learn from it when the gateway is ready (after the exchange
log's migrations and every port bound), reloading, stopping, and what it is doing
(``STATUS=``). With ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and
expects ``WATCHDOG=1`` at least that often; the gateway sends it only while its
health check passes, so a wedged process is restarted.

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. The variables are
removed from the environment once read, so the serving processes that the
supervisor starts (mailgw.workers) never speak for the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address: str | None = env.pop("NOTIFY_SOCKET", None) or None
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False (and one warning) when it cannot be sent."""
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):  # an abstract socket
            target = "\0" + target[1:]
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            # Never blocks the event loop: a receiver whose queue is full loses this one message.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
                s.sendto(payload, target)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("systemd notification socket %s: %s", self.address, e)
                self._warned = True
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_line(status)}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: what Type=notify-reload requires with RELOADING=1 (systemd 253); harmless before.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                  "STATUS=reloading the configuration")

    def reloaded(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_line(status)}")

    def stopping(self, status: str = "draining: no new connections, open transactions finish") -> None:
        self.send("STOPPING=1", f"STATUS={_line(status)}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={_line(text)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def _line(text: str) -> str:
    return " ".join(text.split())[:400]
