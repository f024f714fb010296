"""Page one of a PDF read by PDFium in worker processes: fast, and a hostile file cannot take the gateway down.

docread reads page one with pypdf (pure Python) in about 4.5 ms for a typical
200 KB government PDF; PDFium (the C++ engine of Chrome, through pypdfium2)
needs about 1 ms. PDFium is fuzzed without pause, but it is native code reading
attachments from anyone, and Chrome itself runs it in a sandbox. Here it runs in
small worker processes that hold nothing of value (no keys, no spool, no
database) and are replaced when they die:

- each job has a CPU budget: ``ITIMER_PROF`` kills the worker when it is spent,
  even inside PDFium (the signal's default action ends the process);
- the worker's address space is capped (``RLIMIT_AS``), so a decompression bomb
  ends the worker, not the gateway;
- the parent waits with a wall-clock backstop and kills a worker that overstays.

``Pool.read`` answers a ``Reply`` or ``None`` when no worker can be had
(pypdfium2 missing, or the worker cannot start); docread then uses pypdf.

The protocol on the worker's stdin/stdout: a request is ``_REQUEST`` (data
length, max chars, CPU budget in seconds) then the PDF bytes; a reply is
``_REPLY`` (status, text length, CPU seconds used) then the UTF-8 text (the
error message when the status is ``ERROR``). This file is also the worker's
main program: it is run by path with ``python -I`` (no environment, no current
directory on the path) and imports only the standard library and pypdfium2.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import importlib.util
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

log = logging.getLogger(__name__)

OK, ENCRYPTED, NO_PAGES, ERROR = 0, 1, 2, 3
TIME_BUDGET = "time budget reached"
_LATE = "late"
_READY = struct.Struct(">cd")      # b"R", the worker's CPU seconds so far (its start-up)
_REQUEST = struct.Struct(">IId")   # data length, max chars, CPU seconds
_REPLY = struct.Struct(">BIdd")    # status, text length, CPU seconds for this job, the worker's total
ADDRESS_SPACE = 768 * 1024 * 1024  # per worker; PDFium itself peaks near 30 MB on a typical file
_START_TIMEOUT = 20.0               # seconds for a new worker to import pypdfium2 and say it is ready
_RETRY_START_AFTER = 60.0           # after a worker failed to start, use pypdf for this long


@dataclasses.dataclass(frozen=True)
class Reply:
    """What a worker said about one PDF, or why it said nothing."""

    status: int          # OK, ENCRYPTED, NO_PAGES, ERROR
    text: str            # page one's text (OK), or what went wrong (ERROR)
    cpu: float           # CPU seconds the worker spent on this file
    died: str | None = None  # the worker ended during the job: "time budget reached", "crashed: ..."


class _Dead(Exception):
    pass


# A document goes to the worker in one write when the pipe holds it: with Linux's default
# 64 KiB, a 150 KB PDF took three turns of writer and reader, each waking the other.
_PIPE_SIZE = 1 << 20


def _widen(pipe: Any) -> None:
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (OSError, AttributeError):  # over /proc/sys/fs/pipe-max-size, or not Linux: the default
        pass


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, address_space: int) -> None:
        self.cpu_total = 0.0  # the worker's own CPU seconds, as it last reported them
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(address_space)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True, bufsize=0,
        )
        _widen(self.proc.stdin)
        try:
            greeting, self.cpu_total = _READY.unpack(self._read(_READY.size, time.monotonic() + _START_TIMEOUT))
            if greeting != b"R":
                raise _Dead("bad greeting")
        except _Dead as e:
            reason, _ = self.death()
            if self.proc.returncode == -signal.SIGSYS:
                reason += ": a system-call filter forbids it setrlimit (see systemd/mailgw.service)"
            elif self.proc.returncode == 1:
                reason += ": is pypdfium2 installed?"
            raise _Dead(f"{e}; {reason}") from e

    def ask(self, data: bytes, max_chars: int, max_seconds: float) -> Reply:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_REQUEST.pack(len(data), max_chars, max_seconds))
            self.proc.stdin.write(data)
        except OSError as e:
            raise _Dead(f"write: {e}") from e
        # The worker enforces the CPU budget itself; this backstop covers a worker
        # that is stuck without using CPU, or a machine so loaded it never runs.
        deadline = time.monotonic() + 5.0 + 20 * max_seconds
        status, length, cpu, self.cpu_total = _REPLY.unpack(self._read(_REPLY.size, deadline))
        text = self._read(length, deadline).decode("utf-8", "replace")
        return Reply(status, text, cpu)

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Dead(_LATE)
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise _Dead("ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def death(self) -> tuple[str, float]:
        """Why the worker ended (after ``_Dead``), and the CPU seconds its last job used."""
        self._close_pipes()
        try:
            # Dead or misbehaving. Not Popen.kill(): it would reap the child and lose its
            # resource usage; an unreaped child's pid cannot be reused, and a zombie keeps
            # its exit status.
            os.kill(self.proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(self.proc.pid, 0)
        except (ChildProcessError, ProcessLookupError):
            self.close()
            return f"reader ended (status {self.proc.returncode})", 0.0
        self.proc.returncode = code = os.waitstatus_to_exitcode(status)
        used = max(0.0, usage.ru_utime + usage.ru_stime - self.cpu_total)
        if code == -signal.SIGPROF:
            return TIME_BUDGET, used
        if code < 0:
            return f"reader crashed ({signal.Signals(-code).name})", used
        return f"reader crashed (exit status {code})", used

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        self._close_pipes()
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pool:
    """Up to ``size`` workers, started on first use and reused; thread-safe.

    ``address_space``: each worker's cap in bytes (RLIMIT_AS).
    """

    def __init__(self, size: int | None = None, *, address_space: int = ADDRESS_SPACE) -> None:
        self.size = size or max(2, min(4, os.cpu_count() or 2))
        self.address_space = address_space
        self._idle: list[_Worker] = []
        self._running = 0
        self._cond = threading.Condition()
        self._no_start_until = 0.0
        self._pid = os.getpid()
        self.available = importlib.util.find_spec("pypdfium2") is not None
        atexit.register(self.close)

    def owned(self) -> bool:
        """False in a process forked after the pool was made: the workers are its parent's."""
        return os.getpid() == self._pid

    def read(self, data: bytes, max_chars: int, max_seconds: float) -> Reply | None:
        """Page one's text, from a worker; None when no worker can be had (use pypdf)."""
        if not self.available or not self.owned():
            return None
        worker = self._take()
        if worker is None:
            return None
        try:
            reply = worker.ask(data, max_chars, max_seconds)
        except _Dead as e:
            reason, used = worker.death()
            if str(e) == _LATE:
                reason = "no answer within the wall-clock limit"
            with self._cond:
                self._running -= 1
                self._cond.notify()
            return Reply(ERROR, reason, used, died=reason)
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()
        return reply

    def _take(self) -> _Worker | None:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._running < self.size:
                    if time.monotonic() < self._no_start_until:
                        return None
                    self._running += 1
                    break
                self._cond.wait()
        return self._new_worker()

    def _new_worker(self) -> _Worker | None:
        """A new worker, counted as running already; None (and pypdf for a while) when it cannot start."""
        try:
            return _Worker(self.address_space)
        except (OSError, _Dead) as e:
            log.warning("PDF reader worker did not start (%s); reading PDFs with pypdf for %ds", e, _RETRY_START_AFTER)
            with self._cond:
                self._running -= 1
                self._no_start_until = time.monotonic() + _RETRY_START_AFTER
                self._cond.notify()
            return None

    def start(self, count: int | None = None) -> int:
        """Start workers until ``count`` (at most ``size``) are running, at start-up so that no message waits
        for one; how many are idle."""
        want = self.size if count is None else min(count, self.size)
        while self.available and self.owned():
            with self._cond:
                if self._running >= want or time.monotonic() < self._no_start_until:
                    break
                self._running += 1
            worker = self._new_worker()
            if worker is None:
                break
            with self._cond:
                self._idle.append(worker)
                self._cond.notify()
        with self._cond:
            return len(self._idle)

    def cpu_seconds(self) -> float:
        """CPU seconds the idle workers have used so far, as they last reported (benchmarks)."""
        with self._cond:
            return sum(w.cpu_total for w in self._idle)

    def close(self) -> None:
        """End the idle workers (at exit; busy ones end when their pipes close)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._running -= len(idle)
        if self.owned():
            for worker in idle:
                worker.close()


# --- the worker -------------------------------------------------------------------


def _first_page(pdfium: Any, data: bytes, max_chars: int) -> tuple[int, str]:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():  # PDFium tries the empty user password itself
            return ENCRYPTED, ""
        return ERROR, str(e)[:200]
    try:
        if len(document) == 0:
            return NO_PAGES, ""
        page = document[0]
        textpage = page.get_textpage()
        text = textpage.get_text_range(0, min(textpage.count_chars(), max_chars))
        return OK, text
    finally:
        document.close()


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return b""
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _serve(address_space: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the CPU budget ends the process
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a ^C is for the gateway, which closes our pipe
    import pypdfium2

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(_READY.pack(b"R", time.thread_time()))
    stdout.flush()
    while True:
        header = _read_exactly(stdin, _REQUEST.size)
        if not header:
            return  # the gateway closed the pipe (or is gone)
        size, max_chars, max_seconds = _REQUEST.unpack(header)
        data = _read_exactly(stdin, size)
        if len(data) != size:
            return
        # The thread's clock, not the process's: while ITIMER_PROF is armed Linux samples
        # the process clock only at scheduler ticks. The worker does all its work here.
        started = time.thread_time()
        signal.setitimer(signal.ITIMER_PROF, max(max_seconds, 0.001))
        try:
            status, text = _first_page(pypdfium2, data, max_chars)
        except Exception as e:
            status, text = ERROR, f"{type(e).__name__}: {str(e)[:160]}"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        body = text.encode("utf-8", "replace")
        now = time.thread_time()
        stdout.write(_REPLY.pack(status, len(body), now - started, now) + body)
        stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else ADDRESS_SPACE)
