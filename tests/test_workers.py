"""``workers: N``: several serving processes share the ports and the spool; each message is delivered once."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest
import yaml

from mailgw.config.settings import auto_workers, load
from mailgw.config.yamlfile import ConfigError
from tests.conftest import REPO, free_port, message, write_config

SENDER = "vanthu.sotttt@binhthuan.gov.vn"


def _config(tmp_path: Path, sink, ca, password_hash, workers: object = 2) -> tuple[Path, int]:
    """Settings with one relay listener on a fixed port; ``workers`` None: the key left out."""
    relay = free_port()
    path = write_config(
        tmp_path, sink.port, ca, password_hash,
        listeners=[{"name": "relay", "role": "relay", "listen": f"127.0.0.1:{relay}", "trusted_networks": ["127.0.0.0/8"]}],
        limits={"connections_per_ip": 100},
    )
    settings = yaml.safe_load(path.read_text())
    settings.pop("workers", None)
    if workers is not None:
        settings["workers"] = workers
    path.write_text(yaml.safe_dump(settings, allow_unicode=True))
    return path, relay


async def _start(path: Path, port: int, workers: int = 2) -> subprocess.Popen:
    log = open(path.parent / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgw", "serve", "--config", str(path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=log,
    )
    log.close()
    for _ in range(400):  # every worker listening, not only the first
        if len(_workers(proc.pid)) == workers and all(_listening(pid, port) for pid in _workers(proc.pid).values()):
            return proc
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start: " + (path.parent / "serve.log").read_text())


def _workers(supervisor: int) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            if ppid != supervisor:
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"--worker" in argv:
            found[int(argv[argv.index(b"--worker") + 1])] = int(stat.parent.name)
    return found


def _listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening socket on ``port`` (its inodes against /proc/net/tcp)."""
    try:
        inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith("socket:[")}
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for row in table:
        cols = row.split()
        if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port and cols[9] in inodes:
            return True
    return False


async def _send_many(port: int, tag: str, n: int, sessions: int = 10) -> set[int]:
    acked: set[int] = set()

    async def client(k: int) -> None:
        for i in range(k, n, sessions):  # a new connection per message: the kernel spreads them
            _, reply = await aiosmtplib.send(
                message(subject=f"{tag}-{i:04d}"), sender=SENDER, recipients=[f"r{i}@binhthuan.gov.vn"],
                hostname="127.0.0.1", port=port, start_tls=False, timeout=10,
            )
            assert reply.startswith("2.0.0"), reply
            acked.add(i)

    await asyncio.gather(*(client(k) for k in range(sessions)))
    return acked


def _delivered(sink, tag: str) -> collections.Counter[int]:
    return collections.Counter(int(m) for msg in sink.messages for m in re.findall(rf"{tag}-(\d{{4}})".encode(), msg.data))


def _established(pid: int, port: int) -> int:
    """How many connections to local ``port`` process ``pid`` holds."""
    try:
        inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith("socket:[")}
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for row in table if (cols := row.split())[3] == "01" and int(cols[1].split(":")[1], 16) == port
               and cols[9] in inodes)


