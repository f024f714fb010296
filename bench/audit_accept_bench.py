"""What the exchange log costs acceptance: time from the end of DATA to the reply, with and without the log.

    python bench/audit_accept_bench.py [--messages 400] [--sessions 1 10] [--pg URL]

Runs a real gateway in this process (relay listener, real spool with fsync)
three ways: without the log (the decision record only goes to a log line, as
before the log was wired), with the log on SQLite (WAL, synchronous=FULL), and
with the log on PostgreSQL (when one answers at 127.0.0.1:5432). A raw-socket
client sends a 6 KB Vietnamese message and times each message from the moment
it writes the final ``CRLF.CRLF`` to the moment the reply line arrives; that
is the time the client waits for the pipeline, the spool's fsync and, with the
log, the commit of the record. Delivery goes nowhere (a closed port, retried an
hour later) so, with ``--deliver``, it costs one attempt per message in every
variant alike (with the log, that attempt's two outcomes are logged too);
without ``--deliver`` the delivery worker stays idle and acceptance alone is
measured.

Prints, per variant and number of concurrent sessions: messages, median, p90,
p99 and mean latency in milliseconds, and messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from mailgw.app import Gateway  # noqa: E402
from mailgw.delivery import worker as deliver  # noqa: E402
from mailgw.smtp import edge as receive  # noqa: E402

SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RCPTS = ["vanthu.snv@binhthuan.gov.vn", "vanthu@mic.gov.vn"]
BODY = ("Kính gửi: Sở Nội vụ tỉnh Bình Thuận.\r\n\r\n"
        + "Thực hiện Kế hoạch số 112/KH-UBND của Ủy ban nhân dân tỉnh về chuyển đổi số năm 2025, "
          "Sở Thông tin và Truyền thông đề nghị các cơ quan báo cáo kết quả thực hiện.\r\n" * 30)


def _message(i: int) -> bytes:
    from email.header import Header

    subject = Header(f"Công văn số {i}/STTTT-VP về việc báo cáo chuyển đổi số", "utf-8").encode(linesep="\r\n")
    return (f"From: {SENDER}\r\nTo: {', '.join(RCPTS)}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 03 Mar 2025 09:00:00 +0700\r\nMessage-ID: <bench-{i}-{uuid.uuid4().hex}@stttt>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{BODY}").encode()


def _config(where: pathlib.Path, database: str, deliver: bool) -> pathlib.Path:
    shutil.copy(ROOT / "directory.yaml", where / "directory.yaml")
    (where / "policies").mkdir(exist_ok=True)
    settings = {
        "hostname": "mailgw.bench", "directory": "directory.yaml", "policies": "policies", "database": database,
        "spool": "spool", "log_level": "WARNING",
        "listeners": [{"name": "relay", "role": "relay", "listen": "127.0.0.1:0", "trusted_networks": ["127.0.0.0/8"]}],
        "routes": {"local": "smtp://127.0.0.1:1", "remote": "smtp://127.0.0.1:1"},
        # Without --deliver the delivery worker never looks at the queue: acceptance alone is measured.
        "queue": {"retry_min": "1h", "retry_max": "1h", "connect_timeout": "1s",
                  "scan_interval": "1s" if deliver else "1h"},
        "limits": {"connections_per_ip": 200, "commands": 1000000},
    }
    path = where / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True))
    return path


async def _reply(reader: asyncio.StreamReader) -> str:
    while True:
        line = (await reader.readline()).decode()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != "-":
            return line


async def _session(port: int, numbers: list[int], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.client\r\n")
    await _reply(reader)
    for i in numbers:
        writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
        assert (await _reply(reader)).startswith("250")
        for r in RCPTS:
            writer.write(f"RCPT TO:<{r}>\r\n".encode())
            assert (await _reply(reader)).startswith("250")
        writer.write(b"DATA\r\n")
        assert (await _reply(reader)).startswith("354")
        data = _message(i)
        writer.write(data)
        await writer.drain()
        t0 = time.perf_counter()
        writer.write(b"\r\n.\r\n")
        line = await _reply(reader)
        latencies.append(time.perf_counter() - t0)
        assert line.startswith("250"), line
    writer.write(b"QUIT\r\n")
    writer.close()


async def _run(database: str | None, messages: int, sessions: int, deliver_too: bool) -> dict[str, Any]:
    where = pathlib.Path(tempfile.mkdtemp(prefix="mailgw-accept-bench-"))
    try:
        gw = Gateway(str(_config(where, database or f"sqlite:///{where}/unused.db", deliver_too)))
        if not deliver_too:
            gw.edge.on_queued = lambda msg_id: None
        if database is None:  # as before the log was wired: the record goes to a log line only
            gw.edge.recorder = receive._log_record
            gw.deliverer.on_event = deliver._log_event
            gw.deliverer.recorder = None
        await gw.start()
        port = gw.addresses["relay"][1]
        latencies: list[float] = []
        # Warm-up: first imports, first connections, the chain head.
        await _session(port, [0, 1, 2], [])
        t0 = time.perf_counter()
        await asyncio.gather(*(_session(port, list(range(3 + s, 3 + messages, sessions)), latencies)
                               for s in range(sessions)))
        elapsed = time.perf_counter() - t0
        await gw.drain()
    finally:
        shutil.rmtree(where, ignore_errors=True)
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "median": statistics.median(ms), "p90": q[89], "p99": q[98], "mean": statistics.fmean(ms),
            "rate": len(ms) / elapsed}


def _pg(url: str) -> tuple[str | None, Any]:
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    schema = f"mailgw_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as e:
        print(f"PostgreSQL at {url} not reachable ({e.orig}); skipped", file=sys.stderr)
        return None, lambda: admin.dispose()

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{url}?options=-csearch_path%3D{schema}", drop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--deliver", action="store_true",
                    help="let the delivery worker run too (one failed attempt per message, its outcome logged)")
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; {args.messages} messages of {len(_message(1))} bytes per run, 2 recipients each; "
          f"delivery {'running' if args.deliver else 'off'}")
    print(f"{'variant':<22}{'sessions':>9}{'n':>6}{'median':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'msg/s':>9}")
    pg_url, drop = _pg(args.pg)
    try:
        for sessions in args.sessions:
            d = args.deliver
            variants = [("no log", lambda: _run(None, args.messages, sessions, d)),
                        ("log on SQLite", lambda: _run_sqlite(args.messages, sessions, d))]
            if pg_url is not None:
                variants.append(("log on PostgreSQL", lambda: _run(pg_url, args.messages, sessions, d)))
            for name, run in variants:
                r = asyncio.run(run())
                print(f"{name:<22}{sessions:>9}{r['n']:>6}{r['median']:>9.2f}{r['p90']:>9.2f}{r['p99']:>9.2f}"
                      f"{r['mean']:>9.2f}{r['rate']:>9.1f}", flush=True)
    finally:
        drop()
    print("latency: ms from the client's final CRLF.CRLF to the reply line")
    return 0


async def _run_sqlite(messages: int, sessions: int, deliver_too: bool) -> dict[str, Any]:
    where = tempfile.mkdtemp(prefix="mailgw-accept-db-")
    try:
        return await _run(f"sqlite:///{where}/mailgw.db", messages, sessions, deliver_too)
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
