"""mailgw.message.fastheaders gives exactly what the email package's full parser gives, or steps aside (None).

The author stage's spoofing checks and the decision record rely on it, so
every value here is read both ways: the shortcut must agree with
``email.policy.default`` on the decoded text, on each address (display name,
user, domain, addr-spec) and on there being no defect and no group.
"""

from __future__ import annotations

import base64
import email.policy
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.message import fastheaders
from mailgw.message.model import Envelope, Message

FACTORY = email.policy.default.header_factory


def _ew(text: str, charset: str = "utf-8", cte: str = "b") -> str:
    try:
        data = text.encode(charset)
    except LookupError:  # a charset the decoder will not know either
        data = text.encode("utf-8")
    if cte.lower() == "b":
        return f"=?{charset}?{cte}?{base64.b64encode(data).decode()}?="
    return f"=?{charset}?{cte}?{''.join(chr(b) if chr(b).isalnum() else '=%02X' % b for b in data)}?="


NAMES = [
    "Van thu", "Nguyen  Van\tA", "A", "O'Brien", "x-y_z", "a+b", "=?x", "J. Smith", "Smith, J", "a:b",
    '"Van thu"', '"Nguyễn"', '"Smith, J"', '"a\\"b"', '"  x  y "', '""', '"=?utf-8?q?x?="', '"a\tb"',
    _ew("Văn thư Sở TTTT"), _ew("Smith, J"), _ew(" x "), _ew("a  b"), _ew("a\x01b"), _ew("a\tb"), _ew(""),
    _ew("x", "iso-8859-1", "q"), _ew("Nguyễn", "utf-8", "Q"), _ew("x", "nosuchcharset"), "=?utf-8?b?QQ?=",
    "=?utf-8?b?@@@?=", "=?utf-8?q?=ZZ?=", "=?utf-8?q?=41?=", "=?utf-8?x?QQ==?=", _ew("A") + " " + _ew("B"),
    _ew("A") + " Jr", "Mr " + _ew("A"), "(comment) Name", "Name (comment)", "Tên", "a.b", "",
]
ADDRESSES = [
    "vanthu.sotttt@binhthuan.gov.vn", "a@b", "a.b.c@d.e", "o'brien@x.vn", "a+tag@x.vn", "{x}@y.z",
    '"quoted"@x.vn', "a..b@x.vn", ".a@x.vn", "a.@x.vn", "a@x..vn", "a@.x.vn", "a@x.vn.", "a@[1.2.3.4]",
    "a@b@c", "@x.vn", "a@", "=?utf-8?q?a?=@x.vn", "a@=?utf-8?q?x?=", "a=?b@x.vn", "tên@x.vn", "a@xn--bnh-nma.vn",
    "a b@x.vn", "a@x .vn", "a(c)@x.vn",
]
SPACES = ["", " ", "  ", "\t", " \t "]


def _shapes() -> list[str]:
    out = []
    for addr in ADDRESSES:
        out += [addr, f"<{addr}>", f" {addr} ", f"<{addr}", f"{addr}>", f"< {addr} >"]
        for name in NAMES:
            out += [f"{name} <{addr}>", f"{name}<{addr}>", f"{name}  <{addr}> "]
    out += [
        "", " ", ",", "a@b,", ",a@b", "a@b,,c@d", "a@b, c@d", "a@b ,c@d", "Name <a@b>, c@d",
        "a@b, Name <c@d>, " + _ew("Tên") + " <e@f>", "undisclosed-recipients:;", "G: a@b, c@d;", "G: a@b;, c@d",
        "a@b c@d", "<a@b> <c@d>", "<a@b> x", "Name <a@b> (comment)", "<>", "Name <>", "<@route:a@b>",
        "a@b\r\n", "Name\r\n <a@b>", "Name\r\n\t<a@b>", "\r\n <a@b>", "a\r\n@b", "a@b\x00", "a@b\x7f",
        "Name <a@b", "Name a@b", "Name <a@b>>", "Name <<a@b>>", "a@b;", "a@b; c@d",
    ]
    return out


def _full(name: str, value: str):
    return email.policy.default.header_fetch_parse(name, value)


def _same_addresses(value: str, names: tuple[str, ...] = ("From", "To", "cc")) -> None:
    fast = fastheaders.addresses(value)
    if fast is None:
        return
    full = _full("From", value)
    assert not full.defects, (value, full.defects)
    assert all(g.display_name is None for g in full.groups), value
    assert [(a.display_name, a.username, a.domain, a.addr_spec, str(a)) for a in fast] == \
           [(a.display_name, a.username, a.domain, a.addr_spec, str(a)) for a in full.addresses], value
    for name in names:
        assert fastheaders.text(name, value) == str(_full(name, value)), value


