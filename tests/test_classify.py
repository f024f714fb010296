"""Tests of the classify stage: golden .eml cases, the number grammar, secrecy and urgency marks, budgets."""

from __future__ import annotations

import email
import email.policy
import io
import json
import pathlib
import zipfile
from email.message import EmailMessage

import pytest

from mailgw.classify import docread
from mailgw.classify.engine import ClassifyLimits, classify
from mailgw.classify.explain import explain
from mailgw.classify.vn import docnumber, secrecy
from mailgw.classify.vn import text as vtext
from mailgw.classify.vn.classification import CATEGORIES, Classification

DATA = pathlib.Path(__file__).parent / "data" / "classify"
CASES = sorted(p.name[: -len(".eml")] for p in DATA.glob("*.eml"))
JSON_FIELDS = ["category", "doc_type", "doc_number", "secrecy", "secrecy_strength", "declassified",
               "urgency", "confidence", "evidence"]


def _load(stem: str) -> tuple[EmailMessage, dict]:
    raw = (DATA / f"{stem}.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    expected = json.loads((DATA / f"{stem}.expected.json").read_text(encoding="utf-8"))
    return msg, expected  # type: ignore[return-value]


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 150
    categories = set()
    for stem in CASES:
        categories.add(_load(stem)[1].get("category"))
    assert set(CATEGORIES) <= categories, set(CATEGORIES) - categories


@pytest.mark.parametrize("stem", CASES)
def test_golden(stem: str) -> None:
    msg, expected = _load(stem)
    result = classify(msg)
    got = result.to_json()
    assert list(got) == JSON_FIELDS
    for key, value in expected.items():
        if key == "evidence_includes":
            pairs = {(e["cue"], e["where"]) for e in got["evidence"]}
            for item in value:
                assert (item["cue"], item["where"]) in pairs, (item, got["evidence"])
        elif key == "evidence_excludes":
            pairs = {f"{e['cue']}@{e['where']}" for e in got["evidence"]} | {e["cue"] for e in got["evidence"]}
            for item in value:
                assert item not in pairs, (item, got["evidence"])
        else:
            assert got[key] == value, (key, got)
    assert got["category"] in CATEGORIES
    assert 0.0 <= got["confidence"] <= 1.0
    assert json.loads(json.dumps(got, ensure_ascii=False)) == got
    text = explain(result)
    assert "Category" in text and "Loại văn bản" in text


def test_json_matches_the_contract_example() -> None:
    c = Classification(category="meeting_invitation", doc_type="GM", doc_number="07/GM-STTTT", urgency="khan",
                       confidence=0.93)
    assert c.to_json() == {"category": "meeting_invitation", "doc_type": "GM", "doc_number": "07/GM-STTTT",
                           "secrecy": "none", "secrecy_strength": "none", "declassified": False,
                           "urgency": "khan", "confidence": 0.93, "evidence": []}


def test_evidence_names_where_each_cue_was_found() -> None:
    msg, _ = _load(next(s for s in CASES if s.endswith("att-symbol-beats-title")))
    evidence = classify(msg).to_json()["evidence"]
    assert {"cue": "title", "where": "subject", "text": "Kế hoạch"} in evidence
    assert {"cue": "doc_number", "where": "attachment_text", "text": "31/QĐ-UBND"} in evidence


def test_folded_evidence_lowers_confidence() -> None:
    marked = classify(_message("Giấy mời họp giao ban")).confidence
    folded = classify(_message("Giay moi hop giao ban")).confidence
    assert folded < marked


def test_explain_names_the_secrecy_stamp() -> None:
    text = explain(classify(_message("[MẬT] Báo cáo tình hình")))
    assert "Mật (mat)" in text and "strong" in text and "tiêu đề / subject" in text


# --- never raise -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"", b"\x00\xff\xfe", b"Subject: =?utf-8?b?####?=\r\n\r\n", b"Content-Type: multipart/mixed\r\n\r\n--\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--a--\r\n",
    b"Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E1=BA=\r\n",
    b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n\r\nx",
])
def test_malformed_input_gets_a_result(raw: bytes) -> None:
    for policy in (email.policy.default, email.policy.compat32):
        result = classify(email.message_from_bytes(raw, policy=policy))  # type: ignore[arg-type]
        assert result.category in CATEGORIES


