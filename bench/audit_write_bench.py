"""CPU per record of writing the exchange log: ``AuditLog.write`` and the writer thread, by batch size.

    python bench/audit_write_bench.py [--n 600] [--batches 1 5 20] [--repeat 3] [--no-pg]
    PYTHONPATH=/another/checkout python bench/audit_write_bench.py   # that checkout's mailgw

For each backend (a fresh SQLite file in WAL mode with synchronous=FULL, as
the gateway opens it; PostgreSQL when one answers at 127.0.0.1:5432, in a
throwaway schema) and each batch size, prints the CPU time (this process:
user + system, so SQLite's own work and its fsync calls count, the
PostgreSQL server's work does not) per record of:

- ``log.write``: ``AuditLog.write(records, [])``, one call per batch;
- ``log.delivery``: ``AuditLog.write([], events)``, one call per batch of events;
- ``writer``: ``AuditWriter`` committing a batch of record jobs, as its
  thread does when that many records are waiting (the queue is filled, then
  one step of the thread's loop runs in this thread);
- ``writer mixed``: the same with two delivery events per record in the batch.

CPU time, not wall-clock: the machine may be shared. Run it a few times.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable

if not os.environ.get("PYTHONPATH"):  # this checkout's package, unless PYTHONPATH names one (before/after)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mailgw.audit.log import AuditLog  # noqa: E402
from mailgw.audit.testing import pg_schema_url, sample_record  # noqa: E402
from mailgw.audit.writer import AuditWriter, _Job  # noqa: E402

_counter = 0


def _records(n: int) -> list[dict[str, Any]]:
    global _counter
    out = []
    for _ in range(n):
        _counter += 1
        out.append(sample_record(id=f"B{_counter:09d}", rcpts=["vanthu@sotc.binhthuan.gov.vn", "vanthu@mic.gov.vn"],
                                 decision__matched=["tag-official"]))
    return out


def _events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    t = dt.datetime.now(dt.timezone.utc).isoformat()
    return [{"exchange_id": r["id"], "recipient": a, "time": t, "status": "sent", "reply": "mx: 250 ok",
             "attempt": 1} for r in records for a in r["rcpts"]]


REPEAT = 3


def _cpu_per(make: Callable[[int], Any], step: Callable[[Any], None], size: int, calls: int) -> float:
    """Microseconds of process CPU per record for ``step`` on inputs ``make(size)`` built beforehand.

    The least of ``REPEAT`` runs: other processes on a shared machine only ever add to it.
    """
    for work in [make(size) for _ in range(max(3, calls // 10))]:  # warm-up
        step(work)
    best = float("inf")
    for _ in range(REPEAT):
        inputs = [make(size) for _ in range(calls)]
        t0 = time.process_time()
        for work in inputs:
            step(work)
        best = min(best, (time.process_time() - t0) / (calls * size) * 1e6)
    return best


def bench(url: str, label: str, n: int, sizes: list[int]) -> None:
    log = AuditLog.open(url, "bench")
    writer = AuditWriter(url, "bench", tempfile.mkdtemp(prefix="audit-write-bench-journal-"))
    writer._connect()  # opens its own AuditLog, as the thread would at start

    def logged_events(size: int) -> list[dict[str, Any]]:
        # Events about logged exchanges, as in the gateway (one event per record of the batch).
        recs = _records(size)
        log.write(recs, [])
        return [_events([r])[0] for r in recs]

    def jobs(mixed: bool) -> Callable[[int], list[_Job]]:
        def make(size: int) -> list[_Job]:
            recs = _records(size)
            out = [_Job("record", r, concurrent.futures.Future()) for r in recs]
            if mixed:
                out += [_Job("delivery", e, concurrent.futures.Future()) for e in _events(recs)]
            return out
        return make

    def writer_step(work: list[_Job]) -> None:
        # The jobs as the event loop queues them, then one step of the writer thread's loop.
        for j in work:
            writer._jobs.put(j)
        writer._step()

    for size in sizes:
        calls = max(5, n // size)
        row = [f"{label:<11}{size:>6}"]
        row.append(f"{_cpu_per(_records, lambda b: log.write(b, []), size, calls):10.0f}")
        row.append(f"{_cpu_per(logged_events, lambda e: log.write([], e), size, calls):10.0f}")
        row.append(f"{_cpu_per(jobs(False), writer_step, size, calls):10.0f}")
        row.append(f"{_cpu_per(jobs(True), writer_step, size, calls):10.0f}")
        print("".join(row), flush=True)
    writer._log.close()  # type: ignore[union-attr]
    log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="records per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--repeat", type=int, default=REPEAT, help="runs per figure; the least is printed")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    globals()["REPEAT"] = args.repeat
    print("µs of CPU per record (per event for log.delivery; writer mixed: per record, with its 2 events)")
    print(f"{'backend':<11}{'batch':>6}{'log.write':>10}{'log.deliv':>10}{'writer':>10}{'w.mixed':>10}")
    with tempfile.TemporaryDirectory(prefix="audit-write-bench-") as tmp:
        bench(f"sqlite:///{tmp}/log.db", "SQLite", args.n, args.batches)
    if not args.no_pg:
        with pg_schema_url() as url:
            if url is None:
                print("PostgreSQL not reachable; skipped")
            else:
                bench(url, "PostgreSQL", args.n, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
