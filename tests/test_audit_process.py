"""The exchange log with real `mailgw serve` processes: SIGKILL around the 250, two nodes on one database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import create_engine, func, select, text

from mailgw.audit.schema import Delivery, Exchange
from mailgw.audit.store import open_engine
from mailgw.audit.verify import verify
from tests.conftest import REPO, free_port, message, write_config
from tests.test_process import _start

SENDER = "vanthu.sotttt@binhthuan.gov.vn"


def _config(where: Path, sink: Any, ca: Any, password_hash: str, url: str, **overrides: Any) -> tuple[Path, int]:
    where.mkdir(exist_ok=True)
    relay = free_port()
    path = write_config(
        where, sink.port, ca, password_hash, database=url,
        listeners=[{"name": "relay", "role": "relay", "listen": f"127.0.0.1:{relay}", "trusted_networks": ["127.0.0.0/8"]}],
        limits={"connections_per_ip": 100}, **overrides,
    )
    return path, relay


def _logged(url: str) -> dict[str, dict[str, Any]]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return {i: json.loads(r) for i, r in conn.execute(select(Exchange.id, Exchange.record))}
    finally:
        engine.dispose()


def _delivered_ids(sink: Any) -> set[str]:
    """Exchange ids of what reached the next hop, from the gateway's own Received header."""
    return {m.decode() for msg in sink.messages for m in re.findall(rb"with ESMTP id ([0-9A-F]+)", msg.data)}


async def test_sigkill_after_the_250_loses_no_record(tmp_path, sink, ca, password_hash, audit_url):
    path, relay = _config(tmp_path, sink, ca, password_hash, audit_url)
    proc = await _start(path, relay)
    acked: dict[int, str] = {}
    total = 120

    async def client(worker: int) -> None:
        for i in range(worker, total, 10):
            try:
                _, reply = await aiosmtplib.send(
                    message(subject=f"crash-{i:04d}"), sender=SENDER, recipients=[f"r{i}@binhthuan.gov.vn"],
                    hostname="127.0.0.1", port=relay, start_tls=False, timeout=10,
                )
            except (aiosmtplib.SMTPException, OSError):
                return  # the gateway died under us: the rest was never acknowledged
            acked[i] = reply.rsplit(" ", 1)[1]

    async def killer() -> None:
        while len(acked) < 40:
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # right after a 250, with others in flight

    await asyncio.gather(killer(), *(client(w) for w in range(10)))
    proc.wait(timeout=10)
    assert 40 <= len(acked) < total

    proc = await _start(path, relay)
    try:
        await sink.wait_for(lambda: set(acked.values()) <= _delivered_ids(sink), timeout=60)
        logged = _logged(audit_url)
        # Every acknowledged message has its record, and so has every message that was delivered
        # (a message spooled just before the kill is delivered without its client having seen a 250).
        assert set(acked.values()) <= set(logged)
        assert _delivered_ids(sink) <= set(logged)
        assert all(logged[x]["decision"]["decision"] == "accept" for x in acked.values())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert verify(audit_url) == []


def _lock(url: str) -> Any:
    """Hold the log's write lock from another client; returns the function that releases it."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")

        def release() -> None:
            conn.execute("ROLLBACK")
            conn.close()

        return release
    engine = create_engine(url)
    pg = engine.connect()
    pg.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))

    def release_pg() -> None:
        pg.rollback()
        pg.close()
        engine.dispose()

    return release_pg


async def test_sigkill_between_spool_and_log_is_repaired_at_start(tmp_path, sink, ca, password_hash, audit_url):
    # The reply waits for the log (timeout 60 s), the log is locked by someone else, the process is
    # killed: the message is spooled, its client never got a 250, its record is not logged yet.
    # One process (workers: 1): the one killed is the one between spool and log (with workers, a
    # worker outlives its supervisor's SIGKILL long enough to drain and log).
    path, relay = _config(tmp_path, sink, ca, password_hash, audit_url, audit={"timeout": "60s"}, workers=1)
    proc = await _start(path, relay)
    await aiosmtplib.send(message(subject="trước"), sender=SENDER, recipients=["a@binhthuan.gov.vn"],
                          hostname="127.0.0.1", port=relay, start_tls=False)
    release = _lock(audit_url)
    try:
        pending = asyncio.ensure_future(aiosmtplib.send(
            message(subject="giữa-spool-và-log"), sender=SENDER, recipients=["b@binhthuan.gov.vn"],
            hostname="127.0.0.1", port=relay, start_tls=False, timeout=30))
        queue = tmp_path / "spool" / "queue"
        for _ in range(400):
            spooled = [f.name for f in queue.iterdir() if "giữa-spool-và-log".encode() in f.read_bytes()]
            if spooled:
                break
            await asyncio.sleep(0.025)
        assert spooled, "the message was never spooled"
        await asyncio.sleep(0.2)
        assert not pending.done()  # still waiting for the log
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        try:
            await pending
            raise AssertionError("a 250 without a record")
        except (aiosmtplib.SMTPException, OSError):
            pass
    finally:
        release()
    assert spooled[0] not in _logged(audit_url)

    proc = await _start(path, relay)  # start-up logs the records of spooled messages before listening
    try:
        logged = _logged(audit_url)
        assert spooled[0] in logged and logged[spooled[0]]["decision"]["decision"] == "accept"
        await sink.wait_for(lambda: spooled[0] in _delivered_ids(sink), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert verify(audit_url) == []


async def test_two_gateways_on_one_database_keep_both_chains_valid(tmp_path, sink, ca, password_hash, audit_url):
    nodes = {}
    for name in ("gw-a", "gw-b"):
        path, relay = _config(tmp_path / name, sink, ca, password_hash, audit_url, node=name)
        nodes[name] = (path, relay)
    procs = {name: await _start(path, relay) for name, (path, relay) in nodes.items()}
    per_node = 25
    try:
        async def client(name: str, worker: int) -> None:
            for i in range(worker, per_node, 5):
                await aiosmtplib.send(message(subject=f"{name}-{i}"), sender=SENDER,
                                      recipients=[f"r{i}@binhthuan.gov.vn", f"x{i}@example.com"],
                                      hostname="127.0.0.1", port=nodes[name][1], start_tls=False, timeout=30)

        await asyncio.gather(*(client(name, w) for name in nodes for w in range(5)))
        await sink.wait_for(lambda: len(sink.messages) >= 2 * per_node, timeout=60)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            assert p.wait(timeout=30) == 0

    engine = open_engine(audit_url)
    try:
        with engine.connect() as conn:
            by_node = dict(conn.execute(select(Exchange.node, func.count()).group_by(Exchange.node)).all())
            sent = conn.execute(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")).scalar_one()
    finally:
        engine.dispose()
    assert by_node == {"gw-a": per_node, "gw-b": per_node}
    assert sent == 2 * 2 * per_node
    run = subprocess.run([sys.executable, "-m", "mailgw", "audit", "verify", "--config", str(nodes["gw-a"][0])],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok: chain gw-a: head seq " in run.stdout and "ok: chain gw-b: head seq " in run.stdout
