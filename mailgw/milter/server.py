"""The milter listener (``role: milter``): the pipeline inside an MTA that speaks the Sendmail milter protocol.

Postfix (``smtpd_milters``), Zimbra's Postfix (``zimbraMtaSmtpdMilters``) and
Sendmail hand each SMTP transaction over as milter events; at the end of the
message mailgw runs the same pipeline as its own SMTP edge
(mailgw.smtp.edge.Edge.judge: the same facts, policy, exchange record and reply
texts) and answers:

- accept: the header fields the pipeline added (Received, Authentication-Results,
  the decision fields, the DKIM signature) inserted at the top with the milter's
  insert-header action, the forged fields it removed deleted with change-header,
  archive copies added as recipients, then *continue*: the MTA queues and delivers;
- quarantine: the same, plus the *quarantine* action (Postfix: the hold queue,
  ``postqueue -j`` / ``mailq`` show it, ``postsuper -H`` releases it);
- reject / defer: the reply, code, enhanced code, bilingual text and exchange
  id, as a (multi-line) *replycode*: the MTA refuses the DATA and keeps nothing;
  in UTF-8 when the client's MAIL FROM had SMTPUTF8, else folded to US-ASCII;
- the envelope checks of MAIL FROM and RCPT TO (mailgw.smtp.checks, the edge's
  own) at those events, with the edge's replies.

Nothing is spooled by mailgw: the MTA's queue holds the message. The reply
that lets the MTA go on is sent only once the exchange record is kept (the
edge's rule for its 250). When mailgw is down or slow, the MTA's own setting
decides (Postfix ``milter_default_action``: ``tempfail`` is the safe one).

The wire format and the protocol's state (which event needs which answer, which
actions were negotiated) are kilter.protocol's, a sans-I/O implementation of
the milter protocol: this module owns the sockets (asyncio, uvloop in ``serve``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import sys
from typing import Any

from kilter.protocol import (
    Abort,
    AddRecipient,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    FilterProtocol,
    Header,
    Helo,
    InsertHeader,
    Macro,
    Negotiate,
    Quarantine,
    ReplyCode,
)
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.exceptions import InvalidMessage, UnexpectedMessage, UnknownMessage
from kilter.protocol.messages import ActionFlags, ProtocolFlags, Stage

from mailgw import logsetup, metrics
from mailgw.config.settings import Listener
from mailgw.message import replies
from mailgw.message.model import Envelope, Message, new_id
from mailgw.message.replies import SmtpReply
from mailgw.milter.envelope import role_for, strip_brackets
from mailgw.milter.listening import MtaListener
from mailgw.smtp import checks, wire
from mailgw.smtp.edge import Edge

log = logging.getLogger(__name__)

# The largest packet an MTA sends: Postfix and Sendmail send the body in 64 KiB chunks and
# a header field is bounded by the MTA (Postfix header_size_limit, 100 KiB by default).
MAX_PACKET = 1 << 20
MILTER_VERSION = 6

# Every event that matters, each answered. The no-reply options (NR_HEADER ...) would save
# the answers, but then the MTA sends packet after packet with nothing coming back: with
# Nagle's algorithm on the MTA's socket (Postfix does not set TCP_NODELAY) and delayed ACKs
# on ours, each such run waits 40 ms for an ACK (measured: 84 ms a message, 8 with answers).
PROTOCOL = ProtocolFlags.NO_DATA | ProtocolFlags.NO_UNKNOWN | ProtocolFlags.HEADER_LEADING_SPACE
ACTIONS = (ActionFlags.ADD_HEADERS | ActionFlags.CHANGE_HEADERS | ActionFlags.QUARANTINE
           | ActionFlags.ADD_RECIPIENT | ActionFlags.SETSYMLIST)
# The MTA's macros we read (Postfix sends these lists instead of its milter_*_macros when asked).
MACROS = {
    Stage.CONNECT: ["j", "{daemon_name}", "{client_addr}"],
    Stage.HELO: ["{tls_version}"],
    Stage.ENVELOPE_FROM: ["i", "{auth_authen}"],
    Stage.END_MESSAGE: ["i"],
}

SWITCH_INTERVAL = 0.001  # seconds
QUICKACK = getattr(socket, "TCP_QUICKACK", 0)  # Linux only
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t])")
_SPACED_NAME = re.compile(rb"\A([^:]*?)[ \t]+:")  # "From :" that the parse stage writes "From:"


class MilterListener(MtaListener):
    """One milter listener: its server and its open MTA connections (closed at drain)."""

    limit = MAX_PACKET + 16

    async def start(self, *, reuse_port: bool = False) -> tuple[str, int]:
        # A message is a dozen round trips with the MTA, each a turn of the event loop; while a
        # pipeline thread runs, the loop waits for the GIL up to the switch interval (5 ms).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        return await super().start(reuse_port=reuse_port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        session = Session(self.edge, self.listener)
        proto = FilterProtocol()
        sock = writer.get_extra_info("socket")
        tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        if tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                if tcp and QUICKACK:
                    # ACK at once: the MTA sends a macro packet, then the event, and with Nagle on its
                    # side the event waits for that ACK (40 ms of delayed ACK a message otherwise).
                    sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                head = await reader.readexactly(4)
                size = int.from_bytes(head, "big")
                if not 0 < size <= MAX_PACKET:
                    log.warning("%s: milter packet of %d bytes from the MTA; connection closed", self.listener.name, size)
                    return
                packet = head + await reader.readexactly(size)
                buf = SimpleBuffer(len(packet))
                buf[:] = packet
                for event in proto.read_from(buf):
                    if isinstance(event, Close):
                        return
                    answers = await session.on(event, proto)
                    accepted, session.accepted = session.accepted, None
                    if accepted is not None and reader.at_eof():
                        # The MTA gave up waiting (its milter timeout) and closed before our "continue":
                        # it did not queue the message the exchange log has as accepted. Say so there.
                        await self.edge.abandoned(*accepted, mta_id=session.macros.get("i"))
                        return
                    if answers:
                        out = SimpleBuffer(sum(_size(a) for a in answers))
                        for answer in answers:
                            proto.write_to(out, answer)
                        writer.write(out[:].tobytes())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the MTA closed the connection (its SMTP session ended, or it gave up waiting)
        except (InvalidMessage, UnexpectedMessage, UnknownMessage, ValueError, UnicodeDecodeError) as e:
            # Not a fault of the message: the MTA applies its milter_default_action (tempfail).
            log.warning("%s: milter protocol error, connection closed: %s", self.listener.name, e)
        except Exception:
            log.exception("%s: milter session failed, connection closed (the MTA applies its default action)",
                          self.listener.name)
        finally:
            self.connections.discard(writer)
            writer.close()


def _size(message: Any) -> int:
    """An upper bound of a message's packed size (SimpleBuffer is fixed-size)."""
    n = 64
    for attr in ("content", "value", "name", "reason", "address"):
        v = getattr(message, attr, None)
        if v is not None:
            n += len(v) * (4 if isinstance(v, str) else 1) + 1
    if isinstance(message, Negotiate):
        n += sum(len(" ".join(names)) + 8 for names in message.macros.values())
    return n


