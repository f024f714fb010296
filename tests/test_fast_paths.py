"""The fast paths of parse, classify and attachments give what the slow paths they shortcut give.

Each shortcut here replaces a general computation by a cheaper one for the common
case; these tests hold each to the general one, on chosen edge cases and on
generated input.
"""

from __future__ import annotations

import email.feedparser
import email.message
import email.parser
import email.policy
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.attachments import inspect_message, mime
from mailgw.config.settings import AttachmentLimits
from mailgw.message.model import Envelope, Message
from mailgw.message.parsed import (
    ParsedOnce,
    crlf_only,
    decoded_payload,
    header_section,
    parse_header_section,
    parse_one_part,
)

_FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


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


def _same_header_section(raw: bytes) -> None:
    section = header_section(raw)
    for policy, factory in ((email.policy.compat32, None), (email.policy.default, None), (email.policy.default, ParsedOnce)):
        expected = email.parser.BytesHeaderParser(_class=factory, policy=policy).parsebytes(section)
        assert _tree(parse_header_section(section, policy, factory)) == _tree(expected)


_plain_sections = st.builds(
    lambda fields: b"".join(fields) + b"\r\n",
    st.lists(st.sampled_from([b"Subject: a\r\n", b"From: =?utf-8?b?VsSDbg==?= <a@b.vn>\r\n", b"X:\r\n", b"X-Y:  \t v \r\n",
                              b" folded\r\n", b"\t\tfolded \r\n", b"To: a@b, c@d\r\n", b"Subject: n\xe1\xbb\x99i\r\n",
                              b"From x\r\n", b":\r\n", b"Subject : a\r\n", b"A:b\rc\r\n", b"A: b\n"]), max_size=8),
)


@pytest.mark.parametrize("raw", _CASES)
def test_a_header_section_parses_as_the_header_parser_parses_it(raw: bytes) -> None:
    _same_header_section(raw)


@_FUZZ
@given(st.one_of(_raws, _plain_sections, st.builds(lambda s, b: s + b, _plain_sections, st.binary(max_size=20))))
def test_generated_header_sections_parse_as_the_header_parser_parses_them(raw: bytes) -> None:
    _same_header_section(raw)


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


# --- the feed parser's end-of-line search, answered from the end ------------------------

_NLCRE_EOL = re.compile(r"(\r\n|\r|\n)\Z")  # the feed parser's own expression


def _same_end_of_line(text: str) -> None:
    ours, theirs = email.feedparser.NLCRE_eol.search(text), _NLCRE_EOL.search(text)
    assert type(email.feedparser.NLCRE_eol).__name__ == "_EndOfLine"  # installed by mailgw.message.parsed
    assert (ours and (ours.span(), ours.group(0))) == (theirs and (theirs.span(), theirs.group(0))), repr(text)


@pytest.mark.parametrize("text", ["", "a", "\r", "\n", "\r\n", "\n\r", "\r\r\n", "\n\n", "a\r\n", "a\r", "a\n", "a\r\nb",
                                  "x" * 100_000 + "\r\n", "\u1ed9\n"])
def test_the_end_of_line_is_found_where_the_feed_parser_finds_it(text: str) -> None:
    _same_end_of_line(text)


@_FUZZ
@given(st.text(alphabet=st.sampled_from("a\r\n \t\u1ed9"), max_size=12))
def test_generated_ends_of_line_are_found_where_the_feed_parser_finds_them(text: str) -> None:
    _same_end_of_line(text)


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from(["text/plain", "application/pdf", "multipart/mixed; boundary=c"]),
                          st.text(alphabet=st.sampled_from("ab\r\n-"), max_size=12),
                          st.sampled_from(["\r\n", "\n", "\r", ""])), max_size=4),
       st.sampled_from(["\r\n", "\n"]))
