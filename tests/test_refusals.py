"""Refusals that say why: what is read leniently as every reader does, what stays too ambiguous, and the reply.

Real material: the bounces of tests/data/bounces/ and the messages of
tests/data/mime/ (SOURCES.md in each); made ones where a case needs an
executable behind the quirk.
"""

from __future__ import annotations

import binascii
import re
from pathlib import Path

import aiosmtplib
import pytest

from mailgw.attachments import inspect_message
from mailgw.message.replies import SmtpReply
from mailgw.smtp.wire import reply_lines
from tests import attachment_fixtures as fx
from tests.conftest import port, send
from tests.dialog import Dialog

DATA = Path(__file__).parent / "data"
BOUNCES = sorted((DATA / "bounces").glob("*.txt"))
LOCAL = "vanthu.snv@binhthuan.gov.vn"
PE = fx.pe_exe()


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _read(path: Path) -> bytes:
    return _crlf(path.read_bytes())


def _qp(data: bytes) -> bytes:
    return binascii.b2a_qp(data).replace(b"\n", b"\r\n")


# --- read as every reader reads it ---------------------------------------------------------


def test_every_real_bounce_is_inspectable_but_the_one_whose_base64_was_removed():
    # 115 bounces of dozens of MTAs: delivery reports (also quoted-printable ones), a missing
    # closing boundary, returned messages Mailman cut to "Message removed". Before: 24 refused.
    assert len(BOUNCES) == 115
    ambiguous = {p.name: inspect_message(_read(p))["ambiguous_reason"] for p in BOUNCES}
    assert {name for name, reason in ambiguous.items() if reason} == {"groupwise_03.txt"}
    assert ambiguous["groupwise_03.txt"] == "broken base64 in part 1.2; broken base64 in part 2"


def test_a_delivery_report_encoded_in_quoted_printable_is_decoded_and_inspected():
    facts = inspect_message(_read(DATA / "bounces" / "dsn_14.txt"))
    assert not facts["ambiguous"]
    (report,) = [f for f in facts["files"] if f["declared_type"] == "message/delivery-status"]
    assert report["kind"] == "text" and not report["dangerous"]


def test_an_executable_hidden_in_an_encoded_delivery_report_is_found():
    report = fx.part(["Content-Type: message/delivery-status", "Content-Transfer-Encoding: base64"], fx.b64(PE))
    raw = fx.message(fx.multipart([fx.text_part(), report], "report"))
    facts = inspect_message(raw)
    assert not facts["ambiguous"]
    assert [f["dangerous"][:1] for f in facts["files"]] == [["executable"]]


def test_a_missing_closing_boundary_in_a_real_bounce_is_read_to_the_end():
    raw = _read(DATA / "bounces" / "dsn_03.txt")
    assert not raw.rstrip().endswith(b"--")
    assert not inspect_message(raw)["ambiguous"]


@pytest.mark.parametrize("path", ["qp_with_space.eml", "7-bit.eml"])
def test_real_messages_with_a_loosely_spelled_encoding_are_not_ambiguous(path):
    facts = inspect_message(_read(DATA / "mime" / path))
    assert not facts["ambiguous"] and facts["count"] == 0  # two text bodies, no file


@pytest.mark.parametrize("cte", ["Quoted-Printable ", "QUOTED-PRINTABLE", "quoted printable", "Quoted_Printable"])
def test_quoted_printable_spelled_loosely_is_decoded_before_it_is_judged(cte):
    # Before, "Quoted-Printable " was left encoded: an executable's bytes read as harmless text.
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", f"Content-Transfer-Encoding: {cte}",
                           'Content-Disposition: attachment; filename="hoadon.pdf"'], _qp(PE)))
    facts = inspect_message(raw)
    assert not facts["ambiguous"]
    (f,) = facts["files"]
    assert f["size"] == len(PE) and f["executable"] and "executable" in f["dangerous"]


@pytest.mark.parametrize("cte, body, kind", [
    ("base-64", fx.b64(fx.pdf_plain()), "pdf"),
    ("Base_64", fx.b64(fx.pdf_plain()), "pdf"),
    ("7-bit", b"Kinh gui cac don vi.\r\n", "text"),
    ("8 bit", "Kính gửi các đơn vị.\r\n".encode(), "text"),
])
def test_other_loose_spellings_are_the_encoding_they_name(cte, body, kind):
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", f"Content-Transfer-Encoding: {cte}",
                           'Content-Disposition: attachment; filename="bao-cao.dat"'], body))
    facts = inspect_message(raw)
    assert not facts["ambiguous"] and facts["files"][0]["kind"] == kind


