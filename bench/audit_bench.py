"""Exchange log benchmark: search latency per filter on a large log, and what ``append`` costs.

    python bench/audit_bench.py --url sqlite:////tmp/audit-bench.db --records 1000000
    python bench/audit_bench.py --append-only

Fills the database (if it holds fewer records than asked) with realistic
synthetic months from ``make_month.py`` through ``AuditLog.append`` in large
batches, so every record is hashed and chained as in production; then times
each audit filter (median of several runs, ``--limit`` 100 as the command's
default, on a warm connection) and ``append`` on a fresh SQLite file, one
record per call and in batches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from make_month import generate  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from mailgw.audit.log import AuditLog  # noqa: E402
from mailgw.audit.query import Filters, search  # noqa: E402
from mailgw.audit.schema import Exchange, Recipient  # noqa: E402
from tests.made_records import like  # noqa: E402  (records the gateway's own code made)


def fill(log: AuditLog, records: int, per_month: int, batch: int) -> None:
    with log.engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(Exchange)).scalar_one()
    if have >= records:
        print(f"database already holds {have} records")
        return
    months = -(-records // per_month)
    t0 = time.perf_counter()
    done = 0
    base = dt.date(2025, 3, 1)
    for m in range(months):
        y, mo = divmod(base.year * 12 + base.month - 1 - (months - 1 - m), 12)
        month = f"{y}-{mo + 1:02d}"
        count = min(per_month, records - done)
        buf = []
        for rec in generate(month, count, seed=m + 1):
            buf.append(rec)
            if len(buf) >= batch:
                log.append(buf)
                buf = []
        if buf:
            log.append(buf)
        done += count
        el = time.perf_counter() - t0
        print(f"  {month}: {done} records, {el:.0f} s ({done / el:.0f} records/s)", flush=True)
    with log.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def pick(log: AuditLog) -> dict[str, dict[str, object]]:
    """Filter values that exist in the data: a busy one and a rare one where it matters."""
    with log.engine.connect() as conn:
        def top(col, table=Exchange, desc=True):  # type: ignore[no-untyped-def]
            order = func.count().desc() if desc else func.count()
            return conn.execute(select(col).where(col.is_not(None)).group_by(col).order_by(order).limit(1)).scalar()
        newest = conn.execute(select(func.max(Exchange.time))).scalar()
        doc = conn.execute(select(Exchange.doc_number).where(Exchange.doc_number.is_not(None)).limit(1)).scalar()
        rare_sender = conn.execute(select(Exchange.sender).where(Exchange.sender.like("dan%")).limit(1)).scalar()
        return {
            "no filter": {},
            "since 7d": {"since": (newest - dt.timedelta(days=7)).isoformat()},
            "since+until (1 day)": {"since": (newest - dt.timedelta(days=40)).isoformat(),
                                    "until": (newest - dt.timedelta(days=39)).isoformat()},
            "sender (busy)": {"sender": top(Exchange.sender)},
            "sender (rare)": {"sender": rare_sender},
            "recipient (busy)": {"recipient": top(Recipient.address)},
            "agency": {"agency": "STTTT"},
            "agency (as recipient only)": {"agency": "PARTNER"},
            "category (common)": {"category": "meeting_invitation"},
            "category (rare)": {"category": "official_telegram"},
            "decision reject": {"decision": "reject"},
            "rule secrecy-block (rare)": {"rule": "secrecy-block"},
            "rule channel (should-use-dms)": {"rule": "should-use-dms"},
            "doc_number": {"doc_number": doc},
            "agency+category+since 30d": {"agency": "SYT", "category": "report",
                                          "since": (newest - dt.timedelta(days=30)).isoformat()},
            "decision+rule+until": {"decision": "reject", "rule": "dangerous-attachment",
                                    "until": (newest - dt.timedelta(days=180)).isoformat()},
        }


def time_searches(log: AuditLog, runs: int) -> None:
    cases = pick(log)
    print(f"\nsearch, limit 100, median of {runs} runs (ms):")
    with log.engine.connect() as conn:
        for name, values in cases.items():
            f = Filters.parse(values, default_limit=100)
            samples = []
            n = 0
            for _ in range(runs):
                t0 = time.perf_counter()
                n = len(search(conn, f))
                samples.append((time.perf_counter() - t0) * 1000)
            print(f"  {name:<32} {statistics.median(samples):8.1f}   max {max(samples):8.1f}   rows {n}")


def time_append(url: str | None) -> None:
    tmp = None
    if url is None:
        tmp = tempfile.mkdtemp(prefix="audit-append-")
        url = f"sqlite:///{tmp}/append.db"
    log = AuditLog.open(url, "bench")
    recs = [like("letter", f"S{i:07d}") for i in range(3000)]
    n = 300
    t0 = time.perf_counter()
    for r in recs[:n]:
        log.append([r])
    single = (time.perf_counter() - t0) / n * 1000
    print(f"\nappend on {url}:\n  one record per call:      {single:.2f} ms/record ({1000 / single:.0f}/s)")
    for size in (10, 100, 1000):
        chunk = [like("letter", f"B{size}-{i:07d}") for i in range(size * max(1, 2000 // size))]
        t0 = time.perf_counter()
        for i in range(0, len(chunk), size):
            log.append(chunk[i:i + size])
        per = (time.perf_counter() - t0) / len(chunk) * 1000
        print(f"  batches of {size:<5}          {per:.3f} ms/record ({1000 / per:.0f}/s)")
    log.close()
    if tmp:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="sqlite:////tmp/audit-bench.db")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--per-month", type=int, default=85_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--append-only", action="store_true")
    ap.add_argument("--append-url", default=None, help="database for the append timing (default: a fresh SQLite file)")
    ap.add_argument("--verify", action="store_true", help="also time a full verify")
    args = ap.parse_args()
    if not args.append_only:
        log = AuditLog.open(args.url, "gw1")
        fill(log, args.records, args.per_month, args.batch)
        time_searches(log, args.runs)
        log.close()
        if args.verify:
            from mailgw.audit.verify import verify
            t0 = time.perf_counter()
            problems = verify(args.url)
            print(f"\nverify: {len(problems)} problem(s) in {time.perf_counter() - t0:.1f} s")
    time_append(args.append_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