def test_multipart_messages_parse_as_with_the_feed_parsers_own_search(parts: list[tuple[str, str, str]], nl: str) -> None:
    body = "".join(f"--b{nl}Content-Type: {ctype}{nl}{nl}{text}{end}" for ctype, text, end in parts)
    raw = f"Content-Type: multipart/mixed; boundary=b{nl}{nl}pre{nl}{body}--b--{nl}epi".encode()
    ours = _tree(_feed(raw, email.policy.default))
    original = email.feedparser.NLCRE_eol
    email.feedparser.NLCRE_eol = _NLCRE_EOL  # type: ignore[assignment]
    try:
        assert ours == _tree(_feed(raw, email.policy.default))
    finally:
        email.feedparser.NLCRE_eol = original


# --- attachments: the message's own tree copied instead of a second parse ----------------

_MULTI_CASES = [
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\nepi",
    b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in\n\nbody\n--d--\n",
    b"Content-Type: multipart/mixed; boundary=\"=?utf-8?q?b?=\"\r\n\r\n--=?utf-8?q?b?=\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary*=utf-8''b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; (c) boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed;\r\n boundary=\"b\"\r\nContent-Transfer-Encoding: base64\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n--r\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n--r\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nz\r\n--i--\r\n--r--\r\n",
    b"Content-Type: =?utf-8?q?multipart/mixed?=; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\nContent-Type: text/plain\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=\xe1\xbb\x99\r\n\r\n--\xe1\xbb\x99\r\n\r\nx\r\n--\xe1\xbb\x99--\r\n",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary",
]

_ctypes = st.sampled_from([
    "multipart/mixed; boundary=b", "multipart/mixed; boundary=\"b\"", "multipart/alternative; boundary=c",
    "multipart/mixed; boundary*=us-ascii''b", "multipart/mixed; boundary=\"=?utf-8?q?b?=\"", "multipart/digest; boundary=c",
    "multipart/mixed; boundary=b (comment)", "multipart/mixed;\r\n boundary=c", "MULTIPART/Mixed; BOUNDARY=b",
    "message/rfc822", "message/delivery-status", "text/plain", "application/pdf; name=\"=?utf-8?b?w6E=?=.pdf\"", "",
])
_part_heads = st.lists(st.one_of(_ctypes.map(lambda c: f"Content-Type: {c}"),
                                 st.sampled_from(["Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: 8bit",
                                                  "Content-Disposition: attachment; filename=a.exe", "Subject: s"])),
                       max_size=3)


@st.composite
def _multiparts(draw: Any, depth: int = 0) -> str:
    nl = draw(st.sampled_from(["\r\n", "\n"]))
    head = nl.join(draw(_part_heads))
    if depth < 2 and draw(st.booleans()):
        boundary = draw(st.sampled_from(["b", "c"]))
        inner = "".join(f"--{boundary}{nl}{draw(_multiparts(depth + 1))}{nl}" for _ in range(draw(st.integers(0, 3))))
        body = draw(st.sampled_from(["", f"pre{nl}"])) + inner + draw(st.sampled_from([f"--{boundary}--{nl}", "", f"--{boundary}--{nl}epi"]))
    else:
        body = draw(st.sampled_from(["x", "JVBERi0xLjQK", "Subject: in" + nl + nl + "y", "--b" + nl + "z", ""]))
    return f"{head}{nl}{nl}{body}" if head else f"{nl}{body}"


def _same_compat_tree(raw: bytes) -> bool:
    """The copy of the default-policy tree, when made, is the compat32 parse's tree; True when it was made."""
    message = Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    copied = mime.compat_copy(message.parsed, 500)
    if copied is not None:
        assert _tree(copied) == _tree(_feed(raw, email.policy.compat32)), raw
    return copied is not None


def _same_attachment_facts_from_the_tree(raw: bytes) -> None:
    message = Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    limits = AttachmentLimits()
    assert inspect_message(raw, limits, message.parsed) == inspect_message(raw, limits), raw


@pytest.mark.parametrize("raw", _CASES + _MULTI_CASES)
def test_the_copied_tree_is_the_tree_the_compat32_parse_makes(raw: bytes) -> None:
    _same_compat_tree(raw)
    _same_attachment_facts_from_the_tree(raw)