async def test_two_workers_share_the_port_and_each_message_is_delivered_once(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    proc = await _start(path, relay)
    try:
        # 20 sessions held open, one after the other: 10 on each worker (mailgw.balance). The
        # kernel's hash alone splits them evenly one time in six, 13 to 7 or worse one time in four.
        held = []
        for _ in range(20):
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay, start_tls=False, timeout=10)
            await c.connect()
            held.append(c)
        workers = _workers(proc.pid)
        spread = {i: _established(pid, relay) for i, pid in workers.items()}
        assert spread == {1: 10, 2: 10}, spread
        for i, c in enumerate(held):
            await c.sendmail(SENDER, [f"h{i}@binhthuan.gov.vn"], message(subject=f"share-{100 + i:04d}"))
            await c.quit()
        acked = await _send_many(relay, "share", 80) | set(range(100, 120))
        await sink.wait_for(lambda: set(_delivered(sink, "share")) >= acked, timeout=30)
        await asyncio.sleep(1.5)  # a second delivery would come from a scan of the spool: give it one
        counts = _delivered(sink, "share")
        assert set(counts) == acked and set(counts.values()) == {1}, counts
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = (path.parent / "serve.log").read_text()
    # Only the supervisor delivered; every exchange is in the one exchange log, from both workers.
    assert not re.search(r"\[worker \d\] mailgw.delivery.worker", log)
    assert len(re.findall(r"^\S+ \S+ INFO mailgw.delivery.worker: delivery id=", log, re.M)) == 100
    assert not list((path.parent / "spool" / "queue").iterdir())
    search = subprocess.run(
        [sys.executable, "-m", "mailgw", "audit", "search", "--json", "--limit", "1000", "--config", str(path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True,
    )
    assert len(search.stdout.splitlines()) == 100, search.stdout[-2000:] + search.stderr[-2000:]


async def test_a_worker_that_dies_is_started_again(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    proc = await _start(path, relay)
    try:
        before = _workers(proc.pid)
        os.kill(before[1], signal.SIGKILL)
        exited = "worker 1 (pid %d) exited" % before[1]
        while exited not in (path.parent / "serve.log").read_text():  # the supervisor has seen it die
            await asyncio.sleep(0.01)
        # Sessions that come meanwhile are served by worker 2: none is passed to the dead worker.
        meanwhile = []
        for i in range(4):
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay, start_tls=False, timeout=30)
            await c.connect()
            meanwhile.append(c)
        for i, c in enumerate(meanwhile):
            await c.sendmail(SENDER, [f"m{i}@binhthuan.gov.vn"], message(subject=f"again-{900 + i:04d}"))
            await c.quit()
        for _ in range(200):
            now = _workers(proc.pid)
            if now.get(1) not in (None, before[1]) and _listening(now[1], relay):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 1 was not started again")
        assert now[2] == before[2]  # the other worker kept serving
        acked = await _send_many(relay, "again", 30) | set(range(900, 904))
        await sink.wait_for(lambda: set(_delivered(sink, "again")) >= acked, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


async def test_workers_stop_with_their_supervisor_even_after_sigkill(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    proc = await _start(path, relay)
    pids = list(_workers(proc.pid).values())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for _ in range(200):
        if not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("workers outlived their supervisor")


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")).lower()
    except (OSError, StopIteration):
        return "zombie"


async def test_sigterm_drains_every_worker(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    proc = await _start(path, relay)
    pids = list(_workers(proc.pid).values())
    # A session in the middle of a transaction on each side of the port: SIGTERM waits for them.
    clients = []
    for _ in range(4):
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay, start_tls=False, timeout=10)
        await c.connect()
        await c.mail(SENDER)
        await c.rcpt("late@binhthuan.gov.vn")
        clients.append(c)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    for c in clients:
        _, reply = await c.data(message(subject="late"))
        assert reply.startswith("2.0.0")
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    # Acknowledged, so delivered already or waiting in the spool for the next start.
    waiting = list((path.parent / "spool" / "queue").iterdir())
    assert len(sink.to("late@binhthuan.gov.vn")) + len(waiting) == 4


@pytest.mark.parametrize("value, error", [
    (0, "'workers' must be a whole number above 0"),
    (65, "'workers' must be at most 64"),
    ("2", "'workers' must be a whole number above 0 or auto"),
    ("all", "'workers' must be a whole number above 0 or auto"),
])
def test_workers_setting_is_checked(tmp_path, sink, ca, password_hash, value, error):
    path, _ = _config(tmp_path, sink, ca, password_hash, workers=value)
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert error in str(e.value)
    assert re.search(r"gateway.yaml:\d+:", str(e.value))


def test_several_workers_need_fixed_ports(tmp_path, sink, ca, password_hash):
    path = write_config(tmp_path, sink.port, ca, password_hash)  # every listener on port 0
    settings = yaml.safe_load(path.read_text())
    settings["workers"] = 2
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert "listener 'mx' listens on port 0: several workers need a fixed port to share" in str(e.value)
    settings["workers"] = 1
    path.write_text(yaml.safe_dump(settings))
    assert load(str(path)).workers == 1
    for auto in ({"workers": "auto"}, {}):  # auto, the default: one worker when a port is 0, not an error
        path.write_text(yaml.safe_dump({k: v for k, v in settings.items() if k != "workers"} | auto))
        assert load(str(path)).workers == 1


@pytest.mark.parametrize("value", ["auto", None])
def test_workers_default_to_one_per_core(tmp_path, sink, ca, password_hash, value):
    """As Postfix uses every core: ``auto`` (also when the key is absent) is the cores this process may use."""
    path, _ = _config(tmp_path, sink, ca, password_hash, workers=value)
    settings = load(str(path))
    assert settings.workers == auto_workers() == max(1, min(64, len(os.sched_getaffinity(0))))
    assert f"workers={settings.workers}" in settings.effective()  # the startup log line says what auto became
