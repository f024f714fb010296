#!/usr/bin/env python3
"""mailgw against Postfix + OpenDKIM on the same machine, side by side, on loopback only.

Run from the repository root (as root: it installs Debian packages and runs Postfix):

    python3 bench/postfix_vs_mailgw.py            # the full table (a few minutes)
    python3 bench/postfix_vs_mailgw.py --quick    # a tiny load, to see that everything works
    python3 bench/postfix_vs_mailgw.py --two-nodes   # also two mailgw nodes side by side
    python3 bench/postfix_vs_mailgw.py --milter --no-mailgw   # Postfix+OpenDKIM milter against Postfix+mailgw milter

What it sets up, under one temporary directory, all on 127.0.0.1:

- a recording sink: ``smtp-sink -c`` (Debian's postfix package); its running
  counter is read from its output, so every figure is counted at the sink;
- three private Postfix instances, the anchors (each its own config_directory
  and queue_directory, started with ``postfix -c DIR start``, no postmulti)
  relaying everything to the sink: one with an OpenDKIM milter signing every
  message with RSA-2048, one with an OpenDKIM milter signing with Ed25519, and
  one alone (no signing);
- mailgw (``python -m mailgw serve``) with the same next hop, an Ed25519 key
  (``--mailgw-keys`` for RSA too) in its ``dkim:`` settings, its fsync-ed spool
  and its audit database on SQLite.

Both are driven with the same load: ``smtp-source`` (5 KB synthetic bodies) and
a Python asyncio client (aiosmtplib, one process of its own) sending realistic
messages: 5 KB of Vietnamese text, and 200 KB with a PDF attachment, at 1, 5
and 20 concurrent sessions. For each case it prints messages per second end to
end (from the start of the load until the sink has counted every message),
p50/p99 time from end-of-DATA to the 250 and the p99 of the whole transaction
(MAIL FROM to that 250; Python client only), the peak memory
(sum of RSS of every process of each system, sampled every 50 ms), the CPU time
of all of each system's processes per message, and the ratio of mailgw's
msg/s to each anchor's. It checks that the sink received every message, no more, no
less. It installs ``postfix``, ``opendkim`` and ``opendkim-tools`` with
apt-get when they are missing, and stops every process it started on exit,
even on failure.

Exit status: 0 the table was printed and every message arrived; 1 a check
failed; 3 the packages are missing and cannot be installed (not root, no
apt-get): the test suite skips on that.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
EXIT_CANNOT_INSTALL = 3
RUN_BASE = Path("/var/lib/mailgw-bench")  # one run-* directory per run, removed at the end (--dir)
PACKAGES = ("postfix", "opendkim", "opendkim-tools")
DOMAIN = "binhthuan.gov.vn"
SELECTOR = "bench"
SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RECIPIENT = "vanthu@hanoi.gov.vn"  # official, not local: the relay listener's remote route


# --- bootstrap: the interpreter that has mailgw ---------------------------------


def _ensure_interpreter() -> None:
    """Re-run under the repository's .venv when this Python lacks mailgw's dependencies (a fresh clone)."""
    try:
        import aiosmtplib  # noqa: F401
        import yaml  # noqa: F401

        import mailgw  # noqa: F401
        return
    except ImportError:
        pass
    venv = ROOT / ".venv"
    python = venv / "bin" / "python"
    if os.environ.get("MAILGW_BENCH_REEXEC"):
        sys.exit(f"bench: {python} still lacks mailgw's dependencies; run: {python} -m pip install -e '{ROOT}'")
    if not python.exists():
        print(f"bench: creating {venv} with mailgw installed (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    os.environ["MAILGW_BENCH_REEXEC"] = "1"
    os.execv(str(python), [str(python), *sys.argv])


# --- Debian packages -------------------------------------------------------------


class CannotInstall(Exception):
    """Postfix/OpenDKIM are missing and this machine cannot install them."""


def ensure_packages() -> None:
    if os.geteuid() != 0:
        raise CannotInstall("not root: Postfix's master must start as root, and apt-get needs root")
    missing = [tool for tool in ("smtp-sink", "smtp-source", "postfix", "opendkim", "opendkim-genkey") if not _which(tool)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise CannotInstall(f"{', '.join(missing)} missing and no apt-get on this machine")
    print(f"bench: installing {' '.join(PACKAGES)} from Debian", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Postfix asks what kind of mail server this is: none; we run a private instance only.
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n", check=True)
    # Do not let the packages start the system's own postfix/opendkim: policy-rc.d says no,
    # unless the machine already has one (container images do), which is left as it is.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# mailgw bench: no daemon starts while packages install\nexit 101\n")
        policy.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                raise CannotInstall("apt-get install " + " ".join(PACKAGES) + " failed")
    finally:
        if ours:
            policy.unlink(missing_ok=True)
    still = [tool for tool in missing if not _which(tool)]
    if still:
        raise CannotInstall(f"still missing after apt-get: {', '.join(still)}")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin")


# --- processes -------------------------------------------------------------------


class Rig:
    """Everything started for one benchmark; ``close`` stops all of it, by pid."""

    def __init__(self, keep: bool = False, base: Path = RUN_BASE):
        # Not under /tmp: OpenDKIM refuses a configuration or key on a path others can write,
        # and the spools must be on a real disk (not tmpfs) for fsync to cost what it costs.
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        self.dir.chmod(0o755)  # Postfix's daemons run as user postfix and must reach their queue
        self.procs: list[subprocess.Popen[bytes]] = []
        self.postfix_etcs: list[Path] = []  # every private Postfix started, stopped by close()
        self.keep = keep

    def spawn(self, argv: list[str], *, log: str, **kw: Any) -> subprocess.Popen[bytes]:
        out = open(self.dir / log, "ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        out.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for etc in self.postfix_etcs:
            master = _master_pid(etc)
            subprocess.run([_which("postfix") or "postfix", "-c", str(etc), "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            if master:
                tree = [master, *_descendants(master)]
                if not _wait_gone(tree, 10):
                    for pid in tree:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                children = _descendants(proc.pid)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") for p in pids):
            return True
        time.sleep(0.05)
    return False


def _rss_kb_and_ticks(pid: int) -> tuple[int, int, int]:
    """Resident set size in KB, and CPU time (user, system) in clock ticks."""
    rss = user = system = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        user, system = int(fields[11]), int(fields[12])
    except (OSError, ValueError, IndexError):
        pass
    return rss, user, system


_PORTS: list[int] = []  # --ports-from: the next ports to try, in order (empty: the kernel picks)


def free_port() -> int:
    """A port free on 127.0.0.1: the next free one of ``--ports-from``'s range, else one the kernel picks."""
    while _PORTS:
        port = _PORTS.pop(0)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0, what: str = "") -> None:
    """Until something answers with an SMTP greeting on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or proc.args} exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(100).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what or port}: no SMTP greeting on port {port} after {timeout:.0f} s")


THREAD_NAMES = """\
# Written by bench/postfix_vs_mailgw.py --thread-cpu: each Python thread's name becomes its OS name (15 bytes).
import ctypes
import threading