def test_deeply_nested_multipart_does_not_raise() -> None:
    depth = 400
    parts = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(depth))
    raw = ("Subject: Báo cáo\r\n" + parts + "Content-Type: text/plain\r\n\r\nx\r\n").encode()
    result = classify(email.message_from_bytes(raw, policy=email.policy.default))  # type: ignore[arg-type]
    assert result.category == "report"


# --- budgets -----------------------------------------------------------------------


def _message(subject: str, body: str = "Trân trọng.", attachments: list[tuple[str, bytes, str]] = ()) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg.set_content(body)
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def _pdf_bytes(stem: str) -> bytes:
    msg, _ = _load(next(s for s in CASES if s.endswith(stem)))
    for part in msg.iter_attachments():
        return part.get_content()
    raise AssertionError("no attachment")


def test_file_over_the_byte_budget_is_skipped_and_reported() -> None:
    big = b"%PDF-1.4\n" + b"0" * (16 * 1024 * 1024)
    result = classify(_message("Gửi văn bản", attachments=[("lon.pdf", big, "application/pdf")]))
    skipped = [e for e in result.evidence if e.cue == "attachment_skipped"]
    assert skipped and "lon.pdf" in skipped[0].text and "budget" in skipped[0].text


def test_time_budget_stops_reading_and_is_reported() -> None:
    pdf = _pdf_bytes("sec-pdf-stamp")
    page = docread.first_page(pdf, "pdf", docread.ReadLimits(max_seconds=0.0))
    assert page.skipped is not None and "time budget" in page.skipped
    limits = ClassifyLimits(total_seconds=0.0)
    result = classify(_message("Gửi văn bản", attachments=[("a.pdf", pdf, "application/pdf")]), limits=limits)
    assert any(e.cue == "attachment_skipped" for e in result.evidence)


def test_pdf_first_page_only() -> None:
    page = docread.first_page(_pdf_bytes("sec-pdf-stamp"), "pdf")
    assert page.skipped is None
    assert "Số: 12/BC-CAT" in page.text and "MẬT" in page.text
    assert "Trang 2" not in page.text


def test_docx_stops_at_the_page_break() -> None:
    msg, _ = _load(next(s for s in CASES if s.endswith("sec-docx-stamp-second-page-ignored")))
    data = next(msg.iter_attachments()).get_content()
    page = docread.first_page(data, "docx")
    assert "Số: 04/BC-STTTT" in page.text and "Phụ lục" not in page.text


def test_docx_bomb_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"<w:document xmlns:w='x'>" + b" " * (30 * 1024 * 1024) + b"</w:document>")
    page = docread.first_page(out.getvalue(), "docx")
    assert page.text == "" and page.skipped and "budget" in page.skipped


def test_docx_entities_are_not_expanded() -> None:
    xml = (b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'MAT'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>]>"
           b"<w:document xmlns:w='http://schemas.openxmlformats.org/wordprocessingml/2006/main'><w:body><w:p><w:r>"
           b"<w:t>&b;</w:t></w:r></w:p></w:body></w:document>")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("word/document.xml", xml)
    page = docread.first_page(out.getvalue(), "docx")
    assert "MATMAT" not in page.text


def test_sniff_uses_bytes_not_names() -> None:
    assert docread.sniff(b"%PDF-1.7 ...") == "pdf"
    assert docread.sniff(b"MZ\x90\x00" + b"%PDF-1.7") is None  # an executable, whatever it also holds


