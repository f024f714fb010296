"""The edge reads DATA in chunks (mailgw.smtp.datastream) and must answer exactly as aiosmtpd's line loop does.

Two real servers run side by side on loopback: aiosmtpd's own ``SMTP`` and the
same class with ``ChunkedData`` mixed in, with the same small limits. The same
bytes go to both over real sockets, cut into the same pieces, with a QUIT
pipelined after the end of data; the replies and the message each handler got
must be identical. A difference would be a way to smuggle a message past the
gateway (RFC 5321 4.1.1.4, the 2023 SMTP-smuggling attacks) or to lose one.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.smtp import datastream
from mailgw.smtp.datastream import ChunkedData

SIZE_LIMIT = 3000


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(bytes(envelope.original_content))
        return "250 OK kept"


class Chunked(ChunkedData, SMTP):
    pass


class Servers:
    """aiosmtpd's SMTP and ours, on one event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.recorders = {"aiosmtpd": Recorder(), "chunked": Recorder()}
        self.ports: dict[str, int] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for name, cls in (("aiosmtpd", SMTP), ("chunked", Chunked)):
            recorder = self.recorders[name]
            factory = lambda cls=cls, recorder=recorder: cls(recorder, data_size_limit=SIZE_LIMIT, decode_data=False, hostname="t")  # noqa: E731
            server = asyncio.run_coroutine_threadsafe(self.loop.create_server(factory, "127.0.0.1", 0), self.loop).result(10)
            self.ports[name] = server.sockets[0].getsockname()[1]
            self._servers = getattr(self, "_servers", []) + [server]

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    s.close()


def _reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """One whole reply (multi-line ones too)."""
    while True:
        start = 0
        while (end := buffer.find(b"\r\n", start)) >= 0:
            if buffer[start + 3:start + 4] != b"-":
                reply = bytes(buffer[: end + 2])
                del buffer[: end + 2]
                return reply
            start = end + 2
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a whole reply")
        buffer += chunk


