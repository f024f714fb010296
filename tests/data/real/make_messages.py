"""Messages made from real issued documents, the ways clerks send them.

The documents are in ``documents/`` (their own text, as published; where each
came from and what it is are in ``manifest.jsonl`` and SOURCES.md). This module
builds, deterministically, a few messages from each one:

- ``pdf``: the page as a PDF attachment (fpdf2, DejaVu), lines wrapped where a
  printed page wraps them, a clerk's file name ("547-QĐ-UBND signed.pdf",
  "24_2025_TT-BCT-ke-hoach.pdf", "CV so 2618 BHXH.pdf", a date after the symbol);
  subject: the abstract after "V/v", as clerks write it for any kind of document.
- ``docx``: the page as DOCX (WordprocessingML) whose header is a two-column table,
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
_BODY_START = re.compile(r"^(Căn cứ|Căn |Thực hiện|Theo |Xét|Trong những|Thi hành|Kính gửi|ỦY BAN NHÂN DÂN TỈNH|"
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
        return "", _squash(m.group(1)).rstrip(".") if m else _first_words(doc)
    lines = [ln.strip() for ln in doc.text.splitlines()]
    joined_upper = [ln for ln in lines if ln]
    for i, line in enumerate(joined_upper):
        two = _squash(line + " " + (joined_upper[i + 1] if i + 1 < len(joined_upper) else ""))
        for title in TITLES:
            if line == title or (two == title and line != title and title.startswith(line)):
                start = i + (1 if line == title else 2)
                rest: list[str] = []
                for nxt in joined_upper[start:]:
                    if _BODY_START.match(nxt) or len(rest) > 8 or nxt.endswith(";"):
                        break  # a ground ("Căn cứ ...;"), even when the extraction lost its first letters
                    rest.append(nxt)
                return title, _squash(" ".join(rest))
    return "", _first_words(doc)


# Lines a clerk would not copy into a subject: the issuer, the authority, the grounds.
_NOT_SUBJECT = re.compile(r"^(Ủ[YỶ] BAN|U[ỶỲ] BAN|CHỦ TỊCH|HỘI ĐỒNG|BỘ TRƯỞNG|KHÓA|KHOÁ|Căn cứ|Xét|Theo đề nghị|"
                          r"ính quyền|Luật|ố \d|QUYẾT ĐỊNH:|Kính gửi|[-–] )")
_NATIONAL = re.compile(r"CỘNG H|ĐỘC LẬP|CHỦ NGHĨA|HẠNH PHÚC")


def _first_words(doc: Document) -> str:
    """For a page printed without a title (a site dropped it, a portal's post): its first line of text."""
    lines = [_squash(ln) for ln in doc.text.splitlines() if ln.strip()]
    start = 0
    if any(line.startswith("Số") for line in lines[:12]):  # a header: the text starts after its last line
        for i, line in enumerate(lines[:12]):
            if line.startswith("Số") or (re.search(r"ngày\b.*\d|tháng \d", line) and len(line) < 60):
                start = i + 1
    for line in lines[start:]:
        if set(line) <= set("-—_*| ") or (len(line) < 60 and _NATIONAL.search(line.upper())):
            continue
        if re.fullmatch(r"[\w\s,]*(tháng|năm)[\w\s]*\d+[\w\s]*", line) and len(line) < 30:
            continue  # the rest of a date wrapped onto its own line
        if _NOT_SUBJECT.match(line):
            continue
        return " ".join(line.split()[:14]).rstrip(",;:")
    return ""


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
    pdf.add_font("DejaVu", "", _font())
    pdf.add_page()
    pdf.set_font("DejaVu", "", 10)
    for line in lines:
        pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


# The characters a page of the corpus can hold: ASCII, Latin-1, the Latin extensions and
# the Vietnamese letters (U+1EA0-1EF9), combining marks, general punctuation.
_RANGES = ((0x20, 0x7F), (0xA0, 0x250), (0x300, 0x370), (0x1E00, 0x1F00), (0x2000, 0x2070), (0x2190, 0x2200))


@functools.cache
def _font() -> str:
    """DejaVu Serif cut down to the corpus's characters, once a run: fpdf2 parses and subsets the
    embedded font for every PDF it writes, most of a PDF's cost with the whole font (≈90 ms)."""
    import atexit
    import shutil
    import tempfile

    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(FONT))
    cutter = subset.Subsetter(subset.Options(notdef_outline=True, hinting=False, layout_features=[],
                                             drop_tables=["FFTM", "GPOS", "GSUB", "GDEF"]))
    cutter.populate(unicodes=[c for lo, hi in _RANGES for c in range(lo, hi)])
    cutter.subset(font)
    where = tempfile.mkdtemp(prefix="mailgw-real-")
    atexit.register(shutil.rmtree, where, True)
    path = str(pathlib.Path(where) / "DejaVuSerif-corpus.ttf")
    font.save(path)
    return path


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
    """The page as a DOCX: the header a two-column table (issuer and number left, the national
    motto and date right), the rest paragraphs. Written directly as WordprocessingML (what Word
    saves, without its styles part): python-docx took ≈45 ms a file, most of this test's time."""
    left, right, _, rest = _header_split(doc)
    if office_copy:
        left = [_office(line, doc) for line in left]
        right = [_office(line, doc) for line in right]
        rest = [_office(line, doc) for line in rest]
    title, abs_ = abstract(doc)
    lcell = left[:1] + [line for line in left[1:] if not line.startswith("V/v")]
    if doc.is_letter:
        lcell.append("V/v " + abs_)  # one long paragraph, as typed in Word
    body = (f"<w:tbl><w:tblPr><w:tblW w:w=\"0\" w:type=\"auto\"/></w:tblPr>"
            f"<w:tblGrid><w:gridCol w:w=\"4680\"/><w:gridCol w:w=\"4680\"/></w:tblGrid><w:tr>"
            f"<w:tc>{_paragraphs(lcell or [''])}</w:tc><w:tc>{_paragraphs(right or [''])}</w:tc></w:tr></w:tbl>"
            f"{_paragraphs(rest)}<w:sectPr/>")
    return _docx_package(body)


