"""The SMTP edge: aiosmtpd sessions for the mx, relay and submission listeners.

Translates SMTP into our types and back, and nothing else: the decision is
the pipeline's, durability is the spool's. The order at DATA is the one
promise of the gateway: pipeline, then decision record, then (for accepted
and quarantined mail) the durable spool, and only then the 250.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.message
import logging
import re
import ssl
import time
from typing import Any, Awaitable, Callable

from aiosmtpd.smtp import SMTP, AuthResult, TLSSetupException
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from mailgw import logsetup, metrics, pipeline
from mailgw.attachments.sniff import sniff
from mailgw.audit import record
from mailgw.config.settings import Listener
from mailgw.delivery import dsn
from mailgw.delivery.worker import URGENT
from mailgw.message import addresses, replies
from mailgw.message.model import Context, Envelope, Message, Verdict, new_id
from mailgw.message.replies import SmtpReply
from mailgw.queue.spool import Spool
from mailgw.smtp import checks, datastream, wire
from mailgw.smtp.penalty import AuthPenalty

log = logging.getLogger(__name__)

# Refusals of these commands are logged as "reject" lines (AUTH failures have their own warning;
# every other command's errors are the client's syntax, seen with log_level DEBUG).
_REFUSALS_LOGGED = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", "BDAT"})

MAX_AUTH_FAILURES = 3  # per session, then 421: slows down password guessing

# The common shape of a MAIL FROM / RCPT TO argument: "<dot-atom@ldh.labels>", then
# nothing, or spaces and the parameters. For it, aiosmtpd's parse through the email
# package (a third of the CPU of MAIL and RCPT) gives exactly the address as written
# and the rest without its leading spaces (tests/test_receive_getaddr.py checks that
# against aiosmtpd on random input); everything else still goes the long way.
_SIMPLE_PATH = re.compile(rf"<({addresses.PLAIN_ADDRESS})>(?:[ \t]+(?=[!-'*-~])|\Z)")


def fast_getaddr(arg: str, local_part_limit: int) -> tuple[str | None, str | None] | None:
    """aiosmtpd's ``SMTP._getaddr`` for the common shape; None: take the full parse."""
    m = _SIMPLE_PATH.match(arg)
    if m is None:
        return None
    addr = m.group(1)
    if local_part_limit and len(addr.rpartition("@")[0]) > local_part_limit:
        return None, None
    return addr, arg[m.end():]


# A message of at most this size that nothing in the pipeline waits for is decided on the event
# loop's thread (decides_inline); 5 KB of text costs about 1.3 ms of CPU there.
INLINE_MAX = 32 * 1024

# A Content-Type field whose value is not text/plain or text/html (folded or not).
_NOT_PLAIN_TEXT = re.compile(rb"content-type[ \t]*:[ \t]*+(?:\r\n[ \t]++)*+(?!text/(?:plain|html)(?![-\w/+.]))")


def decides_inline(message: Message) -> bool:
    """Whether the pipeline may run on the event loop's thread instead of a worker thread.

    Only when nothing in it can wait, so the loop is never held by anything but
    the CPU the message costs anyway (which the interpreter lock makes every
    session of the process share, in a thread or not): not for the mx role (SPF,
    DKIM, DMARC and ARC ask DNS), not above ``INLINE_MAX`` bytes, and only for a
    single text/plain or text/html part with no Content-Disposition whose bytes,
    decoded, are text too (``_text_by_its_bytes``: no document for the PDF
    reader's processes or a signature check's thread). Anything else, and
    anything this cheap look at the raw bytes cannot tell, takes the worker
    thread, as every message did before.
    The hand-off saved is measured in the README (Performance): CPU per message
    and the latency of the reply to DATA at 1 and 20 sessions.
    """
    raw = message.raw
    if message.envelope.role == "mx" or len(raw) > INLINE_MAX:
        return False
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = raw[:end + 2].lower()
    if b"multipart" in head or b"content-disposition" in head or _NOT_PLAIN_TEXT.search(head) is not None:
        return False
    return _text_by_its_bytes(head, raw[end + 4:])