def test_the_usual_multipart_message_is_copied_not_parsed_again() -> None:
    assert _same_compat_tree(_MULTI_CASES[0])
    assert not _same_compat_tree(_MULTI_CASES[2])  # the boundary reads differently under the two policies


def test_the_copy_counts_parts_as_the_parse_does() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 4 + b"--b--\r\n"
    message = Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    for most in (4, 5, 6):
        limits = AttachmentLimits(max_parts=most)
        assert inspect_message(raw, limits, message.parsed) == inspect_message(raw, limits)
    assert "more than 4 MIME parts" in inspect_message(raw, AttachmentLimits(max_parts=4), message.parsed)["ambiguous_reason"]


@_FUZZ
@given(st.one_of(_multiparts().map(lambda t: t.encode("utf-8", "surrogateescape")), _raws))
def test_generated_trees_are_copied_as_the_compat32_parse_makes_them(raw: bytes) -> None:
    _same_compat_tree(raw)
    _same_attachment_facts_from_the_tree(raw)


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


def _outcome(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception as exc:
        return type(exc)


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
                                  "bogus", "Quoted-Printable ", "quoted printable", "base-64", "7-bit"]),
                 st.text(max_size=12)),
       st.one_of(st.binary(max_size=80).map(lambda b: b.decode("ascii", "surrogateescape")), st.text(max_size=40),
                 st.sampled_from(["aGVsbG8=\r\n", "=C3=A9\r\n", "begin 644 a\r\n#86)C\r\n`\r\nend\r\n", "\udc80\u00e9"])))
def test_parts_decode_to_the_bytes_the_email_package_gives(cte: str, payload: str) -> None:
    for policy in (email.policy.compat32, email.policy.default):
        node = email.message.Message(policy=policy) if policy is email.policy.compat32 else ParsedOnce(policy=policy)
        if cte:
            try:
                node["Content-Transfer-Encoding"] = cte
            except Exception:  # policy.default refuses some values outright
                continue
        node.set_payload(payload)
        assert _outcome(decoded_payload, node) == _outcome(lambda n: n.get_payload(decode=True), node)
    node = email.message.Message()
    if cte:
        node["Content-Transfer-Encoding"] = cte
    node.set_payload(payload)
    walker_cte = mime._cte(node)
    # A loosely spelled encoding ("Quoted-Printable ", "base-64") decodes as the email package
    # decodes the encoding it names.
    named = email.message.Message()
    if walker_cte:
        named["Content-Transfer-Encoding"] = walker_cte
    named.set_payload(payload)
    try:
        expected: Any = _decode_reference(named, walker_cte)
    except Exception as exc:  # the email package raises on some strings no bytes parser makes
        expected = type(exc)
    try:
        got: Any = mime._decode(node, walker_cte, node._payload)
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


# --- classify: the text forms and searches, against the plain computations ----------------

from mailgw.classify import cues  # noqa: E402
from mailgw.classify.vn import docnumber, secrecy  # noqa: E402
from mailgw.classify.vn import text as vtext  # noqa: E402

_PHRASES = [d.phrase for d in cues.CUE_DEFS]
_WORDS = (_PHRASES + [p.upper() for p in _PHRASES] + [vtext.fold(p) for p in _PHRASES]
          + ["hoà", "thoả", "uỷ", "ủy", "Hoả tốc", "v-v", "V/V", "mật", "MẬT", "khẩn", "khó khăn", "Số:", "No.", "112",
             "/", "KH-UBND", "2020", "QĐ", "-", " ", "  ", "\n", "\r\n", "\u2028", ",", ".", "(", ")", "“", "”", "x", "ạ",
             "đ", "_", "1", "İ", "Σ", "ς", "ǅ", "ﬁ", "\u00a0", "\t", "oa\u0300", "Oà", "٣", "thêm", "ro"])
_texts = st.lists(st.sampled_from(_WORDS), max_size=14).map("".join)


