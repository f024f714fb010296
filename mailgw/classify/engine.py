"""The classifier: which official document a message carries, its number/symbol, secrecy and urgency.

Reads, strongest evidence first: explicit ``X-GovVN-*`` headers, the subject (RFC 2047 decoded, reply and
forward prefixes stripped), the first lines of the text body, attachment file names,
iCalendar invitations, and the first page of PDF and DOCX attachments.

Category: a number/symbol outranks a title word, a title word outranks a body
phrase; within one kind the stronger source wins (header, subject, body, file name,
calendar, first page); within one source a specific title beats a generic one
("V/v", "Về việc", "Kính gửi") and the earlier beats the later. A number after
"căn cứ", "thực hiện", "theo"... is a reference to another document and does not
count; in a body or on a first page only a number after "Số:" or at the start of a
line is the document's own.

Headers: ``X-GovVN-Category``, ``X-GovVN-Doc-Type``, ``X-GovVN-Doc-Number``,
``X-GovVN-Secrecy``, ``X-GovVN-Urgency`` are a document system's declaration and
rank first, but they can only add: a header cannot declare ``general`` or secrecy
``none`` over what the message itself shows. ``Importance``/``Priority``/
``X-Priority`` never set urgency by themselves (mail clients set them freely, and
this gateway sets them on urgent mail); they only corroborate an ASCII "KHAN"
standing alone, which is otherwise too ambiguous (khan: dry, scarce) to count.

When a first page is read ("settled"): always, unless the category is already
fixed by a header, a number/symbol or a subject title AND a strong secrecy mark
already stands in the headers, subject or body. A "MẬT" stamp on a first page turns
an accepted message into a rejected one, so it must be looked at whenever secrecy is
not yet strong; once it is strong, the message is rejected whatever the page says
(a "GIẢI MẬT" stamp lifts only the marks of its own attachment, never the
subject's), so opening the file would change nothing.
"""
from __future__ import annotations

import binascii
import bisect
import dataclasses
import email.message
import re
import time
from collections.abc import Iterator
from typing import Any

from mailgw.classify import cues, docread
from mailgw.classify.vn import docnumber, secrecy
from mailgw.classify.vn import text as vtext
from mailgw.classify.vn.classification import CATEGORIES, Classification, Evidence
from mailgw.message.parsed import base64_payload, decoded_payload


@dataclasses.dataclass(frozen=True)
class ClassifyLimits:
    """How much of a message the classifier reads."""

    body_chars: int = 6000                 # the first lines of the text body
    body_lines: int = 60
    max_parts: int = 200                   # MIME parts looked at; the rest are ignored
    max_documents: int = 6                 # PDF/DOCX attachments whose first page is read
    total_seconds: float = 1.0             # CPU time for all first pages of one message
    read: docread.ReadLimits = docread.ReadLimits()
    # Agency codes (e.g. "STTTT") that make "456_STTTT-VP.pdf" a công văn number.
    known_issuers: frozenset[str] = frozenset()


# Kinds of category cue, strongest first.
# A symbol without its number ("Số:      /KH-UBND", an office copy) names the type as surely
# as a number does, but gives no number: it ranks between the two. A "DỰ THẢO" stamp on
# the page outranks both the blank symbol and the title of the draft: the page is not yet
# that document (a number would be: drafts have none).
_HEADER, _NUMBER, _DRAFT, _SYMBOL, _TITLE, _PHRASE = 6, 5, 4, 3, 2, 1
# Sources, strongest first (the reference's order), as the first item of _Cue.source:
# header 0, subject 1, body 2, attachment_name 3, calendar 4, attachment_text 5.

_NEWLINE = re.compile("\n")
_EVIDENCE_CAP = 48
_TEXT_CAP = 160


