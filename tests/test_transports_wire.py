"""What the delivery client puts on the wire: the same bytes aiosmtplib's own MAIL, RCPT and DATA would send.

``mailgw.delivery.transports`` skips aiosmtplib's address parse and its two passes over
the message when they would change nothing; these tests compare the shortcuts
with the library on random input, then deliver to a real server over STARTTLS.
"""

from __future__ import annotations

import ssl

import pytest
import trustme
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.config.settings import QueueSettings, Route
from mailgw.delivery import transports
from tests.sink import Sink


def aiosmtplib_wire(data: bytes) -> bytes:
    """aiosmtplib's SMTPProtocol.execute_data_command, minus the writing."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"


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


async def test_delivery_over_starttls_sends_ehlo_again_and_uses_the_extensions() -> None:
    """After STARTTLS the client must greet again (RFC 3207 4.2) before it reads the extensions it
    needs: SIZE, 8BITMIME and SMTPUTF8 for an internationalised address."""
    sink = Sink()
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
