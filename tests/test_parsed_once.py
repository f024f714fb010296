"""Message.headers and Message.parsed parse each header value once, and never serve a stale one."""

from __future__ import annotations

import email.message

from mailgw.message.model import Envelope, Message

RAW = (
    b"From: =?utf-8?b?VsSDbiB0aMawIFPhu58gVFRUVA==?= <vanthu.sotttt@binhthuan.gov.vn>\r\n"
    b"To: a@hanoi.gov.vn, b@hanoi.gov.vn\r\nSubject: =?utf-8?b?S+G6vyBob+G6oWNo?=\r\n"
    b"Received: from a\r\nReceived: from b\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nn\xe1\xbb\x99i dung\r\n--XX--\r\n"
)


def _message() -> Message:
    return Message("T1", Envelope(mail_from="", rcpts=["a@hanoi.gov.vn"], listener="relay", role="relay", client_ip="127.0.0.1"), RAW)


def test_the_same_parsed_values_as_the_standard_library():
    standard = email.message_from_bytes(RAW, policy=email.policy.default)
    for m in (_message().headers, _message().parsed):
        for name in ("From", "to", "SUBJECT", "Content-Type", "Received", "X-Missing"):
            assert m.get(name) == standard.get(name)
            assert m.get_all(name) == standard.get_all(name)
        assert m.get("X-Missing", "none") == "none" and m.get_all("X-Missing", []) == []
        assert m["from"].addresses[0].display_name == "Văn thư Sở TTTT"
        assert m.get_content_type() == "multipart/mixed" and m.get_param("boundary") == "XX"
    part = next(p for p in _message().parsed.walk() if p.get_content_type() == "text/plain")
    assert isinstance(part, type(_message().parsed)) and part.get_content() == "nội dung"


def test_a_header_is_parsed_once_and_a_changed_one_again():
    h = _message().headers
    first = h["From"]
    assert h.get("from") is first and h.get_all("FROM")[0] is first
    h.replace_header("From", "b@hanoi.gov.vn")
    assert str(h["From"]) == "b@hanoi.gov.vn"
    del h["Subject"]
    assert h["Subject"] is None
    h["Subject"] = "mới"
    assert h["Subject"] == "mới"