@dataclasses.dataclass
class _Cue:
    category: str
    kind: int
    where: str
    source: tuple[int, int]   # (source rank, attachment index)
    generic: bool
    folded: bool
    position: int
    text: str
    cue: str                  # the evidence name
    abbr: str | None = None
    doc: docnumber.DocNumber | None = None

    def order(self) -> tuple[int, bool, tuple[int, int], bool, int]:
        # Specific before generic wherever each was found: a "KẾ HOẠCH" title on the
        # page beats a "V/v" subject. A file name's number ranks below the page's.
        source = self.source
        if self.kind == _NUMBER and self.where == "attachment_name":
            source = (6, source[1])
        return (-self.kind, self.generic, source, self.folded, self.position)


@dataclasses.dataclass
class _Unit:
    """Secrecy marks found in one text unit (header, subject, body, or one attachment)."""

    marks: list[tuple[str, secrecy.Mark]] = dataclasses.field(default_factory=list)  # (where, mark)


@dataclasses.dataclass
class _State:
    limits: ClassifyLimits
    cues: list[_Cue] = dataclasses.field(default_factory=list)
    units: dict[str, _Unit] = dataclasses.field(default_factory=dict)
    urgency: list[tuple[str, secrecy.Mark]] = dataclasses.field(default_factory=list)
    notes: list[Evidence] = dataclasses.field(default_factory=list)
    doc_type_header: str | None = None
    importance_high: str | None = None
    raw: _RawHeaders | None = None  # the message's headers as received, by name

    def unit(self, name: str) -> _Unit:
        return self.units.setdefault(name, _Unit())

    def note(self, cue: str, where: str, text: str) -> None:
        self.notes.append(Evidence(cue, where, _clip(text)))


@dataclasses.dataclass(frozen=True)
class _Part:
    content_type: str
    filename: str | None
    is_attachment: bool
    charset: str | None
    part: email.message.Message

    def payload(self) -> bytes:
        if self.part.get("Content-Transfer-Encoding", "").strip().lower() == "base64":
            # A third of get_payload(decode=True)'s cost for a large file; it is kept as
            # the fallback for damaged base64, which it repairs as well as it can.
            encoded = self.part.get_payload()
            if isinstance(encoded, str):
                try:
                    return base64_payload(self.part, encoded)  # the attachment walker reads the same bytes
                except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
                    pass
        try:
            data = decoded_payload(self.part)
        except Exception:
            return b""
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            return data.encode("utf-8", "replace")
        return b""


def classify(msg: email.message.EmailMessage, *, limits: ClassifyLimits = ClassifyLimits()) -> Classification:
    """The classification of one message; never raises (malformed MIME gets a best-effort result)."""
    state = _State(limits, raw=_RawHeaders(msg))
    steps = (_read_headers, _read_subject, _read_body_and_attachments)
    for step in steps:
        try:
            step(msg, state)
        except Exception as exc:  # one unreadable source must not hide the others
            state.note("unreadable", "header" if step is _read_headers else "body",
                       f"{step.__name__.lstrip('_')}: {type(exc).__name__}")
    try:
        return _decide(state)
    except Exception as exc:  # last resort: never fail the message on our own bug
        return Classification(confidence=0.0, evidence=(Evidence("unreadable", "body", type(exc).__name__),))


# --- sources -------------------------------------------------------------------


def _raw_headers(msg: email.message.Message, name: str) -> list[str]:
    """A header's values as received: the parsed forms replace raw 8-bit bytes with U+FFFD."""
    wanted = name.lower()
    try:
        raw = [str(v) for k, v in msg.raw_items() if k.lower() == wanted]
    except Exception:
        try:
            raw = [str(v) for v in msg.get_all(name) or []]
        except Exception:
            raw = []
    return [" ".join(v.split()) for v in raw]


class _RawHeaders:
    """``_raw_headers(msg, name)`` for any name, the header list read once (the classifier asks for 14 names)."""

    def __init__(self, msg: email.message.Message):
        self.msg = msg
        self.by_name: dict[str, list[Any]] | None = {}
        try:
            for k, v in msg.raw_items():
                self.by_name.setdefault(k.lower(), []).append(v)
        except Exception:
            self.by_name = None  # each name read by _raw_headers, which falls back as it can

    def get(self, name: str) -> list[str]:
        if self.by_name is not None:
            try:
                return [" ".join(str(v).split()) for v in self.by_name.get(name.lower(), ())]
            except Exception:
                pass
        return _raw_headers(self.msg, name)