_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/></Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="word/document.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/'
        'core-properties" Target="docProps/core.xml"/></Relationships>'),
    "docProps/core.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dcterms="http://purl.org/dc/terms/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<dcterms:created xsi:type="dcterms:W3CDTF">2025-06-02T08:30:00Z</dcterms:created>'
        '<dcterms:modified xsi:type="dcterms:W3CDTF">2025-06-02T08:30:00Z</dcterms:modified>'
        '</cp:coreProperties>'),
}


def _paragraphs(lines: list[str]) -> str:
    from xml.sax.saxutils import escape

    return "".join(f'<w:p><w:r><w:t xml:space="preserve">{escape(line)}</w:t></w:r></w:p>' for line in lines)


def _docx_package(body: str) -> bytes:
    """The DOCX zip, its members dated at a fixed time (the same bytes on every run)."""
    import zipfile

    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<w:document xmlns:w="{_W_NS}"><w:body>{body}</w:body></w:document>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, text in (("[Content_Types].xml", _DOCX_PARTS["[Content_Types].xml"]),
                           ("_rels/.rels", _DOCX_PARTS["_rels/.rels"]),
                           ("docProps/core.xml", _DOCX_PARTS["docProps/core.xml"]),
                           ("word/document.xml", document)):
            info = zipfile.ZipInfo(name, date_time=(2025, 6, 2, 8, 30, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, text.encode("utf-8"))
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


def _about(title: str, abs_: str, doc: Document) -> str:
    """A "V/v ..." subject from the abstract (a clerk's sentence case for an upper-case one).

    A page printed without a title (a site dropped it, a portal's post) has no abstract
    to put after "V/v": the subject is its opening words, as a clerk copies a headline.
    """
    if not abs_:
        return "Gửi văn bản"
    if not title and not doc.is_letter:
        return abs_
    return "V/v " + (abs_[:1].upper() + abs_[1:].lower() if abs_.isupper() else abs_)


@functools.cache
def cases() -> tuple[Case, ...]:
    out: list[Case] = []
    for index, doc in enumerate(documents()):
        title, abs_ = abstract(doc)
        number = doc.number or ""
        heading = _sentence(title) if title else ("Công văn" if doc.is_letter else "Văn bản")
        forms: list[tuple[str, str, str, tuple[str, bytes, str] | None, str | None]] = []
        # pdf: "V/v <abstract>" as the subject, the page as a wrapped PDF
        forms.append(("pdf", _about(title, abs_, doc), _GREETING,
                      (_file_name(doc, index), make_pdf(_wrap(doc.text)), "application/pdf"), doc.number))
        # docx: "Fw: " and the title without diacritics
        forms.append(("docx", "Fw: " + fold(f"{heading} {abs_[:80].lower()}"), _GREETING,
                      (f"{_slash_to(number, '_') or 'van_ban'}.docx", make_docx(doc, office_copy=False),
                       "application/vnd.openxmlformats-officedocument.wordprocessingml.document"), doc.number))
        # body: the page pasted, the subject with the number
        sep = "số " if number else ""
        forms.append(("body", f"{heading} {sep}{number} {abs_.lower()}"[:200], doc.text, None, doc.number))
        # office: the copy circulated before numbering ("Số:      /KH-UBND"), subject "Fwd: V/v ..."
        forms.append(("office", "Fwd: " + _about(title, abs_, doc), _GREETING,
                      ("CV ban luu.docx" if doc.is_letter else f"{fold(heading)} ban luu.docx",
                       make_docx(doc, office_copy=True),
                       "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                      doc.number if _repeats_number(doc, abs_) else None))
        for form, subject, body, attachment, expected_number in forms:
            seq = len(out)
            out.append(Case(f"{doc.name}:{form}", doc, form, _message(" ".join(subject.split()), body, attachment, seq),
                            doc.category, expected_number, doc.secrecy, doc.urgency))
    return tuple(out)


# --- marked copies: the same pages with a secrecy or urgency stamp ------------------------

STAMPS = {"mat": "MẬT", "toi_mat": "TỐI MẬT", "tuyet_mat": "TUYỆT MẬT",
          "khan": "KHẨN", "thuong_khan": "THƯỢNG KHẨN", "hoa_toc": "HỎA TỐC"}


def stamped(text: str, secrecy: str, urgency: str) -> str:
    """The page with its stamps where Decree 30 (Phụ lục I) puts them: under the number/symbol,
    the secrecy stamp first (box 10a), the urgency stamp below it (box 10b), each a line of its own."""
    marks = [STAMPS[level] for level in (secrecy, urgency) if level != "none"]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*Số\s*:", line):
            at = i + 1
            if line.strip() == "Số:":  # the number on the next line of the published copy
                at += 1
            return "\n".join(lines[:at] + marks + lines[at:]) + "\n"
    raise ValueError("no 'Số:' line to stamp under")


@dataclasses.dataclass(frozen=True)
class Marked:
    document: Document
    secrecy: str
    urgency: str


@functools.cache
def marked() -> tuple[Marked, ...]:
    by_file = {doc.name + ".txt": doc for doc in documents()}
    out = []
    for line in (HERE / "marked.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        doc = by_file[row["file"]]
        out.append(Marked(dataclasses.replace(doc, text=stamped(doc.text, row["secrecy"], row["urgency"]),
                                              secrecy=row["secrecy"], urgency=row["urgency"]),
                          row["secrecy"], row["urgency"]))
    return tuple(out)


@functools.cache
def marked_cases() -> tuple[Case, ...]:
    """Each marked copy as a PDF attachment and pasted in the body (subjects as for the original)."""
    out: list[Case] = []
    for index, mark in enumerate(marked()):
        doc = mark.document
        title, abs_ = abstract(doc)
        heading = _sentence(title) if title else ("Công văn" if doc.is_letter else "Văn bản")
        sep = "số " if doc.number else ""
        forms = [("pdf", _about(title, abs_, doc), _GREETING,
                  (_file_name(doc, index), make_pdf(_wrap(doc.text)), "application/pdf")),
                 ("body", f"{heading} {sep}{doc.number or ''} {abs_.lower()}"[:200], doc.text, None)]
        for form, subject, body, attachment in forms:
            seq = 10_000 + len(out)
            out.append(Case(f"{doc.name}+{doc.secrecy}+{doc.urgency}:{form}", doc, form,
                            _message(" ".join(subject.split()), body, attachment, seq),
                            doc.category, doc.number, doc.secrecy, doc.urgency))
    return tuple(out)


# --- news articles about documents, forwarded "để biết" ------------------------------------


@dataclasses.dataclass(frozen=True)
class Article:
    name: str
    url: str
    outlet: str
    mentions: tuple[tuple[str, str], ...]  # (category, number as printed) of the documents it talks about
    text: str

    @property
    def headline(self) -> str:
        return next(ln.strip() for ln in self.text.splitlines() if ln.strip())


@dataclasses.dataclass(frozen=True)
class NewsCase:
    id: str
    article: Article
    form: str
    message: bytes


@functools.cache
def articles() -> tuple[Article, ...]:
    out = []
    for line in (HERE / "news.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = (HERE / "news" / row["file"]).read_text(encoding="utf-8")
        out.append(Article(row["file"].removesuffix(".txt"), row["url"], row["outlet"],
                           tuple((m["category"], m["number"]) for m in row["mentions"]), text))
    return tuple(out)


@functools.cache
def news_cases() -> tuple[NewsCase, ...]:
    """Each article forwarded "để biết": pasted under a forward header, and saved as a PDF."""
    out: list[NewsCase] = []
    for article in articles():
        forwarded = ("Gửi anh/chị để biết.\n\n---------- Forwarded message ---------\n"
                     f"From: Bản tin {article.outlet}\nSubject: {article.headline}\n\n{article.text}\n{article.url}\n")
        pdf = make_pdf(_wrap(article.text + "\n" + article.url))
        forms = [("forward", "Fw: " + article.headline, forwarded, None),
                 ("pdf", "Tin bài: " + article.headline, "Gửi anh/chị để biết, tham khảo.",
                  (fold(article.headline)[:40].strip().replace(" ", "_") + ".pdf", pdf, "application/pdf"))]
        for form, subject, body, attachment in forms:
            seq = 20_000 + len(out)
            out.append(NewsCase(f"{article.name}:{form}", article, form,
                                _message(" ".join(subject.split()), body, attachment, seq)))
    return tuple(out)


def main(argv: list[str]) -> int:
    target = pathlib.Path(argv[1]) if len(argv) > 1 else HERE / "out"
    target.mkdir(parents=True, exist_ok=True)
    every = (*cases(), *marked_cases(), *news_cases())
    for case in every:
        (target / (case.id.replace(":", "-") + ".eml")).write_bytes(case.message)
    print(f"{len(every)} messages in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
