"""Messages made from real issued documents, the ways clerks send them.

The documents are in ``documents/`` (their own text, as published; where each
came from and what it is are in ``manifest.jsonl`` and SOURCES.md). This module
builds, deterministically, a few messages from each one:

- ``pdf``: the page as a PDF attachment (fpdf2, DejaVu), lines wrapped where a
  printed page wraps them, a clerk's file name ("547-QĐ-UBND signed.pdf",
  "24_2025_TT-BCT-ke-hoach.pdf", "CV so 2618 BHXH.pdf", a date after the symbol);
  subject: the abstract after "V/v", as clerks write it for any kind of document.
- ``docx``: the page as DOCX (python-docx) whose header is a two-column table,
  the "V/v" abstract one long paragraph of the left cell, as công văn are typed;
  subject "Fw: " plus the title without diacritics.
- ``body``: the page pasted into the body; subject the title, the number and
  the abstract with diacritics.
- ``office``: the copy circulated before numbering: "Số:      /SYM" in the page
  (no number), subject "Fwd: V/v ...", as DOCX.

The expected result comes from the manifest (decided by reading each document),
never from the classifier. Nothing here is written to disk: the test builds the
messages in memory. ``python tests/data/real/make_messages.py DIR`` writes them
as .eml files for a look.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import email.policy
import email.utils
import functools
import io
import json
import pathlib
import re
import sys
import textwrap
import unicodedata
from email.message import EmailMessage

HERE = pathlib.Path(__file__).resolve().parent
FONT = pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
FIXED = datetime.datetime(2025, 6, 2, 8, 30, tzinfo=datetime.timezone.utc)

# Title words of the documents' types, as printed (upper case).
TITLES = ("THÔNG TƯ LIÊN TỊCH", "QUYẾT ĐỊNH", "KẾ HOẠCH", "CHỈ THỊ", "HƯỚNG DẪN", "THÔNG TƯ",
          "NGHỊ ĐỊNH", "NGHỊ QUYẾT", "BÁO CÁO", "TỜ TRÌNH", "THÔNG BÁO", "BIÊN BẢN", "GIẤY MỜI",
          "CÔNG ĐIỆN", "CHƯƠNG TRÌNH", "GIẤY PHÉP", "LUẬT", "LỊCH CÔNG TÁC", "QUY CHẾ")
_BODY_START = re.compile(r"^(Căn cứ|Thực hiện|Theo |Xét|Trong những|Thi hành|Kính gửi|ỦY BAN NHÂN DÂN TỈNH|"
                         r"CHỦ TỊCH|BỘ TRƯỞNG|_{3,}|Điều \d)")


@dataclasses.dataclass(frozen=True)
class Document:
    name: str
    url: str
    agency: str
    category: str
    number: str | None
    secrecy: str
    urgency: str
    text: str

    @property
    def is_letter(self) -> bool:
        return self.category == "official_letter"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    document: Document
    form: str
    message: bytes
    category: str
    number: str | None
    secrecy: str
    urgency: str


@functools.cache
def documents() -> tuple[Document, ...]:
    out = []
    for line in (HERE / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = (HERE / "documents" / row["file"]).read_text(encoding="utf-8")
        out.append(Document(row["file"].removesuffix(".txt"), row["url"], row["agency"], row["category"],
                            row["number"], row["secrecy"], row["urgency"], text))
    return tuple(out)


def fold(text: str) -> str:
    text = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return unicodedata.normalize("NFC", "".join(c for c in text if unicodedata.category(c) != "Mn"))


def _squash(text: str) -> str:
    return " ".join(text.split())


def abstract(doc: Document) -> tuple[str, str]:
    """(title, abstract) as printed: ("KẾ HOẠCH", "TRIỂN KHAI ..."), or ("", "báo cáo ...") for a công văn."""
    if doc.is_letter:
        m = re.search(r"V/v:?\s*(.+?)(?=\s*(?:Kính gửi|CỘNG H|Hà Nội,|Phan Rang|\n\s*\n|$))", doc.text, re.S)
        return "", _squash(m.group(1)).rstrip(".") if m else ""
    lines = [ln.strip() for ln in doc.text.splitlines()]
    joined_upper = [ln for ln in lines if ln]
    for i, line in enumerate(joined_upper):
        two = _squash(line + " " + (joined_upper[i + 1] if i + 1 < len(joined_upper) else ""))
        for title in TITLES:
            if line == title or (two == title and line != title and title.startswith(line)):
                start = i + (1 if line == title else 2)
                rest: list[str] = []
                for nxt in joined_upper[start:]:
                    if _BODY_START.match(nxt) or len(rest) > 8:
                        break
                    rest.append(nxt)
                return title, _squash(" ".join(rest))
    return "", ""


def _repeats_number(doc: Document, abstract_: str) -> bool:
    """Whether the title's abstract itself prints the document's number ("THÔNG TƯ ... SỐ 121/2004/TT-BTC")."""
    return bool(doc.number) and doc.number.upper().replace(" ", "") in abstract_.upper().replace(" ", "")


def _sentence(title: str) -> str:
    return title[:1] + title[1:].lower()


def _slash_to(number: str, sep: str) -> str:
    return number.replace("/", sep)


def _file_name(doc: Document, index: int) -> str:
    """A clerk's file name for the document's PDF."""
    number = doc.number or "van-ban"
    title, abs_ = abstract(doc)
    slug = "-".join(fold(abs_).lower().split()[:2]) or "van-ban"
    style = index % 5
    if doc.is_letter and style in (0, 3):
        num, _, sym = number.partition("/")
        return f"CV so {num} {fold(sym.split('-')[0])}.pdf"
    if style == 0:
        return f"{_slash_to(number, '-')} signed.pdf"
    if style == 1:
        return f"{_slash_to(number, '_')}-{slug}.pdf"
    if style == 2:
        return f"{_slash_to(number, '-')}-{(index % 27) + 1}-{(index % 11) + 1}.pdf"  # a date after the symbol
    if style == 3:
        return f"{fold(_sentence(title or 'Van ban')).replace(' ', '_')}_{_slash_to(number, '_')}.pdf"
    return f"{_slash_to(number, '_')}.pdf"


def _wrap(text: str, width: int = 86) -> list[str]:
    """The page's lines as a printed page wraps them (long paragraphs broken at ``width``)."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(textwrap.wrap(line, width) or [""])
    return out