def _header_values(msg: email.message.Message, names: tuple[str, ...], raw: _RawHeaders | None = None) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in (raw.get(name) if raw is not None else _raw_headers(msg, name)):
            text = vtext.decode_header(value).strip()
            if text:
                out.append(text[:200])
    return out


def _read_headers(msg: email.message.Message, state: _State) -> None:
    for value in _header_values(msg, cues.CATEGORY_HEADERS, state.raw):
        category = value.strip().lower()
        if category in CATEGORIES and category != "general":
            state.cues.append(_Cue(category, _HEADER, "header", (0, 0), False, False, 0, value,
                                   "category_header"))
    for value in _header_values(msg, cues.TYPE_HEADERS, state.raw):
        state.doc_type_header = value
    for value in _header_values(msg, cues.NUMBER_HEADERS, state.raw):
        found = docnumber.find_all(value)
        if found:
            doc = found[0]
            state.cues.append(_Cue(doc.category, _NUMBER, "header", (0, 0), False, False, 0, doc.text,
                                   "doc_number", doc.type_code, doc))
    for value in _header_values(msg, cues.SECRECY_HEADERS, state.raw):
        level = _header_level(value, secrecy.SECRECY_LEVELS, {"mật": "mat", "tối mật": "toi_mat",
                                                              "tuyệt mật": "tuyet_mat"})
        if level not in (None, "none"):
            mark = secrecy.Mark("secrecy", level, True, False, value, 0)
            state.unit("header").marks.append(("header", mark))
    for value in _header_values(msg, cues.URGENCY_HEADERS, state.raw):
        level = _header_level(value, secrecy.URGENCY_LEVELS, {"khẩn": "khan", "thượng khẩn": "thuong_khan",
                                                              "hỏa tốc": "hoa_toc"})
        if level not in (None, "none"):
            state.urgency.append(("header", secrecy.Mark("urgency", level, True, False, value, 0)))
    for name in ("Importance", "Priority", "X-Priority", "X-MSMail-Priority"):
        for value in _header_values(msg, (name,), state.raw):
            low = value.lower()
            if low.startswith(("high", "urgent")) or low[:1] in ("1", "2"):
                state.importance_high = f"{name}: {value}"


def _header_level(value: str, levels: tuple[str, ...], words: dict[str, str]) -> str | None:
    low = value.strip().lower().replace("-", "_").replace(" ", "_")
    if low in levels:
        return low
    key = vtext.tone_key(value.strip())
    for word, level in words.items():
        if key == vtext.tone_key(word):
            return level
    return None


def _subject(msg: email.message.Message, headers: _RawHeaders | None = None) -> str:
    raw = headers.get("Subject") if headers is not None else _raw_headers(msg, "Subject")
    if not raw:
        return ""
    return vtext.strip_prefixes(" ".join(vtext.decode_header(raw[0]).split()))


def _read_subject(msg: email.message.Message, state: _State) -> None:
    subject = _subject(msg, state.raw)
    if not subject:
        return
    _scan(subject, "subject", (1, 0), state, unit="subject", headings_only=False)


def _walk(msg: email.message.Message, max_parts: int) -> Iterator[_Part]:
    """The message's leaf parts, defensively (a hardened walker will replace this)."""
    count = 0
    try:
        for part in msg.walk():
            count += 1
            if count > max_parts:
                return
            try:
                if part.is_multipart():
                    continue
                ctype = part.get_content_type()
                try:
                    name = part.get_filename()
                except Exception:
                    name = None
                filename = vtext.decode_header(name) if name else None
                try:
                    disposition = part.get_content_disposition()
                except Exception:
                    disposition = None
                try:
                    charset = part.get_content_charset()
                except Exception:
                    charset = None
                yield _Part(ctype, filename or None, disposition == "attachment" or bool(filename),
                            charset, part)
            except Exception:
                continue
    except Exception:  # a broken multipart tree: keep what was walked
        return


