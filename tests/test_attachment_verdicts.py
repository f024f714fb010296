"""Every attachment evasion of PERF-RELIABILITY-SECURITY C7 gets its verdict from the shipped pack.

Each case is a whole message built from real bytes (tests/attachment_fixtures.py)
and runs through the decision path of `mailgw policy test` (classification,
attachment facts, DKIM, every rule); a few also go over SMTP. A disguised
executable is refused however it is hidden; the clean equivalent passes.
"""

from __future__ import annotations

import email.header
import unicodedata
from typing import Any

import aiosmtplib
import pytest

from mailgw import trace
from mailgw.app import load_context
from tests import attachment_fixtures as fx
from tests.conftest import REPO, send

PE = fx.pe_exe()
SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RCPT = "vanthu.snv@binhthuan.gov.vn"
REJECT, ACCEPT = "reject", "accept"


def _encoded(text: str) -> str:
    return email.header.Header(text, "utf-8").encode()


def _cases() -> list[tuple[str, bytes, str]]:
    rtl = "baocao\u202efdp.exe"
    return [
        # names
        ("double extension", fx.mail(fx.attachment(PE, filename="baocao.pdf.exe")), REJECT),
        ("double extension with spaces", fx.mail(fx.attachment(PE, filename="baocao.pdf      .exe")), REJECT),
        ("right-to-left override", fx.mail(fx.attachment(PE, filename=rtl)), REJECT),
        ("name only in Content-Type", fx.mail(fx.attachment(PE, name="tailieu.exe", disposition=None)), REJECT),
        ("name only in Content-Disposition", fx.mail(fx.attachment(PE, filename="tailieu.exe")), REJECT),
        ("disagreeing names", fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf", name="tailieu.exe",
                                                    filename="tailieu.pdf")), REJECT),
        ("RFC 2231 continuations", fx.mail(fx.part(
            ["Content-Type: application/pdf", "Content-Transfer-Encoding: base64", "Content-Disposition: attachment;",
             " filename*0*=utf-8''B%C3%A1o%20c%C3%A1o;", " filename*1=.pdf.exe"], fx.b64(PE))), REJECT),
        ("RFC 2047 name", fx.mail(fx.attachment(PE, name=_encoded("Tờ trình.pdf.exe"), filename=_encoded("Tờ trình.pdf.exe"))), REJECT),
        ("encoded whole Content-Disposition", fx.mail(fx.part(
            ["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
             "Content-Disposition: " + _encoded('attachment; filename="hoadon.exe"')], fx.b64(PE))), REJECT),
        ("executable declared as PDF", fx.mail(fx.attachment(PE, ctype="application/pdf", filename="baocao.pdf")), REJECT),
        ("script by name", fx.mail(fx.attachment(b"WScript.Echo 1\r\n", filename="thongbao.vbs")), REJECT),
        ("shortcut", fx.mail(fx.attachment(fx.lnk_shortcut(), filename="tailieu.lnk")), REJECT),
        # structure
        ("hidden in multipart/alternative", fx.message(fx.multipart(
            [fx.text_part(), fx.text_part("<p>x</p>", "html"), fx.attachment(PE, disposition="inline")], "alternative")), REJECT),
        ("inside a forwarded message", fx.mail(fx.rfc822(fx.message(fx.multipart(
            [fx.text_part(), fx.attachment(PE, filename="chuyen tiep.exe")], boundary="in")))), REJECT),
        ("unterminated multipart", fx.message(fx.multipart([fx.text_part(), fx.attachment(fx.pdf_plain(), filename="a.pdf")],
                                                           close=False)), ACCEPT),  # read to the end, as every reader does
        ("unterminated multipart, executable last", fx.message(fx.multipart(
            [fx.text_part(), fx.attachment(PE, filename="a.exe")], close=False)), REJECT),
        ("missing boundary", fx.message(fx.part("Content-Type: multipart/mixed",
                                                b"--b1\r\n" + fx.attachment(PE, filename="a.exe") + b"\r\n--b1--\r\n")), REJECT),
        # archives
        ("executable in a zip", fx.mail(fx.attachment(fx.zip_bytes([("hoso/baocao.exe", PE)]), filename="hoso.zip")), REJECT),
        ("executable three zips deep", fx.mail(fx.attachment(fx.nested_zip(3, ("a.exe", PE)), filename="hoso.zip")), REJECT),
        ("password-protected zip", fx.mail(fx.attachment(fx.zipcrypto_zip([("a.pdf", fx.pdf_plain())]), filename="matkhau.zip")), REJECT),
        ("AES zip", fx.mail(fx.attachment(fx.aes_zip([("a.pdf", fx.pdf_plain())]), filename="matkhau.zip")), REJECT),
        ("password-protected 7z", fx.mail(fx.attachment(fx.sevenzip([("a.pdf", fx.pdf_plain())], password="123"),
                                                        filename="hoso.7z")), REJECT),
        ("zip bomb", fx.mail(fx.attachment(fx.zip_bomb(), filename="baocao.zip")), REJECT),
        ("overlapping-entry zip bomb", fx.mail(fx.attachment(fx.overlapping_zip(), filename="baocao.zip")), REJECT),
        # macros
        ("docm with a VBA project", fx.mail(fx.attachment(fx.ooxml_word(macro_enabled=True, vba=fx.vba_project_bin()),
                                                          filename="kehoach.docm")), REJECT),
        ("docx carrying a VBA project", fx.mail(fx.attachment(fx.ooxml_word(macro_enabled=False, vba=fx.vba_project_bin()),
                                                              filename="kehoach.docx")), REJECT),
        # the clean equivalents
        ("a plain PDF", fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf", filename="baocao.pdf")), ACCEPT),
        ("a plain docx", fx.mail(fx.attachment(fx.python_docx(), filename="baocao.docx")), ACCEPT),
        ("an NFD name", fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf",
                                              filename=unicodedata.normalize("NFD", "Báo cáo tổng hợp.pdf"))), ACCEPT),
        ("PDFs in a zip", fx.mail(fx.attachment(fx.zip_bytes([("a.pdf", fx.pdf_plain()), ("b.pdf", fx.pdf_plain())]),
                                                filename="hoso.zip")), ACCEPT),
        ("a dotted but harmless name", fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf",
                                                             filename="v1.2 bao cao.pdf")), ACCEPT),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def ctx() -> Any:
    context, _ = load_context(str(REPO / "gateway.yaml"))
    return context


