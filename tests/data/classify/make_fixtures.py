"""Writes the classifier's golden cases: NN-name.eml plus NN-name.expected.json.

Run from the repository root: ``python tests/data/classify/make_fixtures.py``.
Needs fpdf2 and python-docx (the ``test`` extra) and the DejaVu fonts (Debian
``fonts-dejavu-core``) to build real PDF and DOCX bytes with Vietnamese glyphs.
Output is deterministic (fixed dates, boundaries and ids) so regenerating gives
the same files. ``expected.json`` holds the subset of CONTRACT section 4 fields
that the case pins, plus ``evidence_includes`` (cue/where pairs that must be in
the evidence) and ``evidence_excludes`` (cues that must not be).

Addresses are synthetic (VN-DOCUMENTS.md section 10): never send these anywhere.
"""

from __future__ import annotations

import base64
import datetime
import email.charset
import email.policy
import io
import json
import pathlib
import unicodedata
import zipfile
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
FONT_DIR = pathlib.Path("/usr/share/fonts/truetype/dejavu")
FIXED = datetime.datetime(2025, 6, 2, 8, 30, tzinfo=datetime.timezone.utc)
BT = "binhthuan.gov.vn"

HEADER_LEFT = ["UBND TỈNH BÌNH THUẬN", "SỞ THÔNG TIN VÀ TRUYỀN THÔNG"]
HEADER_RIGHT = ["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc"]
FILLER = ("Thực hiện nhiệm vụ được giao, Sở Thông tin và Truyền thông đề nghị các cơ quan, "
          "đơn vị phối hợp triển khai, bảo đảm đúng tiến độ và chất lượng.")


# --- real document bytes -------------------------------------------------------


def make_pdf(lines: list[str], pages: int = 2) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(FIXED)
    pdf.set_producer("mailgw fixtures")
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSerif.ttf"))
    for page in range(pages):
        pdf.add_page()
        if page == 0:
            pdf.set_font("DejaVu", "", 12)
            for line in lines:
                pdf.multi_cell(0, 7, line, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 11)
        for _ in range(6):
            pdf.multi_cell(0, 6, FILLER, align="L", new_x="LMARGIN", new_y="NEXT")
        if page > 0:
            pdf.multi_cell(0, 6, f"Trang {page + 1}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_docx(lines: list[str], *, table_head: list[str] | None = None, second_page: list[str] | None = None) -> bytes:
    import docx

    doc = docx.Document()
    doc.core_properties.created = FIXED.replace(tzinfo=None)
    doc.core_properties.modified = FIXED.replace(tzinfo=None)
    doc.core_properties.last_modified_by = "mailgw"
    doc.core_properties.author = "mailgw"
    if table_head:
        table = doc.add_table(rows=1, cols=2)
        table.cell(0, 0).text = "\n".join(table_head)
        table.cell(0, 1).text = "\n".join(HEADER_RIGHT)
    for line in lines:
        doc.add_paragraph(line)
    doc.add_paragraph(FILLER)
    if second_page:
        doc.add_page_break()
        for line in second_page:
            doc.add_paragraph(line)
    out = io.BytesIO()
    doc.save(out)
    return _normalise_zip(out.getvalue())


def _normalise_zip(data: bytes) -> bytes:
    """Re-zip with fixed timestamps so the fixture is byte-for-byte reproducible."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2025, 6, 2, 8, 30, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def make_xlsx_like() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("xl/workbook.xml", date_time=(2025, 6, 2, 8, 30, 0))
        z.writestr(info, "<workbook xmlns='http://schemas.openxmlformats.org/spreadsheetml/2006/main'/>")
    return out.getvalue()


def make_encrypted_pdf(lines: list[str]) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(lines, pages=1))))
    writer.encrypt(user_password="matkhau-rieng", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def to_cp1258(text: str) -> bytes:
    """Windows-1258 as Vietnamese Windows writes it: precomposed vowels, separate tone marks."""
    tones = "\u0300\u0301\u0303\u0309\u0323"
    out = b""
    for ch in unicodedata.normalize("NFC", text):
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            parts = unicodedata.normalize("NFD", ch)
            base = unicodedata.normalize("NFC", "".join(c for c in parts if c not in tones))
            out += (base + "".join(c for c in parts if c in tones)).encode("cp1258")
    return out


def gov_head(number: str | None, title: str, *extra: str, stamp: list[str] = ()) -> list[str]:
    """Page-one lines laid out like Decree 30's form: agency, number, stamps, title."""
    lines = HEADER_LEFT[:]
    if number:
        lines.append(f"Số: {number}")
    lines += list(stamp)
    lines += HEADER_RIGHT
    lines.append("Bình Thuận, ngày 02 tháng 6 năm 2025")
    lines.append(title)
    lines += list(extra)
    return lines


# --- messages ------------------------------------------------------------------

QP = email.charset.Charset("utf-8")
QP.body_encoding = email.charset.QP
B64 = email.charset.Charset("utf-8")
B64.body_encoding = email.charset.BASE64


def attachment(name: str, data: bytes, ctype: str = "application/pdf", *, style: str = "2231") -> MIMEBase:
    maintype, subtype = ctype.split("/")
    part = MIMEApplication(data, subtype) if maintype == "application" else MIMEBase(maintype, subtype)
    if maintype != "application":
        part.set_payload(base64.encodebytes(data).decode("ascii"))
        part["Content-Transfer-Encoding"] = "base64"
    if style == "2231":
        part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name) if not name.isascii() else name)
    elif style == "2047":
        encoded = Header(name, "utf-8").encode()
        part["Content-Disposition"] = f'attachment; filename="{encoded}"'
        part.set_param("name", encoded)
    elif style == "2231-continued":
        quoted = "".join(f"%{b:02X}" if not (48 <= b < 58 or 65 <= b < 91 or 97 <= b < 123) else chr(b)
                         for b in name.encode("utf-8"))
        half = len(quoted) // 2
        while quoted[half - 1] == "%" or quoted[half - 2] == "%":
            half += 1
        part["Content-Disposition"] = (f"attachment;\n filename*0*=utf-8''{quoted[:half]};\n"
                                       f" filename*1*={quoted[half:]}")
    elif style == "ctype-name-only":
        part.set_param("name", name)
    return part