def _reference_forms(text: str) -> tuple[str, str, str]:
    low = text.lower()
    if len(low) != len(text):
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    key = re.sub("|".join(sorted(vtext._TONE_PAIRS)), lambda m: vtext._TONE_PAIRS[m.group(0)], low)
    return low, key, key.translate(vtext._FOLD_STR)


@_FUZZ
@given(st.one_of(_texts, _texts.map(vtext.nfc), st.text(max_size=30)))
def test_text_forms_are_the_plain_ones(text: str) -> None:
    low, key, folded = _reference_forms(text)
    assert vtext.lower(text) == low and vtext.tone_key(text) == key
    assert vtext.fold(text) == text.translate(vtext._FOLD_STR) and vtext.fold(key) == folded
    assert vtext.forms(text) == (low, key, folded)
    assert vtext.search_forms(text)[:3] == (low, key, folded)


@_FUZZ
@given(st.one_of(_texts, _texts.map(vtext.nfc), st.text(max_size=30)))
def test_cues_are_found_where_the_plain_patterns_find_them(text: str) -> None:
    _, key, folded, spaced_low, spaced_folded = vtext.search_forms(text)
    for finder, searched, spaced in ((cues.MARKED_CUES, key, spaced_low),
                                     (cues.FOLDED_CUES, folded, spaced_folded)):
        expected = [(m.span(), m.group(0)) for m in finder.pattern.finditer(searched)]
        assert [(m.span(), m.group(0)) for m in finder.finditer(searched, spaced)] == expected


_number_pieces = st.lists(st.sampled_from(["Số", "số", "SỐ", "So", "No", "No.", ":", " ", "\n", "/", " / ", "-", " - ", "12",
                                           "5", "123456", "2020", "٣", "０", "QĐ", "KH", "UBND", "ſ", "a", "đ", ".", ",", "&",
                                           "\u2003", "QH14"]), max_size=16).map("".join)
_numbers = st.builds(
    lambda prefix, gap, num, slash, year, sym, tail: prefix + gap + num + slash + year + sym + tail,
    st.sampled_from(["", "Số", "số:", "SỐ", "No.", "No", "no.", "x", "Căn cứ ", "/", "1"]),
    st.sampled_from(["", " ", ": ", " : ", "::", "\n", "\t"]),
    st.sampled_from(["1", "07", "12345", "123456", "٣"]), st.sampled_from(["/", " / ", "/ ", "//"]),
    st.sampled_from(["", "2020/", "1999 / ", "2020"]), st.sampled_from(["QĐ-UBND", "KH", "GM-STTTT - Giay", "QH14", "a-b", "1"]),
    st.sampled_from(["", " ", ".", "x", "/", "-"]),
)


@_FUZZ
@given(st.lists(st.one_of(_texts, _number_pieces, _numbers), max_size=4).map("".join))
def test_document_numbers_are_found_where_finditer_finds_them(text: str) -> None:
    expected = [(m.span(), m.groupdict()) for m in docnumber._DOC_NO.finditer(text)]
    assert [(m.span(), m.groupdict()) for m in docnumber._matches(text)] == expected


@_FUZZ
@given(st.lists(st.one_of(_texts, _number_pieces, _numbers, st.sampled_from(["Số: /", "xSố /KH", "\nSo:  /2024/QĐ-UBND"])),
                max_size=5).map("".join))
def test_blank_numbers_are_found_where_the_word_boundary_pattern_finds_them(text: str) -> None:
    plain = re.compile(docnumber._BLANK.pattern.replace("S(?<!\\w.)", "\\bS", 1))
    assert plain.pattern != docnumber._BLANK.pattern
    expected = plain.search(text)
    found = docnumber._BLANK.search(text)
    assert (found.span(), found.groupdict()) == (expected.span(), expected.groupdict()) if expected else found is None


@_FUZZ
@given(st.lists(st.sampled_from(["mat", "khan", "hoa toc", "hoa", " toc", "\n", "\r\n", "\r", "\x0b", "\u2028", "x", " "]),
                max_size=12).map("".join))