def test_addresses_agree_with_the_full_parser():
    for value in _shapes():
        _same_addresses(value)


def test_the_usual_shapes_take_the_shortcut():
    for value in ("vanthu.sotttt@binhthuan.gov.vn", "<a@b.vn>", "Van Thu <a@b.vn>", '"Thu, Van" <a@b.vn>',
                  _ew("Văn thư Sở TTTT") + " <vanthu.sotttt@binhthuan.gov.vn>", "a@b.vn, Name <c@d.vn>"):
        assert fastheaders.addresses(value) is not None, value
    # Refused: what the full parser flags, or reads in a way of its own.
    for value in ("J. Smith <a@b.vn>", '"' + _ew("x") + '" <a@b.vn>', _ew("x") + "<a@b.vn>", "G: a@b.vn;",
                  "a@b.vn,", "Tên <a@b.vn>", _ew("a\x01b") + " <a@b.vn>", "(c) a@b.vn", "a@b.vn (c)"):
        assert fastheaders.addresses(value) is None, value


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
PRINTABLE = "".join(chr(c) for c in range(32, 127))


_FUZZ = settings(max_examples=3000, deadline=None, database=None)


@st.composite
def _mailboxes(draw: st.DrawFn) -> str:
    """A mailbox as clients write it (bare, in angle brackets, with a plain, encoded or quoted name), maybe one
    character of anything added anywhere."""
    def word(chars: str, n: int = 4) -> str:
        return draw(st.text(st.sampled_from(chars), min_size=1, max_size=n))

    def dot_atom() -> str:
        return ".".join(word(ATEXT) for _ in range(draw(st.integers(1, 3))))

    def space() -> str:
        return draw(st.sampled_from(["", " ", "  ", "\t", "\r\n "]))

    addr = dot_atom() + "@" + dot_atom()
    kind = draw(st.integers(0, 4))
    if kind == 0:
        box = addr
    elif kind == 1:
        box = f"<{addr}>"
    elif kind == 2:
        box = " ".join(word(ATEXT, 6) for _ in range(draw(st.integers(1, 3)))) + space() + f"<{addr}>"
    elif kind == 3:
        text = draw(st.text(st.sampled_from("aăâđêôơưBìnhThuận ,.:;<>@\"()[]\t\x01\x7f\u00a0\u2028"), max_size=8))
        charset = draw(st.sampled_from(["utf-8", "UTF-8", "latin-1"])) if text.isascii() else "utf-8"
        box = _ew(text, charset, draw(st.sampled_from("bBqQ"))) + space() + f"<{addr}>"
    else:
        box = '"' + word(PRINTABLE, 8) + '"' + space() + f"<{addr}>"
    value = space() + box + space()
    if draw(st.booleans()):  # one character of anything, anywhere
        i = draw(st.integers(0, len(value)))
        value = value[:i] + draw(st.sampled_from(PRINTABLE + "\t\x00\x7f\u00e9")) + value[i:]
    return value


@settings(max_examples=1500, deadline=None, database=None)  # each example runs the full parser: the costly one
@given(st.lists(_mailboxes(), min_size=1, max_size=3).map(",".join))
def test_generated_address_lists_agree_with_the_full_parser(value: str) -> None:
    _same_addresses(value, ("From",))


def test_the_shortcut_reads_the_usual_shapes_and_agrees():
    values = [f"{a}{name}{b}<{addr}>{a}" for name, addr in itertools.product(NAMES, ADDRESSES[:8])
              for a, b in itertools.product(SPACES, SPACES)]
    for value in values:
        _same_addresses(value, ("From",))
    # and the shortcut is really taken for what clients write most (else the agreement above proves little)
    for addr in ADDRESSES[:6]:  # the dot-atom ones
        for value in (addr, f"<{addr}>", f"Van thu <{addr}>", f"=?utf-8?b?VsSDbiB0aMawIFPhu58gVFRUVA==?= <{addr}>"):
            assert fastheaders.addresses(value) is not None, value


