"""Prometheus metrics (prometheus-client), served when the settings say ``metrics: {listen: HOST:PORT}``.

Counted where they happen: sessions and refused commands (the edge), decisions
by rule and DKIM results (each exchange), delivery outcomes (the delivery
worker), the time of each pipeline stage, the spool write and the exchange-log
record (a histogram). Read at scrape time from the spool, so they are true
whoever changed it (an admin's ``queue hold`` too): messages per queue state
and the exchange log's journal backlog; and from the serving process: whether
the exchange log writes to its database, the policy and directory versions.

With ``workers: N`` the processes share nothing but the spool, so counters use
prometheus-client's multiprocess mode: every process (supervisor and workers)
writes its values to memory-mapped files under ``SPOOL/metrics/``
(``PROMETHEUS_MULTIPROC_DIR``, set by ``mailgw serve`` before the library
loads, emptied at each start), and the supervisor alone serves their sum. That keeps every counter
exact across processes without a second channel between them; serving from
each worker would give a scraper one worker's share per scrape (SO_REUSEPORT
does not apply to the metrics port, and only one process can bind it).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SESSIONS = Counter("mailgw_smtp_sessions", "SMTP connections accepted, by listener", ["listener"])
REFUSALS = Counter("mailgw_smtp_refusals", "Commands refused before DATA (connect, HELO, MAIL, RCPT), by stage",
                   ["listener", "stage"])
IN_FLOW_WAITS = Counter("mailgw_smtp_in_flow_waits", "MAIL commands that waited for a transaction to end "
                        "(limits.in_flow), by how the wait ended", ["outcome"])
DECISIONS = Counter("mailgw_decisions", "Exchanges decided, by decision and deciding rule", ["decision", "rule"])
DELIVERIES = Counter("mailgw_deliveries", "Delivery attempt outcomes per recipient (sent, deferred, bounced, expired)",
                     ["status"])
DKIM = Counter("mailgw_dkim_results", "DKIM per exchange: signed (ours), or the inbound verification status",
               ["result"])
STAGE_SECONDS = Histogram(
    "mailgw_stage_seconds", "Wall time of each pipeline stage, the spool write and the exchange-log record", ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_STAGES: dict[str, Any] = {}


def stage_seconds(stage: str) -> Any:
    """``STAGE_SECONDS.labels(stage)``, looked up once per stage name (15 lookups per message, under the library's lock)."""
    child = _STAGES.get(stage)
    if child is None:
        child = _STAGES[stage] = STAGE_SECONDS.labels(stage)
    return child


def worker_died(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # the library's, untyped


class _Spool(Collector):
    """Values read when scraped: queue states, journal backlog, the serving process's own state."""

    def __init__(self, spool: str, state: Callable[[], dict[str, Any]]):
        self.spool = spool
        self.state = state

    def collect(self) -> Iterable[Any]:
        from mailgw import status

        q = GaugeMetricFamily("mailgw_queue_messages", "Messages in the spool, by state", labels=["state"])
        for name, n in status.queue_counts(self.spool).items():
            q.add_metric([name], n)
        yield q
        j = status.journal_backlog(self.spool)
        yield GaugeMetricFamily("mailgw_journal_backlog", "Exchange-log entries waiting in the local journal",
                                value=j["waiting"])
        s = self.state()
        yield GaugeMetricFamily("mailgw_exchange_log_database_up",
                                "1 when the exchange log writes to its database, 0 when to the local journal",
                                value=1 if s.get("database") else 0)
        info = InfoMetricFamily("mailgw_config", "Policy and directory versions in force")
        info.add_metric([], {"policies": str(s.get("policies", "")), "directory": str(s.get("directory", ""))})
        yield info


class Server:
    """The /metrics endpoint of the serving process that delivers (the only one, or the supervisor)."""

    def __init__(self, host: str, port: int, spool: str, state: Callable[[], dict[str, Any]]):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # the library's, untyped
        else:
            registry = REGISTRY
        self._collector = _Spool(spool, state)
        registry.register(self._collector)
        self._registry = registry
        self._server, self._thread = start_http_server(port, host, registry=registry)
        bound = self._server.server_address
        self.address = f"{bound[0]!s}:{bound[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._registry.unregister(self._collector)
        if isinstance(self._thread, threading.Thread):
            self._thread.join(5)