def exchange(port: int, pieces: list[bytes], pause: float) -> bytes:
    """Open a transaction, send ``pieces`` after the 354 (then QUIT, pipelined), return every reply after the 354."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        _reply(sock, buffer)
        for command in (b"EHLO client\r\n", b"MAIL FROM:<a@b.vn>\r\n", b"RCPT TO:<c@d.vn>\r\n", b"DATA\r\n"):
            sock.sendall(command)
            reply = _reply(sock, buffer)
        assert reply.startswith(b"354"), reply
        for piece in pieces:
            sock.sendall(piece)
            if pause:
                time.sleep(pause)
        sock.sendall(b"QUIT\r\n")
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            buffer += chunk
        return bytes(buffer)


def both(servers: Servers, pieces: list[bytes], pause: float = 0.0) -> dict[str, tuple[bytes, list[bytes]]]:
    outcome = {}
    for name, port in servers.ports.items():
        recorder = servers.recorders[name]
        recorder.messages.clear()
        replies = exchange(port, pieces, pause)
        outcome[name] = (replies, list(recorder.messages))
    return outcome


def assert_same(servers: Servers, pieces: list[bytes], pause: float = 0.0) -> tuple[bytes, list[bytes]]:
    outcome = both(servers, pieces, pause)
    assert outcome["chunked"] == outcome["aiosmtpd"], pieces
    return outcome["chunked"]


END = b"\r\n.\r\n"


@pytest.mark.parametrize(
    "data, message",
    [
        (b".\r\n", b""),  # an empty message: the dot right after the 354
        (b"\r\n.\r\n", b"\r\n"),
        (b"Subject: x\r\n\r\nhello\r\n.\r\n", b"Subject: x\r\n\r\nhello\r\n"),
        (b"..leading dot\r\n..\r\n...\r\n.\r\n", b".leading dot\r\n.\r\n..\r\n"),
        (b"a\r\n.\r\nRSET\r\n", b"a\r\n"),  # a command pipelined after the dot stays a command
    ],
)
def test_known_streams_give_the_same_message(servers: Servers, data: bytes, message: bytes) -> None:
    replies, messages = assert_same(servers, [data])
    assert messages == [message]
    assert b"250 OK kept" in replies and replies.endswith(b"221 Bye\r\n")


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"],
)
def test_only_crlf_dot_crlf_ends_the_data(servers: Servers, smuggle: bytes) -> None:
    """The 2023 smuggling shapes: a bare LF or CR around the dot is message text, never the end."""
    data = b"Subject: one\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x.vn>\r\nRCPT TO:<c@d.vn>\r\nDATA\r\nSubject: two\r\n" + END
    replies, messages = assert_same(servers, [data])
    assert len(messages) == 1 and b"Subject: two" in messages[0]
    assert replies.count(b"250 OK kept") == 1


@pytest.mark.parametrize("length", [998, 999, 1000, 1001, 1002, 1003, 2500])
def test_line_length_limit_is_the_same(servers: Servers, length: int) -> None:
    replies, messages = assert_same(servers, [b"x" * length + END])
    assert (b"500 Line too long" in replies) == (length + 2 > 1001)


def test_size_limit_is_the_same_and_the_stream_is_read_to_its_end(servers: Servers) -> None:
    data = b"".join(b"line %04d of a message that is too big\r\n" % i for i in range(400)) + END
    replies, messages = assert_same(servers, [data[i:i + 700] for i in range(0, len(data), 700)], pause=0.001)
    assert b"552 Error: Too much mail data" in replies and messages == []
    assert replies.endswith(b"221 Bye\r\n")  # the session is still in step: QUIT was read as a command


def test_a_long_line_after_the_size_limit_gives_the_size_refusal(servers: Servers) -> None:
    data = b"y" * 990 + b"\r\n"
    replies, _ = assert_same(servers, [data * 4 + b"z" * 1500 + END])
    assert b"552 Error: Too much mail data" in replies


@pytest.mark.parametrize("cut", [100, 500, 1001, 1003])
def test_a_long_line_that_crosses_the_size_limit_is_refused_as_too_long(servers: Servers, cut: int) -> None:
    """aiosmtpd refuses a too-long line as soon as it starts, before it counts its size: so must we,
    even when the line arrives in pieces and the size limit is passed in the middle of it."""
    start = b"".join(bytes([c]) * 900 + b"\r\n" for c in b"abc")
    long_line = b"d" * 2000
    replies, _ = assert_same(servers, [start + long_line[:cut], long_line[cut:] + END], pause=0.02)
    assert b"500 Line too long" in replies


@pytest.mark.parametrize("length", [1000, 1001, 1500])
def test_a_long_line_before_the_size_limit_is_the_refusal_given(servers: Servers, length: int) -> None:
    data = b"a" * length + b"\r\n" + (b"b" * 500 + b"\r\n") * 6 + END
    replies, _ = assert_same(servers, [data[:700], data[700:]], pause=0.02)
    assert b"500 Line too long" in replies


PIECES = st.sampled_from([
    b"\r\n", b"\r", b"\n", b".", b"..", b"\r\n.", b".\r\n", b"\r\n.\r", b"a", b"Subject: x", b" ",
    b"x" * 200, b"y" * 499, b"z" * 997, b"\r\n.\r\n", b"\xc3\xa2", b"\x00",
])


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(PIECES, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=300), max_size=8),
    pause=st.sampled_from([0.0, 0.0, 0.002]),
)
def test_random_streams_get_the_same_replies_and_message(servers: Servers, body: list[bytes], cuts: list[int],
                                                         pause: float) -> None:
    data = b"".join(body) + END
    # The data ends at its first end marker: keep nothing after it, or the rest would be
    # sent as commands, and enough unknown commands make both servers hang up mid-send.
    data = data[:(b"\r\n" + data).find(END) + 3]
    pieces, at = [], 0
    for cut in cuts:
        if at >= len(data):
            break
        pieces.append(data[at:at + cut])
        at += cut
    pieces.append(data[at:])
    assert_same(servers, [p for p in pieces if p], pause)


@pytest.mark.parametrize("raw", [b"", b".", b"a", b"\r\n.", b"\r\n..", b"a\r\n.b\r\n" + b"QUJD\r\n" * 2000,
                                 b"a.b\r\n" + b"QUJD\r\n" * 2000 + b"\r\n.x\r\n", b"a.b\r\n" + b"QUJD\r\n" * 2000,
                                 b"x.\r\n.\r\n", b"\r\n.\r\n.\r\n"])
def test_unstuffing_stops_searching_at_the_last_dot_and_removes_every_stuffing_dot(raw: bytes) -> None:
    """_finish's bounded search unstuffs as the plain replace over the whole message does."""
    expected = raw[1:] if raw.startswith(b".") else raw
    assert datastream._finish([raw], 1 << 20) == (expected.replace(b"\r\n.", b"\r\n"), None)


def _long_by_split(data: bytes, line_limit: int) -> bool:
    """The definition has_long_line replaced: split at every CRLF, measure each line."""
    return max(map(len, data.split(b"\r\n"))) + 2 > line_limit


@pytest.mark.parametrize("line_limit", [3, 4, 10, 1001])
@pytest.mark.parametrize("data", [b"", b"a", b"\r\n", b"ab\r\ncd", b"abcdefgh", b"abcdefgh\r\n", b"\r\r\n\n",
                                  b"a\rb\nc\r\n" * 3, b"x" * 998 + b"\r\n" + b"y" * 999, b"x" * 999 + b"\r\n",
                                  b"QUJD" * 19 + b"\r\n" * 3000, (b"QUJD" * 19 + b"\r\n") * 2700 + b"z" * 1000])
def test_a_long_line_is_found_as_the_split_finds_it(data: bytes, line_limit: int) -> None:
    assert datastream.has_long_line(data, line_limit) == _long_by_split(data, line_limit)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n", b"\r\n", b"\r\n", b"x" * 7, b"\r\r\n"]), max_size=60),
       st.integers(min_value=2, max_value=16))
def test_generated_long_lines_are_found_as_the_split_finds_them(pieces: list[bytes], line_limit: int) -> None:
    data = b"".join(pieces)
    assert datastream.has_long_line(data, line_limit) == _long_by_split(data, line_limit)
