"""The message text of SMTP DATA: read to the lone dot in chunks, check its limits, undo the dot-stuffing.

aiosmtpd reads DATA one line at a time: a Python loop turn and a StreamReader
call per line, a tenth of the gateway's CPU for a 5 KB message and far more for
a 200 KB one. ``read`` gives exactly the same result from whole chunks: it lets
the StreamReader search for the end of data (``CRLF . CRLF``) and only counts
and splits with bytes methods. The result is the same as aiosmtpd's for every
input (tests/test_datastream.py runs both on the same bytes), and so is the
SMTP-smuggling defence: only ``CRLF . CRLF`` ends the data, never a bare LF or
CR around the dot.

Nothing after the end of data is consumed: commands that a client pipelines
after the dot (RFC 2920) stay in the reader for the session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, syntax

log = logging.getLogger(__name__)

END = b"\r\n.\r\n"  # a line end, then the line that ends the data (RFC 5321 4.1.1.4)

# aiosmtpd's replies, so that the edge rewrites them as it does aiosmtpd's own (mailgw.message.replies.BUILTIN_REWRITES).
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 Error: Too much mail data"
DATA_DEADLINE = "421 4.4.2 Qua thoi gian nhan thu / DATA took too long, closing connection"


async def read(reader: asyncio.StreamReader, size_limit: int | None, line_limit: int) -> tuple[bytes, str | None]:
    """The message (unstuffed) and None, or b"" and the refusal once the whole DATA stream has been read.

    ``size_limit`` bounds the bytes on the wire (stuffing dots and line ends
    included, as aiosmtpd counts them), ``line_limit`` each line with its CRLF.
    Past the size limit nothing more is kept, but the stream is still read to
    its end so the session stays in step.
    """
    # The data may end at once (an empty message: ".\r\n" right after the 354).
    # Read byte by byte while what was read could still be the start of the end
    # marker, counting the line end before the data; usually one byte.
    head = bytearray()
    tail = b"\r\n"
    while _partial_end(tail):
        head += await reader.readexactly(1)
        tail = (tail + head[-1:])[-len(END):]
        if tail == END:
            del head[-3:]  # ".\r\n" ends the data; the line end before it is the message's
            if size_limit and len(head) > size_limit:
                return b"", TOO_MUCH_DATA
            return _finish([bytes(head)], line_limit)
    kept: list[bytes] = [bytes(head)]
    total = len(head)
    # Past the size limit nothing is kept but the line that crossed it, as far as
    # needed to tell which refusal aiosmtpd gives: it refuses a line longer than
    # ``line_limit`` (CRLF not counted) as soon as it starts, before it counts its
    # size, and any other line after counting it.
    crossing: bytes | None = None
    fault = TOO_MUCH_DATA
    # From here on, an end marker cannot have begun in what was read: the reader
    # finds it in its own buffer, and what it hands over without one always
    # leaves the last four bytes behind.
    while True:
        try:
            chunk = await reader.readuntil(END)
            chunk = chunk[:-3]  # the last line end is the message's; ".\r\n" is not
            done = True
        except asyncio.LimitOverrunError as e:
            chunk = await reader.read(e.consumed)
            done = False
        total += len(chunk)
        if crossing is None:
            kept.append(chunk)
            if size_limit and total > size_limit:
                joined = b"".join(kept)
                last = joined.rfind(b"\r\n", 0, size_limit)  # the end of the last line within the limit
                start = last + 2 if last >= 0 else 0
                if has_long_line(joined[:start], line_limit):  # a line before the one that crossed
                    fault = LINE_TOO_LONG
                kept, crossing = [], joined[start:]
        elif b"\r\n" not in crossing and len(crossing) <= line_limit + 1:
            crossing += chunk
        if done:
            if crossing is None:
                return _finish(kept, line_limit)
            if len(crossing.split(b"\r\n", 1)[0]) > line_limit:
                fault = LINE_TOO_LONG
            return b"", fault


def _partial_end(tail: bytes) -> bool:
    """Whether ``tail`` ends with a proper beginning of END."""
    return any(tail.endswith(END[:n]) for n in range(1, len(END)))


def has_long_line(data: bytes, line_limit: int) -> bool:
    """Whether a line of ``data`` (split at CRLF) is longer than ``line_limit`` with its CRLF, as aiosmtpd counts.

    The same as ``max(map(len, data.split(b"\r\n"))) + 2 > line_limit``, without the list of lines.

    From a line's start, the window of ``line_limit`` bytes holds the CRLF that
    ends the line exactly when the line fits (its text is at most
    ``line_limit - 2`` bytes); the last CRLF found in the window (from its end,
    in C) is where the next search starts, so each step passes a whole window
    of short lines. 52 against 336 us for a 200 KB message
    (tests/test_datastream.py holds it to the split).
    """
    most = line_limit - 2
    start, end = 0, len(data)
    while end - start > most:
        crlf = data.rfind(b"\r\n", start, start + line_limit)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


def _finish(kept: list[bytes], line_limit: int) -> tuple[bytes, str | None]:
    """Within the size limit: the message, or the line-length refusal."""
    raw = b"".join(kept)
    if has_long_line(raw, line_limit):
        return b"", LINE_TOO_LONG
    if raw.startswith(b"."):
        raw = raw[1:]
    # RFC 5321 4.5.2: drop each line's stuffing dot. A stuffed line's dot is at or before the
    # last dot (found from the end, in C), so the search for one stops there, not at the end of
    # a base64 attachment, which holds none.
    last = raw.rfind(b".")
    if last < 2 or raw.find(b"\r\n.", 0, last + 1) < 0:
        return raw, None
    return raw.replace(b"\r\n.", b"\r\n"), None


if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP as _SMTP  # what the mixin is mixed into
else:
    _SMTP = object

class ChunkedData(_SMTP):
    """aiosmtpd's DATA command with the message read by ``read``; mix in before aiosmtpd's ``SMTP``."""

    session: Any
    envelope: Any
    data_size_limit: int | None
    line_length_limit: int
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    data_deadline: float | None = None  # seconds for the whole DATA stream; then 421 and close
    in_data = False  # while the DATA stream is read (the server resets its idle timer on every read)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """The checks and replies of aiosmtpd's own, in its order; only the reading differs."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.in_data = True
        try:
            content, fault = await asyncio.wait_for(
                read(self._reader, self.data_size_limit, self.line_length_limit), self.data_deadline)
        except asyncio.TimeoutError:
            log.info("%r: DATA not finished within %s s", self.session.peer, self.data_deadline)
            await self.push(DATA_DEADLINE)
            await self._writer.drain()
            self._writer.transport.abort()  # the client is still sending: no orderly close to wait for
            return
        except asyncio.CancelledError:  # the connection was lost (aiosmtpd cancels us on EOF)
            log.info("%r: connection lost during DATA", self.session.peer)
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:  # EOF seen before the cancellation: the client is gone all the same
            log.info("%r: connection closed during DATA", self.session.peer)
            self._writer.close()
            return
        finally:
            self.in_data = False
        if fault is not None:
            await self.push(fault)
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped
            return
        self.envelope.content = self.envelope.original_content = content
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            # A hook that failed still ends the transaction: the client gets its reply to
            # DATA from handle_exception, and a MAIL after it must not be "nested".
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped
        await self.push("250 OK" if status is MISSING else status)
