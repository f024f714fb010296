"""The multipart fast path (mailgw.message.parsed.complete_multipart) gives the feed parser's tree, or gives way to it.

Whenever the fast path answers, its tree must be the one the feed parser makes
of the same bytes with the same policy and factory, compared part by part
(_tree). Held to the parser on the repository's messages, the bench's, the
email test corpus that ships with CPython, and generated multiparts built
around the feed parser's edge cases; and it must answer for the usual shapes,
so it cannot silently never apply.
"""

from __future__ import annotations

import email.feedparser
import email.message
import email.policy
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.attachments import inspect_message, mime
from mailgw.config.settings import AttachmentLimits
from mailgw.message.model import Envelope, Message
from mailgw.message.parsed import ParsedOnce, parse_multipart

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import postfix_vs_mailgw as bench  # noqa: E402

_FUZZ = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _tree(msg: email.message.Message) -> Any:
    """What a parser decides about a message and its parts, comparable with ==."""
    payload = msg._payload  # type: ignore[attr-defined]
    return (
        type(msg), msg.policy, [(name, str(value)) for name, value in msg._headers],  # type: ignore[attr-defined]
        msg._unixfrom, [type(d) for d in msg.defects], msg.preamble, msg.epilogue,  # type: ignore[attr-defined]
        msg._default_type, msg._charset,  # type: ignore[attr-defined]
        [_tree(p) for p in payload] if isinstance(payload, list) else payload,
    )


def _feed(raw: bytes, policy: email.policy.Policy, factory: Any = None, size: int = 65536) -> email.message.Message:
    """The feed parser's tree, fed in slices as Message.parsed and the attachment walker feed it."""
    parser = email.feedparser.BytesFeedParser(_factory=factory, policy=policy)
    for start in range(0, len(raw), size):
        parser.feed(raw[start:start + size])
    return parser.close()


def _message(raw: bytes) -> Message:
    return Message("T", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)


def _same_as_the_feed_parser(raw: bytes) -> bool:
    """Every fast answer for ``raw`` is the feed parser's tree; True when the fast path answered (under policy.default)."""
    answered = []
    for policy, factory in ((email.policy.default, None), (email.policy.compat32, None), (email.policy.default, ParsedOnce)):
        fast = parse_multipart(raw, policy, factory)
        if fast is not None:
            assert _tree(fast) == _tree(_feed(raw, policy, factory)), raw[:300]
        answered.append(fast is not None)
    assert answered[0] == answered[2], raw[:300]  # the factory does not decide (the policy may: it reads the boundary)
    for headers_first, crlf_first in ((True, True), (True, False), (False, False)):
        message = _message(raw)
        if crlf_first:
            message.crlf_only()  # the parse stage counts line ends first (then the split skips its bare-CR search)
        if headers_first:
            message.headers  # the parse stage reads the header section first
        assert _tree(message.parsed) == _tree(_feed(raw, email.policy.default, ParsedOnce)), raw[:300]
    return answered[0]


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


_EML = sorted((ROOT / "tests" / "data").rglob("*.eml"))
# The email package's own test messages, from CPython's test suite (Lib/test/test_email/data).
_CPYTHON = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data").glob("msg_*.txt"))