def _read_body_and_attachments(msg: email.message.Message, state: _State) -> None:
    parts = list(_walk(msg, state.limits.max_parts))
    body_part = next((p for p in parts if not p.is_attachment and p.content_type == "text/plain"), None)
    if body_part is None:
        body_part = next((p for p in parts if not p.is_attachment and p.content_type == "text/html"), None)
    if body_part is not None:
        text = vtext.decode_bytes(body_part.payload()[: state.limits.body_chars * 4], body_part.charset)
        if body_part.content_type == "text/html":
            text = vtext.html_to_text(text)
        _read_body(text, state)

    attachments = [p for p in parts if p.is_attachment or p.content_type == "text/calendar"]
    for index, part in enumerate(attachments, start=1):
        if part.filename:
            _scan(part.filename, "attachment_name", (3, index), state, unit=f"attachment{index}",
                  headings_only=False, filename=True)
    for index, part in enumerate(attachments, start=1):
        if part.content_type == "text/calendar" or (part.filename or "").lower().endswith(".ics"):
            _read_calendar(part, index, state)
    if not attachments or _settled(state):
        return  # no first page can change the outcome: do not even decode the files
    started = time.thread_time()
    elsewhere = 0.0  # CPU spent in PDF reader workers, which this thread's clock does not see
    opened = 0
    for index, part in enumerate(attachments, start=1):
        data = part.payload()
        kind = docread.sniff(data, part.filename or "", part.content_type)
        if kind is None:
            continue
        name = part.filename or f"({part.content_type})"
        if _settled(state):
            continue
        if opened >= state.limits.max_documents:
            state.note("attachment_skipped", "attachment_text", f"{name}: more than {opened} documents")
            continue
        left = state.limits.total_seconds - (time.thread_time() - started) - elsewhere
        if left <= 0:
            state.note("attachment_skipped", "attachment_text", f"{name}: time budget of the message used up")
            continue
        opened += 1
        read_limits = dataclasses.replace(state.limits.read, max_seconds=min(state.limits.read.max_seconds, left))
        page = docread.first_page(data, kind, read_limits)
        elsewhere += page.cpu
        if page.skipped:
            state.note("attachment_skipped", "attachment_text", f"{name}: {page.skipped}")
        if page.text:
            _scan(vtext.nfc(page.text), "attachment_text", (5, index), state, unit=f"attachment{index}",
                  headings_only=True)


def _read_body(text: str, state: _State) -> None:
    lines: list[str] = []
    size = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">"):
            continue  # quoted reply text belongs to another message
        lines.append(stripped)
        size += len(line)
        if len(lines) >= state.limits.body_lines or size >= state.limits.body_chars:
            break
    head = "\n".join(lines)[: state.limits.body_chars]
    if head:
        _scan(head, "body", (2, 0), state, unit="body", headings_only=True)
        if all(r.search("\n" + head) for r in cues.TIME_PLACE):
            state.cues.append(_Cue("meeting_invitation", _PHRASE, "body", (2, 0), False, False,
                                   0, "Thời gian: / Địa điểm:", "phrase", "GM"))


def _read_calendar(part: _Part, index: int, state: _State) -> None:
    raw = vtext.decode_bytes(part.payload()[:65536], part.charset)
    text = re.sub(r"\r?\n[ \t]", "", raw)  # RFC 5545 line unfolding
    if re.search(r"(?im)^METHOD\s*:\s*REQUEST\s*$", text):
        summary = re.search(r"(?im)^SUMMARY[^:\n]*:(.*)$", text)
        where = "attachment_text" if part.filename else "body"
        shown = "METHOD:REQUEST" + (f" SUMMARY:{summary.group(1).strip()}" if summary else "")
        state.cues.append(_Cue("meeting_invitation", _TITLE, where, (4, index), False, False, 0,
                               shown, "calendar_request", "GM"))


# --- scanning ------------------------------------------------------------------