def make_pdf(lines: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(FIXED)
    pdf.set_producer("mailgw real-document corpus")
    pdf.add_font("DejaVu", "", str(FONT))
    pdf.add_page()
    pdf.set_font("DejaVu", "", 10)
    for line in lines:
        pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _header_split(doc: Document) -> tuple[list[str], list[str], list[str], list[str]]:
    """(issuer lines, national lines, the rest before the title, from the title on) of the page."""
    lines: list[str] = []
    for ln in (ln.strip() for ln in doc.text.splitlines()):
        if lines and lines[-1] == "Số:" and ln:
            lines[-1] += " " + ln  # "Số:" and the number on two lines of the page: one line of the cell
        elif ln:
            lines.append(ln)
    left: list[str] = []
    right: list[str] = []
    rest: list[str] = []
    seen_nat = False
    for i, line in enumerate(lines):
        up = line.upper()
        if any(w in up for w in ("CỘNG", "ĐỘC LẬP", "CHỦ NGHĨA", "HỘI CHỦ", "VIỆT NAM", "HẠNH PHÚC")):
            seen_nat = True
            right.append(line)
            continue
        if re.match(r"^(Số\b|V/v)", line) or (not seen_nat and not right):
            left.append(line)
            continue
        if re.search(r"ngày\b|tháng \d", line) and len(line) < 60:
            right.append(line)
            continue
        if set(line) <= set("-—_*| "):
            continue
        rest = lines[i:]
        break
    return left, right, [], rest


def make_docx(doc: Document, *, office_copy: bool) -> bytes:
    import docx

    left, right, _, rest = _header_split(doc)
    d = docx.Document()
    table = d.add_table(rows=1, cols=2)
    lcell, rcell = table.rows[0].cells
    if office_copy:
        left = [_office(line, doc) for line in left]
    lcell.paragraphs[0].text = left[0] if left else ""
    title, abs_ = abstract(doc)
    for line in left[1:]:
        if line.startswith("V/v"):
            continue  # the abstract: one paragraph below
        else:
            lcell.add_paragraph(line)
    if doc.is_letter:
        lcell.add_paragraph("V/v " + abs_)  # one long paragraph, as typed in Word
    if office_copy:
        right = [_office(line, doc) for line in right]
    rcell.paragraphs[0].text = right[0] if right else ""
    for line in right[1:]:
        rcell.add_paragraph(line)
    for line in rest:
        d.add_paragraph(_office(line, doc) if office_copy else line)
    d.core_properties.created = FIXED.replace(tzinfo=None)
    d.core_properties.modified = FIXED.replace(tzinfo=None)
    out = io.BytesIO()
    d.save(out)
    return _fixed_zip(out.getvalue())


def _fixed_zip(data: bytes) -> bytes:
    """The DOCX with fixed member times (python-docx stamps the current time)."""
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2025, 6, 2, 8, 30, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def _office(line: str, doc: Document) -> str:
    """The office copy's "Số:" line: the number left blank for the clerk to fill in."""
    if not doc.number:
        return line
    num = re.escape(doc.number.partition("/")[0])
    return re.sub(r"(Số\s*:?\s*)" + num + r"(\s*/)", r"\g<1>     \g<2>", line, count=1)


def _message(subject: str, body: str, attachment: tuple[str, bytes, str] | None, index: int) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "vanthu.sct@example.gov.vn"
    msg["To"] = "vanthu.snv@example.gov.vn"
    msg["Subject"] = "SUBJECT-PLACEHOLDER"
    msg["Date"] = email.utils.format_datetime(FIXED + datetime.timedelta(minutes=index))
    msg["Message-ID"] = f"<real-{index}@example.gov.vn>"
    msg.set_content(body, charset="utf-8")
    if attachment is not None:
        name, data, ctype = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes().replace(b"SUBJECT-PLACEHOLDER", _encoded(subject), 1)


def _encoded(subject: str) -> bytes:
    """The subject as RFC 2047 encoded words that split between characters, never at a space.

    A mail client keeps a space inside an encoded word; Python's own folding puts it
    between two encoded words, where RFC 2047 section 6.2 makes a reader drop it.
    """
    if subject.isascii():
        return subject.encode("ascii")
    words: list[str] = []
    chunk = ""
    for ch in subject:
        if len((chunk + ch).encode("utf-8")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    return "\r\n ".join("=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?="
                         for w in words).encode("ascii")


_GREETING = "Văn thư gửi văn bản đến anh/chị để xử lý theo quy định.\nTrân trọng."


@functools.cache
def cases() -> tuple[Case, ...]:
    out: list[Case] = []
    for index, doc in enumerate(documents()):
        title, abs_ = abstract(doc)
        number = doc.number or ""
        heading = _sentence(title) if title else "Công văn"
        forms: list[tuple[str, str, str, tuple[str, bytes, str] | None, str | None]] = []
        # pdf: "V/v <abstract>" as the subject, the page as a wrapped PDF
        forms.append(("pdf", "V/v " + (abs_[:1].upper() + abs_[1:].lower() if abs_.isupper() else abs_),
                      _GREETING, (_file_name(doc, index), make_pdf(_wrap(doc.text)), "application/pdf"),
                      doc.number))
        # docx: "Fw: " and the title without diacritics
        forms.append(("docx", "Fw: " + fold(f"{heading} {abs_[:80].lower()}"), _GREETING,
                      (f"{_slash_to(number, '_') or 'van_ban'}.docx", make_docx(doc, office_copy=False),
                       "application/vnd.openxmlformats-officedocument.wordprocessingml.document"), doc.number))
        # body: the page pasted, the subject with the number
        sep = "số " if number else ""
        forms.append(("body", f"{heading} {sep}{number} {abs_.lower()}"[:200], doc.text, None, doc.number))
        # office: the copy circulated before numbering ("Số:      /KH-UBND"), subject "Fwd: V/v ..."
        forms.append(("office", "Fwd: V/v " + (abs_[:1].upper() + abs_[1:].lower() if abs_.isupper() else abs_),
                      _GREETING, ("CV ban luu.docx" if doc.is_letter else f"{fold(heading)} ban luu.docx",
                                  make_docx(doc, office_copy=True),
                                  "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                      doc.number if _repeats_number(doc, abs_) else None))
        for form, subject, body, attachment, expected_number in forms:
            seq = len(out)
            out.append(Case(f"{doc.name}:{form}", doc, form, _message(" ".join(subject.split()), body, attachment, seq),
                            doc.category, expected_number, doc.secrecy, doc.urgency))
    return tuple(out)


def main(argv: list[str]) -> int:
    target = pathlib.Path(argv[1]) if len(argv) > 1 else HERE / "out"
    target.mkdir(parents=True, exist_ok=True)
    for case in cases():
        (target / (case.id.replace(":", "-") + ".eml")).write_bytes(case.message)
    print(f"{len(cases())} messages in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