# A Content-Transfer-Encoding field's value (folded or not), as the header section has it.
_CTE_FIELD = re.compile(rb"content-transfer-encoding[ \t]*:[ \t]*+(?:\r\n[ \t]++)*+([^\r\n;(]*)")
_CTE_NOISE = re.compile(rb"[\s_-]+")
_TEXT_TYPES = ("text/plain", "text/html")


def _text_by_its_bytes(head: bytes, body: bytes) -> bool:
    """Whether the one part's bytes are text whichever way a reader decodes them, not only by its label.

    A part labelled text/plain may carry a PDF (base64, with a ``name`` or not): the attachment
    walker inspects what its bytes are (a signed PDF's signatures validated in a pyHanko thread
    the pipeline joins), and classification sends a named one to the PDF reader's processes.
    Decoded as the walker does (loose spellings of the encoding read as the one they name) and as
    the email package does (classification's fallback); any other encoding is not decided here.
    """
    found = _CTE_FIELD.findall(head)
    if len(found) > 1:
        return False
    cte = _CTE_NOISE.sub(b"", found[0]) if found else b""
    candidates: list[object] = [body]
    if cte == b"base64" or cte == b"quotedprintable":
        lenient = email.message.Message()
        lenient["Content-Transfer-Encoding"] = "base64" if cte == b"base64" else "quoted-printable"
        lenient.set_payload(body.decode("ascii", "surrogateescape"))
        candidates.append(lenient.get_payload(decode=True))
        try:
            candidates.append(binascii.a2b_base64(body) if cte == b"base64" else binascii.a2b_qp(body))
        except (ValueError, binascii.Error):
            pass  # readers fall back to the lenient decoder's bytes
    elif cte not in (b"", b"7bit", b"8bit", b"binary"):
        return False  # uuencode and the rest: not for this cheap look
    return all(isinstance(data, bytes) and (not data or sniff(data).mime in _TEXT_TYPES) for data in candidates)


class Admission:
    """How many sessions of this process are in a transaction, and which MAIL commands wait for one to end.

    Postfix's ``in_flow_delay`` in spirit: when messages arrive faster than the
    process decides them, a new transaction waits at MAIL (before the client has
    sent anything) instead of every message waiting longer after its end of DATA,
    where the client holds a message it has sent and not yet seen taken. It only
    holds a MAIL that comes while at least ``limit`` sessions are in a transaction
    *and* a message is being decided, so sessions that are only slow to send (a
    long upload) hold nobody back; a waiter goes on when a transaction ends (one
    per end, in the order they came; a decision ending lets nobody in, which
    would let every waiter in at once whenever the process is between two
    messages) or after ``delay`` seconds, over the limit, as Postfix does.
    Off by default (``limits.in_flow: 0``): the README (Performance) has what it
    trades. At 20 sessions on two cores, ``in_flow: 4`` halves the p99 of
    end-of-DATA to 250 and leaves the whole transaction's as it was, but costs
    7-20 % of the throughput: fewer messages decided together share fewer
    exchange-log commits and wake-ups, and every thread's CPU per message grows.
    """

    def __init__(self, deciding: Callable[[], bool]):
        self.deciding = deciding
        self.limit = 0  # limits.in_flow, as the last MAIL found it (a reload may change it)
        self.active = 0  # sessions between an admitted MAIL and the end of their transaction
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()

    def _full(self) -> bool:
        return bool(self.limit) and self.active >= self.limit and self.deciding()

    async def enter(self, limit: int, delay: float) -> None:
        """Wait (at most ``delay`` seconds) while the process is full, then count this transaction in."""
        self.limit = limit
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        if not limit or (not self._waiting and not self._full()):
            self.active += 1
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()  # True: given a place by leave(); False: waited long enough
        self._waiting.append(fut)
        timer = loop.call_later(delay, self._expire, fut)
        try:
            placed = await fut  # not wait_for: in 3.11 it may swallow the session's cancellation
        except BaseException:  # the session went away (or is cancelled) while it waited
            timer.cancel()
            if fut.done() and not fut.cancelled() and fut.result():
                self.leave()  # the place it was just given goes to the next
            else:
                self._forget(fut)
            raise
        timer.cancel()
        if placed:
            metrics.IN_FLOW_WAITS.labels("admitted").inc()  # counted in by leave()
            return
        metrics.IN_FLOW_WAITS.labels("timeout").inc()
        self.active += 1  # over the limit: a MAIL waits no longer than that

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            fut.set_result(False)
        self._forget(fut)

    def _forget(self, fut: asyncio.Future[bool]) -> None:
        try:
            self._waiting.remove(fut)
        except ValueError:
            pass  # leave() took it already

    def leave(self) -> None:
        """A transaction ended (its reply to DATA, RSET, a new EHLO, the connection gone): its place goes to the first waiter."""
        self.active -= 1
        while self._waiting and not self._full():
            fut = self._waiting.popleft()
            if not fut.done():  # a waiter that timed out or whose client left is skipped
                self.active += 1
                fut.set_result(True)
                return