def test_marking_lines_are_the_lines_that_hold_a_mark(text: str) -> None:
    lines, pos = [], 0
    for line in text.splitlines(keepends=True):
        lines.append((pos, line.rstrip("\r\n")))
        pos += len(line)
    for needles in (("mat",), ("khan", "hoa toc")):
        expected = [(o, line) for o, line in lines if any(n in text[o:o + len(line)] for n in needles)]
        assert secrecy._lines_with(text, text, needles) == expected


@pytest.mark.parametrize("text", ["Thời gian: 8h\nĐịa điểm: phòng họp", "x\n  - THỜI GIAN : 8h\n\t*Dia diem:", "Thời gian: 8h Địa điểm: a",
                                  "thoi gian:\nxx dia diem:", "", "\n\nđịa điểm :\nthời gian\n:"])
def test_time_and_place_lines_are_found_as_the_multiline_patterns_find_them(text: str) -> None:
    reference = (re.compile(r"(?m)^\W{0,3}(?:thời gian|thoi gian)\s*:", re.IGNORECASE),
                 re.compile(r"(?m)^\W{0,3}(?:địa điểm|dia diem)\s*:", re.IGNORECASE))
    for new, old in zip(cues.TIME_PLACE, reference):
        assert bool(new.search("\n" + text)) == bool(old.search(text))


_MARKING_WORDS = ["mật", "MẬT", "Mật", "mat", "MAT", "mặt", "mất", "tối mật", "TỐI MẬT", "TUYET MAT", "giải mật", "GIẢI MẬT",
                  "bảo mật", "mật khẩu", "khẩn", "KHẨN", "KHAN", "khan", "khăn", "khó khăn", "hỏa tốc", "HOẢ TỐC", "HOA TOC",
                  "thượng khẩn", "khẩn trương", "Độ mật:", "Do mat:", "Độ khẩn：", "muc do khan:", "Thường", "[", "]", "(",
                  ")", " ", "  ", "\t", "\n", "\r\n", ":", "-", "x", "Kính gửi", "K", "\u2028"]


@_FUZZ
@given(st.lists(st.sampled_from(_MARKING_WORDS), max_size=14).map("".join), st.booleans())
def test_markings_are_those_every_line_gives(text: str, corroborated: bool) -> None:
    text = vtext.nfc(text)
    found = (secrecy.scan_secrecy(text), secrecy.scan_urgency(text, corroborated=corroborated))
    with pytest.MonkeyPatch.context() as m:  # every line read, each searched in full
        m.setattr(secrecy, "_may_mark", lambda *args: True)
        m.setattr(secrecy, "_lines_with", lambda text, folded, needles: [
            (o, line) for o, line in _all_lines(text) if any(n in folded[o:o + len(line)] for n in needles)])
        assert (secrecy.scan_secrecy(text), secrecy.scan_urgency(text, corroborated=corroborated)) == found


def _all_lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        out.append((pos, line.rstrip("\r\n")))
        pos += len(line)
    return out


