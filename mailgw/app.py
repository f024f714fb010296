"""Wiring and lifecycle: load everything, start listeners and delivery, reload, drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import Any, Callable

from mailgw import metrics, policy, sdnotify, warmup
from mailgw import status as published
from mailgw.audit.writer import JOURNAL, AuditWriter
from mailgw.balance import Balancer, Listening
from mailgw.config import resolver as dnsanswers
from mailgw.config import settings
from mailgw.config.settings import MTA_ROLES
from mailgw.config.yamlfile import ConfigError, Problem
from mailgw.delivery.worker import Deliverer
from mailgw.directory import model as directory
from mailgw.message.model import Context
from mailgw.milter.policy import PolicyListener
from mailgw.milter.server import MilterListener
from mailgw.queue.spool import Spool
from mailgw.senderauth import arc
from mailgw.smtp import credentials, tls
from mailgw.smtp.edge import Edge, Handler, SmtpServer
from mailgw.stages import dkim_sign

log = logging.getLogger(__name__)


def load_context(path: str) -> tuple[Context, list[Problem]]:
    """Settings, directory, credentials, DNS and DKIM signing keys, all valid, or ConfigError naming every problem.

    Returns the warnings too, for ``mailgw check`` to print. Problems that do not
    stop a running gateway (an expired temporary exception) are left to
    ``directory.check``, which ``mailgw check`` runs as well.
    """
    s = settings.load(path)
    problems: list[Problem] = []
    parts: dict[str, Any] = {}
    for name, loader, target in (
        ("directory", directory.load, s.directory),
        ("credentials", credentials.load, s.credentials),
        ("resolver", dnsanswers.load, s.dns),
    ):
        if target is None:
            continue
        try:
            parts[name] = loader(target)
        except ConfigError as e:
            problems.extend(e.problems)
    try:
        parts["signing_keys"], key_warnings = dkim_sign.load_keys(s, parts.get("directory"))
        problems.extend(key_warnings)
        parts["arc_key"] = arc.load_seal_key(s, parts["signing_keys"])
    except ConfigError as e:
        problems.extend(e.problems)
    if "directory" in parts:
        try:
            parts["policies"] = policy.load(s.policies, parts["directory"])
            problems.extend(parts["policies"].warnings)
        except ConfigError as e:
            problems.extend(e.problems)
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    return Context(
        settings=s, directory=parts["directory"], credentials=parts.get("credentials"), resolver=parts.get("resolver"),
        policies=parts["policies"],
        signing_keys=parts["signing_keys"], arc_key=parts.get("arc_key"),
    ), problems


class Gateway:
    """One running gateway: its listeners, its spool and its delivery worker.

    ``mode`` splits the work when the settings ask for several ``workers``
    (mailgw.workers): ``receive`` runs the listeners only (on ports shared with
    the other workers) and reports each queued id to ``on_queued``; ``deliver``
    runs the spool recovery and delivery only. ``all`` is one process doing both.
    """

    def __init__(self, settings_path: str, *, mode: str = "all", on_queued: Callable[[str, bool], None] | None = None):
        self.settings_path = settings_path
        self.mode = mode
        self._ctx, warnings = load_context(settings_path)
        for w in warnings:
            log.warning("%s", w)
        s = self._ctx.settings
        self.spool = Spool(s.spool)
        # The exchange log: every decision before its reply, every delivery outcome (docs/auditors.md).
        # Each process of a node (mailgw.workers) has its own writer; the log serialises them.
        # The serving processes leave the copies of SQLite's write-ahead log to the supervisor (AuditLog._checkpoint).
        self.audit = AuditWriter(s.database, s.node, os.path.join(s.spool, JOURNAL), timeout=s.audit.timeout,
                                 retry=s.audit.retry, checkpoints=mode != "receive")
        self.deliverer = Deliverer(self.spool, self.context, on_event=self.audit.on_delivery, recorder=self.audit.record)
        self.edge = Edge(self.context, self.spool, on_queued=on_queued or self.deliverer.notify, recorder=self.audit.record,
                         spooled_recorder=self.audit.record_spooled, on_event=self.audit.on_delivery)
        self.servers: dict[str, asyncio.base_events.Server | Listening] = {}
        self.balancer: Balancer | None = None  # a worker of several: new sessions spread evenly (mailgw.balance)
        self.mta_listeners: list[MilterListener | PolicyListener] = []  # milter and policy listeners (mailgw.milter)
        self.addresses: dict[str, tuple[str, int]] = {}  # listener name -> bound address
        self._delivery: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # systemd's readiness protocol: set for the process that speaks for the service (mailgw.sdnotify)
        self.notifier: sdnotify.Notifier | None = None
        self.started = published._now()
        self.state = "starting"
        self.reload_outcome: dict[str, Any] | None = None
        self.workers = 1
        self.metrics_address: str | None = None
        self.metrics: metrics.Server | None = None
        self.on_ready: Callable[[], None] | None = None  # a worker tells its supervisor it listens
        self.freeze_gc = False  # `mailgw serve`: start-up's objects leave the garbage collector's view
        self._refreeze: asyncio.TimerHandle | None = None

    def context(self) -> Context:
        return self._ctx

    async def start(self) -> None:
        s = self._ctx.settings
        loop = asyncio.get_running_loop()
        if self.mode != "receive":  # one process recovers, before any worker writes
            waiting = await asyncio.to_thread(self.spool.recover)
            log.info("mailgw starting: %s", s.effective())
            log.info("spool %s: %d messages waiting", s.spool, waiting)
            log.info("policies version %s: %d rules from %d files; directory version %s",
                     self._ctx.policies.version, len(self._ctx.policies.rules), len(self._ctx.policies.files),
                     self._ctx.directory.version)
            # Before the listeners open: a crash between a spool write and its log commit leaves a
            # message that will be delivered; its record is logged now (idempotent).
            await asyncio.to_thread(self.audit.start, (e.meta.get("record") or {} for e in self.spool.entries()))
        else:
            await asyncio.to_thread(self.audit.start)  # a worker: the supervisor logged the spooled records
        if self.mode != "deliver":
            # What the first messages would otherwise wait for: imports on first use, the PDF readers.
            spent = await asyncio.to_thread(warmup.warm_up, self._ctx)
            log.debug("warmed up in %.0f ms", spent * 1000)
        if self.freeze_gc:
            # What start-up made (modules, settings, directory, policies: ~125,000 objects) lives as
            # long as the process: out of the collector's way, a full collection no longer walks it.
            gc.collect()
            gc.freeze()
        if self.mode != "deliver":
            await self._listen()
        if self.mode != "receive":
            if s.metrics_listen is not None:
                host, port = s.metrics_listen
                self.metrics = metrics.Server(host, port, s.spool, self._metrics_state)
                self.metrics_address = self.metrics.address
                log.info("metrics on http://%s/metrics", self.metrics_address)
            self._delivery = loop.create_task(self.deliverer.run())
            self._watch = loop.create_task(self._watchdog())
        if self.mode == "all":
            self.ready()
        elif self.mode == "deliver":
            self.publish()  # "starting" until every worker listens (mailgw.workers)
        elif self.on_ready is not None:
            self.on_ready()

    def ready(self) -> None:
        """Migrations done, every port bound: say so to systemd and in the status file."""
        self.state = "running"
        self.publish()
        if self.notifier is not None:
            self.notifier.ready(self.status_line())

    def publish(self) -> None:
        """Replace SPOOL/status.json (mailgw.status) with what is in force now; never fatal."""
        if self.mode == "receive":
            return
        ctx = self._ctx
        data = {
            "pid": os.getpid(), "node": ctx.settings.node, "hostname": ctx.settings.hostname, "state": self.state,
            "started": self.started, "workers": self.workers,
            "policies": {"version": ctx.policies.version, "rules": len(ctx.policies.rules),
                         "files": len(ctx.policies.files)},
            "directory": {"version": ctx.directory.version},
            "reload": self.reload_outcome,
            "exchange_log": "database" if self.audit.healthy else "journal",
            "listeners": {name: host if not port and host.startswith("/") else f"{host}:{port}"
                          for name, (host, port) in self.addresses.items()}
            or {l.name: l.path or f"{l.host}:{l.port}" for l in ctx.settings.listeners},
            "metrics": self.metrics_address,
        }
        try:
            published.write(ctx.settings.spool, data)
        except OSError as e:
            log.warning("status file %s not written: %s", published.path(ctx.settings.spool), e)

    def _metrics_state(self) -> dict[str, Any]:  # called from the metrics thread: reads only
        ctx = self._ctx
        return {"database": self.audit.healthy, "policies": ctx.policies.version, "directory": ctx.directory.version}

    def status_line(self) -> str:
        ctx = self._ctx
        return (f"policies {ctx.policies.version}, directory {ctx.directory.version}; exchange log "
                f"{'in its database' if self.audit.healthy else 'in the local journal'}")

    def healthy(self) -> bool:
        """The health check systemd's watchdog relies on: delivery runs, every listener serves."""
        if self._delivery is not None and self._delivery.done():
            return False
        return all(server.is_serving() for server in self.servers.values())

    async def _watchdog(self) -> None:
        """WATCHDOG=1 while healthy; the status file and STATUS= follow the exchange log's health."""
        interval = 5.0
        if self.notifier is not None and self.notifier.watchdog_interval:
            interval = min(interval, self.notifier.watchdog_interval / 2)
        last = self.audit.healthy
        while True:
            await asyncio.sleep(interval)
            if self.notifier is not None and self.notifier.watchdog_interval and self.healthy():
                self.notifier.watchdog()
            if self.audit.healthy != last and self.state == "running":
                last = self.audit.healthy
                self.publish()
                if self.notifier is not None:
                    self.notifier.status(self.status_line())

    async def _listen(self) -> None:
        s = self._ctx.settings
        loop = asyncio.get_running_loop()
        for listener in s.listeners:
            if listener.role in MTA_ROLES:
                mta = (MilterListener if listener.role == "milter" else PolicyListener)(self.edge, listener)
                self.addresses[listener.name] = await mta.start(reuse_port=self.mode == "receive")
                assert mta.server is not None
                self.servers[listener.name] = mta.server
                self.mta_listeners.append(mta)
                where = listener.path or "%s:%d" % self.addresses[listener.name]
                log.info("listener %s (%s) on %s", listener.name, listener.role, where)
                continue
            context = tls.server_context(listener.tls, s.hostname) if listener.tls else None

            def factory(l: Any = listener, c: Any = context) -> SmtpServer:
                return SmtpServer(Handler(self.edge, l), self.edge, l, c)

            server: asyncio.base_events.Server | Listening
            if self.balancer is not None:
                server = Listening(listener.name, listener.host, listener.port, self.balancer)
                self.balancer.listener(listener.name, lambda conn, f=factory: loop.connect_accepted_socket(f, conn),
                                       repr(listener))
                server.start()
            else:
                server = await loop.create_server(
                    factory, listener.host, listener.port, reuse_address=True, reuse_port=self.mode == "receive"
                )
            self.servers[listener.name] = server
            sock = server.sockets[0].getsockname()
            self.addresses[listener.name] = (sock[0], sock[1])
            log.info("listener %s (%s) on %s:%d%s", listener.name, listener.role, sock[0], sock[1], " with STARTTLS" if context else "")
        if self.balancer is not None:
            edge = self.edge
            self.balancer.sessions = lambda: len(edge.sessions)
            edge.sessions_changed = self.balancer.refresh
            self.balancer.start()

    def reload(self) -> bool:
        """Load the files again; keep the running set if anything is wrong (SIGHUP).

        The outcome is published (status file, systemd's READY=1 after RELOADING=1), for
        ``mailgw reload`` to turn a failed reload into a failed ``systemctl reload``.
        """
        if self.notifier is not None:
            self.notifier.reloading()
        error: str | None = None
        try:
            ok = self._reload()
        except ConfigError as e:
            ok = False
            error = "; ".join(str(p) for p in e.problems[:5]) + (f" (and {len(e.problems) - 5} more)" if len(e.problems) > 5 else "")
        count = (self.reload_outcome or {}).get("count", 0) + 1
        self.reload_outcome = {"count": count, "ok": ok, "time": published._now(), "error": error}
        self.publish()
        if self.notifier is not None:
            self.notifier.reloaded(self.status_line() if ok else f"reload FAILED, previous configuration kept: {error}")
        return ok

    def _reload(self) -> bool:
        try:
            ctx, warnings = load_context(self.settings_path)
        except ConfigError as e:
            log.error("reload failed; keeping the running configuration:\n%s", e)
            raise
        old = self._ctx.settings
        if ctx.settings.listeners != old.listeners or ctx.settings.spool != old.spool:
            log.warning("reload: listener and spool changes take effect only after a restart")
        if (ctx.settings.database, ctx.settings.node, ctx.settings.audit) != (old.database, old.node, old.audit):
            log.warning("reload: database, node and audit changes take effect only after a restart")
        for w in warnings:
            log.warning("%s", w)
        if self.freeze_gc:
            # The context replaced below may be freed: the collector sees everything again, and what is
            # left once the messages under the old context are through is frozen again.
            gc.unfreeze()
            if self._refreeze is not None:
                self._refreeze.cancel()
            self._refreeze = asyncio.get_running_loop().call_later(REFREEZE_AFTER, _refreeze)
        self._ctx = ctx
        log.info("reloaded: %s", ctx.settings.effective())
        log.info("policies version %s: %d rules from %d files; directory version %s",
                 ctx.policies.version, len(ctx.policies.rules), len(ctx.policies.files), ctx.directory.version)
        return True

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        if self.mode == "all":
            self.notifier = sdnotify.Notifier()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        await self.start()
        await self._stop.wait()
        await self.drain()

    async def drain(self) -> None:
        """Stop accepting, let open transactions finish (bounded), finish running deliveries."""
        log.info("draining: no new connections")
        if self.notifier is not None:
            self.notifier.stopping()
        self.state = "stopping"
        self.publish()
        if self.balancer is not None:
            self.balancer.stop()
        for server in self.servers.values():
            server.close()
        deadline = loop_time() + self._ctx.settings.limits.drain_timeout
        while loop_time() < deadline and any(_in_transaction(s) for s in self.edge.sessions):
            await asyncio.sleep(0.05)
        for session in list(self.edge.sessions):
            await session.shutdown()
        if self.mta_listeners and self.edge.accepting:  # an MTA waiting for a verdict gets it
            await asyncio.wait(list(self.edge.accepting), timeout=max(0.1, deadline - loop_time()))
            await asyncio.sleep(0)  # the sessions write their answers
        for mta in self.mta_listeners:  # then an MTA's connections close: an unfinished transaction is the MTA's to retry
            mta.close()
        for server in self.servers.values():
            await server.wait_closed()
        if self.edge.accepting:  # messages whose client left before the reply: spooled and recorded all the same
            await asyncio.gather(*self.edge.accepting, return_exceptions=True)
        self.deliverer.stop()
        if self._delivery is not None:
            await self._delivery
        if self._watch is not None:
            self._watch.cancel()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        await asyncio.to_thread(self.audit.close)
        self.edge.auth_penalty.close()
        self.state = "stopped"
        self.publish()
        log.info("stopped")


REFREEZE_AFTER = 60.0  # seconds after a reload: longer than a message stays between DATA and its reply


def _refreeze() -> None:
    gc.collect()
    gc.freeze()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def _in_transaction(session: SmtpServer) -> bool:
    env = session.envelope
    return env is not None and bool(env.mail_from)