def _nothing() -> None:
    return None


class Edge:
    """What every listener shares: the context in force, the spool, the recorder."""

    def __init__(
        self,
        context: Callable[[], Context],
        spool: Spool,
        *,
        on_queued: Callable[[str, bool], None] = lambda msg_id, urgent: None,
        recorder: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        spooled_recorder: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        on_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ):
        self.context = context
        self.spool = spool
        self.on_queued = on_queued
        self.recorder = recorder or _log_record
        # For the record of a message just spooled (its file holds the record): AuditWriter.record_spooled.
        self.spooled_recorder = spooled_recorder or self.recorder
        self.on_event = on_event  # delivery-history events of the milter's path (mailgw.milter.server)
        self.connections: collections.Counter[tuple[str, str]] = collections.Counter()
        self.auth_penalty = AuthPenalty(base=context().settings.limits.auth_penalty)
        self.sessions: set[SmtpServer] = set()
        self.sessions_changed: Callable[[], None] = _nothing  # a session began or ended (mailgw.balance)
        self.accepting: set[asyncio.Task[str]] = set()  # messages between end of data and reply (drain waits for them)
        self.admission = Admission(lambda: bool(self.accepting))

    async def accept(self, message: Message, ctx: Context) -> str:
        """Run one message through the pipeline and return the reply for DATA.

        Every outcome is recorded before its reply is returned; a record that
        cannot be kept anywhere turns the reply into a 451 (see mailgw.audit.writer).
        The work goes on to its end when the client hangs up meanwhile (aiosmtpd
        then cancels the session): a message spooled by then is recorded and
        delivered like any other. The client saw no 250 and may send it again,
        a duplicate RFC 5321 6.1 allows; a delivered message without a record would not be.
        """
        task = asyncio.get_running_loop().create_task(self._accept(message, ctx))
        self.accepting.add(task)
        task.add_done_callback(self.accepting.discard)
        return await asyncio.shield(task)

    async def _accept(self, message: Message, ctx: Context) -> str:
        reply = await self._decide(message, ctx)
        _log_exchange(message, reply)
        return reply

    async def judge(self, message: Message, ctx: Context, *, mta_id: str | None = None) -> str:
        """The milter's path (mailgw.milter): the same pipeline, record and reply, and nothing spooled.

        The MTA keeps the message: its bytes stay in the MTA's queue, and the
        changes the pipeline made (``message.prepend``, removed fields) go back
        to it as header actions. Every outcome is recorded before its reply is
        returned, as on the edge; a record that cannot be kept turns the reply
        into a 451, so the MTA never goes on with a message the log lacks.
        """
        task = asyncio.get_running_loop().create_task(self._judge(message, ctx, mta_id))
        self.accepting.add(task)
        task.add_done_callback(self.accepting.discard)
        return await asyncio.shield(task)

    async def _judge(self, message: Message, ctx: Context, mta_id: str | None) -> str:
        try:
            verdict = await asyncio.to_thread(self._run_pipeline, message, ctx)
        except Exception:
            log.exception("exchange %s: pipeline failed", message.id)
            reply = await self._refuse(message, ctx, replies.TEMP_FAILURE, "error")
        else:
            reply = verdict.reply
            if not await self._record(message, ctx, reply):
                reply = _final(message, replies.TEMP_FAILURE)
            elif verdict.kind == "quarantine" and verdict.notify_sender and message.envelope.mail_from:
                await self._notify_held(message, ctx)
        _log_exchange(message, reply, mta_id=mta_id)
        return reply

    async def abandoned(self, msg_id: str, rcpts: list[str], *, mta_id: str | None = None) -> None:
        """The milter's MTA closed before mailgw's answer: the accepted exchange was not queued there.

        Postfix gives up on a milter after ``milter_content_timeout`` and applies its
        ``milter_default_action`` (tempfail: the client sends again, a new exchange).
        The record already says "accept"; each recipient gets an ``abandoned`` event in
        the delivery history, so the log does not claim a message the MTA never took.
        """
        log.warning("exchange %s: the MTA%s closed the milter connection before mailgw's answer (its milter "
                    "timeout?): not queued there", msg_id, f" (queue id {mta_id})" if mta_id else "")
        if self.on_event is None:
            return
        reply = "the MTA closed the milter connection before mailgw's answer: not queued by the MTA"
        now = time.time()
        for rcpt in rcpts:
            try:
                await self.on_event({"id": msg_id, "rcpt": rcpt, "time": now, "status": "abandoned", "reply": reply,
                                     "attempt": 0})
            except Exception:
                log.exception("exchange %s: abandoned event for <%s> not recorded", msg_id, rcpt)

    @staticmethod
    def _run_pipeline(message: Message, ctx: Context) -> Verdict:
        timings: list[pipeline.StageTime] = []
        verdict = pipeline.run(message, ctx, timings=timings)
        for t in timings:
            metrics.stage_seconds(t.stage).observe(t.ms / 1000)
        return verdict

    async def _decide(self, message: Message, ctx: Context) -> str:
        settings = ctx.settings
        if self.spool.free_bytes() < _min_free(settings) + 2 * len(message.raw):
            return await self._refuse(message, ctx, replies.NO_STORAGE, "smtp")
        try:
            if decides_inline(message):
                verdict, meta = self._verdict(message, ctx)  # here: nothing in it waits (see decides_inline)
                if meta is not None:
                    await asyncio.to_thread(self._spool, message, verdict, meta)
            else:
                verdict, meta = await asyncio.to_thread(self._decide_and_spool, message, ctx)
        except Exception:
            log.exception("exchange %s: not spooled", message.id)
            return await self._refuse(message, ctx, replies.TEMP_FAILURE, "error")
        if meta is None:  # refused: recorded, nothing spooled
            if not await self._record(message, ctx, verdict.reply):
                return _final(message, replies.TEMP_FAILURE)
            return verdict.reply
        held = verdict.kind == "quarantine"
        if not await self._keep(meta["record"], spooled=True):
            # No record, no 250: take the message back; the client will send it again.
            await asyncio.to_thread(self.spool.remove, message.id)
            return _final(message, replies.TEMP_FAILURE)
        if held and verdict.notify_sender and message.envelope.mail_from:
            await self._notify_held(message, ctx)
        if not held:
            found = message.facts.classification
            self.on_queued(message.id, found is not None and found.urgency in URGENT)  # urgent goes first
        return verdict.reply

    def _decide_and_spool(self, message: Message, ctx: Context) -> tuple[Verdict, dict[str, Any] | None]:
        """``_verdict``, then ``_spool``: in a worker thread, one hand-off from the event loop for all of it."""
        verdict, meta = self._verdict(message, ctx)
        if meta is not None:
            self._spool(message, verdict, meta)
        return verdict, meta

    def _verdict(self, message: Message, ctx: Context) -> tuple[Verdict, dict[str, Any] | None]:
        """The pipeline's verdict, then for mail that goes on (or is held) its spool metadata with the record.

        The meta is None when the message is refused (reject or defer): nothing is spooled.
        """
        verdict = self._run_pipeline(message, ctx)
        if verdict.refused:
            return verdict, None
        envelope = message.envelope.to_json()
        envelope["rcpts"] = envelope["rcpts"] + [a for a in verdict.archive if a not in envelope["rcpts"]]
        return verdict, {"envelope": envelope, "record": record.build(message, ctx, verdict.reply).to_json()}

    def _spool(self, message: Message, verdict: Verdict, meta: dict[str, Any]) -> None:
        """The message and its meta in the spool, fsync-ed (blocking: never on the event loop)."""
        with metrics.stage_seconds("spool").time():
            self.spool.put_sync(message.id, meta, message.final_bytes(), held=verdict.kind == "quarantine")

    async def _notify_held(self, message: Message, ctx: Context) -> None:
        """Tell the sender their message is held (a rule's notify_sender); from <>, never bounced.

        The notice is an exchange of its own (role ``notice``), pointing at the held message.
        """
        notice_id = f"{message.id}-N"
        data = dsn.held_notice(
            hostname=ctx.settings.hostname, original_id=message.id, original_sender=message.envelope.mail_from,
            subject=str(message.headers.get("subject", "")),
        )
        env = Envelope(mail_from="", rcpts=[message.envelope.mail_from], listener="notice", role="notice", client_ip="")
        rec = record.build(Message(notice_id, env, data, verdict=Verdict(rule="notice", tags=["notice"])), ctx, "",
                           notice_for=message.id).to_json()
        await self.spool.put(notice_id, {"envelope": env.to_json(), "record": rec}, data)
        if not await self._keep(rec):
            log.error("notice %s: record not kept now; it is logged from the spool at the next start", notice_id)
        logsetup.event(log, logging.INFO, "notice", id=notice_id, held=message.id, to=message.envelope.mail_from)
        self.on_queued(notice_id, False)

    async def _refuse(self, message: Message, ctx: Context, refusal: SmtpReply, rule: str) -> str:
        """Record a refusal, then return its reply (a 451 instead if the record cannot be kept)."""
        reply = pipeline.refuse(message, refusal, rule).reply
        if not await self._record(message, ctx, reply):
            return _final(message, replies.TEMP_FAILURE)
        return reply

    async def _record(self, message: Message, ctx: Context, reply: str) -> bool:
        try:
            rec = record.build(message, ctx, reply).to_json()
        except Exception:
            log.exception("exchange %s: decision record cannot be built", message.id)
            return False
        return await self._keep(rec)

    async def _keep(self, rec: dict[str, Any], *, spooled: bool = False) -> bool:
        try:
            with metrics.stage_seconds("record").time():
                await (self.spooled_recorder if spooled else self.recorder)(rec)
            return True
        except Exception:
            log.exception("exchange %s: decision record not kept; the client gets 451", rec.get("id"))
            return False