def test_settled_subject_does_not_open_the_pdf() -> None:
    # Category fixed by the subject's number and secrecy already strong: the page cannot change the outcome.
    pdf = _pdf_bytes("sec-pdf-stamp")
    result = classify(_message("[MẬT] Quyết định số 14/QĐ-CAT", attachments=[("q.pdf", pdf, "application/pdf")]))
    assert not any(e.where == "attachment_text" for e in result.evidence)
    # Without the secrecy mark the page is read, because a stamp there would turn accept into reject.
    result = classify(_message("Quyết định số 14/QĐ-CAT", attachments=[("q.pdf", pdf, "application/pdf")]))
    assert result.secrecy == "mat" and result.secrecy_strength == "strong"


# --- the number grammar (VN-DOCUMENTS.md section 4) --------------------------------


@pytest.mark.parametrize("text,num,year,code,issuer,category", [
    ("Số: 25/CT-UBND", "25", None, "CT", "UBND", "directive"),
    ("15/CT-TTg", "15", None, "CT", "TTg", "directive"),
    ("34/2008/CT-TTg", "34", "2008", "CT", "TTg", "directive"),
    ("30/2020/NĐ-CP", "30", "2020", "NĐ", "CP", "legal_normative"),
    ("28/2018/QĐ-TTg", "28", "2018", "QĐ", "TTg", "legal_normative"),
    ("24/2020/TT-BCA", "24", "2020", "TT", "BCA", "legal_normative"),
    ("Luật số: 29/2018/QH14", "29", "2018", None, "QH14", "legal_normative"),
    ("Số: 15/QĐ-BNV", "15", None, "QĐ", "BNV", "decision"),
    ("Số: 05/BNV-VP", "05", None, None, "BNV-VP", "official_letter"),
    ("Số: 12/UBND-VX", "12", None, None, "UBND-VX", "official_letter"),
    ("7816/VPCP-TTĐT", "7816", None, None, "VPCP-TTĐT", "official_letter"),
    ("123/QĐ-BTTTT", "123", None, "QĐ", "BTTTT", "decision"),
    ("Số: 09/QyĐ-VP", "09", None, "QyĐ", "VP", "administrative_other"),
    ("So 123/QD-BTTTT", "123", None, "QĐ", "BTTTT", "decision"),
    ("Số: 5/QĐ-UBND", "5", None, "QĐ", "UBND", "decision"),
    ("25 / CT - UBND", "25", None, "CT", "UBND", "directive"),
    ("No. 25/CT-UBND", "25", None, "CT", "UBND", "directive"),
    ("11/CTr-STTTT", "11", None, "CTr", "STTTT", "programme"),
    ("14/ttr-STTTT", "14", None, "TTr", "STTTT", "submission"),
])
def test_number_grammar(text: str, num: str, year: str | None, code: str | None, issuer: str, category: str) -> None:
    doc = docnumber.parse(text)
    assert doc is not None
    assert (doc.number, doc.year, doc.type_code, doc.issuer, doc.category) == (num, year, code, issuer, category)


@pytest.mark.parametrize("text,issue", [
    ("Số: 5/QĐ-UBND", "leading zero"), ("25 / CT - UBND", "spaces"), ("No. 25/CT-UBND", "No."),
    ("So 123/QD-BTTTT", "without diacritics"), ("14/ttr-STTTT", "another case"),
])
def test_sloppy_numbers_are_parsed_and_reported(text: str, issue: str) -> None:
    doc = docnumber.parse(text)
    assert doc is not None and any(issue in i for i in doc.issues)


def test_conforming_number_has_no_issues() -> None:
    doc = docnumber.parse("Số: 05/BNV-VP")
    assert doc is not None and doc.issues == ()


@pytest.mark.parametrize("text", ["Quốc khánh 2/9", "ngày 18/07/2012", "QCVN 102:2016/BTTTT", "V/v cử cán bộ",
                                  "12/SKHĐT", "tỷ lệ 60/100", "05-CT/TW"])