@pytest.mark.parametrize("name, raw, verdict", CASES, ids=[c[0] for c in CASES])
def test_verdict_through_policy_test(name, raw, verdict, ctx):
    t = trace.run(ctx, raw, listener="relay")
    assert t["decision"] == verdict, (name, t["attachments"])
    if verdict == REJECT:
        assert t["rule"] == "dangerous-attachment" and t["reply"].startswith("550 5.7.1 ")
    else:
        assert "dangerous-attachment" not in t["matched"]


@pytest.mark.parametrize("name", ["right-to-left override", "password-protected zip", "zip bomb", "a plain docx"])
async def test_verdict_over_smtp(name, gateway, sink):
    raw, verdict = next((r, v) for n, r, v in CASES if n == name)
    if verdict == ACCEPT:
        await send(gateway, "relay", raw, SENDER, [RCPT])
        await sink.wait_for(lambda: sink.to(RCPT))
        return
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, SENDER, [RCPT])
    assert err.value.code == 550 and err.value.message.startswith("5.7.1 ")
    assert "\u202e" not in err.value.message  # a name is never echoed with its bidirectional override
    assert sink.messages == []


def test_verdicts_through_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    names = ["double extension", "AES zip", "a plain PDF"]
    files = []
    for i, name in enumerate(names):
        path = tmp_path / f"{i}.eml"
        path.write_bytes(next(r for n, r, _ in CASES if n == name))
        files.append(str(path))
    run = subprocess.run([sys.executable, "-m", "mailgw", "policy", "test", "--config", str(REPO / "gateway.yaml"),
                          "--json", *files], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(g["decision"], g["rule"]) for g in got] == [
        ("reject", "dangerous-attachment"), ("reject", "dangerous-attachment"), ("accept", "default")]
    assert "baocao.pdf.exe" in got[0]["reply"] and got[1]["attachments"]["files"][0]["dangerous"] == ["encrypted_archive"]