@pytest.mark.parametrize("size", [0, 10, (1 << 20) + 10])
def test_a_one_part_body_decodes_to_the_bytes_it_was_read_from(size: int) -> None:
    body = (b"n\xe1\xbb\x99i dung \xff\r\n" * (size // 16 + 1))[:size]
    raw = b"Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    message = Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    message.headers
    for part in (message.parsed, parse_one_part(raw, email.policy.compat32)):
        assert part is not None
        assert decoded_payload(part) == body == part.get_payload(decode=True)


def _base64_same(text: str) -> None:
    """base64_payload answers what binascii.a2b_base64 answers (bytes or the error), the first time and the second."""
    import binascii

    from mailgw.message.parsed import base64_payload

    part = email.message.Message()
    try:
        expected: Any = binascii.a2b_base64(text)
    except ValueError as e:
        expected = type(e)
    for _ in range(2):
        try:
            got: Any = base64_payload(part, text)
        except ValueError as e:
            got = type(e)
        assert got == expected


@pytest.mark.parametrize("text", ["", "QUJD", "QUJD\r\nREVG\r\n", "QUI", "QQ==", "Q", "Q===", "!!QUJD", "QUJD ỗ", "\udcff"])
def test_a_part_is_decoded_from_base64_as_binascii_decodes_it(text: str) -> None:
    _base64_same(text)


@_FUZZ
@given(st.text(alphabet=st.sampled_from("QUJDab+/=\r\n !\u1ed9"), max_size=40))
def test_generated_base64_is_decoded_as_binascii_decodes_it(text: str) -> None:
    _base64_same(text)


def _a2b_same(text: str | bytes) -> None:
    """mailgw.message.parsed.a2b_base64 (pybase64 first) answers what binascii.a2b_base64 answers."""
    import binascii

    from mailgw.message.parsed import a2b_base64

    def answer(decode: Any) -> Any:
        try:
            return decode(text)
        except ValueError as e:  # binascii.Error is a ValueError
            return type(e)

    assert answer(a2b_base64) == answer(binascii.a2b_base64), text


def test_the_simd_decoder_is_installed() -> None:
    from mailgw.message import parsed

    assert parsed._simd_b64decode is not None  # pybase64 is a dependency: without it, binascii decodes (slower)


@pytest.mark.parametrize("text", ["QUJD=", "QQ==QUJD", "QQ===", "=QUJD", "QU JD", "QUJD\x00", "QUJD!", "QUJD-_", "QQ=\r\n=",
                                  "QQ", "QUI=\r\nQUI=", b"QUJD\xff", "QUJD\u1ed9", b"", "\r\n", "Q" * 4 * 1000 + "QQ==",
                                  bytearray(b"QUJD"), memoryview(b"QQ==QUJD")])
def test_base64_is_decoded_by_the_simd_decoder_as_binascii_decodes_it(text: str | bytes) -> None:
    _a2b_same(text)


@_FUZZ
@given(st.binary(max_size=300), st.integers(1, 80), st.sampled_from(["", "\r\n", "\n", " ", "\t"]),
       st.lists(st.tuples(st.integers(0, 500), st.sampled_from(list("=!-_.\x00 \r\nA/+"))), max_size=4),
       st.integers(0, 3))
def test_generated_base64_is_decoded_by_the_simd_decoder_as_binascii_decodes_it(
        data: bytes, width: int, newline: str, edits: list[tuple[int, str]], strip: int) -> None:
    """Real base64 of random bytes, wrapped at random widths, then damaged: padding cut, characters put in."""
    import base64

    text = base64.b64encode(data).decode("ascii")
    text = newline.join(text[i:i + width] for i in range(0, len(text), width)) + newline
    text = text.rstrip("=\r\n \t")[:len(text) - strip] if strip else text
    for at, char in edits:
        at = min(at, len(text))
        text = text[:at] + char + text[at:]
    _a2b_same(text)
    _a2b_same(text.encode("ascii"))


def test_a_part_whose_text_changed_is_decoded_again() -> None:
    from mailgw.message.parsed import base64_payload

    part = email.message.Message()
    assert base64_payload(part, "QUJD") == b"ABC"
    assert base64_payload(part, "REVG") == b"DEF"
    with pytest.raises(ValueError):
        base64_payload(part, "ỗ")
    assert base64_payload(part, "REVG") == b"DEF"


def test_classification_and_attachments_share_the_decoded_attachment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PDF of a multipart message is decoded once for both readers, and both read the same bytes."""
    import base64

    from mailgw.classify.engine import classify
    from mailgw.message import parsed

    decoded: list[int] = []
    a2b = parsed.a2b_base64

    def counted(text: Any) -> bytes:
        decoded.append(len(text))
        return a2b(text)

    monkeypatch.setattr(parsed, "a2b_base64", counted)

    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    raw = (b"From: a@b.gov.vn\r\nTo: c@d.gov.vn\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(pdf).replace(b"\n", b"\r\n") + b"--b--\r\n")
    message = Message("x", Envelope("a@b.gov.vn", ["c@d.gov.vn"], "relay", "relay", "127.0.0.1"), raw)
    classify(message.parsed)
    leaf = message.parsed.get_payload()[1]
    kept = leaf.__dict__["_mailgw_base64_bytes"]
    assert kept[1] == pdf
    facts = inspect_message(raw, AttachmentLimits(), message.parsed_if_any())
    assert facts == inspect_message(raw, AttachmentLimits())  # parsed and decoded afresh: the same facts
    assert leaf.__dict__["_mailgw_base64_bytes"] is kept
    # Once by classification; the walker reads a compat32 copy of the tree, which keeps the bytes
    # (the facts parsed afresh above decoded it a second time, on purpose).
    assert len(decoded) == 2
    decoded.clear()
    inspect_message(raw, AttachmentLimits(), message.parsed_if_any())
    assert decoded == []  # not decoded again for the walker's copy


_BASE64_PATTERN = re.compile(r"[A-Za-z0-9+/\r\n\t ]*(?:=[\r\n\t ]*){0,2}")  # what mime._strict_base64 replaced


def _strict_base64_by_pattern(payload: str) -> bool:
    if _BASE64_PATTERN.fullmatch(payload) is None:
        return False
    return (len(payload) - sum(payload.count(c) for c in "\r\n\t ")) % 4 != 1


@pytest.mark.parametrize("text", ["", "QUJD", "QUJD\r\n", "QQ==", "QQ=\r\n=\r\n", "QQ===", "Q=Q=", "=QQ", "Q", "QUJDR",
                                  "QU JD\t", "QUJD\x0b", "QUJD\x0c", "QUJD\u1ed9", "QUJD\udcff", "QQ==\r\nQQ==", "-_"])
def test_strict_base64_answers_as_the_pattern_does(text: str) -> None:
    assert mime._strict_base64(text) == _strict_base64_by_pattern(text)


@_FUZZ
@given(st.text(alphabet=st.sampled_from("QUJDaz09+/=\r\n\t \x0b-_\u1ed9\udcff"), max_size=30))
def test_generated_base64_is_judged_strict_as_the_pattern_judges_it(text: str) -> None:
    assert mime._strict_base64(text) == _strict_base64_by_pattern(text)


def _header_end_by_both_searches(raw: bytes) -> int:
    """The header-end offset as mailgw found it before (two whole searches)."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + 1 for i in (raw.find(b"\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


@pytest.mark.parametrize("raw", [b"", b"\n", b"\r\n", b"a: b\r\n\r\nc\n\nd", b"a: b\n\nc\r\n\r\n", b"a: b\n\r\n\n",
                                 b"a: b\n\n\r\n", b"a: b\r\n", b"a\n\nb", b"a\r\n\r\n", b"x\n\r\n", b"x\n\n"])
def test_the_header_end_is_where_both_searches_put_it(raw: bytes) -> None:
    from mailgw.message.parsed import header_end

    assert header_end(raw) == _header_end_by_both_searches(raw)


@_FUZZ
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b": "]), max_size=12).map(b"".join))
def test_generated_header_ends_are_where_both_searches_put_them(raw: bytes) -> None:
    from mailgw.message.parsed import header_end

    assert header_end(raw) == _header_end_by_both_searches(raw)


