"""The fast paths of parse, classify and attachments give what the slow paths they shortcut give.

Each shortcut here replaces a general computation by a cheaper one for the common
case; these tests hold each to the general one, on chosen edge cases and on
generated input.
"""

from __future__ import annotations

import email.feedparser
import email.message
import email.policy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.attachments import inspect_message, mime
from mailgw.model import Envelope, Message, ParsedOnce, parse_one_part
from mailgw.settings import AttachmentLimits

_FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _tree(msg: email.message.Message) -> Any:
    """Everything the feed parser decides about a message, comparable with ==."""
    payload = msg._payload
    return (
        type(msg).__name__, msg.get_unixfrom(), list(msg.raw_items()), [type(d).__name__ for d in msg.defects],
        msg.preamble, msg.epilogue, msg.get_default_type(),
        [_tree(p) for p in payload] if isinstance(payload, list) else payload,
    )


def _feed(raw: bytes, policy: email.policy.Policy, factory: Any = None) -> email.message.Message:
    parser = email.feedparser.BytesFeedParser(_factory=factory, policy=policy)
    parser.feed(raw)
    return parser.close()


_CASES = [
    b"",
    b"\r\n",
    b"\r\nbody",
    b"\nX: y\n\nbody",
    b"\r\r\nbody",
    b"Subject: a\r\n\r\nbody\r\n",
    b"Subject: a\n\nbody\n\n\nmore",
    b"Subject: a\n\n\r\nbody",
    b"Subject: a\r\n\r\n",
    b"Subject: no body at all\r\n",
    b"Subject: no end of line",
    b"Subject: a\r\n folded\r\nX: y\r\n\r\nbody",
    b"Subject : not a header for the parser\r\nX: y\r\n\r\nbody",
    b"Subject: a\r\nnot a header line\r\nX: y\r\n\r\nbody",
    b"From someone Mon Jan 1\r\nSubject: a\r\n\r\nbody",
    b"Subject: a\r\rX: b\r\n\r\nbody",
    b"Subject: a\r\n\r\nn\xe1\xbb\x99i dung \xff\xfe\r\n",
    b"Subject: \xe1\xbb\x99\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody",
    b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+eDwvYj4=\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: MULTIPART/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody",
    b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n",
    b"Content-Type: message\r\n\r\nbody",
    b"Content-Type: text\r\n\r\nbody",
    b"Content-Type: ;;;\r\n\r\nbody",
    b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
]

_header_lines = st.one_of(
    st.sampled_from([b"Subject: a", b"Content-Type: text/plain", b"Content-Type: multipart/mixed; boundary=b",
                     b"Content-Type: message/rfc822", b"Content-Type: text/html; charset=\"utf-8\"",
                     b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
                     b" folded", b"\tfolded", b"not a header", b"X : y", b"From x", b"Content-Type: =?utf-8?q?x?=",
                     b"Subject: \xe1\xbb\x99"]),
    st.binary(max_size=20),
)
_raws = st.builds(
    lambda lines, ends, body: b"".join(line + end for line, end in zip(lines, ends)) + body,
    st.lists(_header_lines, max_size=6),
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b"\n\r\n"]), min_size=6, max_size=6),
    st.one_of(st.binary(max_size=60), st.sampled_from([b"--b\r\n\r\nx\r\n--b--\r\n", b"Subject: in\r\n\r\nx"])),
)


def _same_as_the_feed_parser(raw: bytes) -> None:
    for policy in (email.policy.compat32, email.policy.default):
        one = parse_one_part(raw, policy)
        if one is not None:
            assert _tree(one) == _tree(_feed(raw, policy))
    message = Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    message.headers  # the parse stage reads the headers first
    assert _tree(message.parsed) == _tree(_feed(raw, email.policy.default, ParsedOnce))


@pytest.mark.parametrize("raw", _CASES)
def test_a_message_of_one_part_parses_as_the_feed_parser_parses_it(raw: bytes) -> None:
    _same_as_the_feed_parser(raw)


def test_only_messages_of_one_part_take_the_short_way() -> None:
    assert parse_one_part(b"Subject: a\r\n\r\nbody", email.policy.compat32) is not None
    for raw in _CASES:
        first = re.search(rb"(?im)^content-type:\s*(\S+)", raw)  # the first one counts
        if first and first.group(1).lower().startswith((b"multipart/", b"message/")):
            assert parse_one_part(raw, email.policy.compat32) is None


@_FUZZ
@given(_raws)
def test_generated_messages_parse_as_the_feed_parser_parses_them(raw: bytes) -> None:
    _same_as_the_feed_parser(raw)


# --- attachments: the same facts with and without the one-part parse ---------------------


def _without_fast_parse(monkeypatch: pytest.MonkeyPatch, raw: bytes, limits: AttachmentLimits) -> dict[str, Any]:
    with monkeypatch.context() as m:
        m.setattr(mime, "parse_one_part", lambda raw, policy: None)
        return inspect_message(raw, limits)