class Session:
    """One MTA connection: one SMTP session of the MTA, its transactions one after the other."""

    def __init__(self, edge: Edge, listener: Listener):
        self.edge = edge
        self.listener = listener
        self.macros: dict[str, str] = {}
        self.client_ip = ""
        self.helo = ""
        self.leading_space = True
        self.actions = ActionFlags.NONE
        self._reset()

    def _reset(self) -> None:
        """A new transaction (MAIL FROM, or after an abort or the end of a message)."""
        self.accepted: tuple[str, list[str]] | None = None  # (id, recipients) the last answer lets the MTA go on with
        self.role = "mx"
        self.login: str | None = None
        self.mail_from = ""
        self.smtputf8 = False
        self.rcpts: list[str] = []
        self.fields: list[bytes] = []  # the header fields as the MTA has them, "Name:value" with CRLF folding
        self.body: list[bytes] = []
        self.size = 0

    async def on(self, event: Any, proto: FilterProtocol) -> list[Any]:
        """The answers to one event (none where the negotiated protocol wants none)."""
        if isinstance(event, EndOfMessage):
            return await self._end_of_message(event)
        answers = self._answer(event)
        if answers is None:
            answers = [Continue()]
        if isinstance(event, Negotiate) or proto.needs_response(event):
            return answers
        return []

    def _answer(self, event: Any) -> list[Any] | None:
        """Everything but the end of the message; None: the default answer (continue)."""
        if isinstance(event, Negotiate):
            return [self._negotiate(event)]
        if isinstance(event, Macro):
            self.macros.update(event.macros)
            return []
        if isinstance(event, Connect):
            address = event.address
            self.client_ip = str(address) if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ""
            return None
        if isinstance(event, Helo):
            self.helo = event.hostname
            return None
        if isinstance(event, EnvelopeFrom):
            return self._mail(bytes(event.sender).decode("utf-8", "replace"), [bytes(a) for a in event.arguments])
        if isinstance(event, EnvelopeRecipient):
            return self._rcpt(bytes(event.recipient).decode("utf-8", "replace"))
        if isinstance(event, Header):
            value = bytes(event.value)
            if not self.leading_space:
                value = b" " + value
            field = event.name.encode("ascii") + b":" + _crlf(value) + b"\r\n"
            self.fields.append(field)
            self.size += len(field)
            return None
        if isinstance(event, Body):
            self._add_body(bytes(event.content))
            return None
        if isinstance(event, EndOfHeaders):
            return None
        if isinstance(event, Abort):
            self._reset()
            return []
        if isinstance(event, EndOfMessage):
            return None
        return None  # Data, Unknown: not asked for; continue

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        self.actions = ACTIONS & offer.action_flags
        protocol = PROTOCOL & offer.protocol_flags
        self.leading_space = ProtocolFlags.HEADER_LEADING_SPACE in protocol
        macros = MACROS if ActionFlags.SETSYMLIST in self.actions else {}
        missing = (ActionFlags.ADD_HEADERS | ActionFlags.CHANGE_HEADERS | ActionFlags.QUARANTINE) & ~self.actions
        if missing:
            log.warning("%s: the MTA does not offer the milter actions %s: those changes will be missing",
                        self.listener.name, missing)
        return Negotiate(MILTER_VERSION, self.actions, protocol, macros)

    def _mail(self, address: str, arguments: list[bytes]) -> list[Any]:
        self._reset()
        ctx = self.edge.context()
        m = self.macros
        self.login = (m.get("{auth_authen}") or "").lower() or None
        self.client_ip = m.get("{client_addr}") or self.client_ip
        self.role = role_for(self.listener, m.get("{daemon_name}"), self.login, self.client_ip)
        self.smtputf8 = any(a.upper() == b"SMTPUTF8" for a in arguments)
        sender, refusal = checks.sender_refusal(ctx, self.listener, self.role, strip_brackets(address),
                                                client_ip=self.client_ip, login=self.login, smtputf8=self.smtputf8)
        if sender is None:
            assert refusal is not None
            return [self._refusal("MAIL", refusal, address)]
        self.mail_from = sender
        return [Continue()]

    def _rcpt(self, address: str) -> list[Any]:
        rcpt, refusal = checks.recipient_refusal(self.edge.context(), self.role, strip_brackets(address),
                                                 count=len(self.rcpts), smtputf8=self.smtputf8)
        if rcpt is None:
            assert refusal is not None
            return [self._refusal("RCPT", refusal, address)]
        self.rcpts.append(rcpt)
        return [Continue()]

    def _refusal(self, stage: str, reply: SmtpReply, arg: str) -> ReplyCode:
        text = str(reply)
        metrics.REFUSALS.labels(self.listener.name, stage).inc()
        logsetup.event(log, logging.INFO, "reject", stage=stage, listener=self.listener.name, role=self.role,
                       client=self.client_ip or None, helo=self.helo or None, auth=self.login,
                       **{"from": self.mail_from or None}, arg=arg[:200], reply=text, mta_id=self.macros.get("i"))
        return reply_code(text, utf8=self.smtputf8)

    def _add_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.edge.context().settings.limits.message_size:
            self.body.append(chunk)
        else:
            self.body.clear()  # refused at the end of the message: nothing more kept

    async def _end_of_message(self, event: EndOfMessage) -> list[Any]:
        if event.content:
            self._add_body(bytes(event.content))
        ctx = self.edge.context()
        reply = ""
        try:
            if self.size > ctx.settings.limits.message_size:
                return [self._refusal("DATA", replies.MESSAGE_TOO_BIG, f"{self.size} bytes")]
            raw = b"".join(self.fields) + b"\r\n" + b"".join(self.body)
            env = Envelope(
                mail_from=self.mail_from, rcpts=list(self.rcpts), listener=self.listener.name, role=self.role,
                client_ip=self.client_ip, helo=self.helo, tls=self.macros.get("{tls_version}") or None,
                auth_user=self.login, smtputf8=self.smtputf8,
            )
            message = Message(new_id(), env, raw)
            reply = await self.edge.judge(message, ctx, mta_id=self.macros.get("i"))
            if reply[:1] != "2":
                return [reply_code(reply, utf8=self.smtputf8)]
            return self._changes(message) + [Continue()]
        finally:
            self._reset()
            if reply[:1] == "2":  # until the answer is sent (MilterListener._serve)
                self.accepted = (message.id, list(message.envelope.rcpts))

    def _changes(self, message: Message) -> list[Any]:
        """The milter actions that make the MTA's copy the message the pipeline made (and signed)."""
        out: list[Any] = []
        if ActionFlags.CHANGE_HEADERS in self.actions:
            for name, index in reversed(removed_fields(self.fields, message.raw)):  # from the last: indexes stay right
                out.append(ChangeHeader(index, name, b""))
        if ActionFlags.ADD_HEADERS in self.actions:
            for line in reversed(message.prepend):  # each inserted at the top: the last one first
                for field in reversed(split_fields(line)):
                    fname, _, fvalue = field.partition(b":")
                    if not self.leading_space and fvalue.startswith(b" "):
                        fvalue = fvalue[1:]
                    out.append(InsertHeader(0, fname.decode("ascii"), _lf(fvalue)))
        verdict = message.verdict
        if ActionFlags.ADD_RECIPIENT in self.actions:
            out.extend(AddRecipient(f"<{a}>") for a in verdict.archive if a not in message.envelope.rcpts)
        if verdict.kind == "quarantine" and ActionFlags.QUARANTINE in self.actions:
            out.append(Quarantine(f"mailgw: {verdict.rule} [{message.id}]"))
        return out