def _scan(text: str, where: str, source: tuple[int, int], state: _State, *, unit: str,
          headings_only: bool, filename: bool = False) -> None:
    """Category, number, secrecy and urgency cues of one source text (NFC)."""
    text = vtext.nfc(text)
    shown = text
    if filename:
        # "Bao_cao_quy_3.pdf": separators become spaces so words can be found; same length.
        shown = re.sub(r"[_+]", " ", text)
    _, key, folded, spaced_low, spaced_folded = vtext.search_forms(shown)  # fold(lower) is fold(tone_key)
    _scan_numbers(text, shown, folded, where, source, state, headings_only=headings_only, filename=filename)
    _scan_titles(shown, key, folded, where, source, state, headings_only=headings_only,
                 spaced=(spaced_low, spaced_folded))
    if headings_only and "ự th" in shown.lower():  # "dự thảo" can only be there if this is
        draft = cues.DRAFT_STAMP.search(shown) or cues.DRAFT_CALL.match(shown)
        if draft is not None:
            state.cues.append(_Cue("draft_for_comment", _DRAFT, where, source, False, False, draft.start(),
                                   draft.group(0).strip(), "draft_stamp"))
    for mark in secrecy.scan_secrecy(shown, folded=folded):
        state.unit(unit).marks.append((where, mark))
    for mark in secrecy.scan_urgency(shown, corroborated=state.importance_high is not None, folded=folded):
        state.urgency.append((where, mark))


def _scan_numbers(text: str, shown: str, folded: str, where: str, source: tuple[int, int], state: _State, *,
                  headings_only: bool, filename: bool) -> None:
    if filename:
        doc = docnumber.find_in_filename(text, known_issuers=state.limits.known_issuers)
        docs = [doc] if doc else []
    else:
        docs = docnumber.find_all(text)
    own_found = False
    first_type = cues.SUBJECT_TYPE.search(folded) if where == "subject" else None
    for doc in docs:
        # "Số: 07/GM-STTTT" (with the colon) or a number opening a line is the document's own,
        # unless the line before names it as a reference ("Căn cứ Nghị định số\n171/2004/NĐ-CP").
        # The heading's "Số:" is a capital; "Báo cáo số: 127/BC-UBND" in a sentence is a reference.
        stated = ":" in doc.prefix and doc.prefix[:1].isupper()
        if headings_only and not (stated or _line_start(text, doc.prefix_start)):
            continue  # "Căn cứ Nghị định số ..." in the text of a letter: a reference
        if not filename and not stated and _is_reference(folded, doc.prefix_start):
            continue
        if first_type is not None and not stated and _about_another(folded, doc.prefix_start, first_type):
            continue  # "V/v vướng mắc ... Nghị định số 69/2018/NĐ-CP": what the letter is about
        own_found = own_found or stated
        state.cues.append(_Cue(doc.category, _NUMBER, where, source, False, not _marked(doc), doc.start,
                               doc.text, "doc_number", doc.type_code, doc))
    if not filename and not own_found:
        blank = docnumber.find_blank(text)
        if blank is not None:
            # The copy before numbering ("Số:      /KH-UBND"): its symbol still names the kind.
            category, code, symbol, at = blank
            state.cues.append(_Cue(category, _SYMBOL, where, source, False, False, at, f"Số: /{symbol}",
                                   "doc_symbol", code))


def _about_another(folded: str, pos: int, first_type: re.Match[str]) -> bool:
    """In a subject: whether the number at ``pos`` follows a type word that is not the subject's
    first ("Công văn ... và Nghị định số 69/2018/NĐ-CP"; after "V/v" every type word is the
    abstract's). "Quyết định số 25/QĐ-UBND" and "Của Bộ Tài chính số 121/2004/TT-BTC" are the own."""
    named = cues.SUBJECT_TYPE_BEFORE.search(folded, max(0, pos - 40), pos)
    return named is not None and first_type.start() < named.start()


def _marked(doc: docnumber.DocNumber) -> bool:
    return not any("without diacritics" in issue for issue in doc.issues)