@pytest.mark.parametrize("path", _EML, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_repository_messages_parse_as_the_feed_parser_parses_them(path: Path) -> None:
    raw = path.read_bytes()
    _same_as_the_feed_parser(raw)
    _same_as_the_feed_parser(_crlf(raw))


@pytest.mark.parametrize("path", _CPYTHON, ids=lambda p: p.name)
def test_cpythons_email_test_messages_parse_as_the_feed_parser_parses_them(path: Path) -> None:
    raw = path.read_bytes()  # LF line ends: the fast path gives way (see below for their CRLF form)
    assert not _same_as_the_feed_parser(raw) or b"\r\n" in raw
    _same_as_the_feed_parser(_crlf(raw))


def test_cpythons_email_corpus_is_at_hand() -> None:
    assert len(_CPYTHON) > 40


def test_the_bench_messages_take_the_fast_path() -> None:
    assert _same_as_the_feed_parser(bench.message_pdf200k())
    assert not _same_as_the_feed_parser(bench.message_text5k())  # one part: complete_one_part's


def test_the_usual_multipart_messages_take_the_fast_path() -> None:
    """Multiparts of leaves and multiparts without a defect: all but the shapes the fast path leaves to the parser."""
    answered, left = 0, []
    for path in _EML + _CPYTHON:
        raw = _crlf(path.read_bytes())
        tree = _feed(raw, email.policy.compat32)
        parts = list(tree.walk())
        if not tree.is_multipart() or any(p.defects for p in parts):
            continue
        if _same_as_the_feed_parser(raw):
            answered += 1
        else:
            left.append(path.name)
            types = [p.get_content_maintype() for p in parts]
            # What it leaves: message/* parts, repeated delimiter lines (msg_37: "--ABCDE" twice in a row).
            assert "message" in types or re.search(rb"(?m)^--(\S+)\r\n--\1\r\n", raw), path
    assert answered >= 60, (answered, left)


# --- generated multiparts around the feed parser's edge cases ------------------------------

def _mostly(usual: Any, *rare: Any) -> st.SearchStrategy[Any]:
    """``usual`` most of the time, else one of ``rare``: most examples simple, so that the fast path answers."""
    return st.sampled_from([usual] * 12 + list(rare))


_leaf_heads = st.lists(_mostly(
    "Content-Type: text/plain", "Content-Type: application/pdf; name=a.pdf", "Content-Transfer-Encoding: base64",
    "Content-Transfer-Encoding: 8bit", "Content-Disposition: attachment; filename=a.exe", "Subject: s",
    "Content-Type: message/rfc822", "Content-Type: message/delivery-status", "X: folded\r\n value", "From x",
    "Content-Type: text/plain; charset=\"utf-8\"", "Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=b",
    "Content-Type: text/plain; boundary=b", ": no name",
), max_size=3)
_texts = st.lists(st.sampled_from(["x", "x", "x", "JVBERi0xLjQK", "JVBERi0xLjQK", "-- ", "--b", "--bx", "--b--x", "--b ", "--c",
                                   "n\u1ed9i", "\udcff", " ", "\t", ""]), max_size=3).map("".join)
_ends = _mostly("\r\n", "\n", "\r")
_blank = _mostly("\r\n", "\n", " \r\n", "")


@st.composite
def _body(draw: Any) -> str:
    """A leaf's body: a few lines with their ends (mostly CRLF)."""
    return "".join(draw(_texts) + draw(_ends) for _ in range(draw(st.integers(0, 3))))


@st.composite
def _part(draw: Any, depth: int) -> str:
    """One part: a header section, an empty line (usually), a body or a nested multipart."""
    if depth < 2 and draw(st.integers(0, 2)) == 0:
        boundary = draw(_mostly("c", "b", "=_in"))
        heads = [f"Content-Type: {draw(st.sampled_from(['multipart/alternative', 'multipart/digest', 'multipart/mixed']))};"
                 f" boundary={draw(st.sampled_from([boundary, chr(34) + boundary + chr(34)]))}"]
        body = draw(_multipart_body(boundary, depth + 1))
    else:
        heads = draw(_leaf_heads)
        body = draw(_body())
    head = "".join(h + draw(_ends) for h in heads)
    return head + draw(_blank) + body


_delims = st.sampled_from(["", "", "", " ", "\t ", "x", "  x"])  # after "--boundary": spaces, or text


@st.composite
def _multipart_body(draw: Any, boundary: str, depth: int) -> str:
    text = draw(st.sampled_from(["", "", "preamble\r\n", "\r\n", "pre\n", "--" + boundary + "x\r\n"]))
    for _ in range(draw(_mostly(1, 0, 2, 2, 3, 3))):
        text += f"--{boundary}{draw(_delims)}{draw(_ends)}" + draw(_part(depth))
    close = draw(_mostly(f"--{boundary}--", f"--{boundary}--  ", f"--{boundary}--x", ""))
    if close:
        text += close + draw(_mostly("\r\n", "", "\n"))
    return text + draw(st.sampled_from(["", "", "epilogue\r\n", "\r\n", "epi", "--" + boundary + "\r\nmore\r\n"]))


@st.composite
def _multiparts(draw: Any) -> bytes:
    boundary = draw(st.sampled_from(["b", "=_mailgw_7c1f", "b c"]))
    quoted = draw(st.booleans()) or " " in boundary
    ctype = draw(st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/digest", "MULTIPART/Related"]))
    heads = [f"Content-Type: {ctype}; boundary=" + (f'"{boundary}"' if quoted else boundary)]
    heads += draw(st.lists(_mostly("Subject: s", "MIME-Version: 1.0", "Content-Transfer-Encoding: base64",
                                   "Content-Type: text/plain", "From x"), max_size=2))
    if draw(st.booleans()):
        heads.reverse()
    head = "".join(h + "\r\n" for h in heads) + draw(_mostly("\r\n", "\n"))
    body = draw(_multipart_body(boundary, 0))
    return (head + body).encode("utf-8", "surrogateescape")


@_FUZZ
@given(_multiparts())
def test_generated_multiparts_parse_as_the_feed_parser_parses_them(raw: bytes) -> None:
    _same_as_the_feed_parser(raw)


@_FUZZ
@given(_multiparts(), st.integers(1, 40))
def test_generated_multiparts_fed_in_small_slices_parse_alike(raw: bytes, size: int) -> None:
    """The feed parser's tree does not depend on where the slices end (what the fast path relies on)."""
    assert _tree(_feed(raw, email.policy.compat32, size=size)) == _tree(_feed(raw, email.policy.compat32))


def test_the_edge_cases_are_answered_or_left_as_intended() -> None:
    head = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    part = b"Content-Type: text/plain\r\n\r\nx\r\n"
    answered = [
        head + b"--b\r\n" + part + b"--b--\r\n",
        head + b"--b  \r\n" + part + b"--b\t\r\n\r\ny\r\n--b-- \r\nepilogue",  # whitespace after delimiters; an empty header section
        head + b"preamble\r\n--b\r\n" + part + b"--bx\r\n--b--",  # "--bx" is text; no line end after the close
        head + b"\r\n--b\r\n" + part + b"--b--\r\n\r\n",  # an empty preamble and epilogue
        head + b"--b\r\n" + part + b"--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n"
        b"--c\r\n" + part + b"--c--\r\n\r\n--b--\r\n",  # nested: an epilogue of one line end (then "")
        head + b"--b\r\nContent-Type: multipart/digest; boundary=c\r\n\r\npre\r\n--c\r\n" + part
        + b"--c--\r\n--b--\r\n",  # nested: no epilogue (then None), a preamble, a digest's part
        head + b"--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n" + part
        + b"--c--\r\nafter\r\n\r\n--b--\r\n",  # nested: an epilogue of lines
        head + b"--b\r\n" + part.replace(b"x\r\n", b"x\ny\r\n") + b"--b--\r\n",  # a bare LF inside a body
    ]
    left = [
        head + b"--b\r\n" + part,  # no close delimiter
        head + b"--b\r\n--b\r\n" + part + b"--b--\r\n",  # two delimiter lines in a row
        head + b"--b--\r\n",  # no part
        head + b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n--b--\r\n",
        head + b"--b\r\nContent-Type: text/plain\r\nx\r\n--b--\r\n",  # no empty line ends the part's headers
        head.replace(b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n") + b"--b\r\n" + part + b"--b--\r\n",
        head.replace(b"\r\n", b"\n") + b"--b\n" + part + b"--b--\n",  # LF line ends in the header section
        head + b"--b\r\n" + part.replace(b"x\r\n", b"x\n\ry\r") + b"--b--\r\n",  # a bare CR (the parse stage refuses it)
        # A boundary holding a line break never matches a line (the parser reads one at a time),
        # whether folded (kept by compat32) or RFC 2231-encoded: one text with defects, not parts.
        head.replace(b"boundary=b", b'boundary="a\r\n b"') + b"--a\r\n b\r\n" + part + b"--a\r\n b--\r\n",
        head.replace(b"boundary=b", b"boundary*=us-ascii''a%0D%0Ab") + b"--a\r\nb\r\n" + part + b"--a\r\nb--\r\n",
    ]
    for raw in answered:
        assert _same_as_the_feed_parser(raw), raw
    for raw in left:
        assert not _same_as_the_feed_parser(raw), raw


class _CountingBytes(bytes):
    """Bytes that count the searches made in them."""

    finds = 0

    def find(self, *args: Any) -> int:  # type: ignore[override]
        type(self).finds += 1
        return super().find(*args)


def test_hostile_shapes_leave_the_fast_path_at_once() -> None:
    """Shapes an attacker can send inside the size limit: each is read once, at C speed, and left
    to the feed parser as soon as its reading could differ (found in review: a search from every
    "--boundary" rather than every line start took 1.6 s of CPU for 10 MB of dashes, and two
    million delimiter lines in a row were all collected before being refused: 2.2 s, 266 MB)."""
    head = b"Content-Type: multipart/mixed; boundary=%s\r\n\r\n"
    delimiters = head % b'""' + b"-" * 1_000_000 + b"\r\n"  # an empty boundary: every "--" looks like one
    in_a_row = head % b"b" + b"--b\r\n" * 200_000 + b"--b--\r\n"
    near_misses = head % b"b" + b"--b\r\n\r\n" + b"x--b" * 200_000 + b"\r\n--b--\r\n"
    blanks = head % b"b" + b"--b" + b" " * 1_000_000 + b"x\r\n--b\r\n\r\ny\r\n--b--\r\n"
    for raw in (delimiters, in_a_row):
        assert parse_multipart(raw, email.policy.default) is None
        assert _tree(_message(raw).parsed) == _tree(_feed(raw, email.policy.default, ParsedOnce))
    for raw in (near_misses, blanks):  # simple after all: answered, as the parser reads them
        assert _same_as_the_feed_parser(raw)
    # The work does not grow with the near misses: only line starts are searched.
    counted = _CountingBytes(near_misses)
    assert parse_multipart(counted, email.policy.default) is not None and counted.finds < 10, counted.finds
    many = head % b"b" + b"--b\r\n\r\nx\r\n" * 1_001 + b"--b--\r\n"
    assert parse_multipart(many, email.policy.default, max_parts=1_000) is None
    assert parse_multipart(many, email.policy.default, max_parts=1_002) is not None


def test_a_folded_boundary_does_not_hide_a_part_from_the_attachment_walker(monkeypatch: pytest.MonkeyPatch) -> None:
    """compat32 keeps a folded boundary's line break, policy.default unfolds it: the walker, which
    parses with compat32 when the two differ, must see what the feed parser sees (found in review:
    an executable inside became invisible, where the parser's reading makes the message ambiguous)."""
    exe = b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA=="
    raw = (b'From: a@b\r\nContent-Type: multipart/mixed; boundary="a\r\n b"\r\n\r\n'
           b"--a\r\n b\r\nContent-Type: text/plain\r\n\r\n"
           b"--a b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b'--a b\r\nContent-Type: application/x-msdownload; name="x.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + exe + b"\r\n--a b--\r\n--a\r\n b--\r\n")
    tree = _message(raw).parsed
    facts = inspect_message(raw, AttachmentLimits(), tree)
    with monkeypatch.context() as m:
        m.setattr(mime, "parse_multipart", lambda *args, **kwargs: None)
        assert facts == inspect_message(raw, AttachmentLimits(), tree)
    assert facts["ambiguous"], facts


def test_a_kept_body_decodes_to_the_bytes_it_was_read_from() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nn\xe1\xbb\x99i\r\n"
           b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--b--\r\n")
    tree = _message(raw).parsed
    text, data = tree.get_payload()
    assert text.__dict__["_mailgw_payload_bytes"][1] == b"n\xe1\xbb\x99i"
    assert "_mailgw_payload_bytes" not in data.__dict__  # base64: decoded_payload decodes it
    assert mime.decoded_payload(text) == text.get_payload(decode=True)


# --- the attachment walker, which parses with compat32 when no tree is at hand ---------------


def _without_fast_multipart(monkeypatch: pytest.MonkeyPatch, raw: bytes, limits: AttachmentLimits) -> dict[str, Any]:
    with monkeypatch.context() as m:
        m.setattr(mime, "parse_multipart", lambda *args, **kwargs: None)
        return inspect_message(raw, limits)


def test_attachment_facts_do_not_depend_on_the_fast_multipart_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    raws = [bench.message_pdf200k()] + [_crlf(p.read_bytes()) for p in _EML[:40]]
    many = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 4 + b"--b--\r\n"
    for raw in raws + [many]:
        for limits in (AttachmentLimits(), AttachmentLimits(max_parts=4), AttachmentLimits(max_parts=5)):
            assert inspect_message(raw, limits) == _without_fast_multipart(monkeypatch, raw, limits)
    assert "more than 4 MIME parts" in inspect_message(many, AttachmentLimits(max_parts=4))["ambiguous_reason"]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_multiparts())
def test_generated_multiparts_have_the_same_attachment_facts_without_the_fast_parse(raw: bytes) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert inspect_message(raw, AttachmentLimits()) == _without_fast_multipart(monkeypatch, raw, AttachmentLimits())