@pytest.mark.parametrize("raw", _CASES)
def test_attachment_facts_do_not_depend_on_the_one_part_parse(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    for limits in (AttachmentLimits(), AttachmentLimits(max_parts=1)):
        assert inspect_message(raw, limits) == _without_fast_parse(monkeypatch, raw, limits)


_UUENCODE_REFERENCE = re.compile(rb"(?m)^begin(?:-base64)? [0-7]{3,4} \S")


@pytest.mark.parametrize("data", [b"", b"begin 644 a.exe\r\n", b"x\nbegin 644 a\n", b"xbegin 644 a", b"\r\nbegin-base64 0644 a",
                                  b"begin 64 a", b"\n\nbegin 7777 \xff", b"begin 644  a", b"BEGIN 644 a"])
def test_uuencode_lines_are_found_where_the_multiline_pattern_finds_them(data: bytes) -> None:
    assert mime._has_uuencode(data) == bool(_UUENCODE_REFERENCE.search(data))


def _overlong_reference(raw: bytes) -> str | None:
    """overlong_mime_header as first written: a multi-line pattern tried at every byte."""
    for m in re.finditer(rb"(?im)^(content-type|content-disposition)[ \t]*:", raw):
        end = re.compile(rb"\r?\n(?![ \t])").search(raw, m.end())
        length = (end.start() if end else len(raw)) - m.start()
        if length > mime.MAX_HEADER:
            name = {"content-type": "Content-Type", "content-disposition": "Content-Disposition"}[m.group(1).lower().decode()]
            return f"{name} header over {mime.MAX_HEADER} characters"
    return None


_long = b"x" * (mime.MAX_HEADER - 20)


@pytest.mark.parametrize("raw", [
    b"", b"Content-Type: text/plain\r\n\r\n", b"Content-Type: a; b=" + _long + b"\r\n",
    b"content-TYPE : a; b=" + _long + _long, b"X: y\r\nContent-Disposition:" + _long + b"\r\n\t" + _long + b"\r\n",
    b"X: y\nContent-Disposition:" + _long + b"\n " + b"y" * 30 + b"\r\nZ: z", b"XContent-Type: " + _long * 2,
    b"X: y\r\n\r\n--b\r\nContent-Type: a; name=" + _long + b"\r\n and more\r\n\r\n",
    b"Content-Type: short\r\nContent-Type: " + _long * 2,
])
def test_overlong_mime_headers_are_found_as_before(raw: bytes) -> None:
    assert mime.overlong_mime_header(raw) == _overlong_reference(raw)


@_FUZZ
@given(st.lists(st.sampled_from([b"Content-Type:", b"content-disposition :", b"\r\n", b"\n", b" ", b"\t", b"x" * 3000,
                                 b"X: y", b"Content-Type"]), max_size=12))
def test_generated_mime_headers_are_judged_as_before(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert mime.overlong_mime_header(raw) == _overlong_reference(raw)


@_FUZZ
@given(_raws)
def test_generated_messages_have_the_same_attachment_facts_without_the_one_part_parse(raw: bytes) -> None:
    with pytest.MonkeyPatch.context() as m:
        facts = inspect_message(raw, AttachmentLimits())
        assert facts == _without_fast_parse(m, raw, AttachmentLimits())


def _decode_reference(node: email.message.Message, cte: str) -> bytes:
    """mime._decode as first written: the email package decodes all but valid base64."""
    import binascii

    payload = node.get_payload()
    if cte == "base64" and isinstance(payload, str):
        try:
            return binascii.a2b_base64(payload)
        except (ValueError, binascii.Error):
            pass
    data = node.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


@_FUZZ
@given(st.one_of(st.sampled_from(["", "7bit", "8BIT", "base64", "base64 ", "Quoted-Printable", "x-uuencode", "binary",
                                  "bogus"]), st.text(max_size=12)),
       st.one_of(st.binary(max_size=80).map(lambda b: b.decode("ascii", "surrogateescape")), st.text(max_size=40),
                 st.sampled_from(["aGVsbG8=\r\n", "=C3=A9\r\n", "begin 644 a\r\n#86)C\r\n`\r\nend\r\n", "\udc80\u00e9"])))
def test_parts_decode_to_the_bytes_the_email_package_gives(cte: str, payload: str) -> None:
    node = email.message.Message()
    if cte:
        node["Content-Transfer-Encoding"] = cte
    node.set_payload(payload)
    walker_cte = mime._cte(node)
    try:
        expected: Any = _decode_reference(node, walker_cte)
    except Exception as exc:  # the email package raises on some strings no bytes parser makes
        expected = type(exc)
    try:
        got: Any = mime._decode(node, walker_cte)
    except Exception as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize("value,header", [
    ("text/plain; charset=utf-8", "content-type"), ("attachment; filename=\"a.pdf\"", "content-disposition"),
    ("application/pdf; name=\"=?utf-8?b?YS5wZGY=?=\"", "content-type"), ("attachment; filename*=utf-8''%E1%BB%99.pdf", "content-disposition"),
    ("text/plain (a comment)", "content-type"), ("x" * 300, "content-type"), ("", "content-disposition"),
])
def test_remembered_parameters_are_the_parameters_read_afresh(value: str, header: str) -> None:
    for _ in range(2):
        assert mime._params(value, header) == mime._read_params(value, header)
