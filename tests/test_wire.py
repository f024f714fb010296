"""Replies on the wire: US-ASCII unless the transaction is SMTPUTF8, lines of at most 512 octets.

A property of ``smtp.wire.reply_lines`` for any text (hypothesis), then the real
gateway over a raw socket: a refusal that names 25 addresses, with and without
SMTPUTF8.
"""

from __future__ import annotations

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.classify.vn.text import fold
from mailgw.smtp.wire import MAX_LINE, reply_lines
from tests.conftest import port
from tests.dialog import Dialog

VIETNAMESE = "Thư có văn bản mang dấu độ mật; địa chỉ không phải thư công vụ: Đặng Ưng Ý"
words = st.one_of(
    st.sampled_from(VIETNAMESE.split() + ["/", "Official", "documents", "nguoidan.x@gmail.com"]),
    st.text(min_size=1, max_size=40).map(lambda t: "".join(t.split()) or "x"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz.@", min_size=200, max_size=700),  # longer than a line
)


@settings(max_examples=400, deadline=None)
@given(code=st.sampled_from([250, 451, 550, 552, 554]), detail=st.sampled_from(["7.1", "5.2", "3.4", "0.0"]),
       text=st.lists(words, min_size=1, max_size=200), xid=st.one_of(st.none(), st.from_regex(r"[0-9A-F]{21}", fullmatch=True)),
       utf8=st.booleans())
def test_every_line_fits_and_is_ascii_unless_smtputf8(code, detail, text, xid, utf8):
    body = " ".join(text) + (f" [{xid}]" if xid else "")
    status = f"{code} {code // 100}.{detail} {body}"
    lines = reply_lines(status, utf8=utf8)
    for i, line in enumerate(lines):
        assert len(line.encode("utf-8")) + 2 <= MAX_LINE
        assert line[:3] == str(code) and line[3] == ("-" if i < len(lines) - 1 else " ")
        assert "\r" not in line and "\n" not in line
        if not utf8:
            assert line.isascii()
    if xid:
        assert lines[-1].endswith(f" [{xid}]")
    # Nothing is lost but the spaces where lines were split, and (without SMTPUTF8) the diacritics.
    sent = "".join(line[4:] for line in lines).replace(" ", "")
    expected = status[4:] if utf8 else fold(status[4:]).encode("ascii", "replace").decode()
    enhanced_repeats = (len(lines) - 1) * len(f"{code // 100}.{detail}")
    assert len(sent) == len(expected.replace(" ", "")) + enhanced_repeats
    if utf8 and any(not w.isascii() for w in text):
        assert not "".join(lines).isascii()  # the diacritics are kept


async def _raw_reply(d: Dialog) -> list[bytes]:
    lines = []
    while True:
        line = await asyncio.wait_for(d.reader.readline(), 10)
        assert line.endswith(b"\r\n"), line
        lines.append(line)
        if line[3:4] != b"-":
            return lines


async def _refusal(gw, smtputf8: bool) -> list[bytes]:
    rcpts = [f"nguoidan.so{i:02d}.voi.mot.ten.dai@gmail.com" for i in range(25)]
    d = await Dialog.open(port(gw, "relay"))
    await d.reply()
    assert (await d.cmd("EHLO client.test"))[0] == 250
    assert (await d.cmd("MAIL FROM:<nvan@binhthuan.gov.vn>" + (" SMTPUTF8" if smtputf8 else "")))[0] == 250
    for r in rcpts:
        assert (await d.cmd(f"RCPT TO:<{r}>"))[0] == 250
    assert (await d.cmd("DATA"))[0] == 354
    d.send(("From: nvan@binhthuan.gov.vn\r\nTo: " + ",\r\n ".join(rcpts) + "\r\n"
            "Subject: Quyết định số 25/QĐ-UBND\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Gửi kèm quyết định.\r\n.\r\n").encode())
    lines = await _raw_reply(d)
    await d.cmd("QUIT")
    await d.close()
    return lines


async def test_a_long_refusal_is_split_and_folded_without_smtputf8(gateway, sink):
    lines = await _refusal(gateway, smtputf8=False)
    assert len(lines) > 1 and all(len(line) <= MAX_LINE and line.isascii() for line in lines)
    assert all(line.startswith(b"550-5.7.1 ") for line in lines[:-1]) and lines[-1].startswith(b"550 5.7.1 ")
    text = b"".join(line[10:-2] + b" " for line in lines).decode()
    assert "Van ban hanh chinh" in text and text.count("@gmail.com") == 50  # 25 addresses, in both languages
    assert re.search(rb" \[[0-9A-F]{16,}\]\r\n$", lines[-1])


async def test_with_smtputf8_the_diacritics_are_kept(gateway, sink):
    lines = await _refusal(gateway, smtputf8=True)
    assert all(len(line) <= MAX_LINE for line in lines)
    assert "Văn bản hành chính" in b"".join(lines).decode("utf-8")
