"""Stage author: every unambiguous From that real clients write is read, every ambiguity refused with its reason.

The cases are the real From fields of tests/data/from/ (see SOURCES.md there);
a handful also go through the real gateway over SMTP.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailgw.message import replies
from mailgw.message.model import Envelope, Message
from mailgw.message.replies import Reject
from mailgw.stages import author
from tests.conftest import send

DATA = Path(__file__).parent / "data" / "from"
LOCAL = "vanthu.snv@binhthuan.gov.vn"


@dataclasses.dataclass
class Case:
    source: str
    field: str  # the whole field, "From: ...", continuation lines joined with CRLF
    expect: str
    name: str | None = None
    utf8: bool = False

    def __str__(self) -> str:
        return f"{self.source}: {self.field[:60]}"


def _cases(path: Path) -> list[Case]:
    out: list[Case] = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith("#")]
        if not lines:
            continue
        assert lines[0].startswith("== "), block
        field = [line for line in lines[1:] if line.startswith(("From:", " ", "\t"))]
        case = Case(lines[0][3:], "\r\n".join(field), "")
        for line in lines[1 + len(field):]:
            if line.startswith("-> "):
                case.expect = line[3:]
            elif line.startswith("name: "):
                case.name = line[6:]
            elif line == "utf8":
                case.utf8 = True
            else:
                raise AssertionError(f"unknown line {line!r} in {path}")
        assert case.expect, block
        out.append(case)
    return out


ACCEPTED = _cases(DATA / "accepted.txt")
REFUSED = _cases(DATA / "refused.txt")
PROBLEMS = {
    "no_address": replies.FROM_NO_ADDRESS, "two_addresses": replies.FROM_TWO_ADDRESSES,
    "group": replies.FROM_GROUP, "unreadable": replies.FROM_UNREADABLE,
    "invalid_address": replies.FROM_INVALID_ADDRESS,
}


class _Ctx:
    directory: Any = None


def _run(header_section: str, *, smtputf8: bool = False) -> Message:
    raw = (header_section + f"\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n").encode("utf-8")
    m = Message("T1", Envelope("a@example.com", [LOCAL], "mx", "mx", "127.0.0.1", smtputf8=smtputf8), raw)
    author.run(m, _Ctx())  # type: ignore[arg-type]
    return m


def _refusal(header_section: str, *, smtputf8: bool = False) -> replies.SmtpReply:
    with pytest.raises(Reject) as err:
        _run(header_section, smtputf8=smtputf8)
    return err.value.reply


def _same(got: replies.SmtpReply, want: replies.SmtpReply) -> bool:
    return (got.code, got.enhanced, got.text) == (want.code, want.enhanced, want.text)


def test_the_corpora_are_all_there():
    # Every From field of both Debian corpora, and the hand-picked ones (SOURCES.md).
    assert len(ACCEPTED) >= 130 and len(REFUSED) >= 25
    assert sum(c.source.startswith("flufl.bounce/") for c in ACCEPTED + REFUSED) >= 90


@pytest.mark.parametrize("case", ACCEPTED, ids=str)
def test_a_from_that_clients_write_is_read(case: Case):
    m = _run(case.field, smtputf8=case.utf8)
    assert m.facts.author == case.expect
    if case.name is not None:
        assert m.facts.author_name == case.name
    assert m.facts.claimed == ()


@pytest.mark.parametrize("case", [c for c in ACCEPTED if c.utf8], ids=str)
def test_a_utf8_author_needs_smtputf8(case: Case):
    reply = _refusal(case.field, smtputf8=False)
    assert (reply.code, reply.enhanced) == (550, "5.6.7") and "SMTPUTF8" in reply.text


@pytest.mark.parametrize("case", REFUSED, ids=str)
def test_an_ambiguous_from_is_refused_naming_the_problem(case: Case):
    reply = _refusal(case.field, smtputf8=True)
    assert _same(reply, PROBLEMS[case.expect]), (reply.text, reply.reason)
    assert (reply.code, reply.enhanced) == (550, "5.7.1")


@pytest.mark.parametrize("section", [
    "From: <first@attack.com>\r\nFrom: <admin@legitimate.com>",  # espoofer server_a8, client_a1
    "From: an@sct.hanoi.gov.vn\r\nfrom: an@sct.hanoi.gov.vn",  # even the same address twice
])
def test_two_from_fields_are_refused(section: str):
    assert _same(_refusal(section), replies.TWO_FROM)


def test_no_from_field_is_refused():
    assert _same(_refusal("Sender: an@sct.hanoi.gov.vn"), replies.NO_FROM)


@pytest.mark.parametrize("name", ["FROM", "from", "fRoM"])
def test_the_field_name_is_read_in_any_case(name: str):
    assert _run(f"{name}: Nguyen V. An <an@sct.hanoi.gov.vn>").facts.author == "an@sct.hanoi.gov.vn"


def test_a_from_with_8bit_bytes_that_are_not_utf8_keeps_its_address():
    # A legacy client writing Windows-1258 into the header: the name is unreadable, the address is not.
    raw = b"From: Nguy\xd2n <an@sct.hanoi.gov.vn>\r\nTo: " + LOCAL.encode() + b"\r\nSubject: x\r\n\r\nb\r\n"
    m = Message("T1", Envelope("a@example.com", [LOCAL], "mx", "mx", "127.0.0.1"), raw)
    author.run(m, _Ctx())  # type: ignore[arg-type]
    assert m.facts.author == "an@sct.hanoi.gov.vn" and m.facts.author_name == "Nguy\ufffdn"


def test_a_quoted_local_part_that_needs_no_quotes_is_the_plain_address():
    # Otherwise '"vanthu"@binhthuan.gov.vn' would be another author than vanthu@binhthuan.gov.vn.
    assert _run('From: <"vanthu.sotttt"@binhthuan.gov.vn>').facts.author == "vanthu.sotttt@binhthuan.gov.vn"


@pytest.mark.parametrize("field, address", [
    ("Sender: Nguyen V. An <an@sct.hanoi.gov.vn>", "an@sct.hanoi.gov.vn"),
    ("Resent-From: <kiemthu@mail.test>", "kiemthu@mail.test"),
    ('Sender: "=?utf-8?B?VsSDbiB0aMawIFPhu58=?=" <vanthu@old.invalid>', "vanthu@old.invalid"),
])
def test_sender_and_resent_from_are_read_the_same_way(field: str, address: str):
    m = _run(f"From: an@sct.hanoi.gov.vn\r\n{field}")
    assert m.facts.claimed == (address,)


def test_a_sender_field_that_cannot_be_read_is_still_refused():
    assert _refusal('From: an@sct.hanoi.gov.vn\r\nSender: "a@b.example"@evil.example').code == 550


def test_the_reading_of_a_value_is_remembered():
    before = author.read_from.cache_info().hits
    for _ in range(3):
        _run("From: Nguyen V. An <an@sct.hanoi.gov.vn>")
    assert author.read_from.cache_info().hits >= before + 2


# --- through the real gateway -------------------------------------------------------------


@pytest.mark.parametrize("from_value, author_seen", [
    ("Nguyen V. An <vanthu.sotttt@binhthuan.gov.vn>", b"Nguyen V. An"),  # Outlook's obsolete phrase
    ('"=?utf-8?B?VsSDbiB0aMawIFPhu58=?=" <vanthu.sotttt@binhthuan.gov.vn>', b"=?utf-8?B?VsSDbiB0aMawIFPhu58=?="),
    ("vanthu.sotttt@binhthuan.gov.vn (Van thu So)", b"(Van thu So)"),
])
async def test_the_gateway_accepts_what_clients_write(gateway, sink, from_value, author_seen):
    raw = f"From: {from_value}\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    await send(gateway, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    await sink.wait_for(lambda: sink.to(LOCAL))
    assert b"\r\nFrom: " + from_value.encode() + b"\r\n" in sink.to(LOCAL)[0].data  # passed on as written
    assert author_seen in sink.to(LOCAL)[0].data


async def test_the_gateway_accepts_a_utf8_author_over_smtputf8(gateway, sink):
    raw = f"From: Nguyễn Văn An <nguyễn.an@bộ.gov.vn>\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    await send(gateway, "mx", raw, "an@example.com", [LOCAL], mail_options=["SMTPUTF8"])
    await sink.wait_for(lambda: sink.to(LOCAL))
    assert "nguyễn.an@bộ.gov.vn".encode() in sink.to(LOCAL)[0].data
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "mx", raw, "an@example.com", [LOCAL])  # the same without SMTPUTF8
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.7")
    assert "requires the SMTPUTF8 parameter" in err.value.message


@pytest.mark.parametrize("section, english", [
    ("From: a@binhthuan.gov.vn\r\nFrom: b@example.com", "more than one From header"),
    ("From: <first@attack.example>, <vanthu.sotttt@binhthuan.gov.vn>", "From header has more than one address"),
    ("From: undisclosed-recipients:;", "From header is a group"),
    ("From: Mail Delivery System <>", "From header has no address"),
    ("Sender: a@binhthuan.gov.vn", "has no From header"),
    ("From: <any@attack.example>vanthu.sotttt@binhthuan.gov.vn", "cannot be read as exactly one address"),
])
async def test_the_gateway_names_the_problem_of_a_refused_from(gateway, sink, section, english):
    raw = f"{section}\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "mx", raw, "bounce@attack.example", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.7.1")
    assert english in err.value.message and "exactly one From header" not in err.value.message
    assert err.value.message.isascii() and " / " in err.value.message  # Vietnamese folded, then English
    assert not sink.messages


@pytest.mark.parametrize("from_value", [
    '"=?utf-8?B?aGFuaC52cEBiaW5odGh1YW4uZ292LnZu?=" <evil@attacker.example>',  # refused before, now read: and warned
    "evil@attacker.example (hanh.vp@binhthuan.gov.vn)",  # the comment clients show as the name
])
async def test_an_address_hidden_in_what_clients_show_as_the_name_is_warned(gateway, sink, from_value):
    raw = f"From: {from_value}\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    await send(gateway, "mx", raw, "bounce@attacker.example", [LOCAL])
    await sink.wait_for(lambda: sink.to(LOCAL))
    head = sink.to(LOCAL)[0].data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Mailgw-Warning: " in head