try:
    _prctl = ctypes.CDLL(None).prctl
    _run = threading.Thread._bootstrap_inner

    def _named(self):
        try:
            _prctl(15, self.name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        except Exception:
            pass
        _run(self)

    threading.Thread._bootstrap_inner = _named
except Exception:
    pass
"""

REPLY_STEPS = """\
# Written by bench/postfix_vs_mailgw.py --reply-steps: where each accepted message's reply to DATA waits.
# Wraps the edge's steps (mailgw/smtp/edge.py); one line per message, written by the loop after its reply.
import os
import sys
import time

_DIR = os.environ.get("MAILGW_BENCH_REPLY_STEPS")
if _DIR and "mailgw" in " ".join(sys.argv):
    try:
        from mailgw.queue import spool as _spool
        from mailgw.smtp import edge as _edge

        _now = time.perf_counter_ns
        _marks = {}
        _fd = os.open(os.path.join(_DIR, "steps.%d" % os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def _mark(msg_id, what):
            _marks.setdefault(msg_id, {})[what] = _now()

        def _wrap(cls, name, before, after, key):
            inner = getattr(cls, name)

            def wrapped(self, *args, **kw):
                msg_id = key(self, *args)
                _mark(msg_id, before)
                try:
                    return inner(self, *args, **kw)
                finally:
                    _mark(msg_id, after)

            setattr(cls, name, wrapped)

        def _wrap_async(cls, name, before, after, key):
            inner = getattr(cls, name)

            async def wrapped(self, *args, **kw):
                msg_id = key(self, *args)
                _mark(msg_id, before)
                try:
                    return await inner(self, *args, **kw)
                finally:
                    _mark(msg_id, after)

            setattr(cls, name, wrapped)

        _wrap(_edge.Edge, "_verdict", "v0", "v9", lambda self, message, *a: message.id)
        _wrap(_spool.Spool, "put_sync", "s0", "s9", lambda self, msg_id, *a: msg_id)
        _wrap_async(_edge.Edge, "_keep", "k0", "k9", lambda self, rec, *a: rec.get("id"))
        _accept = _edge.Edge.accept

        async def _accept_and_note(self, message, ctx):
            _mark(message.id, "a0")
            try:
                return await _accept(self, message, ctx)
            finally:
                m = _marks.pop(message.id, {})
                m["a9"] = _now()
                if all(k in m for k in ("v0", "v9", "s0", "s9", "k0", "k9")):
                    order = ("a0", "v0", "v9", "s0", "s9", "k0", "k9", "a9")
                    os.write(_fd, (" ".join("%d" % (m[b] - m[a]) for a, b in zip(order, order[1:])) + "\\n").encode())

        _edge.Edge.accept = _accept_and_note
    except Exception as e:  # the bench goes on without the steps
        print("reply-steps: not installed: %r" % (e,), file=sys.stderr)
"""

STEP_NAMES = ("to pipeline", "pipeline+record", "to spool", "spool write", "to log", "log commit", "to reply")


def reply_steps(directory: Path, since: dict[str, int]) -> tuple[int, list[tuple[str, float, float]]]:
    """The steps' p50 and p99 (ms) over the lines written since ``since`` (file -> offset, updated)."""
    rows: list[list[float]] = []
    for f in sorted(directory.glob("steps.*")):
        with f.open("rb") as fh:
            fh.seek(since.get(f.name, 0))
            data = fh.read()
            since[f.name] = fh.tell()
        rows += [[int(x) / 1e9 for x in line.split()] for line in data.splitlines() if line.strip()]  # seconds
    out = []
    for i, name in enumerate(STEP_NAMES + ("end of DATA to reply",)):
        values = sorted(sum(r) if i == len(STEP_NAMES) else r[i] for r in rows)
        out.append((name, _pct(values, 50) or 0.0, _pct(values, 99) or 0.0))
    return len(rows), out


class Usage:
    """Samples a set of process trees in a thread: the peak of their summed RSS, and the CPU time they used.

    CPU time is counted per process from its first sample to its last, so
    processes that come and go (Postfix's daemons) are counted while they live.
    """

    def __init__(self, roots: list[int], period: float = 0.05, threads: bool = False):
        self.roots = roots
        self.period = period
        self.threads = threads  # also each thread's CPU, from the first sample to the last (--thread-cpu)
        self.peak_kb = 0
        self._first: dict[int, tuple[int, int]] = {}
        self._last: dict[int, tuple[int, int]] = {}
        self._tfirst: dict[tuple[int, int], int] = {}
        self._tlast: dict[tuple[int, int], tuple[str, str, int]] = {}
        self._started = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Usage:
        self._sample()
        if self.threads:
            self._tfirst = {key: ticks for key, (_, _, ticks) in self._thread_ticks().items()}
        self._started = False  # processes born after this point count from zero
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.threads:
            self._tlast = self._thread_ticks()

    def _tree(self) -> set[int]:
        """The roots and every process below them, now."""
        kids = _children_map()
        pids, todo = set(), list(self.roots)
        while todo:
            pid = todo.pop()
            if pid in pids:
                continue
            pids.add(pid)
            todo.extend(kids.get(pid, []))
        return pids

    def _thread_ticks(self) -> dict[tuple[int, int], tuple[str, str, int]]:
        """(pid, tid) -> (the process's role, the thread's name, its user + system ticks so far)."""
        out = {}
        for pid in self._tree():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            role = ("worker" if b"--worker" in cmd else "PDF reader" if b"pdfworker" in cmd
                    else "supervisor" if pid in self.roots else cmd.split(b" ")[0].rsplit(b"/", 1)[-1].decode())
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                name = "main" if int(tid) == pid else stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
                fields = stat[stat.rindex(b")") + 2:].split()
                out[(pid, int(tid))] = (role, name, int(fields[11]) + int(fields[12]))
        return out

    def thread_seconds(self) -> dict[tuple[str, str], float]:
        """CPU seconds by (process role, thread name), pool threads' numbers dropped ("asyncio_3" -> "asyncio_*")."""
        hz = os.sysconf("SC_CLK_TCK")
        by: dict[tuple[str, str], float] = {}
        for key, (role, name, ticks) in self._tlast.items():
            name = re.sub(r"_\d+$", "_*", name)
            by[(role, name)] = by.get((role, name), 0.0) + (ticks - self._tfirst.get(key, 0)) / hz
        return by

    def _sample(self) -> None:
        total = 0
        for pid in self._tree():
            rss, user, system = _rss_kb_and_ticks(pid)
            total += rss
            if user or system:
                self._first.setdefault(pid, (user, system) if self._started else (0, 0))
                self._last[pid] = (user, system)
        self.peak_kb = max(self.peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds

    @property
    def user_seconds(self) -> float:
        return sum(self._last[p][0] - self._first[p][0] for p in self._last) / os.sysconf("SC_CLK_TCK")

    @property
    def system_seconds(self) -> float:
        return sum(self._last[p][1] - self._first[p][1] for p in self._last) / os.sysconf("SC_CLK_TCK")


# --- the sink --------------------------------------------------------------------


class Sink:
    """``smtp-sink -c``: its running counter (``mesg=N``) is the count of messages received."""

    def __init__(self, rig: Rig, port: int):
        self.rig, self.port = rig, port
        self.out = rig.dir / f"sink-{port}.out"
        argv = [_which("smtp-sink") or "smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{port}", "1024"]
        out = open(self.out, "wb")
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        rig.procs.append(self.proc)
        wait_port(port, self.proc, what="smtp-sink")

    def count(self) -> int:
        with open(self.out, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            tail = f.read()
        i = tail.rfind(b"mesg=")
        if i < 0:
            return 0
        digits = tail[i + 5:].split(b"\r", 1)[0].split(b"\n", 1)[0]
        return int(digits) if digits.isdigit() else 0


class DumpSink:
    """``smtp-sink -d``: one file per message, to look at what each system sent."""

    def __init__(self, rig: Rig, port: int):
        self.dir = rig.dir / "dump"
        self.dir.mkdir()
        shutil.chown(self.dir, "postfix")  # smtp-sink writes there after dropping to that user
        argv = [_which("smtp-sink") or "smtp-sink", "-u", "postfix", "-d", f"{self.dir}/m.", f"127.0.0.1:{port}", "64"]
        self.proc = rig.spawn(argv, log="dumpsink.log")
        wait_port(port, self.proc, what="smtp-sink -d")

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dir.iterdir())]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the DKIM key ----------------------------------------------------------------


def make_keys(rig: Rig) -> dict[str, Path]:
    """The signing keys both systems use: RSA-2048 made by opendkim-genkey, Ed25519 (PKCS#8 PEM) by OpenSSL."""
    keydir = rig.dir / "dkim"
    keydir.mkdir()
    subprocess.run([_which("opendkim-genkey") or "opendkim-genkey", "-b", "2048", "-d", DOMAIN, "-s", SELECTOR, "-D", str(keydir)], check=True)
    rsa = keydir / f"{SELECTOR}.private"
    ed = keydir / f"{SELECTOR}.ed25519.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True)
    for key in (rsa, ed):
        key.chmod(0o600)
    return {"rsa": rsa, "ed25519": ed}


def txt_value(rig: Rig) -> str:
    text = (rig.dir / "dkim" / f"{SELECTOR}.txt").read_text()
    return "".join(text.split('"')[1::2])


# --- Postfix + OpenDKIM ----------------------------------------------------------

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet  n       -       n       -       -       smtpd{services}
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {log}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_milters = {milter}
milter_default_action = tempfail
message_size_limit = 31457280
biff = no
{extra}"""

OPENDKIM_CONF = """\
Syslog                  no
Mode                    s
Background              no
Socket                  {milter}
PidFile                 {dir}/opendkim.pid
Domain                  {domain}
Selector                {selector}
KeyFile                 {key}
Canonicalization        relaxed/relaxed
SignatureAlgorithm      {algorithm}
InternalHosts           127.0.0.0/8
UMask                   000
"""


@dataclasses.dataclass
class System:
    name: str
    ports: list[int]  # where clients send (one per node)
    roots: list[int]  # process trees whose memory counts


ANCHORS = {  # name: the OpenDKIM key that signs (None: Postfix alone)
    "rsa": ("Postfix+OpenDKIM RSA", "rsa"),
    "ed25519": ("Postfix+OpenDKIM Ed25519", "ed25519"),
    "alone": ("Postfix alone", None),
}
ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


def start_postfix(rig: Rig, keys: dict[str, Path], sink_port: int, anchor: str = "rsa") -> System:
    """One private Postfix instance; with an OpenDKIM milter of its own unless the anchor is Postfix alone."""
    name, signing = ANCHORS[anchor]
    roots: list[int] = []
    milter_setting = ""
    if signing is not None:
        # A UNIX socket, as Debian's own opendkim configuration uses.
        milter = rig.dir / f"opendkim-{anchor}.sock"
        milter_setting = f"unix:{milter}"
        conf = rig.dir / f"opendkim-{anchor}.conf"
        conf.write_text(OPENDKIM_CONF.format(milter=f"local:{milter}", dir=rig.dir, domain=DOMAIN, selector=SELECTOR,
                                             key=keys[signing], algorithm=ALGORITHMS[signing]))
        dkim = rig.spawn([_which("opendkim") or "opendkim", "-f", "-x", str(conf)], log=f"opendkim-{anchor}.log")
        _wait_path(milter, dkim, "opendkim")
        roots.append(dkim.pid)
    postfix = start_private_postfix(rig, sink_port, milter_setting, name=f"postfix-{anchor}")
    return System(name, [postfix.port], [postfix.master, *roots])


@dataclasses.dataclass
class PrivatePostfix:
    """A private Postfix instance: its config directory, queue, smtpd port(s) and master process."""

    etc: Path
    queue: Path
    port: int
    master: int
    services: dict[str, int]  # extra smtpd services: name -> port

    def postqueue_json(self) -> list[dict[str, Any]]:
        """``postqueue -j``: one object per queued message (queue_name: incoming, active, deferred, hold)."""
        out = subprocess.run([_which("postqueue") or "postqueue", "-c", str(self.etc), "-j"],
                             capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def start_private_postfix(rig: Rig, sink_port: int, milters: str, *, name: str = "postfix",
                          services: dict[str, str] | None = None, extra_main: str = "") -> PrivatePostfix:
    """A private Postfix (``postfix -c DIR start``) relaying everything to ``sink_port``, with ``smtpd_milters``.

    ``services``: more smtpd services, name -> their ``-o`` options (e.g.
    ``-o milter_macro_daemon_name=NAME``), each on a port of its own.
    ``extra_main``: lines added to main.cf. Stopped by ``rig.close``.
    """
    base = rig.dir / name
    etc, queue, data = base / "etc", base / "queue", base / "data"
    for d in (etc, queue, data):
        d.mkdir(parents=True)
    shutil.chown(data, "postfix", "postfix")
    port = free_port()
    ports = {svc: free_port() for svc in services or {}}
    extra = "".join(f"\n127.0.0.1:{ports[svc]} inet n - n - - smtpd -o syslog_name=postfix/{svc} {opts}"
                    for svc, opts in (services or {}).items())
    (etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}", services=extra))
    (etc / "main.cf").write_text(MAIN_CF.format(queue=queue, data=data, log=base / "postfix.log", sink=sink_port,
                                                milter=milters, extra=extra_main))
    postfix = _which("postfix") or "postfix"
    check = subprocess.run([postfix, "-c", str(etc), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"postfix check failed: {check.stderr.strip()}")
    rig.postfix_etcs.append(etc)
    started = subprocess.run([postfix, "-c", str(etc), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"postfix start failed: {started.stderr.strip()}")
    for p in (port, *ports.values()):
        wait_port(p, what="postfix smtpd")
    master = _master_pid(etc)
    if not master:
        raise RuntimeError("postfix started but its master.pid is missing")
    return PrivatePostfix(etc, queue, port, master, ports)


def _master_pid(etc: Path) -> int | None:
    queue = None
    for line in (etc / "main.cf").read_text().splitlines():
        if line.startswith("queue_directory"):
            queue = line.split("=", 1)[1].strip()
    try:
        return int((Path(queue or "") / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_path(path: Path, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: no socket {path} after {timeout:.0f} s")


# --- mailgw ----------------------------------------------------------------------


EXTRA_LIMITS: dict[str, Any] = {}  # --limit KEY=VALUE: more of mailgw's limits: settings


def start_mailgw(rig: Rig, key: Path, sink_port: int, *, name: str = "mailgw", database: str = "sqlite:///audit.db",
                 workers: int | None = None, milter: bool = False) -> System:
    """``mailgw serve`` with its own directory, port and spool, relaying to the sink.

    ``milter``: its one listener is a milter (role relay for 127.0.0.0/8), the
    System's port that listener's; a Postfix in front of it is the caller's.
    """
    import yaml

    home = rig.dir / name
    home.mkdir()
    shutil.copy(ROOT / "directory.yaml", home / "directory.yaml")
    policies = home / "policies"
    if (ROOT / "policies").is_dir():
        shutil.copytree(ROOT / "policies", policies)
    else:
        policies.mkdir()
    port = free_port()
    settings: dict[str, Any] = {
        "hostname": f"{name}.bench.test",
        "node": name,
        "directory": "directory.yaml",
        "policies": "policies",
        "database": database,
        "spool": "spool",
        "listeners": [{"name": "milter" if milter else "relay", "role": "milter" if milter else "relay",
                       "listen": f"127.0.0.1:{port}", "trusted_networks": ["127.0.0.0/8"]}],
        "routes": {"local": f"smtp://127.0.0.1:{sink_port}", "remote": f"smtp://127.0.0.1:{sink_port}"},
        "dkim": [{"domain": DOMAIN, "selector": SELECTOR, "key": str(key)}],
        # One client sends everything, over sessions that stay open for the whole run (Postfix has
        # no per-session command cap): raise the abuse limits that would cut them short.
        "limits": {"connections_per_ip": 200, "commands": 1_000_000, "message_size": "30M", **EXTRA_LIMITS},
    }
    if workers:
        settings["workers"] = workers
    path = home / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False))
    # The repository first; what the caller put on PYTHONPATH after it (a sitecustomize that names threads, say).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = rig.spawn([sys.executable, "-m", "mailgw", "serve", "--config", str(path)], log=f"{name}.log", cwd=str(home), env=env)
    if milter:
        wait_running(home / "spool", proc, what=f"mailgw {name}")
    else:
        wait_port(port, proc, what=f"mailgw {name}")
    return System(name, [port], [proc.pid])


def wait_running(spool: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0, what: str = "mailgw") -> None:
    """Until mailgw's status file says running (every listener bound: a milter port has no greeting to wait for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if json.loads((spool / "status.json").read_text()).get("state") == "running":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not running after {timeout:.0f} s")


def start_postfix_mailgw_milter(rig: Rig, key: Path, sink_port: int, *, workers: int | None = None) -> System:
    """A second private Postfix whose milter is mailgw (the same key signs), relaying to the same sink."""
    gw = start_mailgw(rig, key, sink_port, name="mailgw-milter", workers=workers, milter=True)
    postfix = start_private_postfix(rig, sink_port, f"inet:127.0.0.1:{gw.ports[0]}", name="postfix-milter")
    return System("Postfix+mailgw-milter", [postfix.port], [postfix.master, *gw.roots])


# --- messages --------------------------------------------------------------------

VN_PARAGRAPHS = [
    "Thực hiện Kế hoạch số 112/KH-UBND ngày 15/01/2026 của Ủy ban nhân dân tỉnh về chuyển đổi số năm 2026, "
    "Sở Thông tin và Truyền thông đề nghị các cơ quan, đơn vị triển khai các nội dung sau đây.",
    "Một là, rà soát hạ tầng kỹ thuật, bảo đảm an toàn thông tin cho hệ thống quản lý văn bản và điều hành; "
    "báo cáo kết quả về Sở trước ngày 30/3/2026 để tổng hợp, báo cáo Ủy ban nhân dân tỉnh.",
    "Hai là, cử cán bộ đầu mối phụ trách chuyển đổi số tham dự lớp tập huấn do Sở tổ chức; "
    "danh sách gửi qua hệ thống quản lý văn bản, đồng thời gửi thư điện tử về địa chỉ của Văn phòng Sở.",
    "Ba là, tiếp tục sử dụng chữ ký số trong gửi, nhận văn bản điện tử giữa các cơ quan hành chính nhà nước "
    "trên địa bàn tỉnh, không gửi văn bản giấy đối với các văn bản đã được ký số theo quy định.",
    "Trong quá trình thực hiện, nếu có khó khăn, vướng mắc, đề nghị các cơ quan, đơn vị phản ánh kịp thời "
    "về Sở Thông tin và Truyền thông (qua Phòng Bưu chính, Viễn thông và Công nghệ thông tin) để được hướng dẫn.",
]

HEADERS = (
    "From: =?utf-8?b?{name}?= <{sender}>\r\n"
    "To: {rcpt}\r\n"
    "Subject: =?utf-8?b?{subject}?=\r\n"
    "Date: Mon, 16 Mar 2026 08:30:00 +0700\r\n"
    "Message-ID: <@@ID@@@binhthuan.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def vn_text(size: int) -> str:
    lines = ["Kính gửi: Các cơ quan chuyên môn thuộc Ủy ban nhân dân tỉnh,", ""]
    i = 0
    while len("\r\n".join(lines).encode()) < size:
        p = VN_PARAGRAPHS[i % len(VN_PARAGRAPHS)]
        words, line = p.split(), ""
        for w in words:  # lines under 78 characters, as a mail client would write them
            if len(line) + len(w) + 1 > 76:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines += [line, ""]
        i += 1
    lines += ["Trân trọng./.", "", "Văn phòng Sở Thông tin và Truyền thông tỉnh Bình Thuận"]
    return "\r\n".join(lines)


def message_text5k() -> bytes:
    head = HEADERS.format(
        name=_b64("Văn thư Sở TTTT"), sender=SENDER, rcpt=RECIPIENT,
        subject=_b64("V/v triển khai Kế hoạch chuyển đổi số năm 2026"),
    )
    head += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    body = vn_text(5 * 1024 - len(head.encode()) - 300)
    return (head + body + "\r\n").encode()


def pdf_bytes(size: int) -> bytes:
    """A real one-page PDF: a text first page (a plan, with its number) and an incompressible image."""
    text = (
        "BT /F1 12 Tf 72 760 Td (UBND TINH BINH THUAN) Tj 0 -16 Td (SO THONG TIN VA TRUYEN THONG) Tj "
        "0 -16 Td (So: 25/KH-STTTT) Tj 0 -32 Td (KE HOACH) Tj 0 -16 Td "
        "(Trien khai chuyen doi so nam 2026) Tj ET"
    ).encode()
    side = int((size * 0.97) ** 0.5)
    pixels = os.urandom(side * side)  # random: like a scanned stamp, it does not compress
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"",  # the content stream, below: its /Length must be exact
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 /Length %d >>\nstream\n"
        % (side, side, len(pixels)) + pixels + b"\nendstream",
    ]
    content = text + b"\nq 200 0 0 200 200 300 cm /Im1 Do Q\n"
    objs[3] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
    from mailgw.warmup import pdf_of

    return pdf_of(objs, header=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")


def message_pdf200k() -> bytes:
    boundary = "=_mailgw_bench_7c1f"
    head = HEADERS.format(
        name=_b64("Văn thư Sở TTTT"), sender=SENDER, rcpt=RECIPIENT,
        subject=_b64("Kế hoạch số 25/KH-STTTT triển khai chuyển đổi số năm 2026"),
    )
    head += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    text = vn_text(2000)
    pdf = base64.encodebytes(pdf_bytes(145 * 1024)).decode().replace("\n", "\r\n")
    parts = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: application/pdf; name=\"25-KH-STTTT.pdf\"\r\n"
        f"Content-Disposition: attachment; filename=\"25-KH-STTTT.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{pdf}"
        f"--{boundary}--\r\n"
    )
    return (head + parts).encode()


def message_big() -> bytes:
    """20 MB: a letter with a scanned 15 MB PDF (base64 makes it 20)."""
    boundary = "=_mailgw_bench_big"
    head = HEADERS.format(
        name=_b64("Văn thư Sở TTTT"), sender=SENDER, rcpt=RECIPIENT,
        subject=_b64("Hồ sơ dự án chuyển đổi số năm 2026 (bản quét)"),
    )
    head += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    pdf = base64.encodebytes(pdf_bytes(BIG_PDF)).decode().replace("\n", "\r\n")
    parts = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{vn_text(2000)}\r\n"
        f"--{boundary}\r\nContent-Type: application/pdf; name=\"ho-so-du-an.pdf\"\r\n"
        f"Content-Disposition: attachment; filename=\"ho-so-du-an.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{pdf}"
        f"--{boundary}--\r\n"
    )
    return (head + parts).encode()


BIG_PDF = 15 * 1024 * 1024  # bytes of PDF; the message is about 20 MiB
BIG_SESSIONS = 5  # one sends the 20 MB message, the others 5 KB ones meanwhile
BIG_SMALL = 40  # 5 KB messages per small session
PACE = 0.025  # seconds between two small messages of one session
MESSAGES = {"text5k": message_text5k, "pdf200k": message_pdf200k, "big": message_big}


# --- the Python client (runs in a process of its own) ----------------------------


async def _client(ports: list[int], kind: str, count: int, concurrency: int) -> dict[str, Any]:
    import aiosmtplib

    template = MESSAGES["text5k" if kind == "big" else kind]()
    latencies: list[float] = []
    transactions: list[float] = []  # MAIL FROM sent to the 250 for DATA: a reply held back earlier shows here
    errors: list[str] = []
    left = [count]
    serial = [0]

    async def session(port: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=120, local_hostname="client.bench.test")
        await smtp.connect()
        # The time the last bytes of DATA (the final ".\r\n") were handed to the socket.
        eod = [0.0]
        protocol = smtp.protocol
        assert protocol is not None
        write = protocol.write

        def timed_write(data: bytes) -> None:
            write(data)
            if data.endswith(b"\r\n.\r\n"):
                eod[0] = time.perf_counter()

        protocol.write = timed_write  # type: ignore[method-assign]
        try:
            while left[0] > 0:
                left[0] -= 1
                serial[0] += 1
                raw = template.replace(b"@@ID@@", b"%d.%d.%d" % (os.getpid(), port, serial[0]))
                try:
                    started = time.perf_counter()
                    await smtp.mail(SENDER)
                    await smtp.rcpt(RECIPIENT)
                    await smtp.data(raw)
                    done = time.perf_counter()
                    latencies.append(done - eod[0])
                    transactions.append(done - started)
                except aiosmtplib.SMTPResponseException as e:
                    errors.append(f"{e.code} {e.message}")
                    await smtp.rset()
        finally:
            with contextlib.suppress(Exception):
                await smtp.quit()

    big: list[float] = []  # seconds from MAIL FROM to the 250 of the 20 MB message

    async def big_session(port: int) -> None:
        """One 20 MB message, half a second into the run, while the other sessions keep sending small ones."""
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=300, local_hostname="client.bench.test")
        await smtp.connect()
        raw = MESSAGES["big"]().replace(b"@@ID@@", b"big.%d" % os.getpid())
        await asyncio.sleep(0.5)
        try:
            started = time.perf_counter()
            await smtp.sendmail(SENDER, [RECIPIENT], raw)
            big.append(time.perf_counter() - started)
        except aiosmtplib.SMTPException as e:
            errors.append(f"20 MB message: {e}")
        finally:
            with contextlib.suppress(Exception):
                await smtp.quit()

    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    started = time.perf_counter()
    if kind == "big":
        template = MESSAGES["text5k"]()
        small = concurrency - 1
        per = _split(count - 1, small)

        async def small_session(i: int) -> None:
            """Small messages at a steady pace, each timed from its DATA command to the 250."""
            port = ports[(i + 1) % len(ports)]
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=120, local_hostname="client.bench.test")
            await smtp.connect()
            for _ in range(per[i]):
                serial[0] += 1
                raw = template.replace(b"@@ID@@", b"%d.small.%d" % (os.getpid(), serial[0]))
                try:
                    await smtp.mail(SENDER)
                    await smtp.rcpt(RECIPIENT)
                    t = time.perf_counter()
                    await smtp.data(raw)
                    latencies.append(time.perf_counter() - t)  # 5 KB: the transfer itself is negligible
                except aiosmtplib.SMTPResponseException as e:
                    errors.append(f"{e.code} {e.message}")
                    await smtp.rset()
                await asyncio.sleep(PACE)
            with contextlib.suppress(Exception):
                await smtp.quit()

        results = await asyncio.gather(big_session(ports[0]), *(small_session(i) for i in range(small)), return_exceptions=True)
    else:
        results = await asyncio.gather(*(session(ports[i % len(ports)]) for i in range(concurrency)), return_exceptions=True)
    errors += [repr(r) for r in results if isinstance(r, BaseException)]
    return {"elapsed": time.perf_counter() - started, "latencies": latencies, "transactions": transactions, "big": big,
            "errors": errors[:5], "error_count": len(errors)}


