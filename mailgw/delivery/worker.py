"""Delivery workers: take due messages from the spool, send them, retry, bounce once.

Per recipient: a success settles it; a permanent failure (5xx) settles it and
puts it in a DSN; a temporary failure leaves it pending, retried after
``retry_min`` doubling up to ``retry_max`` (Postfix's backoff) until the
queue ``lifetime`` is over, when it fails too. A message is removed from the
spool only when every recipient is settled and its DSN, if any, is itself
safely spooled. The DSN is announced in the delivery state before it is
spooled, under an id derived from the original's, so a crash at any point
gives neither a lost nor a second DSN.
"""

from __future__ import annotations

import asyncio
import collections
import email.header
import functools
import heapq
import inspect
import logging
import re
import time
from typing import Any, Awaitable, Callable

from mailgw import logsetup, metrics
from mailgw.audit import record
from mailgw.config.settings import Route
from mailgw.delivery import dsn, transports
from mailgw.message.model import Context, Envelope, Message, Verdict
from mailgw.queue.spool import PENDING, QUEUED, Spool, SpoolError, initial_state

log = logging.getLogger(__name__)

SENT, FAILED = "sent", "failed"
URGENT = ("hoa_toc", "thuong_khan")
"""Urgency marks (CONTRACT section 4) whose messages go before the others and retry on ``urgent_retry_*``."""
ADMIN_BOUNCE_REPLY = "550 5.0.0 returned to the sender by the gateway's administrator"


