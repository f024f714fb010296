"""Attachments that hide what they carry: encrypted Office files, formula files, embedded objects, PDFs
that are encrypted or damaged.

Each case is a real file saved by Office (oletools' corpus, tests/data/attachments/oletools) or made
from one with the tool that owns the step (tests/office_fixtures.py), inspected by
mailgw.attachments, then judged by the shipped policy pack through the decision path of
``mailgw policy test``, and a few sent through the gateway over SMTP.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import aiosmtplib
import msgspec
import pytest

from mailgw import trace
from mailgw.app import load_context
from mailgw.attachments import inspect_message
from mailgw.audit import record as audit_record
from mailgw.config.settings import AttachmentLimits
from mailgw.message.facts import AttachmentFacts
from tests import attachment_fixtures as fx
from tests import office_fixtures as ox
from tests.conftest import REPO, send

SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RCPT = "vanthu.snv@binhthuan.gov.vn"


def files(data: bytes, filename: str, ctype: str = "application/octet-stream",
          limits: AttachmentLimits | None = None) -> list[dict[str, Any]]:
    facts = inspect_message(fx.mail(fx.attachment(data, ctype=ctype, filename=filename)), limits)
    assert not facts["ambiguous"], facts["ambiguous_reason"]
    msgspec.convert(facts, AttachmentFacts)  # what the exchange record does with them
    return facts["files"]


def first(data: bytes, filename: str, ctype: str = "application/octet-stream") -> dict[str, Any]:
    return files(data, filename, ctype)[0]


# --- Encrypted Office files -------------------------------------------------------

XLSB = "application/vnd.ms-excel.sheet.binary.macroEnabled.12"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.parametrize("make, filename, true_type, dangerous", [
    # Excel's own files, encrypted by Excel with its silent password
    (lambda: ox.real("autostart-encrypt-standardpassword.xlsb"), "bangke.xlsb", XLSB, ["macro"]),
    (lambda: ox.real("autostart-encrypt-standardpassword.xls"), "bangke.xls", "application/vnd.ms-excel", ["macro"]),
    (lambda: ox.real("dde-test-encrypt-standardpassword.xlsx"), "bangke.xlsx", XLSX, ["dde"]),
    # real files encrypted here with the same password by msoffcrypto-tool
    (lambda: ox.encrypt(ox.real("excel4_sample_macro.xlsb"), ox.VELVET), "bangke.xlsb", XLSB, ["macro"]),
    (lambda: ox.encrypt(ox.xlsx_with_vba(), ox.VELVET), "bangke.xlsx", XLSX, ["macro"]),
    (lambda: ox.encrypt(ox.docx_with_vba(), ox.VELVET), "baocao.docx", DOCX, ["macro"]),
    (lambda: ox.encrypt(fx.python_docx(), ox.VELVET), "baocao.docx", DOCX, []),
], ids=["excel-xlsb-vba", "excel-xls-vba", "excel-xlsx-dde", "xlsb-excel4", "xlsx-vba", "docx-vba", "docx-clean"])
def test_a_file_encrypted_with_the_default_password_is_inspected_as_itself(make, filename, true_type, dangerous):
    f = first(make(), filename)
    assert (f["decrypted"], f["encrypted"], f["encryption"], f["encrypted_reason"]) == (True, False, "password", None)
    assert f["true_type"] == true_type and not f["type_mismatch"]
    assert f["dangerous"] == dangerous
    assert f["kind"] == ("office_macro" if "macro" in dangerous else "office")


@pytest.mark.parametrize("make, filename", [
    (lambda: ox.real("encrypted.docx"), "baocao.docx"),
    (lambda: ox.encrypt(fx.python_docx(), ox.OTHER_PASSWORD), "baocao.docx"),
    (lambda: ox.encrypt(ox.real("embedded-simple-2007.xlsx"), ox.OTHER_PASSWORD), "bangke.xlsx"),
    (lambda: ox.real("encrypted.doc"), "baocao.doc"),
    (lambda: ox.real("encrypted.xls"), "bangke.xls"),
    (lambda: ox.real("encrypted.ppt"), "trinhchieu.ppt"),
    (ox.odt_encrypted, "baocao.odt"),
], ids=["word-docx", "docx", "xlsx", "word-doc", "excel-xls", "powerpoint-ppt", "odt"])
def test_a_file_encrypted_with_another_password_stays_encrypted_with_a_reason(make, filename):
    f = first(make(), filename)
    assert (f["encrypted"], f["decrypted"], f["encryption"]) == (True, False, "password")
    assert f["encrypted_reason"] == "encrypted with a password mailgw does not know"
    assert f["kind"] == "office" and f["archive"] is None  # nothing inside was listed: it is closed


def test_a_key_derivation_past_the_limit_is_not_tried():
    f = first(ox.spin_count(ox.real("encrypted.docx"), 9_999_999), "baocao.docx")
    assert f["encrypted"] and f["encryption"] == "password"
    assert f["encrypted_reason"] == "encrypted with 9999999 key-derivation rounds, over the 1000000 mailgw tries"


def test_an_oversized_encryption_header_is_not_parsed():
    header = b"\x04\x00\x04\x00\x40\x00\x00\x00<?xml version=\"1.0\"?><encryption>" + b" " * 70000 + b"</encryption>"
    ole = fx.cfb({"EncryptionInfo": header, "EncryptedPackage": b"\x00" * 4096})
    f = first(ole, "baocao.docx")
    assert (f["encrypted"], f["encryption"]) == (True, "other")
    assert f["encrypted_reason"].startswith("an encryption header of ")


def test_a_default_password_file_inside_a_zip_is_opened_too():
    zipped = fx.zip_bytes([("hoso/bangke.xlsb", ox.real("autostart-encrypt-standardpassword.xlsb"))])
    member = files(zipped, "hoso.zip")[1]
    assert member["location"] == "2!hoso/bangke.xlsb" and member["decrypted"] and member["dangerous"] == ["macro"]


# --- Formula text formats -----------------------------------------------------------


@pytest.mark.parametrize("make, filename, true_type, kind, dangerous", [
    (lambda: ox.real("excel4_sample_macro.slk"), "bangke.slk", "application/x-sylk", "office_macro", ["macro"]),
    (ox.sylk_exec, "bangke.slk", "application/x-sylk", "office_macro", ["macro"]),
    (ox.sylk_dde, "bangke.slk", "application/x-sylk", "office", ["dde"]),
    (ox.sylk_clean, "bangke.slk", "application/x-sylk", "office", []),
    (lambda: ox.dif("=cmd|' /C calc'!A0"), "bangke.dif", "application/x-dif", "office", ["dde"]),
    (lambda: ox.dif("Bao cao thang 11"), "bangke.dif", "application/x-dif", "office", []),
    (ox.iqy, "truyvan.iqy", "text/x-ms-iqy", "script", ["script"]),
    (lambda: ox.real("dde-in-csv.csv"), "bangke.csv", "text/plain", "text", ["dde"]),
    (lambda: b"STT,Noi dung,Ghi chu\r\n1,\"=SUM(A1:A3)\",xem muc|'2'!A1\r\n", "bangke.csv", "text/plain", "text", []),
], ids=["excel-sylk-macro-sheet", "sylk-exec", "sylk-dde", "sylk-clean", "dif-dde", "dif-clean", "web-query",
        "excel-csv-dde", "csv-pipe-not-a-formula"])
def test_text_formats_excel_opens_are_told_by_content(make, filename, true_type, kind, dangerous):
    f = first(make(), filename)
    assert (f["true_type"], f["kind"], f["dangerous"]) == (true_type, kind, dangerous)
    assert f["macro"] == ("macro" in dangerous) and f["dde"] == ("dde" in dangerous)


def test_a_sylk_file_named_csv_is_still_sylk():
    f = first(ox.sylk_exec(), "bangke.csv", "text/csv")
    assert f["true_type"] == "application/x-sylk" and f["type_mismatch"] and f["dangerous"] == ["macro"]


# --- DDE fields and links -----------------------------------------------------------


@pytest.mark.parametrize("name, dde", [
    ("dde-test.docx", True), ("dde-test-from-office2016.doc", True), ("dde-test.xlsx", True), ("dde-test.xlsb", True),
    ("harmless-clean.docx", False), ("harmless-clean.doc", False), ("embedded-simple-2007.xlsx", False),
])
def test_dde_fields_and_links_in_office_files(name, dde):
    f = first(ox.real(name), name)
    assert f["dde"] is dde and ("dde" in f["dangerous"]) is dde


def test_a_dde_field_split_over_runs_and_in_a_simple_field():
    doc = fx.python_docx("Kính gửi")
    with zipfile.ZipFile(io.BytesIO(doc)) as z:
        xml = z.read("word/document.xml")
    split = (b'<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> DD</w:instrText></w:r>'
             b'<w:r><w:instrText>EAUTO c:\\\\windows\\\\system32\\\\cmd.exe "/k calc"</w:instrText></w:r>'
             b'<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>1</w:t></w:r>'
             b'<w:r><w:fldChar w:fldCharType="end"/></w:r>')
    simple = b'<w:fldSimple w:instr=" DDE cmd &quot;/c calc&quot; x"><w:r><w:t>1</w:t></w:r></w:fldSimple>'
    padded = (b'<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>' + b"&#32;" * 5000
              + b'&#x44;DEAUTO cmd "/c calc"</w:instrText></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r>')
    page = b'<w:fldSimple w:instr=" PAGE "><w:r><w:t>1</w:t></w:r></w:fldSimple>'
    for inserted, dde in ((split, True), (simple, True), (padded, True), (page, False)):
        changed = xml.replace(b"</w:p>", b"<w:r/>" + inserted + b"</w:p>", 1)
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(doc)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info, changed if info.filename == "word/document.xml" else src.read(info))
        assert first(out.getvalue(), "giaymoi.docx")["dde"] is dde


def _with_document_xml(doc: bytes, change: Any) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(doc)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, change(data) if info.filename == "word/document.xml" else data)
    return out.getvalue()


@pytest.mark.parametrize("padding", [3 * 1024 * 1024, (1 << 20) - (1 << 14) - 40],
                         ids=["after-megabytes-of-text", "across-a-slice-boundary"])
def test_a_dde_field_deep_in_a_large_document(padding):
    field = (b'<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve">'
             + b" " * 20000 + b'DDEAUTO c:\\windows\\system32\\cmd.exe "/k calc"</w:instrText></w:r>'
             b'<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>')
    filler = b"<w:p><w:r><w:t>" + b"x" * (padding // 2) + b"</w:t></w:r></w:p>" * 2

    def change(xml: bytes) -> bytes:
        return xml.replace(b"<w:body>", b"<w:body>" + filler[:padding] + field, 1)

    assert first(_with_document_xml(fx.python_docx(), change), "giaymoi.docx")["dde"] is True


def test_an_office_part_too_large_to_inspect_makes_the_message_ambiguous():
    huge_ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * (33 * 1024 * 1024)
    doc = ox.with_part(fx.python_docx(), "word/vbaProject.bin", huge_ole)
    facts = inspect_message(fx.mail(fx.attachment(doc, filename="baocao.docx")))
    assert facts["ambiguous"] and "word/vbaProject.bin" in facts["ambiguous_reason"]


# --- Embedded objects ---------------------------------------------------------------


@pytest.mark.parametrize("make, filename, inner, inner_type, dangerous", [
    (lambda: ox.real("sample_with_calc_embedded.doc"), "baocao.doc", "calc.exe",
     "application/vnd.microsoft.portable-executable", ["executable"]),
    (lambda: ox.real("sample_with_lnk_file.doc"), "baocao.doc", "calc.lnk", "application/x-ms-shortcut", ["executable"]),
    (lambda: ox.docx_with_embedded("tailieu.exe", fx.pe_exe()), "baocao.docx", "tailieu.exe",
     "application/vnd.microsoft.portable-executable", ["executable"]),
    (lambda: ox.docx_with_embedded("mo.vbs", b'CreateObject("WScript.Shell").Run "calc"\r\n'), "baocao.docx", "mo.vbs",
     "text/plain", ["script"]),
    (lambda: ox.real("embedded-simple-2007.doc"), "baocao.doc", "simple-text-file.txt", "text/plain", []),
    (lambda: ox.real("embedded-simple-2007.docx"), "baocao.docx", "simple-text-file.txt", "text/plain", []),
], ids=["word-doc-calc-exe", "word-doc-lnk", "docx-exe", "docx-vbs", "word-doc-text", "word-docx-text"])
def test_files_embedded_in_a_document_are_inspected_like_archive_members(make, filename, inner, inner_type, dangerous):
    doc, member = files(make(), filename)
    assert doc["dangerous"] == [] and doc["archive"]["members"] == 1 and not doc["archive"]["over_limits"]
    assert member["name"] == inner and member["location"] == f"2!{inner}"
    assert member["in_archive"] and member["depth"] == 1
    assert member["true_type"] == inner_type and member["dangerous"] == dangerous


def test_embedded_files_count_against_the_message_limits():
    doc = files(ox.real("sample_with_calc_embedded.doc"), "baocao.doc",
                limits=AttachmentLimits(max_archive_members=0))[0]
    assert doc["archive"]["over_limits"] and doc["dangerous"] == ["archive_limits"]


# --- PDF encryption and damage -------------------------------------------------------


@pytest.mark.parametrize("make, encrypted, encryption, decrypted, reason", [
    (lambda: fx.pdf_encrypted("matkhau"), True, "password", False, "a password is needed to open it"),
    (lambda: fx.pdf_encrypted(""), False, "password", True, None),
    (fx.pdf_public_key, True, "certificate", False,
     "encrypted for the holders of given certificates (public-key security)"),
    (fx.pdf_other_handler, True, "other", False,
     "encrypted by the security handler /FOPN_foweb, which mailgw cannot open"),
    (fx.pdf_plain, False, None, False, None),
], ids=["password", "empty-user-password", "certificate", "third-party-handler", "plain"])
def test_every_kind_of_pdf_encryption_is_a_fact(make, encrypted, encryption, decrypted, reason):
    f = first(make(), "baocao.pdf", "application/pdf")
    assert (f["encrypted"], f["encryption"], f["decrypted"], f["encrypted_reason"]) == (
        encrypted, encryption, decrypted, reason)
    assert f["damaged"] is None and f["dangerous"] == []


@pytest.mark.parametrize("make, damaged", [
    (fx.pdf_truncated, "cut short: no end-of-file marker (PdfStreamError: Stream has ended unexpectedly)"),
    (fx.pdf_without_xref, "cannot be parsed (PdfReadError: startxref not found)"),
    (lambda: b"%PDF-1.7\n" + bytes(range(256)) * 8, "cut short: no end-of-file marker "
                                                    "(PdfStreamError: Stream has ended unexpectedly)"),
    # a wrong startxref pointer that pypdf recovers from by scanning the objects: readable, not damaged
    (lambda: fx.pdf_plain()[:fx.pdf_plain().rfind(b"startxref")] + b"startxref\n999999\n%%EOF\n", None),
], ids=["truncated", "no-cross-reference", "garbage-after-header", "recoverable-xref"])
def test_a_pdf_that_cannot_be_read_is_damaged(make, damaged):
    f = first(make(), "baocao.pdf", "application/pdf")
    assert f["damaged"] == damaged and not f["encrypted"]


# --- Verdicts of the shipped policy pack ---------------------------------------------

REJECT, ACCEPT = "reject", "accept"


def _verdicts() -> list[tuple[str, bytes, str, str, str]]:
    """(case, message, decision, rule, file name the reply names)"""
    def one(data: bytes, filename: str) -> bytes:
        return fx.mail(fx.attachment(data, filename=filename))

    return [
        ("excel default password hiding a macro", one(ox.real("autostart-encrypt-standardpassword.xlsb"), "bangke.xlsb"),
         REJECT, "dangerous-attachment", "bangke.xlsb"),
        ("default password docx hiding a macro", one(ox.encrypt(ox.docx_with_vba(), ox.VELVET), "baocao.docx"),
         REJECT, "dangerous-attachment", "baocao.docx"),
        ("word file with an unknown password", one(ox.real("encrypted.docx"), "hopdong.docx"),
         REJECT, "encrypted-office", "hopdong.docx"),
        ("docx with another password", one(ox.encrypt(fx.python_docx(), ox.OTHER_PASSWORD), "hopdong.docx"),
         REJECT, "encrypted-office", "hopdong.docx"),
        ("word 97 file with a password", one(ox.real("encrypted.doc"), "hopdong.doc"),
         REJECT, "encrypted-office", "hopdong.doc"),
        ("odt with a password", one(ox.odt_encrypted(), "hopdong.odt"), REJECT, "encrypted-office", "hopdong.odt"),
        ("encrypted docx inside a zip", one(fx.zip_bytes([("hopdong.docx", ox.real("encrypted.docx"))]), "hoso.zip"),
         REJECT, "encrypted-office", "hopdong.docx"),
        ("excel 4 macro sheet in sylk", one(ox.real("excel4_sample_macro.slk"), "bangke.slk"),
         REJECT, "dangerous-attachment", "bangke.slk"),
        ("sylk exec", one(ox.sylk_exec(), "bangke.slk"), REJECT, "dangerous-attachment", "bangke.slk"),
        ("calc.exe embedded in a word file", one(ox.real("sample_with_calc_embedded.doc"), "baocao.doc"),
         REJECT, "dangerous-attachment", "calc.exe"),
        ("shortcut embedded in a word file", one(ox.real("sample_with_lnk_file.doc"), "baocao.doc"),
         REJECT, "dangerous-attachment", "calc.lnk"),
        ("dde field in a docx", one(ox.real("dde-test.docx"), "giaymoi.docx"), REJECT, "dangerous-attachment",
         "giaymoi.docx"),
        ("dde field in a word 97 file", one(ox.real("dde-test-from-office2016.doc"), "giaymoi.doc"),
         REJECT, "dangerous-attachment", "giaymoi.doc"),
        ("dde link in a workbook", one(ox.real("dde-test.xlsx"), "bangke.xlsx"), REJECT, "dangerous-attachment",
         "bangke.xlsx"),
        ("dde formula in a csv", one(ox.real("dde-in-csv.csv"), "bangke.csv"), REJECT, "dangerous-attachment",
         "bangke.csv"),
        ("truncated pdf", one(fx.pdf_truncated(), "congvan.pdf"), REJECT, "damaged-attachment", "congvan.pdf"),
        ("pdf without cross-reference", one(fx.pdf_without_xref(), "congvan.pdf"), REJECT, "damaged-attachment",
         "congvan.pdf"),
        # the clean equivalents
        ("default password docx, clean", one(ox.encrypt(fx.python_docx(), ox.VELVET), "baocao.docx"),
         ACCEPT, "default", ""),
        ("clean word file", one(ox.real("harmless-clean.docx"), "baocao.docx"), ACCEPT, "default", ""),
        ("text file embedded in a word file", one(ox.real("embedded-simple-2007.doc"), "baocao.doc"),
         ACCEPT, "default", ""),
        ("writer file with an embedded text file", one(ox.real("embedded-simple-2007.odt"), "baocao.odt"),
         ACCEPT, "default", ""),
        ("clean sylk", one(ox.sylk_clean(), "bangke.slk"), ACCEPT, "default", ""),
        ("pdf with an empty user password", one(fx.pdf_encrypted(""), "congvan.pdf"), ACCEPT, "default", ""),
        # an encrypted PDF is a fact, not a reason, in the shipped pack (a site may refuse it: see below)
        ("pdf for a certificate", one(fx.pdf_public_key(), "congvan.pdf"), ACCEPT, "default", ""),
    ]


VERDICTS = _verdicts()


@pytest.fixture(scope="module")
def ctx() -> Any:
    context, _ = load_context(str(REPO / "gateway.yaml"))
    return context


@pytest.mark.parametrize("case, raw, decision, rule, named", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_verdict_of_the_shipped_pack(case, raw, decision, rule, named, ctx):
    t = trace.run(ctx, raw, listener="relay")
    assert (t["decision"], t["rule"]) == (decision, rule), t["attachments"]
    if decision == REJECT:
        assert t["reply"].startswith("550 5.7.1 Thư bị chặn vì ") and named in t["reply"]
        assert " / Message blocked: " in t["reply"]  # Vietnamese, then English


def test_the_replies_say_why_in_both_languages(ctx):
    replies = {v[0]: trace.run(ctx, v[1], listener="relay")["reply"] for v in VERDICTS
               if v[0] in ("word file with an unknown password", "truncated pdf")}
    assert replies["word file with an unknown password"].startswith(
        "550 5.7.1 Thư bị chặn vì tệp Office có mật khẩu nên không kiểm tra được: hopdong.docx; hãy gửi bản không đặt "
        "mật khẩu / Message blocked: a password-protected Office file cannot be inspected: hopdong.docx; send it "
        "without the password")
    assert replies["truncated pdf"].startswith(
        "550 5.7.1 Thư bị chặn vì tệp đính kèm bị hỏng, không đọc được để kiểm tra: congvan.pdf; hãy kiểm tra tệp mở "
        "được rồi gửi lại / Message blocked: an attachment is damaged and cannot be read to be inspected: "
        "congvan.pdf; check that it opens and send it again")


def test_the_trace_shows_encryption_and_damage(ctx):
    raw = fx.mail(fx.attachment(fx.pdf_public_key(), filename="congvan.pdf"),
                  fx.attachment(fx.pdf_truncated(), filename="phuluc.pdf"),
                  fx.attachment(ox.real("autostart-encrypt-standardpassword.xlsb"), filename="bangke.xlsb"))
    text = trace.render(trace.run(ctx, raw, listener="relay"))
    assert ("Tệp / File: congvan.pdf (application/pdf, " in text
            and "mã hóa / encrypted (certificate: encrypted for the holders of given certificates" in text)
    assert "phuluc.pdf" in text and "hỏng / damaged: cut short: no end-of-file marker" in text
    assert "bangke.xlsb" in text and "đã giải mã / decrypted (password) NGUY HIỂM / DANGEROUS: macro" in text


def test_a_site_rule_can_act_on_pdf_encryption(tmp_path):
    import shutil

    shutil.copytree(REPO / "policies", tmp_path / "policies")
    for name in ("gateway.yaml", "directory.yaml", "credentials.yaml"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, tmp_path)
    (tmp_path / "policies" / "50-local.yaml").write_text(
        "rules:\n"
        "  - id: encrypted-pdf\n"
        "    description: Đánh dấu PDF mã hóa / Tag encrypted PDFs.\n"
        "    basis: Quy chế nội bộ (thử nghiệm)\n"
        "    when:\n"
        "      any_attachment: {kind: pdf, encrypted: true, encryption: [certificate, other]}\n"
        "    then:\n"
        "      tags: [encrypted-pdf]\n", encoding="utf-8")
    context, _ = load_context(str(tmp_path / "gateway.yaml"))
    for data, tagged in ((fx.pdf_public_key(), True), (fx.pdf_encrypted("matkhau"), False), (fx.pdf_plain(), False)):
        t = trace.run(context, fx.mail(fx.attachment(data, filename="congvan.pdf")), listener="relay")
        assert ("encrypted-pdf" in t["tags"]) is tagged, t["attachments"]


# --- Over SMTP, through the real gateway ---------------------------------------------


@pytest.fixture
async def gw(recording_gateway):
    return recording_gateway


@pytest.mark.parametrize("case", [
    "excel default password hiding a macro", "word file with an unknown password", "sylk exec",
    "calc.exe embedded in a word file", "dde field in a docx", "truncated pdf",
])
async def test_refused_over_smtp_with_the_record_saying_why(case, gw, sink):
    raw, rule, named = next((r, ru, n) for c, r, _, ru, n in VERDICTS if c == case)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, "relay", raw, SENDER, [RCPT])
    assert err.value.code == 550 and err.value.message.startswith("5.7.1 Thu bi chan vi ")  # folded: no SMTPUTF8
    assert named in err.value.message and " / Message blocked: " in err.value.message
    assert sink.messages == []
    rec = audit_record.decode(gw.records[-1])
    assert rec.decision.rule == rule and err.value.message.endswith(f"[{rec.id}]")
    shown = {f.name: f for f in rec.attachments.files}
    if rule == "encrypted-office":
        f = shown[named]
        assert f.encrypted and f.encryption == "password" and f.encrypted_reason
    elif rule == "damaged-attachment":
        assert shown[named].damaged and shown[named].damaged.startswith("cut short")
    else:
        assert shown[named].dangerous


async def test_a_default_password_file_without_macros_is_delivered(gw, sink):
    raw = next(r for c, r, *_ in VERDICTS if c == "default password docx, clean")
    await send(gw, "relay", raw, SENDER, [RCPT])
    await sink.wait_for(lambda: sink.to(RCPT))
    f = audit_record.decode(gw.records[-1]).attachments.files[0]
    assert (f.decrypted, f.encrypted, f.encryption, f.dangerous) == (True, False, "password", [])


def test_records_written_before_these_facts_still_decode(ctx):
    t = trace.run(ctx, next(r for c, r, *_ in VERDICTS if c == "clean word file"), listener="relay")
    old = json.loads(json.dumps(t["attachments"]))
    for f in old["files"]:
        for key in ("encryption", "encrypted_reason", "decrypted", "damaged", "dde"):
            del f[key]
    decoded = msgspec.convert(old, AttachmentFacts)
    assert [(f.encryption, f.decrypted, f.damaged, f.dde) for f in decoded.files] == [(None, False, None, False)]