def client_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_client(args.ports, args.kind, args.count, args.sessions))
    print(json.dumps(result), flush=True)


# --- one run ---------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    rate: float  # messages per second, counted at the sink
    p50: float | None  # ms, end-of-DATA to 250
    p99: float | None
    peak_mb: float
    cpu_ms: float  # CPU time of all the system's processes per message received
    sys_ms: float  # the part of it spent in the kernel
    received: int
    expected: int
    errors: int
    big_ms: float | None = None  # the 20 MB message: MAIL FROM to its 250
    max_ms: float | None = None  # the slowest end-of-DATA to 250
    txn_p50: float | None = None  # ms, MAIL FROM sent to the 250 for DATA (the whole transaction)
    txn_p99: float | None = None

    @property
    def complete(self) -> bool:
        return self.received == self.expected and self.errors == 0


def run_load(rig: Rig, sink: Sink, system: System, load: str, concurrency: int, count: int, timeout: float,
             profile: Path | None = None, thread_cpu: bool = False, steps: Path | None = None) -> RunResult:
    base = sink.count()
    latencies: list[float] = []
    transactions: list[float] = []
    big: list[float] = []
    errors = 0
    threads = thread_cpu and system.name.startswith("mailgw")
    with Usage(system.roots, threads=threads) as usage, _profiling(rig, system, profile, f"{load}-c{concurrency}"):
        if load == "smtp-source":
            ports = system.ports[:concurrency]  # one session cannot be split over two nodes
            per = _split(concurrency, len(ports))
            counts = _split(count, len(ports))
            t0 = time.perf_counter()
            sources = [
                subprocess.Popen(
                    [_which("smtp-source") or "smtp-source", "-s", str(s), "-m", str(m), "-l", "5120", "-d",
                     "-f", SENDER, "-t", RECIPIENT, "-S", "Bao cao tuan", f"127.0.0.1:{port}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
                for port, s, m in zip(ports, per, counts) if m
            ]
            rig.procs.extend(sources)
            t1 = _wait_count(sink, base + count, timeout, sources)
            for src in sources:
                out = src.communicate(timeout=timeout)[0]
                if src.returncode != 0:
                    errors += 1
                    print(f"bench: smtp-source: {out.decode(errors='replace').strip()[:300]}", file=sys.stderr)
        else:
            client = subprocess.Popen(
                [sys.executable, __file__, "--client", "--kind", load, "--count", str(count), "--sessions", str(concurrency),
                 "--ports", *map(str, system.ports)],
                stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=None,
            )
            rig.procs.append(client)
            assert client.stdout is not None and client.stdin is not None
            if client.stdout.readline().strip() != b"ready":
                raise RuntimeError("the Python client did not start")
            t0 = time.perf_counter()
            client.stdin.write(b"go\n")
            client.stdin.flush()
            t1 = _wait_count(sink, base + count, timeout, [client])
            out = client.communicate(timeout=timeout)[0]
            result = json.loads(out.decode().strip().splitlines()[-1])
            latencies = result["latencies"]
            transactions = result["transactions"]
            big = result["big"]
            errors += result["error_count"]
            for e in result["errors"]:
                print(f"bench: {system.name} {load}: {e}", file=sys.stderr)
        time.sleep(0.3)  # anything beyond the count would be a duplicate: give it a moment to show
    received = sink.count() - base
    elapsed = (t1 or time.perf_counter()) - t0
    if threads:
        spent = usage.thread_seconds()
        total = sum(spent.values()) or 1.0
        parts = [f"{role} {name} {seconds * 1000 / max(1, received):.2f} ({100 * seconds / total:.0f} %)"
                 for (role, name), seconds in sorted(spent.items(), key=lambda kv: -kv[1]) if seconds > 0]
        print(f"bench: {system.name} {load} c={concurrency} CPU ms/msg by thread: " + ", ".join(parts), file=sys.stderr)
    if steps is not None and system.name.startswith("mailgw"):
        n, found = reply_steps(steps, _STEPS_READ)
        print(f"bench: {system.name} {load} c={concurrency} reply to DATA by step, p50/p99 ms over {n} messages: "
              + ", ".join(f"{name} {p50:.2f}/{p99:.2f}" for name, p50, p99 in found), file=sys.stderr)
    lat = sorted(latencies)
    txn = sorted(transactions)
    return RunResult(
        rate=min(received, count) / elapsed if elapsed > 0 else 0.0,
        p50=_pct(lat, 50), p99=_pct(lat, 99), peak_mb=usage.peak_mb, cpu_ms=usage.cpu_seconds * 1000 / max(1, received),
        sys_ms=usage.system_seconds * 1000 / max(1, received),
        received=received, expected=count, errors=errors,
        big_ms=big[0] * 1000 if big else None, max_ms=lat[-1] * 1000 if lat else None,
        txn_p50=_pct(txn, 50), txn_p99=_pct(txn, 99),
    )


_STEPS_READ: dict[str, int] = {}  # reply-steps files: how far each was read


@contextlib.contextmanager
def _profiling(rig: Rig, system: System, out: Path | None, case: str) -> Iterator[None]:
    """py-spy on every mailgw process for the length of one run (collapsed stacks, for flamegraph.pl or speedscope)."""
    if out is None or not system.name.startswith("mailgw") or not shutil.which("py-spy"):
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--gil", "--threads", "--nonblocking",
                          "--rate", "250",
                          "--format", "raw",
                          "--output", str(out / f"{system.name}-{case}-{pid}.txt")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in system.roots
    ]
    rig.procs.extend(spies)
    time.sleep(0.5)  # attached before the load starts
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[k] * 1000


def _wait_count(sink: Sink, target: int, timeout: float, loaders: list[subprocess.Popen[bytes]]) -> float | None:
    """The moment the sink's count reached ``target``; None on timeout or when the loaders gave up short."""
    deadline = time.perf_counter() + timeout
    gave_up_at: float | None = None
    while time.perf_counter() < deadline:
        if sink.count() >= target:
            return time.perf_counter()
        if all(p.poll() is not None for p in loaders):
            gave_up_at = gave_up_at or time.perf_counter()
            if time.perf_counter() - gave_up_at > 10:  # the queues had time to drain: something is lost
                return None
        time.sleep(0.005)
    return None


# --- the checks before the load --------------------------------------------------


def signing_check(rig: Rig, dump: DumpSink, systems: list[System]) -> dict[str, str]:
    """Send one realistic message through each system to the dump sink; say who signed it."""
    import smtplib

    raw = MESSAGES["text5k"]()
    for system in systems:
        for port in system.ports:
            tag = f"check-{system.name}-{port}".encode()
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail(SENDER, [RECIPIENT], raw.replace(b"@@ID@@", tag))
    # smtp-sink makes the dump file when a transaction starts: wait for every message's last line,
    # or the sink would be stopped under a delivery still sending (mailgw's then waits for a retry).
    tail = raw.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
    tags = [f"check-{s.name}-{p}".encode() for s in systems for p in s.ports]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = dump.messages()
        if all(any(tag in m and tail in m for m in got) for tag in tags):
            break
        time.sleep(0.05)
    found = {}
    for system in systems:
        mine = [m for m in dump.messages() if f"check-{system.name}-".encode() in m]
        if not mine:
            found[system.name] = "NOT RECEIVED"
        elif all(b"\nDKIM-Signature:" in m.split(b"\n\n", 1)[0] and f"d={DOMAIN}".encode() in m for m in mine):
            algorithms = sorted({a for m in mine for a in ALGORITHMS.values() if f"a={a}".encode() in m})
            found[system.name] = f"signed (DKIM-Signature d={DOMAIN}, a={'/'.join(algorithms) or '?'})"
        else:
            found[system.name] = "NOT signed"
    return found


# --- the table -------------------------------------------------------------------


LOADS = {
    "smtp-source": "smtp-source, 5 KB",
    "text5k": "Python, 5 KB Vietnamese text",
    "pdf200k": "Python, 200 KB with a PDF",
    "big": "Python, 20 MB + 5 KB meanwhile",
}


def _counts(quick: bool) -> dict[tuple[str, int], int]:
    if quick:
        return {(load, c): 10 for load in LOADS if load != "big" for c in (1, 5)}
    out = {("big", BIG_SESSIONS): 1 + (BIG_SESSIONS - 1) * BIG_SMALL}
    for load in LOADS:
        if load == "big":
            continue
        for c in (1, 5, 20):
            big = load == "pdf200k"
            out[(load, c)] = {1: 150 if big else 400, 5: 300 if big else 1500, 20: 400 if big else 3000}[c]
    return out


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_big(rows: list[tuple[str, int, int, dict[str, RunResult]]], names: list[str]) -> None:
    """The 20 MB case: how long the big message takes, and whether the small ones alongside wait for it."""
    for load, conc, count, results in rows:
        if load != "big":
            continue
        print(f"A 20 MB message (15 MB PDF) in one session while {conc - 1} others send 5 KB messages every {PACE * 1000:.0f} ms:")
        print(f"{'system':<18} {'20 MB: MAIL to 250':>19} {'5 KB p50 ms':>12} {'p99 ms':>7} {'max ms':>7} {'peak RSS MB':>12}")
        for n in names:
            r = results.get(n)
            if r is not None:
                print(f"{n:<18} {_fmt(r.big_ms):>16} ms {_fmt(r.p50, 1):>12} {_fmt(r.p99, 1):>7} {_fmt(r.max_ms, 1):>7} {r.peak_mb:>12.0f}")


def print_table(rows: list[tuple[str, int, int, dict[str, RunResult]]], names: list[str], anchors: list[str]) -> None:
    """One line per load and session count; the ratios are each mailgw system's msg/s over each anchor's."""
    rows = [row for row in rows if row[0] != "big"]
    pairs = [(n, a) for n in names if n not in anchors for a in anchors]
    head = f"{'load':<30} {'conc':>4} {'msgs':>5} | "
    head += " | ".join(f"{n[:24]:<24} {'msg/s':>7} {'p50ms':>6} {'p99ms':>6} {'txn99':>6} {'RSS MB':>6} {'CPUms':>5}" for n in names)
    head += " | " + " ".join(f"{'ratio ' + _short(n) + '/' + _short(a):>24}" for n, a in pairs)
    print(head)
    print("-" * len(head))
    for load, conc, count, results in rows:
        line = f"{LOADS[load]:<30} {conc:>4} {count:>5} | "
        cells = []
        for n in names:
            r = results.get(n)
            if r is None:
                cells.append(f"{'':<24} {'-':>7} {'-':>6} {'-':>6} {'-':>6} {'-':>6} {'-':>5}")
                continue
            flag = "" if r.complete else f" LOST {r.expected - r.received}" if r.received < r.expected else f" DUP {r.received - r.expected}"
            cells.append(f"{flag.strip():<24} {r.rate:>7.0f} {_fmt(r.p50, 1):>6} {_fmt(r.p99, 1):>6} {_fmt(r.txn_p99, 1):>6} "
                         f"{r.peak_mb:>6.0f} {r.cpu_ms:>5.1f}")
        line += " | ".join(cells)
        ratios = []
        for n, anchor in pairs:
            a, b = results.get(n), results.get(anchor)
            ratios.append(f"{a.rate / b.rate:>24.2f}" if a and b and b.rate else f"{'-':>24}")
        line += " | " + " ".join(ratios)
        print(line)


def _short(name: str) -> str:
    """A column name: 'Postfix+OpenDKIM Ed25519' -> 'Ed25519', 'Postfix alone' -> 'alone', 'mailgw' -> 'mailgw'."""
    return name.split()[-1] if name.startswith("Postfix") else name


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postfix = subprocess.run([_which("postconf") or "postconf", "-d", "-h", "mail_version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}, "
            f"Postfix {postfix}, OpenDKIM {_opendkim_version()}")


def _opendkim_version() -> str:
    out = subprocess.run([_which("opendkim") or "opendkim", "-V"], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].split()[-1] if out else "?"


# --- main ------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny load (10 messages per case, 1 and 5 sessions)")
    parser.add_argument("--two-nodes", action="store_true", help="also run two mailgw nodes (own ports, own spool) and report their combined throughput")
    parser.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                        help="one of mailgw's limits: settings for this run (say in_flow=0), as YAML reads VALUE")
    parser.add_argument("--workers", type=int,
                        help="mailgw serving processes (its 'workers:' setting; default: the setting's default, auto: one per core)")
    parser.add_argument("--anchors", nargs="*", choices=list(ANCHORS), default=list(ANCHORS),
                        help="the Postfix instances to compare with (default: all three)")
    parser.add_argument("--mailgw-keys", nargs="*", choices=list(ALGORITHMS), default=["ed25519"],
                        help="mailgw signs with this key; several: one mailgw system per key (default: ed25519)")
    parser.add_argument("--ports-from", type=int, metavar="PORT",
                        help="take the listening ports from PORT upwards (default: ports the kernel picks)")
    parser.add_argument("--dir", type=Path, default=RUN_BASE,
                        help=f"where the run directory is made (default {RUN_BASE}; not under /tmp: OpenDKIM refuses it)")
    parser.add_argument("--loads", nargs="*", choices=list(LOADS), default=list(LOADS))
    parser.add_argument("--concurrency", nargs="*", type=int, help="override the session counts (default 1 5 20; quick: 1 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    parser.add_argument("--repeat", type=int, default=1, help="run every case this many times (interleaved) and report the median")
    parser.add_argument("--only", choices=("postfix", "mailgw"), help="run one system only (profiling)")
    parser.add_argument("--milter", action="store_true",
                        help="also Postfix with mailgw as its milter (against Postfix with OpenDKIM as its milter)")
    parser.add_argument("--no-mailgw", action="store_true", help="leave out mailgw as an SMTP hop (with --milter: the two milters only)")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of mailgw (collapsed stacks) into this directory")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="print mailgw's CPU per message by process and thread (threads named through a sitecustomize.py)")
    parser.add_argument("--reply-steps", action="store_true",
                        help="print where mailgw's reply to DATA waits, step by step (p50/p99 of each, accepted mail)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, spools, configs)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return 0
    import yaml

    for item in args.limit:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--limit {item!r}: KEY=VALUE")
        EXTRA_LIMITS[key] = yaml.safe_load(value)

    try:
        ensure_packages()
    except CannotInstall as e:
        print(f"bench: cannot run: {e}", file=sys.stderr)
        return EXIT_CANNOT_INSTALL

    if args.ports_from:
        _PORTS.extend(range(args.ports_from, args.ports_from + 100))
    rig = Rig(keep=args.keep, base=args.dir)
    print(f"bench: directory {rig.dir}", file=sys.stderr)
    if args.thread_cpu or args.reply_steps:
        # A sitecustomize.py on the path of the processes the bench starts. --thread-cpu: Python does
        # not name OS threads; this gives each Python thread its name, so /proc tells the threads
        # apart. --reply-steps: the edge's steps are timed (REPLY_STEPS).
        site = rig.dir / "sitecustomize"
        site.mkdir()
        (site / "sitecustomize.py").write_text((THREAD_NAMES if args.thread_cpu else "")
                                               + (REPLY_STEPS if args.reply_steps else ""))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        if args.reply_steps:
            (rig.dir / "steps").mkdir()
            os.environ["MAILGW_BENCH_REPLY_STEPS"] = str(rig.dir / "steps")
    # SIGTERM (a test's timeout, a CI cancel) unwinds through the finally below like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return _bench(rig, args)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        rig.close()


def _bench(rig: Rig, args: argparse.Namespace) -> int:
    keys = make_keys(rig)
    key = keys[args.mailgw_keys[0] if args.mailgw_keys else "ed25519"]
    sink_port = free_port()
    dump = DumpSink(rig, sink_port)  # first the dump sink, to see who signs; then the counting one
    systems: list[System] = []
    notes: list[str] = []
    workers = args.workers or None
    if args.only != "mailgw":
        systems += [start_postfix(rig, keys, sink_port, anchor) for anchor in args.anchors]
    anchors = [s.name for s in systems]
    auto = f"auto ({os.cpu_count()})"
    if args.only != "postfix" and not args.no_mailgw:
        for algorithm in args.mailgw_keys:
            name = "mailgw" if len(args.mailgw_keys) == 1 else f"mailgw-{algorithm}"
            systems.append(start_mailgw(rig, keys[algorithm], sink_port, name=name, workers=workers))
        notes.append(f"mailgw: workers={args.workers or auto}, signing with "
                     f"{' and '.join(args.mailgw_keys)}, audit database SQLite, spool fsync-ed"
                     + "".join(f", limits.{k}={v}" for k, v in EXTRA_LIMITS.items()))
    if args.milter:
        systems.append(start_postfix_mailgw_milter(rig, keys[args.mailgw_keys[0]], sink_port, workers=workers))
        notes.append(f"Postfix+mailgw-milter: a second private Postfix, mailgw its milter (workers={args.workers or auto}, "
                     f"signing with {args.mailgw_keys[0]}, audit database SQLite, nothing spooled by mailgw)")
    with contextlib.ExitStack() as stack:
        if args.two_nodes:
            # Both nodes write one PostgreSQL exchange log (a schema of its own, dropped afterwards).
            from mailgw.audit.testing import pg_schema_url

            pg = stack.enter_context(pg_schema_url())
            database = pg or None
            # The machine's cores are shared between the nodes: one each on 2 cores.
            per_node = max(1, (args.workers or 1) // 2)
            a = start_mailgw(rig, key, sink_port, name="node-a", workers=per_node, database=database or "sqlite:///audit.db")
            b = start_mailgw(rig, key, sink_port, name="node-b", workers=per_node, database=database or "sqlite:///audit.db")
            systems.append(System("mailgw 2 nodes", a.ports + b.ports, a.roots + b.roots))
            notes.append(f"mailgw 2 nodes: workers={per_node} each, own ports and spool each, sessions split between them, audit database "
                         + ("one shared PostgreSQL" if pg else "SQLite each (PostgreSQL not reachable at 127.0.0.1:5432)"))
        signing = signing_check(rig, dump, systems)
        dump.stop()
        sink = Sink(rig, sink_port)
        rows, ok = _measure(rig, sink, systems, args)
        if args.only != "postfix" and not args.no_mailgw:
            db = rig.dir / ("mailgw" if len(args.mailgw_keys) == 1 else f"mailgw-{args.mailgw_keys[0]}") / "audit.db"
            notes.append(f"mailgw audit database after the run: {db.stat().st_size // 1024} KB" if db.exists()
                         else "mailgw audit database: nothing written (this build does not write the exchange log yet)")

    print()
    print(f"Machine: {machine()}")
    for note in notes:
        print(note)
    print("Signing check (one message each, at the sink): " + "; ".join(f"{n}: {v}" for n, v in signing.items()))
    print("msg/s: end to end, counted at the sink; p50/p99: end-of-DATA to 250 (Python client); "
          "txn99: p99 of the whole transaction, MAIL FROM sent to the 250 for DATA (Python client); "
          "RSS: peak sum over all the system's processes; CPUms: their CPU time per message"
          + (f"; median of {args.repeat} runs, interleaved" if args.repeat > 1 else ""))
    print()
    if any(row[0] != "big" for row in rows):
        print_table(rows, [s.name for s in systems], anchors)
    if any(row[0] == "big" for row in rows):
        print()
        print_big(rows, [s.name for s in systems])
    if not ok:
        print("\nbench: FAILED: the sink did not receive every message exactly once (see LOST/DUP above)")
        return 1
    print("\nEvery message arrived at the sink exactly once.")
    return 0


def _measure(rig: Rig, sink: Sink, systems: list[System], args: argparse.Namespace) -> tuple[list[tuple[str, int, int, dict[str, RunResult]]], bool]:
    counts = _counts(args.quick)
    concs = args.concurrency or sorted({c for load, c in counts if load != "big"})
    rows: list[tuple[str, int, int, dict[str, RunResult]]] = []
    ok = True
    for load in args.loads:
        if load == "big" and ("big", BIG_SESSIONS) not in counts:
            continue  # not in quick mode
        for conc in [BIG_SESSIONS] if load == "big" else concs:
            count = counts[("big", BIG_SESSIONS)] if load == "big" else \
                max(conc, int(counts.get((load, conc), max(counts.values())) * args.scale))
            runs: dict[str, list[RunResult]] = {s.name: [] for s in systems}
            for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits both
                for system in systems:
                    r = run_load(rig, sink, system, load, conc, count, 30 + count / 5, args.profile, args.thread_cpu,
                                 rig.dir / "steps" if args.reply_steps else None)
                    runs[system.name].append(r)
                    ok &= r.complete
                    print(f"bench: {system.name:<18} {LOADS[load]:<30} c={conc:<3} {r.rate:7.0f} msg/s"
                          f"  p50={_fmt(r.p50, 1)} p99={_fmt(r.p99, 1)} ms"
                          + (f" (MAIL to 250: {_fmt(r.txn_p50, 1)}/{_fmt(r.txn_p99, 1)})" if r.txn_p99 is not None else "")
                          + f"  RSS={r.peak_mb:.0f} MB  CPU={r.cpu_ms:.1f} ms/msg (kernel {r.sys_ms:.1f})"
                          + (f"  20 MB: {r.big_ms:.0f} ms, slowest 5 KB {r.max_ms:.0f} ms" if r.big_ms else "")
                          + f"  sink {r.received}/{r.expected}", file=sys.stderr)
            rows.append((load, conc, count, {name: _median(rs) for name, rs in runs.items()}))
    return rows, ok


def _median(runs: list[RunResult]) -> RunResult:
    """The run with the median rate; its memory is the peak of all runs, its completeness that of all runs."""
    mid = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    worst = min(runs, key=lambda r: (r.complete, -abs(r.received - r.expected)))
    return dataclasses.replace(
        mid, peak_mb=max(r.peak_mb for r in runs),
        received=worst.received if not worst.complete else mid.received,
        expected=worst.expected, errors=sum(r.errors for r in runs),
    )


if __name__ == "__main__":
    if "--client" not in sys.argv:
        _ensure_interpreter()
    sys.exit(main())