class Deliverer:
    """Schedules and runs delivery attempts for the messages in one spool."""

    def __init__(
        self,
        spool: Spool,
        context: Callable[[], Context],
        *,
        on_event: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
        recorder: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ):
        """Every attempt's outcome per recipient goes to the mail log, then to ``on_event`` (awaited when it
        returns an awaitable, before the delivery state is saved); ``recorder`` keeps the decision record of
        each DSN made."""
        self.spool = spool
        self.context = context
        self.on_event = on_event
        self.recorder = recorder
        self._due: dict[str, float] = {}  # queued message id -> when to try next
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_scan = 0.0
        self._urgent: dict[str, bool] = {}  # queued message id -> HỎA TỐC or THƯỢNG KHẨN, once looked up
        # (when, id) of every _due entry, urgent messages in the first heap: the next due is found in
        # O(log n), not by sorting the whole queue on every wake-up (a backlog of 100,000 after an
        # outage). An entry whose time is no longer the one in _due is stale and skipped.
        self._heaps: tuple[list[tuple[float, str]], list[tuple[float, str]]] = ([], [])

    def notify(self, msg_id: str, urgent: bool | None = None) -> None:
        """A message was just spooled: try it now. ``urgent``: its urgency, when the caller knows it."""
        self._set_due(msg_id, 0.0, urgent)
        self._wake.set()

    def _set_due(self, msg_id: str, when: float, urgent: bool | None = None) -> None:
        if urgent is None:
            urgent = self._is_urgent(msg_id)  # read once from the spooled record, then remembered
        self._urgent[msg_id] = urgent
        self._due[msg_id] = when
        heap = self._heaps[0 if urgent else 1]
        heapq.heappush(heap, (when, msg_id))
        if len(heap) > 2 * len(self._due) + 1024:  # mostly stale: rebuilt from _due
            self._heaps = tuple(  # type: ignore[assignment]
                [(t, m) for m, t in self._due.items() if self._urgent.get(m, False) is want] for want in (True, False)
            )
            for h in self._heaps:
                heapq.heapify(h)

    def _pop_due(self, heap: list[tuple[float, str]], now: float) -> str | None:
        """The id of the heap's earliest message due by ``now`` and not running, taken off the heap; else None."""
        while heap:
            when, msg_id = heap[0]
            if self._due.get(msg_id) != when or msg_id in self._active:
                heapq.heappop(heap)  # stale, or running (_finished puts it back while it is queued)
                continue
            if when > now:
                return None
            heapq.heappop(heap)
            return msg_id
        return None

    def _next_due(self) -> float | None:
        """When the earliest message not running is due (stale entries on top are dropped)."""
        times = []
        for heap in self._heaps:
            while heap and (self._due.get(heap[0][1]) != heap[0][0] or heap[0][1] in self._active):
                heapq.heappop(heap)
            if heap:
                times.append(heap[0][0])
        return min(times) if times else None

    def stop(self) -> None:
        """Start no new attempt; ``run`` returns once the running ones finish."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._schedule()
            self._wake.clear()
            await self._sleep()
        if self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)
        await transports.connection_cache().close()  # QUIT the sessions kept for reuse

    async def run_until_empty(self, timeout: float = 30.0) -> None:
        """Deliver until no queued message is due or running (tests, `queue flush` in the foreground)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._last_scan = 0.0
            self._schedule()
            if not self._active:
                now = time.time()
                if not any(t <= now for t in self._due.values()):
                    return
            await asyncio.sleep(0.01)
        raise TimeoutError("queue not empty in time")

    # --- scheduling ------------------------------------------------------

    def _schedule(self) -> None:
        settings = self.context().settings
        now = time.time()
        flush = self.spool.take_flush_request()
        if flush or now - self._last_scan >= settings.queue.scan_interval:
            self._rescan(reload_all=flush)
            self._last_scan = now
        free = settings.queue.concurrency - len(self._active)
        # Urgent messages take the free delivery slots first, then the longest waiting.
        while free > 0:
            msg_id = self._pop_due(self._heaps[0], now) or self._pop_due(self._heaps[1], now)
            if msg_id is None:
                break
            task = asyncio.get_running_loop().create_task(self._attempt(msg_id))
            self._active[msg_id] = task
            task.add_done_callback(functools.partial(self._finished, msg_id))
            free -= 1

    def _rescan(self, *, reload_all: bool) -> None:
        """Pick up messages spooled or released by someone else; forget held or deleted ones."""
        present = set(self.spool.ids(QUEUED))
        for msg_id in list(self._due):
            if msg_id not in present and msg_id not in self._active:
                del self._due[msg_id]
        for msg_id in [m for m in self._urgent if m not in present and m not in self._active]:
            del self._urgent[msg_id]  # delivered, held or deleted
        for msg_id in present:
            if reload_all or msg_id not in self._due:
                self._set_due(msg_id, float(self.spool.load_state(msg_id).get("next_try", 0.0)), self._urgent.get(msg_id))

    def _is_urgent(self, msg_id: str) -> bool:
        """From the urgency fact in the message's spooled record, read once per message."""
        urgent = self._urgent.get(msg_id)
        if urgent is None:
            try:
                entry, _ = self.spool.read(msg_id, with_data=False)
                urgent = _urgency(entry.meta) in URGENT
            except Exception:  # noqa: BLE001 - gone, unreadable, or a record of another shape
                urgent = False  # the attempt itself deals with a message gone or unreadable
            self._urgent[msg_id] = urgent
        return urgent

    def _finished(self, msg_id: str, task: asyncio.Task[None]) -> None:
        self._active.pop(msg_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery of %s failed unexpectedly", msg_id, exc_info=task.exception())
            retry = self.context().settings.queue.retry_min
            self._set_due(msg_id, time.time() + retry, self._urgent.get(msg_id))
        elif msg_id in self._due:  # still queued: back on its heap (taken off while it ran)
            self._set_due(msg_id, self._due[msg_id], self._urgent.get(msg_id))
        self._wake.set()

    async def _sleep(self) -> None:
        settings = self.context().settings
        now = time.time()
        waits = [settings.queue.scan_interval]
        next_due = self._next_due()
        if next_due is not None and len(self._active) < settings.queue.concurrency:
            waits.append(max(0.0, next_due - now))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(waits)))
        except asyncio.TimeoutError:
            pass

    # --- one attempt -----------------------------------------------------

    async def _attempt(self, msg_id: str) -> None:
        try:
            # Small messages are read on the loop: cheaper than a hand-off to a thread (Spool.read_if_small).
            small = self.spool.read_if_small(msg_id)
            entry, data = small if small is not None else await asyncio.to_thread(self.spool.read, msg_id)
        except FileNotFoundError:
            self._due.pop(msg_id, None)  # held, deleted or delivered meanwhile
            return
        except SpoolError as e:
            log.error("%s; moved to corrupt/", e)
            self.spool.quarantine_corrupt(msg_id)
            self._due.pop(msg_id, None)
            return
        if entry.where != QUEUED:
            self._due.pop(msg_id, None)
            return
        ctx = self.context()
        env = entry.meta["envelope"]
        urgent = _urgency(entry.meta) in URGENT
        self._urgent[msg_id] = urgent
        state = entry.state if "rcpts" in entry.state else {**initial_state(env), **entry.state}
        if state.get("dsn_pending"):
            await self._spool_dsn(msg_id, state)

        pending = [r for r, s in state["rcpts"].items() if s["status"] == PENDING]
        by_admin = self.spool.bounce_requested(msg_id)
        if by_admin:  # `mailgw queue bounce`: returned to the sender, never sent
            results = {r: transports.Result(ok=False, permanent=False, reply=ADMIN_BOUNCE_REPLY, remote="")
                       for r in pending}
        else:
            results = await self._send(ctx, env["mail_from"], pending, _with_warning(entry.meta, state, data))

        now = time.time()
        expired = by_admin or now >= env["received_at"] + ctx.settings.queue.lifetime
        state["attempts"] = state.get("attempts", 0) + 1
        failures: list[dsn.Failure] = []
        events: list[dict[str, Any]] = []
        for rcpt, result in results.items():
            st = state["rcpts"][rcpt]
            st["attempts"] += 1
            st["reply"], st["remote"] = result.reply, result.remote
            if result.ok:
                st["status"] = SENT
                outcome = "sent"
            elif result.permanent or expired:
                st["status"] = FAILED
                failures.append(dsn.Failure(rcpt, result.reply, result.remote, expired=not result.permanent,
                                            by_admin=by_admin))
                outcome = "bounced" if result.permanent else "expired"
            else:
                outcome = "deferred"
            events.append({
                "id": msg_id, "rcpt": rcpt, "time": now, "attempt": st["attempts"], "status": outcome,
                "reply": result.reply, "remote": result.remote,
                "record": entry.meta.get("record"),  # journaled with the outcome if the log cannot take it
            })
        # Reported before the state is saved: a crash in between repeats the attempt, never loses its outcome.
        await self._report(events, env)

        if failures and env["mail_from"]:  # never bounce a bounce (RFC 5321 6.1)
            state["dsns"] = state.get("dsns", 0) + 1
            state["dsn_pending"] = {
                "id": f"{msg_id}-D{state['dsns']}",
                "failures": [[f.rcpt, f.reply, f.remote, f.expired, f.by_admin] for f in failures],
            }
            await asyncio.to_thread(self.spool.save_state, msg_id, state)
            await self._spool_dsn(msg_id, state, original=data, sender=env["mail_from"], arrival=env["received_at"])

        if all(s["status"] != PENDING for s in state["rcpts"].values()):
            await asyncio.to_thread(self.spool.remove, msg_id)
            self._due.pop(msg_id, None)
            return
        q = ctx.settings.queue
        low, high = (q.urgent_retry_min, q.urgent_retry_max) if urgent else (q.retry_min, q.retry_max)
        delay = min(low * 2 ** (state["attempts"] - 1), high)
        # Try once more exactly when the lifetime ends, so the DSN is not late.
        state["next_try"] = min(now + delay, env["received_at"] + ctx.settings.queue.lifetime)
        await asyncio.to_thread(self.spool.save_state, msg_id, state)
        self._set_due(msg_id, state["next_try"], urgent)

    async def _report(self, events: list[dict[str, Any]], env: dict[str, Any]) -> None:
        """Hand every outcome of an attempt to ``on_event`` at once (the log commits them together)."""
        pending = []
        for event in events:
            _log_event(event, env)  # the mail log, for operators, whatever else hears the outcome
            if self.on_event is None:
                continue
            try:
                result = self.on_event(event)
            except Exception:
                log.exception("delivery id=%s rcpt=<%s>: outcome not recorded", event["id"], event["rcpt"])
                continue
            if inspect.isawaitable(result):
                pending.append((event, result))
        outcomes = await asyncio.gather(*(r for _, r in pending), return_exceptions=True)
        for (event, _), outcome in zip(pending, outcomes):
            if isinstance(outcome, BaseException):
                log.error("delivery id=%s rcpt=<%s>: outcome not recorded: %r", event["id"], event["rcpt"], outcome)

    async def _send(self, ctx: Context, mail_from: str, rcpts: list[str], data: bytes) -> dict[str, transports.Result]:
        """Group recipients by route (and by domain for MX) and send each group."""
        routes = ctx.settings.routes
        groups: dict[tuple[Route, str], list[str]] = collections.defaultdict(list)
        for rcpt in rcpts:
            route = routes["local"] if ctx.directory.is_local(rcpt) else routes["remote"]
            key = rcpt.rpartition("@")[2].lower() if route.kind == "mx" else ""
            groups[(route, key)].append(rcpt)
        results: dict[str, transports.Result] = {}
        outcomes = await asyncio.gather(
            *(
                transports.deliver(route, mail_from, group, data, hostname=ctx.settings.hostname,
                                   timeouts=ctx.settings.queue, resolver=ctx.resolver, mx_port=ctx.settings.dns.mx_port)
                for (route, _), group in groups.items()
            ),
            return_exceptions=True,
        )
        for ((route, _), group), outcome in zip(groups.items(), outcomes):
            if isinstance(outcome, BaseException):
                log.error("transport %s failed: %r", route, outcome, exc_info=outcome)
                outcome = {r: transports.temporary(f"internal error: {type(outcome).__name__}") for r in group}
            results.update(outcome)
        return results

    async def _spool_dsn(self, msg_id: str, state: dict[str, Any], *, original: bytes | None = None, sender: str = "", arrival: float = 0.0) -> None:
        pending = state["dsn_pending"]
        if original is None:  # resuming after a crash: read what we need again
            entry, stored = await asyncio.to_thread(self.spool.read, msg_id)
            original = stored
            sender, arrival = entry.meta["envelope"]["mail_from"], entry.meta["envelope"]["received_at"]
        ctx = self.context()
        # [rcpt, reply, remote, expired] or, since admin bounces, [..., by_admin]
        failures = [dsn.Failure(f[0], f[1], f[2], f[3], by_admin=bool(f[4:5] and f[4])) for f in pending["failures"]]
        data = dsn.build(hostname=ctx.settings.hostname, original_id=msg_id, original_sender=sender, arrival=arrival, failures=failures, original=original)
        env = Envelope(mail_from="", rcpts=[sender], listener="dsn", role="dsn", client_ip="")
        meta = {"envelope": env.to_json(), "record": _dsn_record(pending["id"], env, data, msg_id, ctx)}
        await self.spool.put(pending["id"], meta, data)
        if self.recorder is not None:
            try:
                await self.recorder(meta["record"])
            except Exception:  # still in the spool file: logged at the next start if it is still there
                log.exception("dsn id=%s: decision record not kept", pending["id"])
        state["dsn_pending"] = None
        await asyncio.to_thread(self.spool.save_state, msg_id, state)
        log.info("dsn id=%s for=%s to=<%s> rcpts=%d", pending["id"], msg_id, sender, len(failures))
        self.notify(pending["id"], urgent=False)