def _line_start(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return pos - line_start <= 16 and not text[line_start:pos].strip(" \t:.-")


def _is_reference(folded: str, pos: int) -> bool:
    """Whether the number at ``pos`` names another document ("căn cứ", "sửa đổi ... của Thông tư số").

    Looks back at most 120 characters, to the start of the line, or of the line
    before when the number opens its line (a PDF wraps "Căn cứ Nghị định số" and
    its number onto two lines).
    """
    line_start = folded.rfind("\n", 0, pos) + 1
    low = line_start
    if pos - line_start <= 16 and not folded[line_start:pos].strip(" \t:.-"):
        low = folded.rfind("\n", 0, max(0, line_start - 1)) + 1
    window = folded[max(low, pos - 120):pos].replace("\n", " ")
    window = re.sub(r"\bs[o0]\s*:?\s*$", "", window)
    named = False  # the number follows a type word: "... Thông tư số"
    for _ in range(6):
        trimmed = cues.REF_TAIL.sub("", window)
        if trimmed == window:
            break
        named = named or bool(trimmed.strip()) and trimmed.rstrip() != window.rstrip()
        window = trimmed
    if cues.REF_END.search(window):
        return True
    # "Kết quả thực hiện ... Chỉ thị số", "sửa đổi ... của Thông tư số", "giấy phép ... số":
    # a type word after a reference word in the same clause.
    return named and bool(cues.REF_ANY.search(window))


def _scan_titles(shown: str, key: str, folded: str, where: str, source: tuple[int, int], state: _State, *,
                 headings_only: bool, spaced: tuple[str | None, str | None] = (None, None)) -> None:
    found: list[tuple[int, int, cues.CueDef, bool]] = []
    for m in cues.MARKED_CUES.finditer(key, spaced[0]):
        found.append((m.start(), m.end(), cues.MARKED[m.group(0)], False))
    # Marked matches do not overlap one another, so their ends are sorted as their
    # starts are: the only one a folded match can overlap is the first ending after it starts.
    ends = [f[1] for f in found]
    for m in cues.FOLDED_CUES.finditer(folded, spaced[1]):
        s, e = m.span()
        i = bisect.bisect_right(ends, s)
        if i < len(found) and found[i][0] < e:
            continue
        if not shown[s:e].isascii():
            continue  # "để ăn" folds to "de an": only text typed without marks may match folded
        found.append((s, e, cues.FOLDED[m.group(0)], True))
    found.sort(key=lambda f: f[0])
    titled = {True: False, False: False}  # generic?: a title of that sort already counted here
    newlines: list[int] | None = None  # where the lines end, found once (a long line stays linear)
    for start, end, cue, was_folded in found:
        if cues.NOT_A_CUE.match(folded, end):
            continue  # "để biết thêm" (for more details) is not "để biết" (for information)
        kind = _TITLE if cue.title else _PHRASE
        if kind == _TITLE and headings_only:
            if newlines is None:
                newlines = [m.start() for m in _NEWLINE.finditer(shown)]  # one C-speed pass
            i = bisect.bisect_left(newlines, start)
            line_start = newlines[i - 1] + 1 if i else 0
            line_end = newlines[i] if i < len(newlines) else len(shown)
            written = shown[start:end]
            if start - line_start > 16 or shown[line_start:start].strip(" \t-*•.:"):
                if not cue.anywhere:
                    continue  # a title word in running text ("gửi anh bản báo cáo") is no cue
                kind = _PHRASE  # "... có ý kiến chỉ đạo: ...": the formula, in running text
            elif not cue.generic and written[:1].islower():
                if not cue.anywhere:
                    continue  # a wrapped line of running text that happens to begin with "báo cáo"
                kind = _PHRASE
            elif line_end - line_start > 100 and not (cue.generic or written.isupper()):
                # A long line opening with a title word is a paragraph ("Kế hoạch số ... đã nêu"),
                # but a "V/v" abstract typed as one paragraph and a title in capitals are headings.
                if not cue.anywhere:
                    continue
                kind = _PHRASE
        if kind == _TITLE and not headings_only:
            # In a subject or file name the first title names the document; later ones are
            # what it is about ("Báo cáo tình hình thực hiện Quyết định ...").
            # After "V/v" only a purpose counts: "V/v triển khai Kế hoạch ..." is a công văn.
            if titled[cue.generic] or (titled[True] and not cue.purpose):
                continue
            titled[cue.generic] = True
        state.cues.append(_Cue(cue.category, kind, where, source, cue.generic, was_folded, start,
                               shown[start:end], "title" if kind == _TITLE else "phrase", cue.abbr))


# --- deciding ------------------------------------------------------------------


def _best(state: _State) -> _Cue | None:
    # A generic phrase alone ("Kính gửi anh Nam,") opens ordinary mail too: it never decides.
    deciding = [c for c in state.cues if not (c.kind == _PHRASE and c.generic)]
    best = min(deciding, key=_Cue.order, default=None)
    if best is not None and best.kind == _DRAFT:
        # The stamp makes a draft of its page's own title ("DỰ THẢO ... THÔNG TƯ"), and of a
        # subject that repeats it; a subject naming something else keeps its say: "Tài liệu
        # phục vụ họp" with a draft report attached is the meeting's material.
        drafted = {c.category for c in state.cues if c.source == best.source and c.kind in (_SYMBOL, _TITLE)}
        other = [c for c in deciding if c.kind == _TITLE and c.where in ("header", "subject") and not c.generic
                 and c.category not in drafted and c.category != "draft_for_comment"]
        if other:
            best = min(other, key=_Cue.order)
    return best


def _settled(state: _State) -> bool:
    """True when no first page can change the outcome (see the module docstring)."""
    best = _best(state)
    if best is None:
        return False
    category_fixed = best.kind >= _NUMBER or (best.kind == _TITLE and best.where in ("header", "subject"))
    if not category_fixed:
        return False
    level, strength, _ = _secrecy(state, units=("header", "subject", "body"))
    return strength == "strong"


def _secrecy(state: _State, units: tuple[str, ...] | None = None) -> tuple[str, str, list[tuple[str, secrecy.Mark]]]:
    """(level, strength, marks that count), each unit's marks lifted by its own GIẢI MẬT stamp."""
    counted: list[tuple[str, secrecy.Mark]] = []
    for name, unit in state.units.items():
        if units is not None and name not in units:
            continue
        declassified = any(m.kind == "declassified" for _, m in unit.marks)
        if declassified:
            continue
        counted.extend((w, m) for w, m in unit.marks if m.kind == "secrecy")
    strong = [m.level for _, m in counted if m.strong]
    weak = [m.level for _, m in counted if not m.strong]
    if strong:
        return secrecy.level_max(strong, secrecy.SECRECY_LEVELS), "strong", counted
    if weak:
        return secrecy.level_max(weak, secrecy.SECRECY_LEVELS), "weak", counted
    return "none", "none", counted


def _decide(state: _State) -> Classification:
    evidence: list[Evidence] = []
    best = _best(state)
    category = best.category if best else "general"
    numbers = sorted((c for c in state.cues if c.kind == _NUMBER), key=_Cue.order)
    number = numbers[0] if numbers else None
    number_text = _spelling(number, numbers) if number else None

    doc_type: str | None = None
    if state.doc_type_header:
        doc_type = state.doc_type_header
    elif number is not None and number.category == category and number.doc is not None:
        doc_type = number.doc.type_code
    elif best is not None and best.kind in (_SYMBOL, _TITLE, _PHRASE, _HEADER):
        doc_type = best.abbr or cues.ABBR_OF_CATEGORY.get(category)
    if category == "official_letter":
        doc_type = doc_type if state.doc_type_header else None

    # Evidence: every number and title, phrases only when they decided or agree.
    seen: set[tuple[str, str, str]] = set()

    def add(cue: str, where: str, text: str) -> None:
        item = (cue, where, _clip(text))
        if item not in seen and len(evidence) < _EVIDENCE_CAP:
            seen.add(item)
            evidence.append(Evidence(*item))

    for c in sorted(state.cues, key=lambda c: (c.source, c.position)):
        if c.kind >= _TITLE or c.category == category:
            add(c.cue, c.where, c.text)
        if c.doc is not None and c is number:
            for issue in c.doc.issues:
                add("doc_number_format", c.where, f"{c.doc.text}: {issue}")

    level, strength, counted = _secrecy(state)
    declassified = any(m.kind == "declassified" for u in state.units.values() for _, m in u.marks)
    for where, mark in counted:
        add("secrecy_stamp" if mark.strong else "secrecy_word", where, mark.text)
    for unit in state.units.values():
        for where, mark in unit.marks:
            if mark.kind == "declassified":
                add("declassified_stamp", where, mark.text)

    urgency = secrecy.level_max([m.level for _, m in state.urgency], secrecy.URGENCY_LEVELS)
    for where, mark in state.urgency:
        add("urgency", where, mark.text)
        if mark.folded and mark.level == "khan" and state.importance_high and not mark.text.isupper():
            add("urgency_hint", "header", state.importance_high)
    for note in state.notes:
        add(note.cue, note.where, note.text)

    return Classification(
        category=category, doc_type=doc_type, doc_number=number_text,
        secrecy=level, secrecy_strength=strength, declassified=declassified, urgency=urgency,
        confidence=_confidence(state, best), evidence=tuple(evidence),
    )


def _spelling(number: _Cue, numbers: list[_Cue]) -> str:
    """The number as the document writes it: the chosen number, unless another source spells the
    same number better ("Fw: ... so 01/2001/ttlt-tcbd-bca" typed by a clerk, "01/2001/TTLT-TCBĐ-BCA"
    on the page). ``numbers`` is in rank order; the first well-spelled one wins."""
    key = vtext.lower(vtext.fold(number.text))
    for cue in numbers:
        if vtext.lower(vtext.fold(cue.text)) == key and not _mangled(cue):
            return cue.text
    return number.text


def _mangled(cue: _Cue) -> bool:
    """Typed without diacritics (Đ lost) or with an agency group in lower case ("TTLT-tcbd")."""
    if cue.folded or cue.doc is None:
        return cue.folded
    groups = cue.doc.issuer.replace("/", "-").split("-")
    return any(g.isalpha() and g.islower() for g in groups)


def _confidence(state: _State, best: _Cue | None) -> float:
    if best is None:
        # No cue at all: "general" is likely right; an unreadable part makes it less so.
        return 0.6 if state.notes else 0.85
    base = {_HEADER: 0.97, _NUMBER: 0.95, _DRAFT: 0.9, _SYMBOL: 0.9, _PHRASE: 0.6}.get(best.kind)
    if base is None:
        base = {"subject": 0.88, "attachment_name": 0.75}.get(best.where, 0.8)
        if best.generic:
            base -= 0.08
    if best.folded:
        base -= 0.2  # typed without diacritics: HĐ/HD, ĐA/DA and mật/mặt/mất collide
    strong = [c for c in state.cues if c.kind >= _TITLE and c is not best]
    agree = {(c.source[0], c.kind) for c in strong if c.category == best.category} - {(best.source[0], best.kind)}
    disagree = [c for c in strong if c.category != best.category and not c.generic]
    base += min(0.04 * len(agree), 0.08)
    if disagree:
        base -= 0.1
    return max(0.05, min(0.99, base))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TEXT_CAP else text[: _TEXT_CAP - 1] + "…"



def limits_for(directory: Any) -> ClassifyLimits:
    """The limits with the directory's agencies as known issuers ("456_STTTT-VP.pdf" is a number).

    An agency's issuer group is its ``symbol``, else its code in capitals (and both
    without diacritics, as file names are often typed). The gateway builds them once
    per loaded directory, with its Context (``Context.classify_limits``).
    """
    if directory is None:
        return ClassifyLimits()
    symbols = [(a.symbol or a.code).upper() for a in directory.agencies]
    # File names are often typed without diacritics: SKHDT for SKHĐT.
    return ClassifyLimits(known_issuers=frozenset(symbols + [vtext.fold(s) for s in symbols]))