class _RateLimitedLog:
    """One log line per event kind and period; how many were not logged is said in the next line."""

    def __init__(self, period: float = 10.0):
        self.period = period
        self._last = -period
        self._suppressed = 0

    def note(self, listener: str, cause: BaseException) -> None:
        now = time.monotonic()
        if now - self._last < self.period:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last line)" if self._suppressed else ""
        log.warning("%s: TLS handshake failed: %s%s", listener, " ".join(str(cause).split())[:200] or type(cause).__name__, more)
        self._last, self._suppressed = now, 0


_tls_failures = _RateLimitedLog()


def _final(message: Message, reply: SmtpReply) -> str:
    """A refusal's text ends with the exchange id, so a clerk can quote it to IT."""
    return str(reply.with_id(message.id))


def _min_free(settings: Any) -> int:
    return settings.limits.min_free_space or int(1.5 * settings.limits.message_size)


async def _log_record(rec: dict[str, Any]) -> None:
    """The recorder of an edge without an exchange log (benchmarks): the exchange line is the only trace."""


def _log_exchange(message: Message, reply: str, *, mta_id: str | None = None) -> None:
    """One line per exchange, whatever its outcome, with the reply the client got (its id in it)."""
    env = message.envelope
    v = message.verdict
    code = reply[:3]
    decision = v.kind if code[:1] == "2" else ("defer" if code[:1] == "4" else "reject")
    metrics.DECISIONS.labels(decision, v.rule).inc()
    dkim = message.facts.dkim
    if dkim is not None and (dkim.signed or dkim.status):
        metrics.DKIM.labels("signed" if dkim.signed else str(dkim.status)).inc()
    status = {"2": "held" if v.kind == "quarantine" else "queued", "4": "deferred", "5": "rejected"}.get(code[:1], "?")
    logsetup.event(
        log, logging.INFO, "exchange", id=message.id, listener=env.listener, client=env.client_ip, helo=env.helo or None,
        tls=env.tls, auth=env.auth_user, **{"from": env.mail_from}, to=list(env.rcpts), size=len(message.raw),
        decision=decision, rule=v.rule,
        tags=",".join(v.tags) or None, delay=round(time.time() - env.received_at, 3), status=status, reply=reply,
        mta_id=mta_id,
    )