def _urgency(meta: dict[str, Any]) -> str:
    record_ = meta.get("record") or {}
    return str((record_.get("classification") or {}).get("urgency") or "none")


def _with_warning(meta: dict[str, Any], state: dict[str, Any], data: bytes) -> bytes:
    """A message released from quarantine goes out with a warning field on top, naming the rule that held it.

    The field is prepended above the gateway's DKIM signatures, which do not cover it.
    """
    released = state.get("released")
    decision = (meta.get("record") or {}).get("decision") or {}
    if not released or decision.get("decision") != "quarantine":
        return data
    return warning_field(str(decision.get("rule") or ""), str(released.get("by") or "")) + data


def warning_field(rule: str, by: str) -> bytes:
    """``X-Mailgw-Warning:``: Vietnamese (RFC 2047, so any client shows it), then English, folded."""
    vi = (f"Thư này đã bị cổng thư cách ly (quy tắc {rule}) và được quản trị viên cho chuyển tiếp; "
          "hãy thận trọng với liên kết và tệp đính kèm.")
    en = (f"This message was quarantined by the mail gateway (rule {rule}) and released by an administrator"
          f"{' (' + by + ')' if by else ''}; treat its links and attachments with care.")
    header = email.header.Header(vi, "utf-8", header_name="X-Mailgw-Warning")
    header.append(" / " + en, "us-ascii")
    return b"X-Mailgw-Warning: " + header.encode(linesep="\r\n").encode("ascii") + b"\r\n"