def _crlf_by_counting(data: bytes) -> bool:
    """The definition crlf_only replaced: every CR and every LF belongs to a CRLF."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf == data.count(b"\n")


@_FUZZ
@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\r\n", b"\n\r", b"\r\r\n", b"."]), max_size=40))
def test_crlf_only_answers_as_the_three_counts(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert crlf_only(data) == _crlf_by_counting(data), data


def test_crlf_only_on_the_shapes_that_matter() -> None:
    assert crlf_only(b"") and crlf_only(b"a\r\nb\r\n") and crlf_only(b"no line end")
    for bare in (b"a\rb\r\n", b"a\nb\r\n", b"a\r\n\r", b"\na", b"a\n\r", b"\r\n.\n.\r\n"):
        assert not crlf_only(bare), bare


_LINE_PIECES = st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\r\n", b"X: y\r\n"])


@_FUZZ
@given(st.lists(_LINE_PIECES, max_size=12).map(b"".join), st.lists(st.lists(_LINE_PIECES, max_size=4).map(b"".join),
                                                                      max_size=3))
def test_the_remembered_count_answers_for_the_bytes_signed(raw: bytes, prepend: list[bytes]) -> None:
    """Message.final_crlf_only never says CRLF when the bytes are not, and says it whenever each piece is CRLF."""
    message = Message("T", Envelope("", [], "relay", "relay", "127.0.0.1"), raw)
    assert message.crlf_only() == crlf_only(raw)
    message.prepend[:] = prepend
    final = message.final_crlf_only()
    assert not final or crlf_only(message.final_bytes())
    if all(crlf_only(piece) for piece in [raw, *prepend]):
        assert final
    message.sanitise(b"\n" + raw)  # a changed raw is counted afresh
    assert not message.crlf_only() and not message.final_crlf_only()


def test_a_message_is_counted_for_line_ends_once_on_its_way_to_the_signature(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Any) -> None:
    """The parse stage's count of the whole message serves the DKIM signer too; the signature is the same either way.

    So does its search for overlong MIME headers serve the attachment walker.
    """
    import shutil
    from pathlib import Path

    import yaml

    from mailgw import pipeline
    from mailgw.app import load_context
    from mailgw.dkim import canon, keygen, sign
    from mailgw.message import model

    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "directory.yaml", tmp_path / "directory.yaml")
    shutil.copytree(root / "policies", tmp_path / "policies")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({
        "hostname": "mailgw.example.gov.vn", "directory": "directory.yaml", "policies": "policies", "database": "sqlite:///audit.db", "spool": "spool",
        "listeners": [{"name": "relay", "role": "relay", "listen": "127.0.0.1:2525", "trusted_networks": ["127.0.0.0/8"]}],
        "routes": {"local": "smtp://127.0.0.1:2526", "remote": "smtp://127.0.0.1:2526"},
        "dkim": [{"domain": "binhthuan.gov.vn", "selector": "s1",
                  "key": str(keygen("binhthuan.gov.vn", "s1", "ed25519", tmp_path / "keys")[0])}],
    }))
    ctx, _ = load_context(str(tmp_path / "gateway.yaml"))
    body = b"".join(b"Dong %d cua cong van\r\n" % i for i in range(2000))
    raw = b"From: vanthu.sotttt@binhthuan.gov.vn\r\nTo: vanthu@hanoi.gov.vn\r\nSubject: Cong van\r\n\r\n" + body
    counted: list[int] = []
    real = crlf_only

    def counting(data: bytes) -> bool:
        counted.append(len(data))
        return real(data)

    monkeypatch.setattr(model, "crlf_only", counting)
    monkeypatch.setattr(canon, "crlf_only", counting)
    from mailgw.stages import attachments as attachments_stage
    from mailgw.stages import parse as parse_stage

    searched: list[int] = []
    real_search = mime.overlong_mime_header

    def searching(data: bytes) -> str | None:
        searched.append(len(data))
        return real_search(data)

    for module in (parse_stage, attachments_stage, mime):
        monkeypatch.setattr(module, "overlong_mime_header", searching)
    message = Message("T", Envelope("vanthu.sotttt@binhthuan.gov.vn", ["vanthu@hanoi.gov.vn"], "relay", "relay", "127.0.0.1"), raw)
    for stage in pipeline.STAGES:
        stage(message, ctx)
    assert message.facts.dkim is not None and message.facts.dkim.signed
    assert [n for n in counted if n >= len(body)] == [len(raw)]  # the parse stage's count, and no other
    assert searched == [len(raw)]
    signed = message.prepend[0]
    unsigned = b"".join(message.prepend[1:]) + raw
    keys = ctx.signing_keys["binhthuan.gov.vn"]
    now = float(re.search(rb"t=(\d+)", signed).group(1))  # type: ignore[union-attr]
    assert sign(unsigned, keys, now=now) == sign(unsigned, keys, now=now, crlf=True) == signed
