"""CPU per record of writing the exchange log: ``AuditLog.write`` and the writer thread, by batch size.

    python bench/audit_write_bench.py [--n 200] [--batches 1 5 20] [--rounds 4] [--no-pg]
    python bench/audit_write_bench.py --before /path/to/other/checkout     # before/after

For each backend (a fresh SQLite file in WAL mode with synchronous=FULL, as
the gateway opens it; PostgreSQL when one answers at 127.0.0.1:5432, in a
throwaway schema) and each batch size, prints the CPU time of this process
(user + system, so SQLite's own work and its fsync calls count, the
PostgreSQL server's work does not) per record of:

- ``log.write``: ``AuditLog.write(records, [])``, one call per batch;
- ``writer``: the writer thread committing a batch of that many waiting
  records (the queue is filled, then one step of the thread's loop runs here);
- ``writer+outcomes``: the same with each record's two delivery outcomes in
  the batch.

Records have two recipients. With ``--before``, that checkout's
``mailgw/audit/log.py`` and ``writer.py`` run too, alternately with this
checkout's, each on a database of its own, and the ratio is printed.

CPU time, not wall-clock, since the machine may be shared; and the least of
``--rounds`` runs, since other processes only ever add to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import itertools
import pathlib
import sys
import tempfile
import time
import types
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mailgw.audit import log as this_log  # noqa: E402
from mailgw.audit import writer as this_writer  # noqa: E402
from mailgw.audit.testing import pg_schema_url  # noqa: E402
from tests.made_records import like  # noqa: E402  (records the gateway's own code made)

CASES = ("log.write", "writer", "writer+outcomes")
_ids = itertools.count()


def _records(n: int) -> list[dict[str, Any]]:
    # two recipients and one rule hit each, as the records this bench used before (then hand-made)
    return [like("rejected", f"B{next(_ids):09d}") for _ in range(n)]


def _outcomes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    t = dt.datetime.now(dt.timezone.utc).isoformat()
    return [{"exchange_id": r["id"], "recipient": a, "time": t, "status": "sent", "reply": "mx: 250 ok",
             "attempt": 1} for r in records for a in r["rcpts"]]


def _load(name: str, path: pathlib.Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Subject:
    """One version of the write path (log and writer modules) on a database of its own."""

    def __init__(self, log_module: Any, writer_module: Any, url: str, journal: str):
        self.log = log_module.AuditLog.open(url, "bench")
        self.writer = writer_module.AuditWriter(url, "bench", journal)
        self.writer._connect()  # opens its own AuditLog, as the thread does at start
        self.job = writer_module._Job
        self.loop = asyncio.new_event_loop()

    def case(self, name: str, size: int) -> tuple[Callable[[Any], None], Callable[[], Any]]:
        """The step to time and the maker of its input (built before the clock starts)."""
        if name == "log.write":
            return (lambda batch: self.log.write(batch, [])), (lambda: _records(size))

        def make() -> list[Any]:
            # The writer wakes its callers on their event loop; the previous step's wake-ups run here,
            # before the clock starts, as the gateway's loop runs them outside the writer thread.
            self.loop.run_until_complete(asyncio.sleep(0))
            recs = _records(size)
            jobs = [self.job("record", r, self.loop.create_future()) for r in recs]
            if name == "writer+outcomes":
                jobs += [self.job("delivery", e, self.loop.create_future()) for e in _outcomes(recs)]
            return jobs

        def step(jobs: list[Any]) -> None:
            for j in jobs:  # as the event loop queues them
                self.writer._jobs.put(j)
            self.writer._step()

        return step, make

    def close(self) -> None:
        self.writer.close()
        self.log.close()
        self.loop.close()


def _cpu(step: Callable[[Any], None], make: Callable[[], Any], calls: int, size: int) -> float:
    """Microseconds of process CPU per record."""
    inputs = [make() for _ in range(calls + 1)]
    step(inputs[0])  # warm-up
    t0 = time.process_time()
    for work in inputs[1:]:
        step(work)
    return (time.process_time() - t0) / (calls * size) * 1e6


def bench(label: str, urls: list[str], versions: list[tuple[Any, Any]], sizes: list[int], n: int,
          rounds: int) -> None:
    journals = tempfile.TemporaryDirectory(prefix="audit-write-bench-")
    subjects = [Subject(log_module, writer_module, url, f"{journals.name}/{i}")
                for i, ((log_module, writer_module), url) in enumerate(zip(versions, urls))]
    try:
        for size in sizes:
            calls = max(5, n // size)
            best: dict[tuple[str, int], float] = {}
            for _ in range(rounds):
                for name in CASES:
                    for i, s in enumerate(subjects):  # alternately, so both see the same load
                        step, make = s.case(name, size)
                        best[name, i] = min(best.get((name, i), float("inf")), _cpu(step, make, calls, size))
            for name in CASES:
                figures = "".join(f"{best[name, i]:>9.0f}" for i in range(len(subjects)))
                ratio = f"{best[name, 0] / best[name, 1]:>7.1f}x" if len(subjects) == 2 else ""
                print(f"{label:<11}{size:>6}  {name:<16}{figures}{ratio}", flush=True)
    finally:
        for s in subjects:
            s.close()
        journals.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="records per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--rounds", type=int, default=4, help="measurements per figure; the least is printed")
    ap.add_argument("--before", type=pathlib.Path, help="another checkout whose write path to compare with")
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    versions: list[tuple[Any, Any]] = [(this_log, this_writer)]
    if args.before:
        audit = args.before / "mailgw" / "audit"
        before_log = _load("before_audit_log", audit / "log.py")
        before_writer = _load("before_audit_writer", audit / "writer.py")
        before_writer.AuditLog = before_log.AuditLog  # type: ignore[attr-defined]
        versions.insert(0, (before_log, before_writer))
    heads = ["before", "after", "ratio"] if args.before else ["µs"]
    print(f"µs of CPU per record, least of {args.rounds} rounds")
    print(f"{'backend':<11}{'batch':>6}  {'':<16}" + "".join(f"{h:>9}" for h in heads[:len(versions)])
          + (f"{heads[2]:>8}" if args.before else ""))
    with tempfile.TemporaryDirectory(prefix="audit-write-bench-") as tmp:
        bench("SQLite", [f"sqlite:///{tmp}/log{i}.db" for i in range(len(versions))], versions, args.batches,
              args.n, args.rounds)
    if not args.no_pg:
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(pg_schema_url()) for _ in versions]
            if None in urls:
                print("PostgreSQL not reachable; skipped")
            else:
                bench("PostgreSQL", urls, versions, args.batches, args.n, args.rounds)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