def _dsn_record(dsn_id: str, env: Envelope, data: bytes, original_id: str, ctx: Context) -> dict[str, Any]:
    """The exchange record of a DSN the gateway makes: an exchange of its own, pointing at the original."""
    message = Message(dsn_id, env, data, verdict=Verdict(rule="dsn", tags=["dsn"]))
    return record.build(message, ctx, "", dsn_for=original_id).to_json()


_DSN = re.compile(r"\b[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")  # "DATA: 451 4.3.0 ..." too


def _log_event(event: dict[str, Any], env: dict[str, Any] | None = None) -> None:
    """Postfix's delivery line: to, relay, delay since arrival, dsn (the enhanced status code), status (reply)."""
    env = env or {}
    metrics.DELIVERIES.labels(event["status"]).inc()
    reply = str(event["reply"] or "")
    m = _DSN.search(reply)
    dsn_code = m.group(1) if m else {"sent": "2.0.0", "deferred": "4.0.0"}.get(event["status"], "5.0.0")
    level = logging.WARNING if event["status"] in ("bounced", "expired") else logging.INFO
    logsetup.event(
        log, level, "delivery", id=event["id"], **{"from": env.get("mail_from", "")}, to=event["rcpt"],
        attempt=event["attempt"], relay=event["remote"] or "none",
        delay=round(event["time"] - float(env.get("received_at", event["time"])), 3), dsn=dsn_code,
        status=event["status"], reply=reply,
    )