def ics(method: str, summary: str) -> MIMEBase:
    body = ("BEGIN:VCALENDAR\r\nPRODID:-//mailgw fixtures//VN\r\nVERSION:2.0\r\n"
            f"METHOD:{method}\r\nBEGIN:VEVENT\r\nUID:fixture-1@{BT}\r\nDTSTAMP:20250602T083000Z\r\n"
            "DTSTART:20250605T020000Z\r\nDTEND:20250605T040000Z\r\n"
            f"SUMMARY:{summary}\r\nLOCATION:Phòng họp tầng 2\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    part = MIMEText(body, "calendar", "utf-8")
    part.set_param("method", method)
    return part


def encode_words(text: str, limit: int = 42) -> str:
    """RFC 2047 B-encoded words, each holding whole characters and its own spaces.

    Python's header folder drops the space between two encoded words it splits
    ("Bảo vệbí mật"), so fixtures encode subjects themselves.
    """
    words: list[str] = []
    chunk = ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > limit:
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    return "\r\n ".join(f"=?UTF-8?B?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


def build(n: int, subject: str | None, body: str | None = None, *, html: bool = False,
          charset: Any = "utf-8", attachments: list[MIMEBase] = (), headers: dict[str, str] | None = None,
          subject_raw: str | None = None, sender: str = f"vanthu.sotttt@{BT}",
          to: str = f"vanthu.snv@{BT}", extra_parts: list[MIMEBase] = ()) -> bytes:
    body = body if body is not None else "Kính gửi: các cơ quan, đơn vị\n\nTrân trọng./."
    text = MIMEText(body, "html" if html else "plain", charset)
    if attachments or extra_parts:
        msg: MIMEBase = MIMEMultipart("mixed")
        msg.set_boundary(f"=_mailgw_fixture_{n:03d}")
        msg.attach(text)
        for part in list(extra_parts) + list(attachments):
            msg.attach(part)
    else:
        msg = text
    msg["From"] = sender
    msg["To"] = to
    if subject_raw is not None:
        msg["Subject"] = subject_raw
    elif subject is not None:
        msg["Subject"] = encode_words(subject) if not subject.isascii() else subject
    msg["Date"] = "Mon, 02 Jun 2025 15:30:00 +0700"
    msg["Message-ID"] = f"<fixture-{n:03d}@{BT}>"
    for name, value in (headers or {}).items():
        msg[name] = value
    raw_8bit = subject_raw is not None and not subject_raw.isascii()
    return msg.as_bytes(policy=email.policy.SMTPUTF8 if raw_8bit else email.policy.SMTP)


CASES: list[tuple[str, bytes, dict[str, Any]]] = []


def case(name: str, raw: bytes, **expected: Any) -> None:
    CASES.append((name, raw, expected))


def pdf_att(name: str, lines: list[str], **kw: Any) -> MIMEBase:
    return attachment(name, make_pdf(lines), **kw)


def docx_att(name: str, lines: list[str], **kw: Any) -> MIMEBase:
    return attachment(name, make_docx(lines, **{k: v for k, v in kw.items() if k in ("table_head", "second_page")}),
                      "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                      **{k: v for k, v in kw.items() if k == "style"})


def ev(*pairs: str) -> list[dict[str, str]]:
    return [{"cue": c, "where": w} for c, w in (p.split("@") for p in pairs)]


def define() -> None:  # noqa: C901 - one table, read top to bottom
    n = len(CASES)

    def nxt() -> int:
        return len(CASES) + 1

    # ---- E1-E21 (VN-DOCUMENTS.md section 10) ----------------------------------
    case("e01-giay-moi-giao-ban", build(nxt(), "Giấy mời họp giao ban tuần 23",
         attachments=[pdf_att("GM_giaoban_t23.pdf", gov_head(None, "GIẤY MỜI", "Họp giao ban tuần 23",
                                                            "Thời gian: 08 giờ 00, thứ Hai", "Địa điểm: Phòng họp tầng 2"))]),
         category="meeting_invitation", secrecy="none", urgency="none")
    case("e02-tai-lieu-hop", build(nxt(), "Tài liệu phục vụ họp UBND tỉnh tháng 5",
         attachments=[docx_att("Du_thao_BC.docx", ["DỰ THẢO", "BÁO CÁO", "Kết quả thực hiện nhiệm vụ tháng 5"]),
                      attachment("Phu_luc_1.xlsx", make_xlsx_like(),
                                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")]),
         category="meeting_material", secrecy="none")
    case("e03-thong-bao-nghi-le", build(nxt(), "Thông báo nghỉ lễ Quốc khánh 2/9", sender=f"vp.sotttt@{BT}"),
         category="announcement", doc_number=None, secrecy="none")
    case("e04-lich-cong-tac", build(nxt(), "Lịch công tác tuần 23 của Lãnh đạo Sở",
         attachments=[pdf_att("LCT_tuan23.pdf", gov_head(None, "LỊCH CÔNG TÁC TUẦN 23", "Thứ Hai: Giao ban"))]),
         category="work_schedule")
    case("e05-ke-hoach-112", build(nxt(), "Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số",
         attachments=[pdf_att("112_KH-STTTT.pdf", gov_head("112/KH-STTTT", "KẾ HOẠCH", "Triển khai chuyển đổi số"))]),
         category="plan", doc_type="KH", doc_number="112/KH-STTTT")
    case("e06-cong-van-456", build(nxt(), "Số: 456/STTTT-VP V/v cử cán bộ tham gia tập huấn",
         attachments=[pdf_att("456_STTTT-VP.pdf", gov_head("456/STTTT-VP", "V/v cử cán bộ tham gia tập huấn"))]),
         category="official_letter", doc_type=None, doc_number="456/STTTT-VP")
    case("e07-quyet-dinh-123", build(nxt(), "Quyết định 123/QĐ-BTTTT về việc ban hành Kế hoạch",
         sender="vanthu@mic.gov.vn", attachments=[pdf_att("123_QD-BTTTT.pdf", gov_head("123/QĐ-BTTTT", "QUYẾT ĐỊNH"))]),
         category="decision", doc_type="QĐ", doc_number="123/QĐ-BTTTT")
    case("e08-mat-bao-cao-antt", build(nxt(), "[MẬT] Báo cáo tình hình an ninh trật tự",
         attachments=[docx_att("BC_ANTT.docx", ["BÁO CÁO", "Tình hình an ninh trật tự"],
                               table_head=HEADER_LEFT + ["Số: 21/BC-CAT", "MẬT"])]),
         category="report", secrecy="mat", secrecy_strength="strong", evidence_includes=ev("secrecy_stamp@subject"))
    case("e09-mat-khau", build(nxt(), "Đề nghị cấp lại mật khẩu hộp thư công vụ",
         "Chào anh, em quên mật khẩu hộp thư công vụ, nhờ anh cấp lại giúp em.\nCảm ơn anh.",
         sender=f"it@{BT}", to=f"user@{BT}"),
         category="general", secrecy="none", secrecy_strength="none")
    case("e10-hoa-toc-cong-dien", build(nxt(), "HỎA TỐC - Công điện số 03/CĐ-UBND về ứng phó bão số 3",
         sender="vanthu@danang.gov.vn", attachments=[pdf_att("03_CD-UBND.pdf", gov_head(
             "03/CĐ-UBND", "CÔNG ĐIỆN", "Về việc ứng phó bão số 3", stamp=["HỎA TỐC"]))]),
         category="official_telegram", doc_type="CĐ", doc_number="03/CĐ-UBND", urgency="hoa_toc")
    case("e11-khan-giay-moi-07", build(nxt(), "Khẩn: Giấy mời họp trực tuyến số 07/GM-STTTT",
         to="vanthu@mic.gov.vn", attachments=[pdf_att("GM_07.pdf", gov_head("07/GM-STTTT", "GIẤY MỜI"))]),
         category="meeting_invitation", doc_type="GM", doc_number="07/GM-STTTT", urgency="khan")
    case("e12-fwd-quyet-dinh-25", build(nxt(), "Fwd: Quyết định số 25/QĐ-UBND", sender=f"nvan@{BT}",
         to="nvan.canhan@gmail.com", attachments=[pdf_att("25_QD-UBND.pdf", gov_head("25/QĐ-UBND", "QUYẾT ĐỊNH"))]),
         category="decision", doc_number="25/QĐ-UBND")
    case("e13-thong-bao-mat-khau", build(nxt(), "Thông báo cập nhật mật khẩu hộp thư công vụ",
         "Đề nghị quý anh chị truy cập đường dẫn sau để cập nhật mật khẩu: http://binhthuan-gov.vn/capnhat",
         sender="thongbao@binhthuan-gov.vn"),
         category="announcement", secrecy="none")
    e14_name = unicodedata.normalize("NFD", "Báo cáo.pdf")
    case("e14-rfc2047-nfd", build(nxt(), None, subject_raw=Header("Báo cáo số 210/BC-STTTT", "utf-8").encode(),
         sender=f"kh@{BT}", to=f"ld@{BT}",
         attachments=[pdf_att(e14_name, gov_head("210/BC-STTTT", "BÁO CÁO"))]),
         category="report", doc_number="210/BC-STTTT", evidence_includes=ev("title@attachment_name"))
    case("e15-so-5-qd", build(nxt(), "Số: 5/QĐ-UBND V/v phân công nhiệm vụ",
         attachments=[pdf_att("5_QD-UBND.pdf", gov_head("5/QĐ-UBND", "QUYẾT ĐỊNH"))]),
         category="decision", doc_number="5/QĐ-UBND", evidence_includes=ev("doc_number_format@subject"))
    case("e16-chuong-trinh-11", build(nxt(), "Chương trình công tác năm 2025 (11/CTr-STTTT)",
         attachments=[pdf_att("11_CTr-STTTT.pdf", gov_head("11/CTr-STTTT", "CHƯƠNG TRÌNH CÔNG TÁC NĂM 2025"))]),
         category="programme", doc_type="CTr", doc_number="11/CTr-STTTT")
    case("e17-huong-dan-02", build(nxt(), "Hướng dẫn số 02/HD-SNV về thi đua, khen thưởng", sender=f"vanthu.snv@{BT}",
         attachments=[pdf_att("02_HD-SNV.pdf", gov_head("02/HD-SNV", "HƯỚNG DẪN", "Về công tác thi đua, khen thưởng"))]),
         category="guidance", doc_type="HD", doc_number="02/HD-SNV")
    case("e18-nghi-dinh-30", build(nxt(), "Gửi Nghị định 30/2020/NĐ-CP về công tác văn thư", sender="vanthu@mic.gov.vn",
         attachments=[pdf_att("30_2020_ND-CP.pdf", ["CHÍNH PHỦ", "Số: 30/2020/NĐ-CP", "NGHỊ ĐỊNH", "Về công tác văn thư"])]),
         category="legal_normative", doc_type="NĐ", doc_number="30/2020/NĐ-CP")
    case("e19-gmail-giay-moi", build(nxt(), "Giấy mời dự hội thảo chuyển đổi số", sender="lienhe@gmail.com"),
         category="meeting_invitation")
    case("e20-chuyen-khoan-gap", build(nxt(), "Chuyển khoản gấp",
         "Em chuyển gấp cho anh 50 triệu vào tài khoản này nhé, anh đang họp không nghe máy được.",
         sender=f"giamdoc@{BT}", to=f"ketoan@{BT}"),
         category="general", urgency="none", secrecy="none")
    case("e21-bao-cao-exe", build(nxt(), "Báo cáo quý III",
         attachments=[attachment("baocao.pdf.exe", b"MZ\x90\x00" + b"\x00" * 200, "application/octet-stream")]),
         category="report")

    # ---- every category from its title word -----------------------------------
    titles = [
        ("giay-moi", "Giấy mời dự Hội nghị tổng kết năm 2024", "meeting_invitation", "GM"),
        ("moi-hop", "Mời họp rà soát thủ tục hành chính", "meeting_invitation", "GM"),
        ("tai-lieu-hop", "Tài liệu họp Ban chỉ đạo chuyển đổi số", "meeting_material", None),
        ("bao-cao", "Báo cáo kết quả thực hiện nhiệm vụ 6 tháng đầu năm", "report", "BC"),
        ("thong-bao", "Thông báo kết quả tuyển dụng viên chức năm 2025", "announcement", "TB"),
        ("cong-van", "Công văn đôn đốc nộp báo cáo thống kê", "official_letter", None),
        ("vv", "V/v cung cấp thông tin phục vụ thanh tra", "official_letter", None),
        ("ve-viec", "Về việc rà soát danh sách cán bộ", "official_letter", None),
        ("quyet-dinh", "Quyết định phê duyệt danh sách khen thưởng", "decision", "QĐ"),
        ("chi-thi", "Chỉ thị về tăng cường an toàn thông tin mạng", "directive", "CT"),
        ("ke-hoach", "Kế hoạch tổ chức Hội thi tin học trẻ", "plan", "KH"),
        ("chuong-trinh", "Chương trình công tác quý III năm 2025", "programme", "CTr"),
        ("chuong-trinh-hanh-dong", "Chương trình hành động thực hiện Nghị quyết", "programme", "CTr"),
        ("lich-cong-tac", "Lịch công tác tuần 24", "work_schedule", None),
        ("lich-lam-viec", "Lịch làm việc tuần của Ban Giám đốc", "work_schedule", None),
        ("y-kien-chi-dao", "Ý kiến chỉ đạo của Chủ tịch UBND tỉnh về phòng chống thiên tai", "direction", None),
        ("ket-luan", "Kết luận của Giám đốc Sở tại cuộc họp giao ban", "direction", None),
        ("giao-nhiem-vu", "Giao nhiệm vụ xây dựng cơ sở dữ liệu chuyên ngành", "direction", None),
        ("to-trinh", "Tờ trình đề nghị phê duyệt dự toán", "submission", "TTr"),
        ("cong-dien", "Công điện về việc ứng phó với áp thấp nhiệt đới", "official_telegram", "CĐ"),
        ("bien-ban", "Biên bản họp Hội đồng thi đua khen thưởng", "minutes", "BB"),
        ("huong-dan", "Hướng dẫn sử dụng phần mềm quản lý văn bản", "guidance", "HD"),
        ("giay-gioi-thieu", "Giấy giới thiệu cán bộ liên hệ công tác", "introduction_letter", "GGT"),
        ("du-thao", "Dự thảo Quy chế quản lý hộp thư công vụ", "draft_for_comment", None),
        ("xin-y-kien", "Xin ý kiến góp ý dự thảo Kế hoạch chuyển đổi số", "draft_for_comment", None),
        ("vv-xin-y-kien", "V/v xin ý kiến dự thảo Quyết định ban hành quy chế", "draft_for_comment", None),
        ("thong-tu", "Thông tư hướng dẫn chế độ báo cáo thống kê", "legal_normative", "TT"),
        ("quy-che", "Quy chế làm việc của Sở Thông tin và Truyền thông", "administrative_other", "QC"),
        ("de-an", "Đề án chuyển đổi số tỉnh giai đoạn 2025-2030", "administrative_other", "ĐA"),
        ("hop-dong", "Hợp đồng thuê dịch vụ công nghệ thông tin", "administrative_other", "HĐ"),
        ("phuong-an", "Phương án bảo đảm thông tin liên lạc mùa mưa bão", "administrative_other", "PA"),
        ("general-hoi-tham", "Hỏi thăm sức khỏe và hẹn cà phê cuối tuần", "general", None),
        ("general-working-paper", "Gửi anh file số liệu để tham khảo", "general", None),
    ]
    for slug, subject, category, abbr in titles:
        body = "Kính gửi anh chị,\nEm gửi nội dung như tiêu đề.\nTrân trọng." if category != "general" else \
            "Chào anh,\nEm gửi anh file số liệu để anh tham khảo thêm.\nEm cảm ơn."
        exp: dict[str, Any] = {"category": category, "secrecy": "none", "urgency": "none"}
        if category != "official_letter":
            exp["doc_type"] = abbr
        case(f"cat-{slug}", build(nxt(), subject, body), **exp)

    # ---- the number/symbol grammar (section 4) --------------------------------
    grammar = [
        ("so-25-ct-ubnd", "Số: 25/CT-UBND về tăng cường ứng dụng CNTT", "25/CT-UBND", "directive", "CT"),
        ("15-ct-ttg", "Chỉ thị 15/CT-TTg về sử dụng hệ thống thư điện tử", "15/CT-TTg", "directive", "CT"),
        ("34-2008-ct-ttg", "Chỉ thị 34/2008/CT-TTg tăng cường sử dụng thư điện tử", "34/2008/CT-TTg", "directive", "CT"),
        ("28-2018-qd-ttg", "Quyết định 28/2018/QĐ-TTg về gửi, nhận văn bản điện tử", "28/2018/QĐ-TTg", "legal_normative", "QĐ"),
        ("24-2020-tt-bca", "Thông tư 24/2020/TT-BCA về biểu mẫu bảo vệ BMNN", "24/2020/TT-BCA", "legal_normative", "TT"),
        ("luat-29-2018-qh14", "Luật số: 29/2018/QH14 gửi để nghiên cứu", "29/2018/QH14", "legal_normative", None),
        ("15-qd-bnv", "Số: 15/QĐ-BNV về việc nâng bậc lương", "15/QĐ-BNV", "decision", "QĐ"),
        ("05-bnv-vp", "Số: 05/BNV-VP V/v báo cáo số liệu", "05/BNV-VP", "official_letter", None),
        ("12-ubnd-vx", "Số: 12/UBND-VX V/v phòng chống dịch", "12/UBND-VX", "official_letter", None),
        ("7816-vpcp-ttdt", "Văn bản 7816/VPCP-TTĐT về Cổng thông tin", "7816/VPCP-TTĐT", "official_letter", None),
        ("09-qyd-vp", "Số: 09/QyĐ-VP Quy định về sử dụng xe công", "09/QyĐ-VP", "administrative_other", "QyĐ"),
        ("so-123-qd-ascii", "So 123/QD-BTTTT ve viec ban hanh quy che", "123/QĐ-BTTTT", "decision", "QĐ"),
        ("spaces", "Chỉ thị 25 / CT - UBND về phòng cháy", "25/CT-UBND", "directive", "CT"),
        ("no-dot", "No. 25/CT-UBND ve tang cuong an toan thong tin", "25/CT-UBND", "directive", "CT"),
        ("ttr-mixed-case", "Tờ trình 14/TTr-STTTT đề nghị phê duyệt", "14/TTr-STTTT", "submission", "TTr"),
        ("nq-with-year", "Nghị quyết 12/2024/NQ-HĐND về phí, lệ phí", "12/2024/NQ-HĐND", "legal_normative", "NQ"),
        ("kh-over-title", "Kế hoạch ban hành kèm 45/QĐ-UBND", "45/QĐ-UBND", "decision", "QĐ"),
    ]
    for slug, subject, number, category, abbr in grammar:
        exp = {"category": category, "doc_number": number}
        if category != "official_letter":
            exp["doc_type"] = abbr
        case(f"num-{slug}", build(nxt(), subject), **exp)
    case("num-file-1896-qd-ttg", build(nxt(), "Gửi văn bản", attachments=[
        attachment("1896_QD-TTg_m_294779.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "application/msword")]),
         category="decision", doc_number="1896/QĐ-TTg", doc_type="QĐ", evidence_includes=ev("doc_number@attachment_name"))
    case("num-file-30-2020-nd-cp", build(nxt(), "Gửi văn bản để biết", attachments=[
        attachment("30_2020_ND-CP.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "application/msword")]),
         category="legal_normative", doc_number="30/2020/NĐ-CP")
    case("num-file-not-a-code", build(nxt(), "Gửi anh ảnh chụp", "Ảnh chụp buổi làm việc.", attachments=[
        attachment("12_ab-cd.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg")]),
         category="general", doc_number=None)
    case("num-reference-vv", build(nxt(), "V/v triển khai Kế hoạch số 12/KH-UBND của UBND tỉnh"),
         category="official_letter", doc_number=None)
    case("num-reference-thuc-hien", build(nxt(), "Báo cáo tình hình thực hiện Quyết định 12/QĐ-UBND"),
         category="report", doc_number=None)
    case("num-date-not-number", build(nxt(), "Họp ngày 18/07/2025 lúc 14/30", "Hẹn gặp lại."),
         category="general", doc_number=None)
    case("num-qcvn-not-number", build(nxt(), "Tiêu chuẩn QCVN 102:2016/BTTTT", "Anh xem giúp em tiêu chuẩn này."),
         category="general", doc_number=None)

    # ---- secrecy: strong, weak, declassified, traps ---------------------------
    sec = [
        ("subject-bracket", "[MẬT] Báo cáo công tác bảo vệ an ninh", None, "mat", "strong"),
        ("subject-dash", "MẬT - Báo cáo tình hình biên giới", None, "mat", "strong"),
        ("subject-toi-mat", "(TỐI MẬT) Kế hoạch bảo vệ mục tiêu", None, "toi_mat", "strong"),
        ("subject-tuyet-mat", "Gửi tài liệu TUYỆT MẬT về phương án tác chiến", None, "tuyet_mat", "strong"),
        ("subject-mat-titlecase-bracket", "[Mật] Báo cáo tổng hợp", None, "mat", "strong"),
        ("subject-ascii-toi-mat", "[TOI MAT] Ke hoach bao ve", None, "toi_mat", "strong"),
        ("subject-ascii-tuyet-mat", "TUYET MAT - Bao cao", None, "tuyet_mat", "strong"),
        ("body-do-mat", "Gửi báo cáo tổng hợp", "Độ mật: Mật\nĐộ khẩn: Thường\nKính gửi: Giám đốc Sở", "mat", "strong"),
        ("body-stamp-line", "Gửi văn bản", "TỐI MẬT\nBÁO CÁO\nTình hình an ninh nội bộ", "toi_mat", "strong"),
        ("subject-ascii-mat", "MAT - Bao cao thang 5", None, "mat", "weak"),
        ("subject-ascii-mat-bracket", "[MAT] Bao cao", None, "mat", "weak"),
        ("body-lowercase", "Gửi tài liệu", "Anh xem giúp tài liệu mật này trước cuộc họp.", "mat", "weak"),
        ("body-bmnn-description", "Gửi báo cáo", "Báo cáo có nội dung liên quan đến bí mật nhà nước, đề nghị lưu ý.",
         "mat", "weak"),
        ("subject-upper-phrase", "BÁO CÁO MẬT VỀ TÌNH HÌNH", None, "mat", "weak"),
        ("subject-ascii-lower-tuyet", "gui tai lieu tuyet mat", None, "tuyet_mat", "weak"),
        ("trap-mat-khau", "Hướng dẫn đổi mật khẩu hộp thư", None, "none", "none"),
        ("trap-mat-khau-upper", "ĐỔI MẬT KHẨU HỘP THƯ CÔNG VỤ", None, "none", "none"),
        ("trap-bao-mat", "Thông báo về công tác bảo mật thông tin", None, "none", "none"),
        ("trap-bao-mat-upper", "V/v BẢO MẬT THÔNG TIN", None, "none", "none"),
        ("trap-mat-do", "Báo cáo mật độ dân số các huyện", None, "none", "none"),
        ("trap-mat-ma", "Hướng dẫn sử dụng mật mã dân sự", None, "none", "none"),
        ("trap-mat-ong", "Hỏi giá mật ong rừng", None, "none", "none"),
        ("trap-mat-face", "Gặp mặt đầu năm", None, "none", "none"),
        ("trap-mat-lost", "Mất điện tòa nhà sáng nay", None, "none", "none"),
        ("trap-luat-bvbmnn", "Thông báo tập huấn Luật Bảo vệ bí mật nhà nước", None, "none", "none"),
        ("trap-danh-muc", "Quyết định ban hành danh mục bí mật nhà nước", None, "none", "none"),
        ("trap-bao-ve-bmnn", "Kế hoạch bảo vệ bí mật nhà nước năm 2025", None, "none", "none"),
        ("trap-do-mat-thuong", "Gửi văn bản", "Độ mật: Thường\nĐộ khẩn: Thường", "none", "none"),
        ("trap-ascii-mat-khau", "Doi MAT KHAU hop thu", None, "none", "none"),
        ("trap-ascii-lower-mat", "mat dien toan bo toa nha", None, "none", "none"),
        ("trap-than-mat", "Thư mời buổi gặp mặt thân mật", None, "none", "none"),
        ("trap-toi-mat-mui", "toi mat mui vi cong viec", None, "none", "none"),
    ]
    for slug, subject, body, level, strength in sec:
        exp = {"secrecy": level, "secrecy_strength": strength}
        case(f"sec-{slug}", build(nxt(), subject, body), **exp)
    case("sec-header", build(nxt(), "Gửi báo cáo", headers={"X-GovVN-Secrecy": "mat"}),
         secrecy="mat", secrecy_strength="strong", evidence_includes=ev("secrecy_stamp@header"))
    case("sec-header-none-cannot-lower", build(nxt(), "[MẬT] Báo cáo", headers={"X-GovVN-Secrecy": "none"}),
         secrecy="mat", secrecy_strength="strong")
    case("sec-pdf-stamp", build(nxt(), "Gửi văn bản", attachments=[pdf_att("BC_12.pdf", gov_head(
        "12/BC-CAT", "BÁO CÁO", stamp=["MẬT"]))]),
         category="report", doc_number="12/BC-CAT", secrecy="mat", secrecy_strength="strong",
         evidence_includes=ev("secrecy_stamp@attachment_text", "doc_number@attachment_text"))
    case("sec-pdf-toi-mat", build(nxt(), "Kế hoạch số 08/KH-CAT", attachments=[pdf_att("KH_08.pdf", gov_head(
        "08/KH-CAT", "KẾ HOẠCH", stamp=["TỐI MẬT"]))]),
         category="plan", secrecy="toi_mat", secrecy_strength="strong")
    case("sec-docx-stamp", build(nxt(), "Gửi tài liệu", attachments=[docx_att("tailieu.docx", [
        "KẾ HOẠCH", "Bảo vệ mục tiêu"], table_head=HEADER_LEFT + ["Số: 03/KH-BCH", "TUYỆT MẬT"])]),
         category="plan", doc_number="03/KH-BCH", secrecy="tuyet_mat", secrecy_strength="strong",
         evidence_includes=ev("secrecy_stamp@attachment_text"))
    case("sec-docx-stamp-second-page-ignored", build(nxt(), "Gửi tài liệu", attachments=[docx_att("tl.docx", [
        "BÁO CÁO", "Kết quả công tác"], table_head=HEADER_LEFT + ["Số: 04/BC-STTTT"],
        second_page=["Phụ lục", "Ghi chú: tài liệu MẬT được lưu riêng"])]),
         category="report", secrecy="none")
    case("sec-filename-stamp", build(nxt(), "Gửi văn bản", attachments=[
        attachment("[MẬT] Báo cáo tháng 5.docx", make_docx(["BÁO CÁO"]),
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document")]),
         secrecy="mat", secrecy_strength="strong", evidence_includes=ev("secrecy_stamp@attachment_name"))
    case("sec-declassified-pdf", build(nxt(), "Gửi báo cáo đã giải mật", attachments=[pdf_att("BC_gm.pdf", gov_head(
        "05/BC-CAT", "BÁO CÁO", stamp=["MẬT", "GIẢI MẬT"]))]),
         category="report", secrecy="none", declassified=True, evidence_includes=ev("declassified_stamp@attachment_text"))
    case("sec-declassified-does-not-lift-subject", build(nxt(), "[MẬT] Báo cáo", attachments=[pdf_att(
        "BC_gm2.pdf", gov_head("06/BC-CAT", "BÁO CÁO", stamp=["MẬT", "GIẢI MẬT"]))]),
         secrecy="mat", secrecy_strength="strong", declassified=False,
         evidence_excludes=["declassified_stamp"])  # settled by the subject: the PDF is not opened
    case("sec-declassified-subject", build(nxt(), "[GIẢI MẬT] [MẬT] Báo cáo năm 2010"),
         secrecy="none", declassified=True)
    case("sec-pdf-one-of-two", build(nxt(), "Gửi hai văn bản", attachments=[
        pdf_att("a.pdf", gov_head("10/BC-STTTT", "BÁO CÁO")),
        pdf_att("b.pdf", gov_head("11/BC-STTTT", "BÁO CÁO", stamp=["MẬT"]))]),
         secrecy="mat", secrecy_strength="strong")
    case("sec-pdf-mat-khau-text", build(nxt(), "Gửi hướng dẫn", attachments=[pdf_att("hd.pdf", gov_head(
        "07/HD-STTTT", "HƯỚNG DẪN", "Đổi mật khẩu hộp thư công vụ định kỳ", "Bảo mật tài khoản"))]),
         category="guidance", secrecy="none", secrecy_strength="none")
    case("sec-pdf-law-training", build(nxt(), "Thông báo tập huấn", attachments=[pdf_att("tb.pdf", gov_head(
        "33/TB-STTTT", "THÔNG BÁO", "Tập huấn Luật Bảo vệ bí mật nhà nước năm 2018"))]),
         category="announcement", secrecy="none")
    case("sec-strong-subject-skips-pdf", build(nxt(), "[MẬT] Quyết định số 14/QĐ-CAT", attachments=[pdf_att(
        "qd14.pdf", gov_head("14/QĐ-CAT", "QUYẾT ĐỊNH", stamp=["MẬT"]))]),
         category="decision", secrecy="mat", secrecy_strength="strong", evidence_excludes=["secrecy_stamp@attachment_text"])

    # ---- urgency ------------------------------------------------------------------
    urg = [
        ("khan-upper", "KHẨN - Giấy mời họp đột xuất", "khan"),
        ("khan-colon", "Khẩn: Báo cáo số liệu trước 15h", "khan"),
        ("khan-bracket", "[Khẩn] Kế hoạch trực bão", "khan"),
        ("thuong-khan", "THƯỢNG KHẨN - Công điện ứng phó lũ", "thuong_khan"),
        ("thuong-khan-lower", "Thượng khẩn: Báo cáo thiệt hại", "thuong_khan"),
        ("hoa-toc", "HỎA TỐC - Giấy mời họp Ban chỉ đạo", "hoa_toc"),
        ("hoa-toc-tone-variant", "HOẢ TỐC: Công điện số 05/CĐ-UBND", "hoa_toc"),
        ("hoa-toc-ascii", "HOA TOC - Cong dien so 05/CD-UBND", "hoa_toc"),
        ("khan-ascii", "KHAN: Giay moi hop", "khan"),
        ("trap-khan-truong", "Đề nghị khẩn trương báo cáo số liệu", "none"),
        ("trap-khan-cap", "Thông báo tình trạng khẩn cấp về thiên tai", "none"),
        ("trap-khan-ascii-lower", "khan hiem vat tu y te", "none"),
        ("trap-gap", "Gửi gấp báo cáo", "none"),
    ]
    for slug, subject, level in urg:
        case(f"urg-{slug}", build(nxt(), subject), urgency=level)
    case("urg-body-do-khan", build(nxt(), "Gửi văn bản", "Độ khẩn: Thượng khẩn\nKính gửi: Sở Nội vụ"),
         urgency="thuong_khan")
    case("urg-body-do-khan-thuong", build(nxt(), "Gửi văn bản", "Độ khẩn: Thường\nKính gửi: Sở Nội vụ"),
         urgency="none")
    case("urg-header", build(nxt(), "Giấy mời họp", headers={"X-GovVN-Urgency": "hoa_toc"}),
         urgency="hoa_toc", evidence_includes=ev("urgency@header"))
    case("urg-importance-alone", build(nxt(), "Giấy mời họp", headers={"Importance": "high", "X-Priority": "1"}),
         urgency="none")
    case("urg-importance-corroborates", build(nxt(), "Khan - Giay moi hop", headers={"Importance": "high"}),
         urgency="khan", evidence_includes=ev("urgency_hint@header"))
    case("urg-ascii-titlecase-alone", build(nxt(), "Khan - Giay moi hop"), urgency="none")
    case("urg-pdf-stamp", build(nxt(), "Gửi văn bản", attachments=[pdf_att("cd.pdf", gov_head(
        "09/CĐ-UBND", "CÔNG ĐIỆN", stamp=["THƯỢNG KHẨN"]))]),
         category="official_telegram", urgency="thuong_khan", evidence_includes=ev("urgency@attachment_text"))

    # ---- encodings ----------------------------------------------------------------
    body_vi = ("Kính gửi: các phòng, đơn vị thuộc Sở\nThực hiện chỉ đạo của Giám đốc Sở, Văn phòng gửi "
               "Giấy mời họp giao ban tháng 6.\nThời gian: 14 giờ 00, thứ Ba\nĐịa điểm: Phòng họp tầng 2")
    case("enc-body-base64", build(nxt(), "Gửi anh chị", body_vi, charset=B64), category="meeting_invitation")
    case("enc-body-qp", build(nxt(), "Gửi anh chị", body_vi, charset=QP), category="meeting_invitation")
    raw8 = build(nxt(), "Gửi anh chị", body_vi, charset="utf-8")
    case("enc-body-8bit", raw8.replace(b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: 8bit")
         .split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body_vi.replace("\n", "\r\n").encode("utf-8") + b"\r\n",
         category="meeting_invitation")
    cp = ("Content-Type: text/plain; charset=windows-1258\r\nContent-Transfer-Encoding: 8bit\r\n"
          "From: vp@binhthuan.gov.vn\r\nTo: ld@binhthuan.gov.vn\r\nSubject: Van ban\r\n"
          "Message-ID: <fixture-cp1258@binhthuan.gov.vn>\r\n\r\n").encode("ascii") + \
        to_cp1258("Thông báo\r\nLịch trực Tết của cơ quan\r\n")
    case("enc-body-cp1258", cp, category="announcement")
    case("enc-subject-q", build(nxt(), None, subject_raw="=?UTF-8?Q?Quy=E1=BA=BFt_=C4=91=E1=BB=8Bnh_s=E1=BB=91_"
                                                        "17/Q=C4=90-UBND?="), category="decision", doc_number="17/QĐ-UBND")
    case("enc-subject-split-words", build(nxt(), None, subject_raw="=?UTF-8?B?R2nhuqV5IG3hu51p?= =?UTF-8?B?IGjhu41w?="
                                                                  " giao ban"), category="meeting_invitation")
    case("enc-subject-mixed-plain", build(nxt(), None, subject_raw="RE: =?utf-8?b?VGjDtG5nIGLDoW8=?= lịch trực"),
         category="announcement")
    case("enc-subject-unknown-charset", build(nxt(), None, subject_raw="=?x-unknown?B?QsOhbyBjw6Fv?= tuần"),
         category="report")
    case("enc-subject-tl-prefix", build(nxt(), "TL: Chuyển tiếp: [EXTERNAL] Tờ trình số 05/TTr-STTTT"),
         category="submission", doc_number="05/TTr-STTTT")
    case("enc-name-rfc2231", build(nxt(), "Gửi văn bản", attachments=[
        attachment("Quyết định số 15_QĐ-UBND.pdf", make_pdf(["Phụ lục"], pages=1), style="2231")]),
         category="decision", doc_number="15/QĐ-UBND", evidence_includes=ev("doc_number@attachment_name"))
    case("enc-name-rfc2231-continued", build(nxt(), "Gửi văn bản", attachments=[
        attachment("Kế hoạch số 21_KH-STTTT triển khai.docx", make_docx(["Nội dung"]),
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document", style="2231-continued")]),
         category="plan", doc_number="21/KH-STTTT")
    case("enc-name-rfc2047", build(nxt(), "Gửi văn bản", attachments=[
        attachment("Tờ trình 09_TTr-SNV.pdf", make_pdf(["Phụ lục"], pages=1), style="2047")]),
         category="submission", doc_number="09/TTr-SNV")
    case("enc-name-nfd-mat", build(nxt(), "Gửi văn bản", attachments=[
        attachment(unicodedata.normalize("NFD", "MẬT - Báo cáo.pdf"), make_pdf(["Phụ lục"], pages=1))]),
         secrecy="mat", secrecy_strength="strong")
    case("enc-name-ctype-only", build(nxt(), "Gửi văn bản", attachments=[
        attachment("Biên bản họp.pdf", make_pdf(["Phụ lục"], pages=1), style="ctype-name-only")]),
         category="minutes")
    case("enc-html-only", build(nxt(), "Gửi anh chị", "<html><head><style>p{color:red}</style></head><body>"
                                "<p>THÔNG BÁO</p><p>Lịch tiếp công dân tháng 6</p><script>var x='MẬT';</script></body></html>",
                                html=True), category="announcement", secrecy="none")

    # ---- typed without diacritics ------------------------------------------------
    folded = [
        ("giay-moi", "Giay moi hop giao ban", "meeting_invitation", None),
        ("quyet-dinh-so", "Quyet dinh so 12/QD-UBND", "decision", "12/QĐ-UBND"),
        ("ke-hoach", "Ke hoach trien khai phan mem", "plan", None),
        ("bao-cao", "Bao cao ket qua thang 5", "report", None),
        ("to-trinh", "To trinh xin kinh phi", "submission", None),
        ("hd-huong-dan", "Huong dan so 03/HD-STTTT", "guidance", "03/HD-STTTT"),
        ("hd-hop-dong", "Hop dong so 03/HD-STTTT thue may chu", "administrative_other", "03/HĐ-STTTT"),
        ("da-du-an", "Du an so 02/DA-UBND", "administrative_other", "02/DA-UBND"),
        ("da-de-an", "De an so 02/DA-UBND ve chuyen doi so", "administrative_other", "02/ĐA-UBND"),
        ("cong-dien-cd", "Cong dien 04/CD-UBND ve phong chong bao", "official_telegram", "04/CĐ-UBND"),
        ("nd-legal", "Nghi dinh 13/2023/ND-CP ve bao ve du lieu ca nhan", "legal_normative", "13/2023/NĐ-CP"),
    ]
    for slug, subject, category, number in folded:
        exp = {"category": category}
        if number:
            exp["doc_number"] = number
        case(f"fold-{slug}", build(nxt(), subject, "Gui anh chi.\nTran trong."), **exp)

    # ---- attachments decide ---------------------------------------------------------
    case("att-pdf-giay-moi", build(nxt(), "Gửi văn bản", attachments=[pdf_att("vanban.pdf", gov_head(
        "07/GM-STTTT", "GIẤY MỜI", "Họp triển khai kế hoạch"))]),
         category="meeting_invitation", doc_number="07/GM-STTTT", doc_type="GM",
         evidence_includes=ev("doc_number@attachment_text"))
    case("att-pdf-title-only", build(nxt(), "Gửi văn bản", attachments=[pdf_att("vb.pdf", gov_head(
        None, "TỜ TRÌNH", "Về việc phê duyệt dự toán"))]), category="submission",
         evidence_includes=ev("title@attachment_text"))
    case("att-pdf-references-ignored", build(nxt(), "Gửi văn bản", attachments=[pdf_att("vb2.pdf", gov_head(
        "44/KH-STTTT", "KẾ HOẠCH", "Căn cứ Quyết định số 28/2018/QĐ-TTg của Thủ tướng Chính phủ;",
        "Thực hiện Công văn số 123/UBND-VX ngày 01/6/2025;"))]),
         category="plan", doc_number="44/KH-STTTT")
    case("att-docx-number", build(nxt(), "Gửi văn bản", attachments=[docx_att("vb.docx", ["BIÊN BẢN", "Họp Hội đồng"],
                                                                               table_head=HEADER_LEFT + ["Số: 02/BB-HĐ"])]),
         category="minutes", doc_number="02/BB-HĐ", evidence_includes=ev("doc_number@attachment_text"))
    case("att-pdf-named-bin", build(nxt(), "Gửi văn bản", attachments=[attachment("scan0001.bin", make_pdf(
        gov_head("19/TB-STTTT", "THÔNG BÁO")), "application/octet-stream")]),
         category="announcement", doc_number="19/TB-STTTT")
    case("att-fake-pdf", build(nxt(), "Gửi văn bản", attachments=[attachment("baocao.pdf", b"Khong phai PDF\r\n",
                                                                               "application/pdf")]),
         category="general", doc_number=None)
    case("att-corrupt-pdf", build(nxt(), "Gửi văn bản", attachments=[attachment("hong.pdf",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer << /Root 1 0 R >>\n%%EOF")]),
         category="general", evidence_includes=ev("attachment_skipped@attachment_text"))
    case("att-encrypted-pdf", build(nxt(), "Gửi văn bản", attachments=[attachment("khoa.pdf", make_encrypted_pdf(
        gov_head("20/BC-STTTT", "BÁO CÁO", stamp=["MẬT"])))]),
         secrecy="none", evidence_includes=ev("attachment_skipped@attachment_text"))
    case("att-corrupt-docx", build(nxt(), "Gửi văn bản", attachments=[attachment("hong.docx", b"PK\x03\x04broken",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document")]),
         category="general", evidence_includes=ev("attachment_skipped@attachment_text"))
    case("att-subject-wins-over-name", build(nxt(), "Tài liệu phục vụ họp Ban chỉ đạo", attachments=[
        attachment("Du_thao_Ke_hoach.docx", make_docx(["DỰ THẢO"]),
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document")]),
         category="meeting_material")
    case("att-symbol-beats-title", build(nxt(), "Kế hoạch chuyển đổi số năm 2025", attachments=[pdf_att(
        "qd.pdf", gov_head("31/QĐ-UBND", "QUYẾT ĐỊNH", "Ban hành Kế hoạch chuyển đổi số năm 2025"))]),
         category="decision", doc_number="31/QĐ-UBND",
         evidence_includes=ev("title@subject", "doc_number@attachment_text"))
    case("att-name-words", build(nxt(), "Gửi anh chị", attachments=[attachment("Bao_cao_quy_3.xlsx", make_xlsx_like(),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")]), category="report")

    # ---- calendar invitations ------------------------------------------------------
    case("cal-request", build(nxt(), "Họp giao ban", "Anh chị xem lịch.", extra_parts=[ics("REQUEST", "Họp giao ban")]),
         category="meeting_invitation", evidence_includes=ev("calendar_request@body"))
    case("cal-request-attached", build(nxt(), "Lịch họp", "Anh chị xem lịch.", attachments=[
        attachment("invite.ics", b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Hop\r\nEND:VEVENT\r\n"
                                 b"END:VCALENDAR\r\n", "text/calendar")]),
         category="meeting_invitation", evidence_includes=ev("calendar_request@attachment_text"))
    case("cal-publish", build(nxt(), "Lịch nghỉ", "Anh chị xem lịch.", extra_parts=[ics("PUBLISH", "Nghỉ lễ")]),
         category="general")
    case("cal-subject-title-wins", build(nxt(), "Báo cáo tiến độ dự án", "Lịch trình bày báo cáo.",
                                         extra_parts=[ics("REQUEST", "Báo cáo tiến độ")]), category="report")

    # ---- body -------------------------------------------------------------------------
    case("body-heading", build(nxt(), "Gửi anh chị", "BÁO CÁO\nKết quả thực hiện nhiệm vụ tháng 5"), category="report")
    case("body-number-line", build(nxt(), "Gửi văn bản", "Số: 88/STTTT-VP\nV/v đôn đốc báo cáo\nKính gửi: UBND các huyện"),
         category="official_letter", doc_number="88/STTTT-VP")
    case("body-reference-only", build(nxt(), "Gửi anh", "Anh xem lại Quyết định số 12/QĐ-UBND giúp em nhé."),
         category="general", doc_number=None)
    # "để biết" alone no longer decides: real forwards of news articles (tests/data/real/news) end so too.
    case("body-de-biet", build(nxt(), "Gửi văn bản", "Kính gửi Giám đốc Sở để biết, theo dõi."), category="general")
    case("body-de-biet-them-trap", build(nxt(), "Thông tin phần mềm", "Anh xem đường dẫn để biết thêm chi tiết."),
         category="general")
    case("body-kinh-gui-alone", build(nxt(), "Hỏi thăm", "Kính gửi anh Nam,\nEm hỏi thăm sức khỏe anh."),
         category="general")
    case("body-running-title-trap", build(nxt(), "Gửi anh", "Em gửi anh bản báo cáo và kế hoạch hôm qua nhé."),
         category="general")
    case("body-quoted-ignored", build(nxt(), "RE: Hỏi thăm", "Cảm ơn anh.\n> [MẬT] Báo cáo cũ\n> Quyết định số 12/QĐ-UBND"),
         secrecy="none", doc_number=None)

    # ---- headers --------------------------------------------------------------------
    case("hdr-category", build(nxt(), "Văn bản điện tử", headers={"X-GovVN-Category": "directive",
                                                                "X-GovVN-Doc-Number": "07/CT-UBND"}),
         category="directive", doc_number="07/CT-UBND", evidence_includes=ev("category_header@header"))
    case("hdr-general-ignored", build(nxt(), "Quyết định số 40/QĐ-UBND", headers={"X-GovVN-Category": "general"}),
         category="decision")

    # ---- malformed MIME ---------------------------------------------------------------
    case("bad-no-end-boundary", (
        "From: a@binhthuan.gov.vn\r\nTo: b@binhthuan.gov.vn\r\nSubject: =?utf-8?b?R2nhuqV5IG3hu51p?= hop\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nNoi dung\r\n--XX\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x"
    ).encode(), category="meeting_invitation")
    case("bad-base64", (
        "From: a@binhthuan.gov.vn\r\nSubject: =?utf-8?b?QsOhbyBjw6Fv?=\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64@@@\r\n"
    ).encode(), category="report")
    case("bad-no-headers", b"\r\n\r\nchi co noi dung\r\n", category="general")
    case("bad-empty", b"", category="general")
    case("bad-garbage-header", b"Subject: =?utf-8?q?=ZZ=ZZ?= [M\xe1\xba\xacT]\r\nContent-Type: text/plain; charset=\"\"\r\n\r\nx\r\n",
         secrecy="mat", secrecy_strength="strong")
    case("bad-nested-rfc822", (
        "From: a@binhthuan.gov.vn\r\nSubject: Fwd: thu cu\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n--OUT\r\nContent-Type: text/plain\r\n\r\nxem thu duoi\r\n"
        "--OUT\r\nContent-Type: message/rfc822\r\n\r\nSubject: Thong bao\r\nContent-Type: text/plain\r\n\r\nnoi dung\r\n--OUT--\r\n"
    ).encode(), category="general")
    case("bad-8bit-subject", "Subject: Kế hoạch số 77/KH-STTTT\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode("utf-8"),
         category="plan", doc_number="77/KH-STTTT")
    case("bad-latin1-subject", "Subject: Báo cáo tháng\r\n\r\nx\r\n".encode("latin-1"), category="report")
    del n


def main() -> None:
    define()
    for old in HERE.glob("*.eml"):
        old.unlink()
    for old in HERE.glob("*.expected.json"):
        old.unlink()
    for index, (name, raw, expected) in enumerate(CASES, start=1):
        stem = f"{index:03d}-{name}"
        (HERE / f"{stem}.eml").write_bytes(raw)
        (HERE / f"{stem}.expected.json").write_text(
            json.dumps(expected, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(CASES)} cases to {HERE}")


if __name__ == "__main__":
    main()
