"""What the delivery client puts on the wire: the same bytes aiosmtplib's own MAIL, RCPT and DATA would send.

``mailgw.delivery.transports`` skips aiosmtplib's address parse and its two passes over
the message when they would change nothing; these tests compare the shortcuts
with the library on random input, then deliver to a real server over STARTTLS.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.config.settings import QueueSettings, Route
from mailgw.delivery import transports
from tests.sink import Sink


def aiosmtplib_wire(data: bytes) -> bytes:
    """aiosmtplib's SMTPProtocol.execute_data_command, minus the writing."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"


def count_pipelined(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The MAIL command of every transaction sent with PIPELINING from now on (the real path runs)."""
    pipelined: list[bytes] = []
    real = transports._pipelined

    async def counted(*args, **kwargs):  # noqa: ANN002, ANN003
        pipelined.append(args[1])
        return await real(*args, **kwargs)

    monkeypatch.setattr(transports, "_pipelined", counted)
    return pipelined


@pytest.mark.parametrize("data", [
    b"", b"\r\n", b"a", b"a\r\n", b".", b".\r\n", b"a\r\n.b\r\n", b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\r", b"\n", b"\r",
    b"Subject: x\r\n\r\n" + b"line\r\n" * 100,
    # A dot line before a base64 attachment (no dot in it), and a dot line at the very end:
    # the search for a line's dot stops at the last dot.
    b"Subject: x\r\n\r\n.hidden\r\n" + b"QUJDREVG\r\n" * 2000, b"a.b\r\n" + b"QUJD\r\n" * 2000 + b".\r\n",
    b"a.b\r\n" + b"QUJD\r\n" * 2000 + b"\n.", b"a\n.", b"\n.", b"a.\r\n" + b"QUJD\r\n" * 2000,
])
def test_wire_data_is_aiosmtplibs(data: bytes) -> None:
    assert transports.wire_data(data) == aiosmtplib_wire(data)


@settings(max_examples=3000, deadline=None, database=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"a", b"\xc3\xa2", b" "]), max_size=30))
def test_wire_data_is_aiosmtplibs_on_random_input(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert transports.wire_data(data) == aiosmtplib_wire(data)


def library_path(address: str) -> object:
    try:
        return quote_address(address)
    except ValueError:
        return ValueError


def our_path(address: str) -> object:
    try:
        return transports._path(address)
    except ValueError:
        return ValueError


@pytest.mark.parametrize("address", [
    "vanthu@binhthuan.gov.vn", "a.b+c@x-y.gov.vn", "o'brien@example.com", "{x}|~@a.vn", "nguyễn@ví-dụ.vn",
    '"a b"@c.vn', "a..b@c.vn", ".a@c.vn", "a@[127.0.0.1]", "a b@c.vn", "a@b.vn>", "<a@b.vn>", "a@b.vn SIZE=1",
])
def test_paths_are_aiosmtplibs(address: str) -> None:
    assert our_path(address) == library_path(address)


@settings(max_examples=3000, deadline=None, database=None)
@given(st.text(alphabet="ab.@-+'\"<> ()[]\\,;:=é\r\n#!{}", max_size=24))
def test_paths_are_aiosmtplibs_on_random_input(address: str) -> None:
    assert our_path(address) == library_path(address)


def test_the_null_sender_is_an_empty_path() -> None:
    assert transports._path("") == "<>" == quote_address("")


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelining"])
async def test_delivery_over_starttls_sends_ehlo_again_and_uses_the_extensions(pipelining: bool, monkeypatch) -> None:
    """After STARTTLS the client must greet again (RFC 3207 4.2) before it reads the extensions it
    needs: SIZE, 8BITMIME and SMTPUTF8 for an internationalised address; with PIPELINING, the
    replies are read from the TLS layer's transport."""
    pipelined = count_pipelined(monkeypatch)
    sink = Sink()
    sink.pipelining = pipelining
    sink.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("sink.test").configure_cert(sink.tls_context)
    await sink.start()
    try:
        data = "From: nguyễn@ví-dụ.vn\r\nSubject: Báo cáo\r\n\r\n.dòng bắt đầu bằng dấu chấm\nbare LF\r\n".encode()
        results = await transports.deliver(Route("smtp", "127.0.0.1", sink.port), "nguyễn@ví-dụ.vn", ["ban@example.com"],
                                           data, hostname="gw.test", timeouts=QueueSettings())
        assert results["ban@example.com"].ok, results
        [got] = sink.messages
        assert sink.tls_sessions == 1
        assert got.mail_from == "nguyễn@ví-dụ.vn"
        assert {"SMTPUTF8", "BODY=8BITMIME", f"SIZE={len(data)}"} <= set(got.mail_options)
        assert got.data == normalize_message_line_endings(data)  # dots unstuffed by the sink: the text arrives as sent
        assert len(pipelined) == pipelining
    finally:
        await sink.stop()
        await transports.connection_cache().close()


async def test_a_refused_data_reply_is_the_next_hops_own() -> None:
    sink = Sink()
    sink.data_reply = lambda rcpts: "554 5.6.0 no thanks"
    await sink.start()
    try:
        results = await transports.deliver(Route("smtp", "127.0.0.1", sink.port), "a@b.vn", ["c@d.vn"], b"x\r\n",
                                           hostname="gw.test", timeouts=QueueSettings())
        result = results["c@d.vn"]
        assert not result.ok and result.permanent and result.reply.startswith("DATA: 554 5.6.0 no thanks")
    finally:
        await sink.stop()
        await transports.connection_cache().close()


# --- PIPELINING (RFC 2920): MAIL, RCPT and DATA sent together -------------------------------------

def aiosmtplib_replies(stream: list[bytes]) -> list[object]:
    """What aiosmtplib's own protocol makes of each reply, given one at a time as it reads them."""
    loop = asyncio.new_event_loop()
    try:
        out: list[object] = []
        for raw in stream:
            protocol = SMTPProtocol(loop=loop)
            protocol._response_waiter = loop.create_future()
            protocol._response_pending = True
            protocol.data_received(raw)
            waiter = protocol._response_waiter
            if not waiter.done():
                out.append(None)
            elif waiter.exception() is not None:
                e = waiter.exception()
                out.append((type(e).__name__, e.code, e.message))
            else:
                r = waiter.result()
                out.append((r.code, r.message))
        return out
    finally:
        loop.close()


def our_replies(stream: list[bytes], chunk: int) -> list[object]:
    """``transports.ReplyParser`` on the same replies, one stream arriving ``chunk`` bytes at a time."""
    data = b"".join(stream)
    parser = transports.ReplyParser()
    out: list[object] = []
    for i in range(0, len(data) or 1, chunk):
        out += [(r.code, r.message) for r in parser.feed(data[i:i + chunk])]
        if (e := parser.error) is not None:
            out.append((type(e).__name__, e.code, e.message))
            return out
    if len(out) < len(stream):
        out.append(None)  # a reply still incomplete
    return out


def test_a_reply_sent_a_byte_at_a_time_is_read_in_linear_time() -> None:
    """32 KiB of continuation lines, one byte per read: each byte is looked at once (a hostile
    next hop must not make the delivery loop quadratic); the reply is aiosmtplib's."""
    reply = b"250-x\r\n" * 4000 + b"250 done\r\n"
    parser = transports.ReplyParser()
    got = [r for i in range(len(reply)) for r in parser.feed(reply[i:i + 1])]
    assert [(r.code, r.message) for r in got] == aiosmtplib_replies([reply])
    assert len(parser._buffer) == 0 and parser._size == 0


_LINES = st.sampled_from([b"250", b"250 ", b"250 OK", b"354 go ahead", b"550 5.1.1 no such user", b"25O oops",
                          b"251 forwarded", b"421 bye", b"250 x\xc3\xa2y", b"250 \xff\xfe", b"250\t tab ",
                          b"  ", b"2", b"250-", b"250 " + b"x" * 9000])
_REPLY = st.builds(lambda first, more, end: b"".join(b"%s-%s%s" % (m[:3], m[4:], end) for m in more) + first + end,
                   _LINES.filter(lambda line: line[3:4] != b"-"), st.lists(_LINES, max_size=3), st.sampled_from([b"\r\n", b"\n"]))


@settings(max_examples=2000, deadline=None, database=None)
@given(st.lists(_REPLY, min_size=1, max_size=5), st.integers(min_value=1, max_value=64))
def test_replies_sent_together_are_read_as_aiosmtplib_reads_each(stream: list[bytes], chunk: int) -> None:
    ours = our_replies(stream, chunk)
    theirs = aiosmtplib_replies(stream)
    # Ours stops at the first error (the session is closed); aiosmtplib saw each reply alone.
    for i, got in enumerate(ours):
        assert got == theirs[i], (i, stream)
    if len(ours) < len(stream):
        assert ours[-1] is not None and len(ours[-1]) == 3  # an error ended it


class ScriptedHop:
    """A next hop that offers PIPELINING and answers MAIL, RCPT and DATA only once DATA has come,
    all its replies in one write: a client that waited for each reply would wait for ever."""

    def __init__(self, replies: list[bytes], final: bytes = b"250 2.0.0 queued\r\n", close_after: bool = False):
        self.replies, self.final, self.close_after = replies, final, close_after
        self.received = b""  # everything the client sent, after EHLO
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 hop.test ESMTP\r\n")
            await reader.readline()
            writer.write(b"250-hop.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            self.received = await reader.readuntil(b"DATA\r\n")
            writer.write(b"".join(self.replies))
            if self.close_after:
                writer.close()
                return
            if self.replies[-1].startswith(b"354"):
                self.received += await reader.readuntil(b"\r\n.\r\n")
                writer.write(self.final)
            while await reader.readline():
                writer.write(b"221 bye\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _deliver(port: int, rcpts: list[str], data: bytes = b"Subject: x\r\n\r\nbody\r\n") -> dict[str, transports.Result]:
    return await transports.deliver(Route("smtp", "127.0.0.1", port), "a@b.vn", rcpts, data, hostname="gw.test",
                                    timeouts=QueueSettings())


async def test_mail_rcpt_and_data_go_in_one_write_and_their_replies_come_back_together() -> None:
    hop = ScriptedHop([b"250 2.1.0 ok\r\n", b"250 2.1.5 ok\r\n", b"550 5.1.1 no such user\r\n", b"354 go\r\n"])
    await hop.start()
    try:
        results = await asyncio.wait_for(_deliver(hop.port, ["c@d.vn", "x@d.vn"]), 10)
        assert results["c@d.vn"] == transports.sent("250 2.0.0 queued", f"127.0.0.1:{hop.port}")
        assert not results["x@d.vn"].ok and results["x@d.vn"].permanent
        assert results["x@d.vn"].reply == "RCPT TO: 550 5.1.1 no such user"
        assert hop.received.split(b"\r\n")[:3] == [b"MAIL FROM:<a@b.vn>", b"RCPT TO:<c@d.vn>", b"RCPT TO:<x@d.vn>"]
        assert hop.received.endswith(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    finally:
        await transports.connection_cache().close()
        await hop.stop()


class DribblingHop(ScriptedHop):
    """Answers MAIL with a reply that never ends: a continuation line now and then (a tarpit)."""

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 hop.test ESMTP\r\n")
            await reader.readline()
            writer.write(b"250-hop.test\r\n250 PIPELINING\r\n")
            await reader.readuntil(b"DATA\r\n")
            while not writer.is_closing():
                writer.write(b"250-still thinking\r\n")
                await asyncio.sleep(0.05)  # the hop's pace, well inside the client's timeout
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_reply_that_never_ends_times_out_as_a_whole() -> None:
    hop = DribblingHop([])
    await hop.start()
    try:
        results = await asyncio.wait_for(
            transports.deliver(Route("smtp", "127.0.0.1", hop.port), "a@b.vn", ["c@d.vn"], b"x\r\n", hostname="gw.test",
                               timeouts=QueueSettings(command_timeout=0.3)), 10)
        result = results["c@d.vn"]
        assert not result.ok and not result.permanent and result.reply.endswith("timed out"), result
    finally:
        await transports.connection_cache().close()
        await hop.stop()


async def test_garbage_for_a_reply_ends_the_session_and_nothing_after_it_is_paired() -> None:
    """A line that is no reply, then a good one: the good one must not become MAIL's reply."""
    hop = ScriptedHop([b"garbage line\r\n", b"550 5.1.1 the RCPT's reply\r\n", b"354 go\r\n"])
    await hop.start()
    try:
        results = await asyncio.wait_for(_deliver(hop.port, ["c@d.vn"]), 10)
        result = results["c@d.vn"]
        assert not result.ok and not result.permanent and "Malformed SMTP response line" in result.reply, result
    finally:
        await transports.connection_cache().close()
        await hop.stop()


async def test_a_hop_that_leaves_after_the_354_leaves_the_message_to_be_retried() -> None:
    hop = ScriptedHop([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"], close_after=True)
    await hop.start()
    try:
        results = await asyncio.wait_for(_deliver(hop.port, ["c@d.vn"]), 10)
        assert not results["c@d.vn"].ok and not results["c@d.vn"].permanent  # temporary: tried again later
    finally:
        await transports.connection_cache().close()
        await hop.stop()


async def test_a_hop_that_takes_data_with_no_recipient_gets_no_message() -> None:
    hop = ScriptedHop([b"250 ok\r\n", b"550 5.1.1 no\r\n", b"354 go\r\n"])
    await hop.start()
    try:
        results = await asyncio.wait_for(_deliver(hop.port, ["c@d.vn"]), 10)
        assert results["c@d.vn"].reply == "RCPT TO: 550 5.1.1 no" and results["c@d.vn"].permanent
        assert not hop.received.endswith(b".\r\n")
    finally:
        await transports.connection_cache().close()
        await hop.stop()


@pytest.mark.parametrize("script", ["ok", "rcpt", "all-rcpts", "mail", "data", "temp-mail"])
async def test_pipelined_results_are_those_of_one_command_at_a_time(script: str, monkeypatch) -> None:
    """The same next hop (aiosmtpd), with and without PIPELINING offered: the same results, and
    on both the same message arrives."""
    pipelined = count_pipelined(monkeypatch)
    outcomes = []
    for pipelining in (False, True):
        sink = Sink()
        sink.pipelining = pipelining
        sink.mail_reply = lambda s: {"mail": "552 5.3.4 too big", "temp-mail": "451 4.3.0 later"}.get(script)
        sink.rcpt_reply = lambda r: ("550 5.1.1 unknown" if script == "all-rcpts" or (script == "rcpt" and r.startswith("x"))
                                     else None)
        sink.data_reply = lambda rcpts: "554 5.6.0 no thanks" if script == "data" else None
        await sink.start()
        try:
            results = await _deliver(sink.port, ["c@d.vn", "x@d.vn", "e@d.vn"], "Subject: ý\r\n\r\n.dot\r\n".encode())
            # a second message on the same session, if the first left it clean
            again = await _deliver(sink.port, ["f@d.vn"])
            outcomes.append(({r: (v.ok, v.permanent, v.reply) for r, v in results.items()},
                             {r: (v.ok, v.permanent, v.reply.split(" sink")[0]) for r, v in again.items()},
                             [(m.mail_from, m.rcpts, m.data) for m in sink.messages], len(sink.sessions)))
        finally:
            await transports.connection_cache().close()
            await sink.stop()
        assert len(pipelined) == (2 if pipelining else 0)
    assert outcomes[0] == outcomes[1]