def test_not_a_number(text: str) -> None:
    assert docnumber.parse(text) is None


def test_symbol_stops_before_words() -> None:
    doc = docnumber.parse("07/GM-STTTT - Giay moi hop")
    assert doc is not None and doc.text == "07/GM-STTTT"


@pytest.mark.parametrize("name,expected", [
    ("1896_QD-TTg_m_294779.doc", "1896/QĐ-TTg"), ("30_2020_ND-CP.pdf", "30/2020/NĐ-CP"),
    ("112_KH-STTTT.pdf", "112/KH-STTTT"), ("03_CD-UBND.pdf", "03/CĐ-UBND"), ("GM_07.pdf", None),
    ("456_STTTT-VP.pdf", None), ("12_ab-cd.pdf", None),
])
def test_file_names(name: str, expected: str | None) -> None:
    doc = docnumber.find_in_filename(name)
    assert (doc.text if doc else None) == expected


def test_file_name_with_configured_issuer() -> None:
    doc = docnumber.find_in_filename("456_STTTT-VP.pdf", known_issuers=frozenset({"STTTT"}))
    assert doc is not None and doc.text == "456/STTTT-VP" and doc.category == "official_letter"


@pytest.mark.parametrize("text,code", [
    ("Hop dong so 01/HD-UBND", "HĐ"), ("Huong dan so 01/HD-UBND", "HD"), ("01/HĐ-UBND", "HĐ"),
    ("De an so 02/DA-UBND", "ĐA"), ("Du an so 02/DA-UBND", "DA"), ("02/ĐA-UBND", "ĐA"),
])
def test_folded_collisions_settled_by_the_title(text: str, code: str) -> None:
    doc = docnumber.parse(text)
    assert doc is not None and doc.type_code == code


# --- secrecy and urgency -------------------------------------------------------------


def _secrecy(text: str) -> tuple[str, str]:
    marks = [m for m in secrecy.scan_secrecy(vtext.nfc(text)) if m.kind == "secrecy"]
    if not marks:
        return "none", "none"
    strong = [m.level for m in marks if m.strong]
    if strong:
        return secrecy.level_max(strong, secrecy.SECRECY_LEVELS), "strong"
    return secrecy.level_max([m.level for m in marks], secrecy.SECRECY_LEVELS), "weak"


@pytest.mark.parametrize("text,level,strength", [
    ("[MẬT] Báo cáo", "mat", "strong"), ("MẬT", "mat", "strong"), ("(TỐI MẬT)", "toi_mat", "strong"),
    ("TUYỆT MẬT", "tuyet_mat", "strong"), ("Độ mật: Mật", "mat", "strong"), ("Độ mật: Tối mật", "toi_mat", "strong"),
    ("TOI MAT", "toi_mat", "strong"), ("[TUYET MAT]", "tuyet_mat", "strong"),
    ("Số: 12/BC-CA    MẬT", "mat", "strong"), ("Gửi tài liệu TỐI MẬT", "toi_mat", "strong"),
    ("MAT", "mat", "weak"), ("[MAT]", "mat", "weak"), ("Do mat: Mat", "mat", "weak"),
    ("tài liệu mật", "mat", "weak"), ("BÁO CÁO MẬT VỀ", "mat", "weak"),
    ("nội dung bí mật nhà nước", "mat", "weak"), ("gui tai lieu tuyet mat", "tuyet_mat", "weak"),
])
def test_secrecy_marks(text: str, level: str, strength: str) -> None:
    assert _secrecy(text) == (level, strength)


@pytest.mark.parametrize("text", [
    "mật khẩu", "MẬT KHẨU", "bảo mật", "BẢO MẬT", "mật độ", "mật mã", "mật ong", "mặt", "mất", "MẶT TRẬN",
    "Luật Bảo vệ bí mật nhà nước", "bảo vệ bí mật nhà nước", "danh mục bí mật nhà nước", "Độ mật: Thường",
    "Độ mật: Không", "mat khau", "MAT KHAU", "BAO MAT", "mat dien", "thân mật", "toi mat mui", "mật thiết",
])
def test_secrecy_exclusions(text: str) -> None:
    assert _secrecy(text) == ("none", "none")