def test_base64_spelled_loosely_is_decoded_so_an_executable_in_it_is_found():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base-64",
                           'Content-Disposition: attachment; filename="hoadon.pdf"'], fx.b64(PE)))
    (f,) = inspect_message(raw)["files"]
    assert f["executable"] and f["size"] == len(PE)


def test_base64_without_its_padding_is_decoded():
    text = fx.b64(fx.pdf_plain()).rstrip(b"=\r\n")
    assert len(text.replace(b"\r\n", b"")) % 4 in (2, 3)
    raw = fx.mail(fx.attachment(fx.pdf_plain(), filename="a.pdf").replace(fx.b64(fx.pdf_plain()), text + b"\r\n"))
    facts = inspect_message(raw)
    assert not facts["ambiguous"] and facts["files"][0]["kind"] == "pdf"


# --- still too ambiguous, and named ----------------------------------------------------------


def test_an_unknown_encoding_stays_ambiguous_and_names_its_part():
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: x-gzip64",
                           'Content-Disposition: attachment; filename="hoso.bin"'], b"H4sIAAAAAAAA\r\n"))
    facts = inspect_message(raw)
    assert facts["ambiguous_parts"] == [{"location": "2", "name": "hoso.bin", "cause": "unknown_encoding"}]


def test_mime_headers_after_a_line_that_ends_a_parts_headers_stay_ambiguous():
    # A lenient reader skipping the stray line would take the next lines for the part's headers.
    inner = (b"X-Note: forwarded\r\nthis line is not a header\r\nContent-Type: application/x-msdownload\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + fx.b64(PE))
    raw = fx.mail(fx.rfc822(inner))
    facts = inspect_message(raw)
    assert facts["ambiguous_parts"] == [{"location": "2.1", "name": None, "cause": "headers"}]


def test_a_limit_is_named_as_the_whole_messages():
    from mailgw.config.settings import AttachmentLimits

    raw = fx.mail(*[fx.attachment(fx.pdf_plain(), filename=f"{i}.pdf") for i in range(5)])
    facts = inspect_message(raw, AttachmentLimits(max_parts=3))
    assert facts["ambiguous_parts"] == [{"location": "", "name": None, "cause": "limit"}]


# --- the reply, through the real gateway ------------------------------------------------------


async def _refused(gateway, raw: bytes, mail_from: str = "vanthu.sotttt@binhthuan.gov.vn") -> str:
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, mail_from, [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.7.1")
    return err.value.message


async def test_broken_base64_is_refused_naming_the_parts_and_why(gateway, sink):
    raw = _read(DATA / "bounces" / "groupwise_03.txt")
    text = await _refused(gateway, raw)
    english = text.split(" / ", 1)[1]
    assert "part 1.2 (Hotel Raquel (19).jpg): broken base64 that cannot be decoded" in english
    assert "part 2 (pratt nc 34050.RTF): broken base64 that cannot be decoded" in english
    # Vietnamese first, folded to ASCII for a client without SMTPUTF8
    assert "phan 2 (pratt nc 34050.RTF): du lieu base64 hong, khong giai ma duoc" in text.split(" / ", 1)[0]
    assert text.isascii() and re.search(r"\[[A-Za-z0-9]+\]$", text)
    assert not sink.messages


@pytest.mark.parametrize("name", ["dsn_13.txt", "dsn_14.txt", "postfix_01.txt", "dsn_03.txt"])
async def test_a_real_delivery_report_is_accepted_from_the_null_sender(gateway, sink, name):
    # Refused as "too ambiguous to inspect" before, with an empty list and no reason.
    raw = _read(DATA / "bounces" / name)
    raw = raw[raw.index(b"\r\n") + 2:] if raw.startswith(b"From ") else raw  # the mbox separator line
    d = await Dialog.open(port(gateway, "mx"))
    await d.envelope("", [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    code, text = await d.reply()
    assert code == 250, text
    await d.cmd("QUIT")
    await d.close()
    await sink.wait_for(lambda: sink.to(LOCAL))
    assert sink.to(LOCAL)[0].mail_from == ""


async def test_a_long_list_of_problems_is_cut_and_each_reply_line_fits(gateway, sink):
    broken = [fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                       f'Content-Disposition: attachment; filename="{"tai-lieu-" * 8}{i}.pdf"'], b"[Removed part]\r\n")
              for i in range(12)]
    text = await _refused(gateway, fx.mail(*broken))
    assert "and 9 more" in text and "va 9 van de khac" in text
    lines = reply_lines(str(SmtpReply(550, "7.1", text)), utf8=False)
    assert all(len(line.encode()) + 2 <= 512 for line in lines)


async def test_a_dangerous_file_is_still_named_as_before(gateway, sink):
    text = await _refused(gateway, fx.mail(fx.attachment(PE, filename="hoadon.exe")))
    assert text.count("hoadon.exe") == 2  # once in each language
