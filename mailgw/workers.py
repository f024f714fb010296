"""Several serving processes on one machine: ``workers: N`` in the settings.

One Python process runs its pipeline on one core at a time (the GIL). With
``workers: N`` above 1, ``mailgw serve`` becomes a supervisor:

    mailgw serve              supervisor: recovers the spool, delivers, watches the workers
      +- mailgw serve --worker 1   every listener (SO_REUSEPORT), pipeline, record, spool, 250
      +- ...
      +- mailgw serve --worker N

The workers share the listening ports through SO_REUSEPORT (the kernel spreads
new connections over them; a worker with more SMTP sessions than another passes
a new connection to the least busy one before it greets the client:
mailgw.balance) and the spool directory: ids are unique
(milliseconds and 40 random bits), so each message file is written by one
worker, and the durability rule is the same as with one process (the 250
goes out only after the file and its directory are fsync-ed). Only the
supervisor delivers, so each message is delivered by one process, exactly as
with a single worker. A worker tells the supervisor the id of every message it
queued through a pipe, one id per line (with `` !`` when it is urgent); the supervisor's periodic spool scan
picks up anything a full pipe dropped, so a lost notice delays a message by at
most ``queue.scan_interval`` and never loses it.

Signals go to the supervisor: SIGHUP reloads it and every worker, SIGTERM
drains the workers first (open transactions finish), then delivery. A worker
that dies is started again after a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Callable

from mailgw import balance, metrics, sdnotify
from mailgw.app import Gateway

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before a worker that died is started again


def die_with_parent() -> None:
    """A worker gets SIGTERM (and drains) when its supervisor dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before prctl: nobody to work for
        os.kill(os.getpid(), signal.SIGTERM)


def notifier(fd: int) -> Callable[[str, bool], None]:
    """The worker side: ``on_queued`` that writes the id (and ``!`` for an urgent one) to the supervisor's pipe, never blocking."""
    os.set_blocking(fd, False)

    def notify(msg_id: str, urgent: bool) -> None:
        try:
            os.write(fd, msg_id.encode("ascii") + (URGENT_MARK if urgent else b"") + b"\n")  # under PIPE_BUF: one atomic write
        except BlockingIOError:
            pass  # the pipe is full: the supervisor's next spool scan finds the message
        except OSError as e:
            log.warning("cannot tell the supervisor about %s (%s); its spool scan will", msg_id, e)

    return notify


URGENT_MARK = b" !"  # after an id: HỎA TỐC or THƯỢNG KHẨN, delivered before the others
READY = b"+ready"  # a worker's line on the pipe once its listeners are bound (ids never start with "+")


def ready_sender(fd: int) -> Callable[[], None]:
    """The worker side: tell the supervisor this worker listens (for systemd's READY=1)."""

    def ready() -> None:
        try:
            os.write(fd, READY + b"\n")
        except OSError as e:
            log.warning("cannot tell the supervisor this worker is ready: %s", e)

    return ready


class Supervisor:
    """Starts the workers, delivers what they queue, forwards signals, restarts a worker that dies."""

    def __init__(self, settings_path: str, workers: int):
        self.settings_path = settings_path
        self.count = workers
        self.gateway = Gateway(settings_path, mode="deliver")
        self.gateway.freeze_gc = True  # only `mailgw serve` supervises (mailgw.app)
        self.gateway.workers = workers
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.plan = balance.Plan(workers)  # new sessions spread evenly over the workers (mailgw.balance)
        self._ready: set[int] = set()
        self._stopping = False
        self._stop = asyncio.Event()

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        # Read (and removed from the environment) before any worker starts: only the supervisor speaks to systemd.
        self.gateway.notifier = sdnotify.Notifier()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        await self.gateway.start()  # recovers the spool before any worker writes to it
        watchers = [loop.create_task(self._keep(i)) for i in range(1, self.count + 1)]
        await self._stop.wait()
        await self.drain()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        self.plan.close()

    def reload(self) -> None:
        self.gateway.reload()
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGHUP)

    async def drain(self) -> None:
        """Workers first (they finish open transactions and queue them), then delivery."""
        self._stopping = True
        if self.gateway.notifier is not None:
            self.gateway.notifier.stopping()
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        timeout = self.gateway.context().settings.limits.drain_timeout + 10
        for i, proc in list(self.procs.items()):
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                log.error("worker %d did not stop in %.0f s; killed", i, timeout)
                proc.kill()
                await proc.wait()
        await self.gateway.drain()

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; start it again if it dies while we are not stopping."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            read_fd, write_fd = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mailgw", "serve", "--config", self.settings_path,
                    "--worker", str(index), "--notify-fd", str(write_fd), "--balance", self.plan.spec(index),
                    pass_fds=(write_fd, *self.plan.fds()), stdin=asyncio.subprocess.DEVNULL,
                )
            finally:
                os.close(write_fd)
            self.procs[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid)
            buffer = bytearray()
            loop.add_reader(read_fd, self._read_ids, read_fd, buffer, index)
            try:
                status = await proc.wait()
            finally:
                loop.remove_reader(read_fd)
                self._read_ids(read_fd, buffer, index, final=True)
                os.close(read_fd)
                metrics.worker_died(proc.pid)
                self.plan.gone(index)
            if self._stopping:
                return
            log.error("worker %d (pid %d) exited with status %s; starting it again", index, proc.pid, status)
            await asyncio.sleep(RESTART_DELAY)

    def _read_ids(self, fd: int, buffer: bytearray, index: int, final: bool = False) -> None:
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            buffer += chunk
            if not final:
                break  # the loop calls again while there is more
        *ids, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        for raw in ids:
            if raw == READY:
                self._worker_ready(index)
                continue
            urgent = raw.endswith(URGENT_MARK)
            msg_id = raw[: -len(URGENT_MARK)].decode("ascii", "replace") if urgent else raw.decode("ascii", "replace")
            if msg_id and all(ch.isalnum() or ch in "-_" for ch in msg_id):
                self.gateway.deliverer.notify(msg_id, urgent)


    def _worker_ready(self, index: int) -> None:
        """READY=1 once every worker has bound its ports, the first time only (a restart is not a start)."""
        if self.gateway.state != "starting":
            return
        self._ready.add(index)
        if len(self._ready) >= self.count:
            self.gateway.ready()


async def supervise(settings_path: str, workers: int) -> None:
    await Supervisor(settings_path, workers).serve_forever()
