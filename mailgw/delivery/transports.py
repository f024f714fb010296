"""Transports: hand a message to the next hop and say, per recipient, what happened.

Every result carries ``permanent`` explicitly (chasquid's courier): a 5xx
reply is permanent, anything else that is not a success (4xx, timeouts,
refused connections, DNS trouble) is temporary and will be retried.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import os
import random
import re
import socket
import ssl
import time
import urllib.parse
import weakref
from typing import Sequence, cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse

from mailgw.config.resolver import DnsNameError, DnsResolver, DnsTemporaryError, MxResolver
from mailgw.config.settings import QueueSettings, Route
from mailgw.durable import replacing
from mailgw.message.addresses import PLAIN_ADDRESS
from mailgw.message.parsed import crlf_only

# Postfix's smtp_mx_address_limit and smtp_mx_session_limit: a domain with a hundred
# unreachable MX hosts must not hold a delivery worker for hours.
MX_ADDRESS_LIMIT = 5
MX_SESSION_LIMIT = 2


@dataclasses.dataclass(frozen=True)
class Result:
    ok: bool
    permanent: bool
    reply: str  # the next hop's reply, or what went wrong, for the log and the DSN
    remote: str = ""  # who answered (host or path)

    def __post_init__(self) -> None:
        # aiosmtplib decodes a reply with surrogate escapes where it is not UTF-8 (a server
        # answering in TCVN3 or Windows-1258): no UTF-8 JSON holds those, so the delivery
        # state, the exchange log and the DSN could not be written, and the recipients
        # the hop had accepted were sent the message again at every retry.
        for name in ("reply", "remote"):
            value = getattr(self, name)
            if not value.isascii():
                object.__setattr__(self, name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def sent(reply: str, remote: str) -> Result:
    return Result(True, False, reply, remote)


def temporary(reply: str, remote: str = "") -> Result:
    return Result(False, False, reply, remote)


def permanent(reply: str, remote: str = "") -> Result:
    return Result(False, True, reply, remote)


async def deliver(route: Route, mail_from: str, rcpts: Sequence[str], data: bytes, *, hostname: str,
                  timeouts: QueueSettings, resolver: MxResolver | None = None, mx_port: int = 25) -> dict[str, Result]:
    """Deliver ``data`` to ``rcpts`` (all of them on this route); one Result per recipient.

    ``resolver`` (mailgw.config.resolver) answers the MX and address lookups of the
    ``mx`` route; ``mx_port`` is 25 except on test rigs (settings ``dns.mx_port``).
    """
    if route.kind == "maildir":
        return await asyncio.to_thread(_to_maildir, route.path, rcpts, data)
    if route.kind == "smtp":
        outcome = await _via(route.host, route.port, hostname, timeouts, mail_from, rcpts, data)
        if isinstance(outcome, Result):
            return {r: outcome for r in rcpts}
        return outcome
    # mx: one domain per call (the worker groups recipients by domain)
    domain = rcpts[0].rpartition("@")[2]
    return await _mx(domain, mail_from, rcpts, data, hostname, timeouts, resolver or DnsResolver(), mx_port)


async def _mx(domain: str, mail_from: str, rcpts: Sequence[str], data: bytes, hostname: str,
              timeouts: QueueSettings, resolver: MxResolver, port: int) -> dict[str, Result]:
    """RFC 5321 5.1: the MX hosts by preference (the domain itself without MX), their addresses in turn.

    A refused or failed connection, or a 4xx, moves on to the next address or host
    (up to MX_ADDRESS_LIMIT addresses and MX_SESSION_LIMIT sessions); what is still
    temporary at the end is retried later. A domain that does not exist, a null MX
    and a domain with no mail server at all are permanent.
    """
    hosts, error = await _mx_hosts(domain, resolver)
    if error is not None:
        return {r: error for r in rcpts}
    results: dict[str, Result] = {}
    pending = list(rcpts)
    last: Result = temporary(f"4.4.4 no mail server of {domain} could be reached")
    tried = sessions = 0
    missing = 0  # MX hosts that do not exist or have no address
    for host in hosts:
        try:
            addresses = await resolver.addresses(host)
        except DnsNameError:
            addresses = []
        except DnsTemporaryError as e:
            last = temporary(f"4.4.3 DNS lookup of MX host {host} failed: {e}", host)
            continue
        if not addresses:
            missing += 1
            last = temporary(f"4.4.4 MX host {host} has no address", host)
            continue
        for address in addresses:
            if tried >= MX_ADDRESS_LIMIT or sessions >= MX_SESSION_LIMIT:
                break
            tried += 1
            outcome = await _via(address, port, hostname, timeouts, mail_from, pending, data, server_name=host)
            if isinstance(outcome, Result):
                last = outcome
                continue
            sessions += 1
            for rcpt, result in outcome.items():
                if result.ok or result.permanent:
                    results[rcpt] = result
                else:
                    last = result
            pending = [r for r in pending if r not in results]
            if not pending:
                return results
    if missing == len(hosts):
        # Every host named for the domain is missing from DNS: nothing will change by waiting.
        last = permanent(f"5.4.4 no mail server for {domain}: "
                         + ("its MX hosts have no address" if hosts != [domain] else "no MX and no address"), domain)
    results.update({r: last for r in pending})
    return results


async def _mx_hosts(domain: str, resolver: MxResolver) -> tuple[list[str], Result | None]:
    """The MX hosts of ``domain`` by preference (random among equals); the domain itself without MX."""
    try:
        records = await resolver.mx(domain)
    except DnsNameError:
        return [], permanent(f"5.1.2 domain {domain} does not exist (DNS: NXDOMAIN)", domain)
    except DnsTemporaryError as e:
        return [], temporary(f"4.4.3 DNS lookup of MX {domain} failed: {e}", domain)
    if not records:
        return [domain], None  # implicit MX (RFC 5321 5.1)
    if any(exchange == "" for _, exchange in records):
        return [], permanent(f"5.1.10 domain {domain} accepts no mail (null MX, RFC 7505)", domain)
    shuffled = random.sample(records, len(records))  # RFC 5321 5.1: spread load over equal preferences
    hosts: list[str] = []
    for _, exchange in sorted(shuffled, key=lambda r: r[0]):
        if exchange.lower() not in (h.lower() for h in hosts):
            hosts.append(exchange)
    return hosts, None


class _Client(aiosmtplib.SMTP):
    remote: str


async def _connect(host: str, port: int, hostname: str, timeouts: QueueSettings, *,
                   server_name: str | None = None) -> _Client | Result:
    """A connected client (greeting read), or the temporary Result saying why not."""
    remote = f"{server_name}[{host}]:{port}" if server_name else f"{host}:{port}"
    client = _Client(
        hostname=host,
        port=port,
        local_hostname=hostname,
        timeout=timeouts.command_timeout,
        start_tls=None,  # STARTTLS when offered; opportunistic, as Postfix's "may"
        validate_certs=False,
        tls_context=_opportunistic_tls(),
    )
    client.remote = remote
    try:
        await asyncio.wait_for(client.connect(), timeouts.connect_timeout)
    except aiosmtplib.SMTPConnectResponseError as e:  # a 4xx or 5xx greeting: try another host
        client.close()
        return temporary(f"4.4.1 {remote} greeted with {e.code} {e.message}", remote)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        client.close()
        return temporary(f"4.4.1 connect to {remote} failed: {_describe(e)}", remote)
    return client


async def _via(host: str, port: int, hostname: str, timeouts: QueueSettings, mail_from: str, rcpts: Sequence[str],
               data: bytes, *, server_name: str | None = None) -> dict[str, Result] | Result:
    """One transaction with ``host``: on a session kept from an earlier message when one waits, else a new one.

    A Result alone when no session could be opened (the caller tries the next address).
    """
    cache = connection_cache()
    client = cache.take(host, port)
    if client is not None:
        outcome = await _transaction(client, mail_from, rcpts, data, client.remote, reused=True)
        if outcome is not None:
            await cache.done(host, port, client, *outcome)
            return outcome[0]
        cache.discard(client)  # closed by the other side while it waited: nothing was sent, open a new one
    connected = await _connect(host, port, hostname, timeouts, server_name=server_name)
    if isinstance(connected, Result):
        return connected
    outcome = await _transaction(connected, mail_from, rcpts, data, connected.remote, reused=False)
    assert outcome is not None
    await cache.done(host, port, connected, *outcome)
    return outcome[0]


async def _transaction(
    client: aiosmtplib.SMTP, mail_from: str, rcpts: Sequence[str], data: bytes, remote: str, *, reused: bool
) -> tuple[dict[str, Result], bool] | None:
    """The results, and whether the session ended its transaction cleanly (so it may carry the next one).

    None when a ``reused`` session fails at MAIL FROM: it was closed while it
    waited in the cache, nothing was accepted, and a new session should try.
    """
    utf8 = _needs_smtputf8(mail_from, rcpts, data)
    encoding = "utf-8" if utf8 else "ascii"
    try:
        if client.is_ehlo_or_helo_needed:
            # After STARTTLS the client has forgotten the server's extensions until it sends EHLO again
            # (RFC 3207 4.2); ask before they are looked at.
            await client.ehlo()
        if utf8 and not client.supports_extension("smtputf8"):
            # RFC 6531 3.2: without the extension the message cannot be relayed as it is.
            failed = permanent(f"{remote} does not support SMTPUTF8, which this message needs (5.6.7)", remote)
            return {r: failed for r in rcpts}, True  # nothing was sent: the session is as clean as it was
        if client.supports_extension("pipelining"):
            mail = b"MAIL FROM:" + b" ".join([_path(mail_from).encode(encoding), *_mail_options(client, data, utf8)])
            return await _pipelined(client, mail, [b"RCPT TO:" + _path(r).encode(encoding) for r in rcpts], rcpts,
                                    data, remote, reused=reused)
        await _command(client, b"MAIL", b"FROM:" + _path(mail_from).encode(encoding),
                       *_mail_options(client, data, utf8), ok=(250,))
    except aiosmtplib.SMTPResponseException as e:
        if reused:
            return None
        verb = "EHLO" if isinstance(e, aiosmtplib.SMTPHeloError) else "MAIL FROM"
        return {r: _from_code(e.code, f"{verb}: {e.code} {e.message}", remote) for r in rcpts}, False
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        if reused:
            return None
        return {r: temporary(f"{remote}: {_describe(e)}", remote) for r in rcpts}, False
    results: dict[str, Result] = {}
    accepted: list[str] = []
    for rcpt in rcpts:
        try:
            await _command(client, b"RCPT", b"TO:" + _path(rcpt).encode(encoding), ok=(250, 251))
            accepted.append(rcpt)
        except aiosmtplib.SMTPResponseException as e:
            results[rcpt] = _from_code(e.code, f"RCPT TO: {e.code} {e.message}", remote)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            results[rcpt] = temporary(f"{remote}: {_describe(e)}", remote)
    if not accepted:
        return results, False  # the transaction is still open: this session is not reused
    try:
        response = await _data(client, data)
        for rcpt in accepted:
            results[rcpt] = sent(f"{response.code} {response.message}", remote)
    except aiosmtplib.SMTPResponseException as e:
        for rcpt in accepted:
            results[rcpt] = _from_code(e.code, f"DATA: {e.code} {e.message}", remote)
        return results, e.code != 421  # the final reply ended the transaction (421: the server is leaving)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        # No final reply: the next hop may or may not have the message. Retrying
        # may duplicate it, which is allowed; losing it is not.
        for rcpt in accepted:
            results[rcpt] = temporary(f"{remote}: {_describe(e)}", remote)
        return results, False
    return results, True


async def _pipelined(client: aiosmtplib.SMTP, mail: bytes, rcpt_commands: list[bytes], rcpts: Sequence[str],
                     data: bytes, remote: str, *, reused: bool) -> tuple[dict[str, Result], bool] | None:
    """``_transaction`` with a next hop that offers PIPELINING (RFC 2920): MAIL, every RCPT and DATA
    in one write, then the message once the 354 has come, each reply read in order.

    Two writes and two waits for the next hop per message instead of three and more; the replies
    mean what they mean one command at a time, and the results are the same (tests/test_transports_wire.py).
    """
    commands = [mail, *rcpt_commands, b"DATA"]
    for command in commands:
        if COMMAND_INJECTION_REGEX.search(command):  # as aiosmtplib's execute_command: never on the wire
            raise ValueError("Command arg contains a prohibited control character")
    protocol = client.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None or transport.is_closing():
        if reused:
            return None
        return {r: temporary(f"{remote}: Connection lost", remote) for r in rcpts}, False
    replies = _Replies(protocol, transport)
    wire = cast(asyncio.Transport, transport)
    timeout = client.timeout
    mail_answered = False
    results: dict[str, Result] = {}
    accepted: list[str] = []
    try:
        wire.write(b"\r\n".join(commands) + b"\r\n")
        reply = await replies.next(timeout)
        if reply.code != 250:
            client.close()  # the RCPT and DATA replies are still to come: a session out of step is not kept
            if reused:
                return None
            return {r: _from_code(reply.code, f"MAIL FROM: {reply.code} {reply.message}", remote) for r in rcpts}, False
        mail_answered = True
        for rcpt in rcpts:
            reply = await replies.next(timeout)
            if reply.code in (250, 251):
                accepted.append(rcpt)
            else:
                results[rcpt] = _from_code(reply.code, f"RCPT TO: {reply.code} {reply.message}", remote)
        reply = await replies.next(timeout)
        if not accepted:
            if reply.code == 354:
                client.close()  # a server that takes DATA with no recipient gets no message
            return results, False  # the transaction is still open: this session is not reused
        if reply.code == 354:
            wire.write(wire_data(data))
            reply = await replies.next(timeout)
        if reply.code != 250:
            for rcpt in accepted:
                results[rcpt] = _from_code(reply.code, f"DATA: {reply.code} {reply.message}", remote)
            return results, reply.code != 421  # the final reply ended the transaction (421: the server is leaving)
        for rcpt in accepted:
            results[rcpt] = sent(f"{reply.code} {reply.message}", remote)
        return results, True
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        client.close()  # as aiosmtplib does: a session out of step is never used again
        if reused and not mail_answered:
            return None
        # A reply missing after DATA: the next hop may or may not have the message. Retrying
        # may duplicate it, which is allowed; losing it is not.
        for rcpt in rcpts:
            results.setdefault(rcpt, temporary(f"{remote}: {_describe(e)}", remote))
        return results, False
    finally:
        replies.restore()


class _Replies(asyncio.Protocol):
    """The replies to commands sent together, in order, on a session aiosmtplib opened.

    aiosmtplib's protocol reads one reply per command it awaits and drops what
    arrives while the reply before it waits to be picked up, so replies to
    commands sent together would be lost. For one transaction the transport gives
    its data to this protocol instead; the end of the connection and flow control
    go on to aiosmtplib's, which gets the transport back after the transaction.
    Replies are parsed as aiosmtplib parses one (``ReplyParser``).
    """

    def __init__(self, owner: asyncio.BaseProtocol, transport: asyncio.BaseTransport):
        self._owner = owner
        self._transport = transport
        self._parser = ReplyParser()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        transport.set_protocol(self)

    def restore(self) -> None:
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._owner)

    async def next(self, timeout: float | None) -> SMTPResponse:
        """The next reply; SMTPReadTimeoutError when it has not come whole within ``timeout`` seconds."""
        if not self._replies and self._error is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter  # woken only by a whole reply, an error or the end of the connection
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self._replies:
            return self._replies.popleft()
        assert self._error is not None
        raise self._error

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return  # out of step: nothing after an error is taken for a reply
        replies = self._parser.feed(data)
        if replies:
            self._replies.extend(replies)
            self._wake()
        if self._parser.error is not None:
            self._fail(self._parser.error)

    def eof_received(self) -> bool | None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return self._owner.eof_received()  # type: ignore[attr-defined,no-any-return]  # an asyncio.Protocol

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))


class ReplyParser:
    """SMTP replies from a stream that may hold several, each byte looked at once.

    The codes, texts and errors of aiosmtplib's ``SMTPProtocol._read_response_from_buffer``
    for one reply (tests/test_transports_wire.py compares them on random streams cut at
    random points): a line over MAX_LINE_LENGTH or a reply over MAX_RESPONSE_LENGTH is
    "Response too long", a line without a numeric code "Malformed SMTP response line".
    """

    def __init__(self) -> None:
        self._buffer = bytearray()  # from the start of the line being read
        self._message = bytearray()  # the reply's text so far
        self._size = 0  # bytes of the reply's lines already read
        self.error: aiosmtplib.SMTPResponseException | None = None  # the stream is not SMTP: nothing more is read

    def feed(self, data: bytes) -> list[SMTPResponse]:
        """The replies ``data`` completes, in order, up to an error (then in ``error``)."""
        out: list[SMTPResponse] = []
        if self.error is None:
            try:
                self._feed(data, out)
            except aiosmtplib.SMTPResponseException as e:
                self.error = e
                self._buffer.clear()
        return out

    def _feed(self, data: bytes, out: list[SMTPResponse]) -> None:
        buffer = self._buffer
        searched = len(buffer)  # the line's start holds no line end: search the new bytes only
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", searched)) != -1:
            line = bytes(buffer[start:end + 1])
            start = searched = end + 1
            if len(line) > MAX_LINE_LENGTH:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(
                    -1, f"Malformed SMTP response line: {line.decode('utf-8', errors='ignore')}") from None
            self._size += len(line)
            if self._size > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            if self._message:
                self._message += b"\n"
            self._message += line[4:].strip(b" \t\r\n")
            if line[3:4] != b"-":
                out.append(SMTPResponse(code, bytes(self._message).decode("utf-8", "surrogateescape")))
                self._message = bytearray()
                self._size = 0
        del buffer[:start]
        if self._size + len(buffer) > MAX_RESPONSE_LENGTH:
            raise aiosmtplib.SMTPResponseException(-1, "Response too long")


class ConnectionCache:
    """SMTP sessions kept open after a delivery for the next message to the same host (Postfix's connection cache).

    Opening a session (TCP, greeting, EHLO, maybe STARTTLS) and closing it (QUIT)
    cost more round trips than the transaction itself. A session goes back to the
    cache only when its transaction ended with a final reply to DATA; it waits at
    most ``idle`` seconds (Postfix's smtp_connection_cache_time_limit, 2 s), is
    used for at most ``lifetime`` seconds (smtp_connection_reuse_time_limit,
    300 s), and at most ``size`` sessions wait per host.
    """

    def __init__(self, idle: float = 2.0, lifetime: float = 300.0, size: int = 32):
        self.idle, self.lifetime, self.size = idle, lifetime, size
        self._idle: dict[tuple[str, int], list[tuple[_Client, float, float]]] = {}  # client, opened, idle since
        self._opened: dict[int, float] = {}  # id(client) -> when it was opened
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def take(self, host: str, port: int) -> _Client | None:
        now = time.monotonic()
        waiting = self._idle.get((host, port), [])
        while waiting:
            client, opened, since = waiting.pop()  # the most recently used: the least likely to be closed
            if now - since < self.idle and now - opened < self.lifetime and client.is_connected:
                self._opened[id(client)] = opened
                return client
            self._quit(client)
        return None

    def discard(self, client: _Client) -> None:
        self._opened.pop(id(client), None)
        client.close()

    async def done(self, host: str, port: int, client: _Client, results: dict[str, Result], clean: bool) -> None:
        """Keep ``client`` for the next message, or close it."""
        opened = self._opened.pop(id(client), time.monotonic())
        waiting = self._idle.setdefault((host, port), [])
        if clean and client.is_connected and len(waiting) < self.size and time.monotonic() - opened < self.lifetime:
            waiting.append((client, opened, time.monotonic()))
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.idle, self._expire)
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            client.close()

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        for key, waiting in self._idle.items():
            keep = [w for w in waiting if now - w[2] < self.idle]
            for client, _, since in waiting:
                if now - since >= self.idle:
                    self._quit(client)
            self._idle[key] = keep
        if any(self._idle.values()):
            self._timer = asyncio.get_running_loop().call_later(self.idle, self._expire)

    def _quit(self, client: _Client) -> None:
        async def quit() -> None:
            try:
                await asyncio.wait_for(client.quit(), 5)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                client.close()

        task = asyncio.get_running_loop().create_task(quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every waiting session (the delivery worker stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiting in self._idle.values():
            for client, _, _ in waiting:
                self._quit(client)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


_caches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionCache] = weakref.WeakKeyDictionary()


def connection_cache() -> ConnectionCache:
    """The connection cache of the running event loop (sessions belong to one loop)."""
    loop = asyncio.get_running_loop()
    cache = _caches.get(loop)
    if cache is None:
        cache = _caches[loop] = ConnectionCache()
    return cache


def _needs_smtputf8(mail_from: str, rcpts: Sequence[str], data: bytes) -> bool:
    """Whether an address or the header section is UTF-8 (RFC 6531, RFC 6532)."""
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else len(data)]
    return not mail_from.isascii() or any(not r.isascii() for r in rcpts) or not head.isascii()


def _mail_options(client: aiosmtplib.SMTP, data: bytes, utf8: bool) -> list[bytes]:
    options = []
    if client.supports_extension("size"):
        options.append(b"SIZE=%d" % len(data))
    if client.supports_extension("8bitmime") and not data.isascii():
        options.append(b"BODY=8BITMIME")
    if utf8:
        options.append(b"SMTPUTF8")
    return options


# For the usual shape of an address, aiosmtplib's quote_address, which parses every
# address with email.utils.parseaddr, gives it back as it is between angle brackets
# (tests/test_transports_wire.py checks that on random input).
_PLAIN_ADDRESS = re.compile(PLAIN_ADDRESS)


def _path(address: str) -> str:
    """The reverse- or forward-path for ``address`` exactly as aiosmtplib's MAIL and RCPT would send it."""
    if not address:
        return "<>"
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


async def _command(client: aiosmtplib.SMTP, verb: bytes, *args: bytes, ok: tuple[int, ...]) -> aiosmtplib.SMTPResponse:
    """MAIL or RCPT as aiosmtplib's own methods send them, from a path already made by ``_path``."""
    response = await client.execute_command(verb, *args)
    if response.code not in ok:
        raise aiosmtplib.SMTPResponseException(response.code, response.message)
    return response


def wire_data(data: bytes) -> bytes:
    """The bytes aiosmtplib's DATA sends after the 354: CRLF line ends, stuffed dots, the end marker.

    Mail from the edge almost always has CRLF line ends and no line that starts
    with a dot; for it the two regular-expression passes over the whole message
    change nothing, and they were the largest share of the delivery's own CPU.
    """
    if crlf_only(data) and not data.startswith(b".") and not _has_line_dot(data):
        return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"


def _has_line_dot(data: bytes) -> bool:
    """``b"\\n." in data``, searched only up to the last dot (found from the end, in C): base64 holds none."""
    last = data.rfind(b".")
    return last > 0 and data.find(b"\n.", 0, last + 1) >= 0


async def _data(client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    """aiosmtplib's ``SMTP.data`` with the message made ready for the wire by ``wire_data``.

    The client is ours alone while it carries a transaction (mailgw.delivery.transports.ConnectionCache),
    so the message is written and its reply read without the library's command lock.
    """
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        protocol.write(wire_data(data))
        response = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()  # as aiosmtplib does: a session out of step is never used again
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _from_code(code: int, text: str, remote: str) -> Result:
    if 500 <= code < 600:
        return permanent(text, remote)
    return temporary(text, remote)


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


@functools.cache
def _opportunistic_tls() -> ssl.SSLContext:
    # One context for every delivery: building one loads the system's CA store
    # (about 10 ms of CPU), which was most of the cost of a delivery. Nothing is
    # verified, so no CA is needed; the defaults' protocol floor stays.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _to_maildir(root: str, rcpts: Sequence[str], data: bytes) -> dict[str, Result]:
    """Write one copy per recipient into ROOT/<address>/new (tmp, fsync, rename)."""
    results = {}
    for rcpt in rcpts:
        box = os.path.join(root, urllib.parse.quote(rcpt.lower(), safe="@.+-_"))
        try:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(box, sub), mode=0o700, exist_ok=True)
            name = f"{time.time_ns()}.{os.getpid()}.{os.urandom(4).hex()}.{socket.gethostname()}"
            with replacing(os.path.join(box, "new", name), tmp=os.path.join(box, "tmp", name)) as f:
                f.write(data.replace(b"\r\n", b"\n"))  # Maildir files use the local line ending
            results[rcpt] = sent("250 2.0.0 delivered to maildir", box)
        except OSError as e:
            results[rcpt] = temporary(f"maildir {box}: {e.strerror}", box)
    return results