def reply_code(reply: str, *, utf8: bool) -> ReplyCode:
    """A refusal as the milter's replycode: lines of at most 512 octets, CRLF between, ``%`` escaped.

    As the edge answers: in UTF-8 when the MTA's client asked for SMTPUTF8 (its
    MAIL FROM's ESMTP parameters, which the MTA hands over with the sender),
    else in US-ASCII, the Vietnamese folded (mailgw.smtp.wire).
    """
    lines = wire.reply_lines(reply, utf8=utf8)
    return ReplyCode("\r\n".join(lines).replace("%", "%%").encode("utf-8"))


def split_fields(section: bytes) -> list[bytes]:
    """Header fields (each with its folded lines, without the final CRLF) of a header section."""
    section = section.rstrip(b"\r\n")
    return [f.rstrip(b"\r\n") for f in _FIELD_START.split(section) if f.strip(b"\r\n")]


def removed_fields(before: list[bytes], raw: bytes) -> list[tuple[str, int]]:
    """(name, index among the fields of that name, from 1) of each field of ``before`` that ``raw`` lacks.

    The pipeline removes fields (forged Authentication-Results) and never adds
    any inside the section; "From :" rewritten "From:" is the same field to the MTA.
    """
    end = raw.find(b"\r\n\r\n")
    after = split_fields(raw[:end + 2] if end >= 0 else raw)
    out: list[tuple[str, int]] = []
    seen: dict[bytes, int] = {}
    j = 0
    for field in before:
        field = field.rstrip(b"\r\n")
        name = field.partition(b":")[0]
        key = name.rstrip(b" \t").lower()
        seen[key] = seen.get(key, 0) + 1
        if j < len(after) and (after[j] == field or after[j] == _SPACED_NAME.sub(rb"\1:", field)):
            j += 1
            continue
        out.append((name.decode("ascii"), seen[key]))
    return out


def _crlf(value: bytes) -> bytes:
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _lf(value: bytes) -> bytes:
    """Folded lines as the milter protocol carries them (the MTA writes its own line ends)."""
    return value.replace(b"\r\n", b"\n")