UNSTRUCTURED = [
    "", "Báo cáo", "plain  text\twith   spaces ", " leading", "a=?b", "=?", "?=", "=?x?=",
    _ew("V/v triển khai Kế hoạch chuyển đổi số năm 2026"), _ew("a") + " " + _ew("b"), _ew("a") + "  \t" + _ew("b"),
    _ew("a") + " x " + _ew("b"), "x " + _ew("a"), _ew("a") + " x", _ew("a") + _ew("b"), "x" + _ew("a"),
    _ew("a") + "x", " " + _ew("a") + " ", _ew(" a "), _ew("a\r\nb"), _ew("a\x00b"), "=?utf-8?q?=ZZ?=",
    "=?utf-8?q?=41=42?=", "=?utf-8?b?QQ?=", "=?utf-8?b?@@?=", _ew("x", "nosuchcharset"), _ew("é", "latin-1", "q"),
    "=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=", "=?utf-8*vi?b?w6k=?=", "=?utf-8?b?QUJD?=\r\n =?utf-8?b?QUJD?=",
    "Re: [list] " + _ew("Tên") + " (2)", "\udce9 raw 8-bit", _ew("x", "unknown-8bit"), "=?utf-8?b?/w==?=",
]


@pytest.mark.parametrize("value", UNSTRUCTURED)
def test_unstructured_agrees_with_the_full_parser(value):
    for name in ("Subject", "In-Reply-To", "References", "X-Anything"):
        fast = fastheaders.text(name, value)
        assert fast is None or fast == str(_full(name, value)), (name, value)


_PIECES = ["a", " ", "  ", "\t", "=?", "?=", "utf-8", "?b?", "?q?", "QQ==", "w6k=", "=41", "_", "?", "=",
           _ew("Tên"), _ew("a"), "=?utf-8?q?x?=", "\r\n ", "x"]


@_FUZZ
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8).map("".join))
def test_generated_unstructured_agrees_with_the_full_parser(value: str) -> None:
    fast = fastheaders.text("Subject", value)
    assert fast is None or fast == str(_full("Subject", value)), value


@pytest.mark.parametrize("value", ["<1@b.c>", "<a.b@c.d>", " <1@b.c>", "<1@b.c> ", "<1@[1.2.3.4]>", "<1>", "1@b.c",
                                   "<1@b.c> <2@d.e>", "<a..b@c>", "<tên@b.c>", "<1@b.c>x", "", "<@>", "<1@b.c"])
def test_message_id_agrees_with_the_full_parser(value):
    fast = fastheaders.text("Message-ID", value)
    assert fast is None or fast == str(_full("Message-ID", value)), value
    assert (fast is not None) == (value in ("<1@b.c>", "<a.b@c.d>"))


def test_other_fields_and_header_objects_go_to_the_full_parser():
    assert fastheaders.text("Content-Type", "text/plain") is None
    assert fastheaders.text("Date", "Mon, 16 Mar 2026 08:30:00 +0700") is None
    obj = _full("Subject", "x")
    assert fastheaders.text("Subject", obj) is None and fastheaders.addresses(_full("From", "a@b")) is None


def test_message_text_is_str_of_the_parsed_header():
    raw = (b"From: =?utf-8?b?VsSDbiB0aMawIFPhu58gVFRUVA==?= <vanthu.sotttt@binhthuan.gov.vn>\r\n"
           b"To: J. Smith <a@hanoi.gov.vn>\r\nCc: a@b.vn,\r\n c@d.vn\r\nSubject: x\r\n y\r\n"
           b"Message-ID: <1@x.vn>\r\nReferences: <0@x.vn>\r\n\t<1@x.vn>\r\n\r\nbody\r\n")
    env = Envelope(mail_from="", rcpts=["a@hanoi.gov.vn"], listener="relay", role="relay", client_ip="127.0.0.1")
    fast, full = Message("T1", env, raw).headers, Message("T2", env, raw).headers
    for name in ("from", "To", "CC", "subject", "message-id", "in-reply-to", "references", "date"):
        value = full.get(name)
        assert fast.text(name) == (str(value) if value is not None else None), name
    full.replace_header("Subject", "changed")
    assert full.text("Subject") == "changed"


def test_a_short_value_is_parsed_once_for_all_messages_and_a_changed_one_again():
    env = Envelope(mail_from="", rcpts=["a@hanoi.gov.vn"], listener="relay", role="relay", client_ip="127.0.0.1")
    raw = b"From: a@b.vn\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nx\r\n"
    one, two = Message("T1", env, raw), Message("T2", env, raw)
    assert one.headers["Content-Type"] is two.parsed["Content-Type"]
    assert one.headers.get_content_charset() == "utf-8"
    one.headers.replace_header("Content-Type", "text/html; charset=koi8-r")
    assert one.headers.get_content_type() == "text/html" and one.headers.get_content_charset() == "koi8-r"
    assert two.headers.get_content_type() == "text/plain" and two.headers.get_content_charset() == "utf-8"
    assert str(two.headers["Content-Type"]) == str(_full("Content-Type", "text/plain; charset=utf-8"))
