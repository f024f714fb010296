"""The edge's fast MAIL FROM / RCPT TO address parse gives exactly what aiosmtpd's own gives.

``SmtpServer._getaddr`` takes a regular-expression path for the common
``<local@domain> PARAMS`` shape and aiosmtpd's parse through the email package
for everything else; an address the two read differently would be a way
around the edge's checks, so they are compared on random input.
"""

from __future__ import annotations

import types

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.smtp.edge import fast_getaddr
from tests.conftest import port
from tests.dialog import Dialog


def aiosmtpd_getaddr(arg: str, limit: int) -> object:
    """What aiosmtpd's own parse gives, or the exception it raises (it raises IndexError on "<")."""
    try:
        return SMTP._getaddr(types.SimpleNamespace(local_part_limit=limit), arg)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        return type(e)


def ours(arg: str, limit: int) -> object:
    fast = fast_getaddr(arg, limit)
    return fast if fast is not None else aiosmtpd_getaddr(arg, limit)


COMMON = [
    "<vanthu@binhthuan.gov.vn>",
    "<vanthu@binhthuan.gov.vn> SIZE=5120 BODY=8BITMIME",
    "<a.b+c@x-y.gov.vn>\tSMTPUTF8",
    "<first.last@sub.example.com>  AUTH=<>",
]

TRICKY = [
    "", "<>", "<> SIZE=1", " <a@b.vn>", "<a@b.vn>(comment) SIZE=1", "<a@b.vn> (c) SIZE=1", "<a@b.vn>X",
    "<a@b.vn> \nX", "<a@b.vn>\n", "<a..b@c.vn>", "<.a@c.vn>", "<a.@c.vn>", "<\"a b\"@c.vn>", "<a@[127.0.0.1]>",
    "<a@b.vn", "a@b.vn", "<@relay.vn:a@b.vn>", "<a@b.vn>>", "<a@@b.vn>", "<a@b..vn>", "<a@-b.vn>",
    "<ả@b.vn>", "<a@bả.vn>", "<a@b.vn> \u00a0X", "<a@b.vn>\u2028", "<" + "x" * 65 + "@b.vn>",
]


def test_common_shapes_take_the_fast_path_and_agree() -> None:
    for arg in COMMON:
        assert fast_getaddr(arg, 64) is not None, arg
        assert ours(arg, 64) == aiosmtpd_getaddr(arg, 64), arg


def test_tricky_arguments_agree() -> None:
    for arg in TRICKY:
        for limit in (0, 64):
            assert ours(arg, limit) == aiosmtpd_getaddr(arg, limit), (arg, limit)


def test_a_too_long_local_part_is_refused_on_the_fast_path() -> None:
    arg = "<" + "x" * 65 + "@b.vn> SIZE=1"
    assert fast_getaddr(arg, 64) == (None, None) == aiosmtpd_getaddr(arg, 64)


ALPHABET = "<>@.-+ab\"\\ ()\t\r\n[]:;,=éả\u00a0xyZ09!#"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=30))
def test_random_arguments_agree(arg: str) -> None:
    assert ours(arg, 64) == aiosmtpd_getaddr(arg, 64)


@settings(max_examples=2000, deadline=None)
@given(
    st.from_regex(r"\A<[a-z.+\-]{0,8}@[a-z.\-]{0,8}>", fullmatch=True),
    st.text(alphabet=" \t()aZ=<>\"\n", max_size=12),
)
def test_near_misses_of_the_common_shape_agree(path: str, rest: str) -> None:
    arg = path + rest
    assert ours(arg, 64) == aiosmtpd_getaddr(arg, 64)


async def test_a_truncated_path_is_a_malformed_address_and_the_session_goes_on(gateway):
    # aiosmtpd's parse raises IndexError on a lone "<"; the client gets 553 5.1.3 as for any malformed path, not a 451.
    d = await Dialog.open(port(gateway, "mx"))
    await d.reply()
    await d.cmd("EHLO probe.example.com")
    for arg in ("<", "< ", "<a@"):
        code, text = await d.cmd(f"MAIL FROM:{arg}")
        assert (code, text[:5]) == (553, "5.1.3"), (arg, code, text)
    assert (await d.cmd("MAIL FROM:<a@example.com>"))[0] == 250
    await d.close()