def test_declassified_stamp() -> None:
    kinds = [m.kind for m in secrecy.scan_secrecy("MẬT\nGIẢI MẬT")]
    assert "declassified" in kinds
    assert all(m.kind != "declassified" for m in secrecy.scan_secrecy("đề nghị giải mật tài liệu"))
    assert all(m.kind != "declassified" for m in secrecy.scan_secrecy("GIAI MAT"))


@pytest.mark.parametrize("text,level", [
    ("HỎA TỐC", "hoa_toc"), ("HOẢ TỐC", "hoa_toc"), ("Hoả tốc", "hoa_toc"), ("THƯỢNG KHẨN", "thuong_khan"),
    ("KHẨN", "khan"), ("Khẩn: Giấy mời", "khan"), ("[Khẩn] Báo cáo", "khan"), ("Độ khẩn: Khẩn", "khan"),
    ("HOA TOC", "hoa_toc"), ("THUONG KHAN", "thuong_khan"), ("KHAN: Giay moi", "khan"),
    ("khẩn trương triển khai", "none"), ("tình trạng khẩn cấp", "none"), ("Độ khẩn: Thường", "none"),
    ("việc này rất khẩn", "none"), ("khan hiem", "none"), ("Khan - Giay moi", "none"),
])
def test_urgency_marks(text: str, level: str) -> None:
    marks = secrecy.scan_urgency(vtext.nfc(text))
    assert secrecy.level_max([m.level for m in marks], secrecy.URGENCY_LEVELS) == level


def test_ascii_khan_needs_corroboration_unless_capitals() -> None:
    assert secrecy.scan_urgency("Khan - Giay moi") == []
    assert [m.level for m in secrecy.scan_urgency("Khan - Giay moi", corroborated=True)] == ["khan"]


# --- text helpers --------------------------------------------------------------------


def test_text_helpers_keep_length_and_unify() -> None:
    for s in ("Hỏa tốc", "Hoả tốc", "ĐỀ ÁN", "Uỷ ban nhân dân", "İstanbul"):
        assert len(vtext.fold(s)) == len(s) and len(vtext.tone_key(s)) == len(s)
    assert vtext.tone_key("Hoả tốc") == vtext.tone_key("HỎA TỐC")
    assert vtext.tone_key("uỷ ban") == vtext.tone_key("ủy ban")
    assert vtext.fold("Đề án") == "De an"
    assert vtext.nfc("Ba\u0301o ca\u0301o") == "Báo cáo"


@pytest.mark.parametrize("subject,expected", [
    ("RE: Fwd: Báo cáo", "Báo cáo"), ("TL: Giấy mời", "Giấy mời"), ("Chuyển tiếp: Kế hoạch", "Kế hoạch"),
    ("[EXTERNAL] FW: Thông báo", "Thông báo"), ("Re[2]: Tờ trình", "Tờ trình"), ("[MẬT] Báo cáo", "[MẬT] Báo cáo"),
])
def test_strip_prefixes(subject: str, expected: str) -> None:
    assert vtext.strip_prefixes(subject) == expected


def test_decode_helpers() -> None:
    assert vtext.decode_header("=?UTF-8?B?QsOhbyBjw6Fv?=") == "Báo cáo"
    assert vtext.decode_header("=?x-unknown?B?QsOhbyBjw6Fv?=") == "Báo cáo"
    assert vtext.decode_bytes("Thông báo".encode("cp1258", "replace"), "windows-1258") == "Thông báo"
    assert vtext.decode_bytes(b"\xff\xfe", "no-such-charset")
    assert vtext.html_to_text("<p>A</p><script>MẬT</script><p>B</p>") == "A\nB"