def _log_refusal(server: SmtpServer, command: str, reply: str, arg: str | None = None) -> None:
    """A refusal before DATA (connect, HELO, MAIL, RCPT): no exchange yet, so the session says who and what."""
    env = server.envelope
    session = server.session
    metrics.REFUSALS.labels(server.listener.name, command).inc()
    logsetup.event(
        log, logging.INFO, "reject", stage=command, listener=server.listener.name, client=server.client_ip,
        helo=(session.host_name if session is not None else None) or None, auth=server.login,
        **{"from": str(env.mail_from) if env is not None and env.mail_from else None},
        arg=arg[:200] if arg else None, reply=reply,
    )


class Handler:
    """aiosmtpd hooks for one listener."""

    def __init__(self, edge: Edge, listener: Listener):
        self.edge = edge
        self.listener = listener

    async def handle_MAIL(self, server: SmtpServer, session: SmtpSession, envelope: SmtpEnvelope, address: str, options: list[str]) -> str:
        ctx = self.edge.context()
        sender, refusal = checks.sender_refusal(ctx, self.listener, self.listener.role, address, client_ip=server.client_ip,
                                                login=session.auth_data, smtputf8=envelope.smtp_utf8)
        if sender is None:
            return str(refusal)
        if self.edge.spool.free_bytes() < _min_free(ctx.settings):
            return str(replies.NO_STORAGE)
        await self.edge.admission.enter(ctx.settings.limits.in_flow, ctx.settings.limits.in_flow_delay)  # may wait
        server.in_transaction = True
        if server.transport is None:  # the client left while it waited: connection_lost has run, so give it back here
            server._end_transaction()
        # aiosmtpd tests mail_from for truth: keep "<>" for the null sender until DATA.
        envelope.mail_from = sender or "<>"
        envelope.mail_options.extend(options)
        return str(replies.OK_SENDER)

    async def handle_RCPT(self, server: SmtpServer, session: SmtpSession, envelope: SmtpEnvelope, address: str, options: list[str]) -> str:
        rcpt, refusal = checks.recipient_refusal(self.edge.context(), self.listener.role, address,
                                                 count=len(envelope.rcpt_tos), smtputf8=envelope.smtp_utf8)
        if rcpt is None:
            return str(refusal)
        envelope.rcpt_tos.append(rcpt)
        envelope.rcpt_options.extend(options)
        return str(replies.OK_RECIPIENT)

    async def handle_DATA(self, server: SmtpServer, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        ctx = self.edge.context()
        login = session.auth_data if session.authenticated else None
        env = Envelope(
            mail_from="" if envelope.mail_from == "<>" else str(envelope.mail_from),
            rcpts=list(envelope.rcpt_tos),
            listener=self.listener.name,
            role=self.listener.role,
            client_ip=server.client_ip,
            helo=session.host_name or "",
            tls=server.tls_version,
            auth_user=login,
            smtputf8=bool(envelope.smtp_utf8),
        )
        message = Message(new_id(), env, bytes(envelope.original_content or b""))
        reply = await self.edge.accept(message, ctx)
        server._exchange_reply = True  # its line is the exchange's (Edge._accept)
        return reply

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client (or a scanner) that fails the handshake: one line, at most one per 10 s.
            _tls_failures.note(self.listener.name, error.__cause__ or error)
            return str(replies.TEMP_FAILURE)  # not sent: aiosmtpd closes the connection
        # Our fault, never the client's: a temporary reply that names nothing internal.
        log.error("SMTP session error: %r", error, exc_info=error)
        return str(replies.TEMP_FAILURE)

    # AUTH mechanisms replace aiosmtpd's built-in ones so the password hash
    # (argon2, deliberately slow) is checked in a thread, not on the event loop.

    async def auth_PLAIN(self, server: SmtpServer, args: list[str]) -> AuthResult:
        if len(args) == 1:
            challenged = await server.challenge_auth("")
            if not isinstance(challenged, bytes):  # MISSING: the client cancelled
                return AuthResult(success=False)
            data = challenged
        else:
            initial = await _initial_response(server, args[1])
            if initial is None:
                return AuthResult(success=False, handled=True)
            data = initial
        parts = data.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SmtpServer, args: list[str]) -> AuthResult:
        if len(args) == 1:
            challenged = await server.challenge_auth("Username:")
            if not isinstance(challenged, bytes):  # MISSING: the client cancelled
                return AuthResult(success=False)
            login = challenged
        else:
            initial = await _initial_response(server, args[1])
            if initial is None:
                return AuthResult(success=False, handled=True)
            login = initial
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False)
        return await self._check(server, login, password)

    async def _check(self, server: SmtpServer, login_b: bytes, password_b: bytes) -> AuthResult:
        ctx = self.edge.context()
        penalty = self.edge.auth_penalty
        login = login_b.decode("utf-8", "replace")
        wait = penalty.delay(server.client_ip, login)
        if wait:
            await asyncio.sleep(wait)  # this session only: the others go on
        try:
            password = password_b.decode("utf-8")
        except UnicodeDecodeError:
            return await self._failed(server, login)
        creds = ctx.credentials
        if creds is None or not await penalty.check(lambda: creds.verify(login, password)):
            return await self._failed(server, login)
        penalty.succeeded(server.client_ip, login)
        return AuthResult(success=True, auth_data=login.lower())

    async def _failed(self, server: SmtpServer, login: str) -> AuthResult:
        server.auth_failures += 1
        count = self.edge.auth_penalty.failed(server.client_ip, login)
        log.warning("%s: failed login %r from %s (%d failed in a row from this address)",
                    self.listener.name, login[:100], server.client_ip, count)
        if server.auth_failures >= MAX_AUTH_FAILURES:
            server.close_after_reply()
            await server.push(str(replies.AUTH_TOO_MANY))
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # aiosmtpd then replies 535


async def _initial_response(server: SmtpServer, text: str) -> bytes | None:
    """The base64 initial response of AUTH, or None after telling the client it is not base64."""
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        await server.push("501 5.5.2 Can't decode base64")
        return None


class SmtpServer(datastream.ChunkedData, SMTP):
    """aiosmtpd's protocol with the limits a public MX needs and enhanced codes on every reply."""

    in_transaction = False  # counted in Edge.admission, from MAIL's 250 to the end of the transaction

    def __init__(self, handler: Handler, edge: Edge, listener: Listener, tls_context: ssl.SSLContext | None):
        ctx = edge.context()
        limits = ctx.settings.limits
        submission = listener.role == "submission"
        super().__init__(
            handler,
            hostname=ctx.settings.hostname,
            ident="mailgw",
            data_size_limit=limits.message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            require_starttls=False,
            timeout=limits.idle_timeout,
            auth_required=submission,
            auth_require_tls=True,
            # mx and relay take no logins: advertise no AUTH at all there.
            auth_exclude_mechanism=None if submission else ["PLAIN", "LOGIN"],
        )
        self.edge = edge
        self.listener = listener
        self.client_ip = ""
        self.auth_failures = 0
        self._commands_left = limits.commands
        self._connections_per_ip = limits.connections_per_ip
        self._counted = False
        self._refused = False
        self._closing = False
        self._data_reply_utf8 = False
        self.data_deadline = limits.data_deadline
        self._command = ""  # the command being answered, for the refusal lines
        self._command_arg: str | None = None
        self._exchange_reply = False  # the reply to DATA of an exchange: logged as the exchange
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._counted_command(name, method)

    @property
    def login(self) -> str | None:
        session = self.session
        return session.auth_data if session is not None and session.authenticated else None

    @property
    def tls_version(self) -> str | None:
        if self._tls_protocol is None or self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj.version() if obj is not None else "TLS"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the TCP connection, not the TLS layer after STARTTLS
            peer = transport.get_extra_info("peername")
            self.client_ip = str(peer[0]) if peer else ""
            key = (self.listener.name, self.client_ip)
            if self.edge.connections[key] >= self._connections_per_ip:
                self._refused = True
                metrics.REFUSALS.labels(self.listener.name, "CONNECT").inc()
                logsetup.event(log, logging.WARNING, "reject", stage="CONNECT", listener=self.listener.name,
                               client=self.client_ip, reply=str(replies.TOO_MANY_CONNECTIONS))
                transport.write(str(replies.TOO_MANY_CONNECTIONS).encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self.edge.connections[key] += 1
            self._counted = True
            metrics.SESSIONS.labels(self.listener.name).inc()
            self.edge.sessions.add(self)
            self.edge.sessions_changed()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            if self.in_data:
                self._reset_timeout()  # during DATA the idle timeout counts from the last read, not the command
            super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        return super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._end_transaction()
        if self._counted:
            key = (self.listener.name, self.client_ip)
            self.edge.connections[key] -= 1
            if self.edge.connections[key] <= 0:
                del self.edge.connections[key]
            self._counted = False
            self.edge.sessions.discard(self)
            self.edge.sessions_changed()
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if status[:1] in ("4", "5") and self._command in _REFUSALS_LOGGED and not self._exchange_reply:
                _log_refusal(self, self._command, status, self._command_arg)
            self._exchange_reply = False
            for prefix, reply in replies.BUILTIN_REWRITES:
                if status.startswith(prefix):
                    status = str(reply)
                    break
            else:
                status = replies.with_enhanced_code(status)
            # ASCII unless this transaction said SMTPUTF8; 512 octets a line at most (smtp/wire.py).
            utf8 = bool(self.envelope is not None and self.envelope.smtp_utf8) or self._data_reply_utf8
            self._data_reply_utf8 = False
            for line in wire.reply_lines(status, utf8=utf8):
                await super().push(line)
        else:
            await super().push(status)
        if self._closing and self.transport is not None:
            self.transport.close()

    def _set_post_data_state(self) -> None:
        # The reply to DATA is pushed after the transaction is reset: remember whether it was SMTPUTF8.
        self._data_reply_utf8 = bool(self.envelope is not None and self.envelope.smtp_utf8)
        self._end_transaction()  # aiosmtpd comes here at every end: DATA's reply, RSET, HELO/EHLO
        super()._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped

    def _end_transaction(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.edge.admission.leave()

    def close_after_reply(self) -> None:
        self._closing = True

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(str(replies.IDLE_TIMEOUT).encode() + b"\r\n")  # type: ignore[attr-defined]
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        fast = fast_getaddr(arg, self.local_part_limit)
        if fast is not None:
            return fast
        try:
            return super()._getaddr(arg)
        except IndexError:
            # The email package indexes past the end of a lone "<": the client's syntax
            # error (553 5.1.3, a malformed address), not a fault of ours.
            return None, None

    def _counted_command(self, name: str, method: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def counted(arg: Any) -> None:
            self._command, self._command_arg = name, arg if isinstance(arg, str) else None
            self._commands_left -= 1
            if self._commands_left < 0:
                self.close_after_reply()
                await self.push(str(replies.TOO_MANY_COMMANDS))
                return
            await method(arg)

        return counted

    async def shutdown(self) -> None:
        """Tell an idle client we are going away (SIGTERM drain)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(str(replies.SHUTTING_DOWN).encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()
