"""The number/symbol ("số, ký hiệu") of a Vietnamese official document, for the classify stage.

Grammar from Decree 30/2020/NĐ-CP Art. 15 and Phụ lục I §II.3: ``Số: 05/QĐ-BNV``; ``456/STTTT-VP`` for a
công văn (no type code); ``30/2020/NĐ-CP`` for legal documents (with a year);
``29/2018/QH14`` for laws. Real input is sloppy (``5/QĐ-UBND``, ``25 / CT - UBND``,
``No. 25/CT-UBND``, ASCII ``QD``, ``_`` for ``/`` in file names): such numbers are
parsed and their faults listed in ``issues``; a number is never refused for its form.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterator

from mailgw.classify.vn import text as vtext

# Decree 30 abbreviations (Phụ lục III) plus the legal normative types NĐ, TT, TTLT.
TYPE_CODES = (
    "NQ", "QĐ", "CT", "QC", "QyĐ", "TC", "TB", "HD", "CTr", "KH", "PA", "ĐA", "DA", "BC", "BB",
    "TTr", "HĐ", "CĐ", "BGN", "BTT", "GUQ", "GM", "GGT", "GNP", "PG", "PC", "PB", "SY", "TrS", "SL",
    "NĐ", "TT", "TTLT",
    # Not in Phụ lục III but issued every day: joint guidance, permits, certificates,
    # joint working rules ("01/QCPH/UBND-UBMTTQ": quy chế phối hợp).
    "HDLN", "GP", "GCN", "QCPH",
)

# Category of each type code when the symbol has no year.
TYPE_CATEGORY = types.MappingProxyType({
    "GM": "meeting_invitation", "BC": "report", "TB": "announcement", "QĐ": "decision",
    "CT": "directive", "KH": "plan", "CTr": "programme", "TTr": "submission",
    "CĐ": "official_telegram", "BB": "minutes", "HD": "guidance", "GGT": "introduction_letter",
    "NĐ": "legal_normative", "TT": "legal_normative", "TTLT": "legal_normative",
    "HDLN": "guidance",
    **{code: "administrative_other" for code in (
        "NQ", "QC", "QyĐ", "TC", "PA", "ĐA", "DA", "HĐ", "BGN", "BTT", "GUQ", "GNP", "PG", "PC",
        "PB", "SY", "TrS", "SL", "GP", "GCN", "QCPH")},
})

# With a year these are legal normative documents (28/2018/QĐ-TTg, 12/2020/NQ-HĐND).
_LEGAL_WITH_YEAR = frozenset({"QĐ", "NQ", "NĐ", "TT", "TTLT"})

# Compare case-insensitively but keep Đ (D30 writes capitals; TTg, QyĐ, CTr are real).
_BY_LOWER = types.MappingProxyType({code.lower(): code for code in TYPE_CODES})
# Folding loses Đ. These folded spellings name only one code, so they are safe to restore.
_SAFE_FOLDED = types.MappingProxyType({"qd": "QĐ", "nd": "NĐ", "cd": "CĐ", "qyd": "QyĐ"})

_SYM = r"[A-Za-zĐđ][A-Za-zĐđ0-9&]*"
# A group after the first may join two bodies with a dot: "06/QC-TT.HĐND-UBND" (Thường trực HĐND).
# Capitals after the dot (case-sensitive inside the IGNORECASE pattern): "UBND.Theo" is a sentence.
_SYM_DOTTED = _SYM + r"(?-i:\.[A-ZĐ][A-ZĐ0-9&]*)*"
_DOC_NO = re.compile(
    # The lookahead only says what every match starts with (a prefix's S or N, or the
    # number); it lets the engine pass over other positions twice as fast.
    r"(?=[SN\d])"
    r"(?P<prefix>\b(?:S[ốoỐO]|No\.?)\s*:?\s*)?"
    r"(?<![\d/.])(?P<num>\d{1,5}(?:\.\d{1,3})?)\s*/\s*"
    r"(?:(?P<year>(?:19|20)\d{2})\s*/\s*)?"
    r"(?P<sym>" + _SYM + r"(?:\s*-\s*" + _SYM_DOTTED + r"){0,3})"
    # A joint document names its issuers after a second "/": "1213/2010/HDLN/STC-SCT".
    r"(?P<joint>\s*/\s*" + _SYM + r"(?:-" + _SYM + r"){0,3})?"
    r"(?!\w)",
    re.IGNORECASE,
)
# Every match holds a "/" right after its number (and the white space after that),
# followed by what the pattern needs after it: the year, if any, and a letter. A
# pattern that starts with a literal lets the regex engine jump from one "/" to the
# next (ten times faster than from digit to digit); see _matches.
_SLASH = re.compile(r"/\s*(?:(?:19|20)\d{2}\s*/\s*)?[A-Za-zĐđ]", re.IGNORECASE)
# In file names "/" cannot appear: "1896_QD-TTg_m_294779.doc", "30_2020_ND-CP.pdf".
_FILE_NO = re.compile(
    r"(?<![0-9A-Za-z])(?P<num>\d{1,5})[ _.-]+(?:(?P<year>(?:19|20)\d{2})[ _.-]+)?"
    r"(?P<type>[A-Za-zĐđ]{1,5})[-_](?P<rest>[A-Za-zĐđ0-9]{1,12}(?:-[A-Za-zĐđ0-9]{1,12}){0,2})"
    r"(?![A-Za-zĐđ0-9])"
)
# Joint documents whose issuers follow a second "/": "1213/2010/HDLN/STC-SCT".
_JOINT = frozenset({"HDLN", "TTLT", "NQLT", "QCPH"})
_LAW = re.compile(r"QH\d{1,3}", re.IGNORECASE)
# An agency's code standing alone after "Số: N/": capitals only ("HTS", "UBND", "SGDĐT").
_AGENCY = re.compile(r"[A-ZĐ]{2,10}")
_WORDY = re.compile(r"[a-zđ]{2}")


@dataclasses.dataclass(frozen=True)
class DocNumber:
    """One number/symbol found in a text."""

    text: str                 # canonical, as the document writes it: "5/QĐ-UBND", "30/2020/NĐ-CP"
    number: str               # "5" (kept as written: leading zeros are the sender's)
    year: str | None          # "2020" for legal documents
    type_code: str | None     # the D30 abbreviation; None for a công văn or a law
    issuer: str               # the groups after the type code ("UBND", "STTTT-VP", "QH14")
    category: str             # the category this symbol points to
    start: int                # span of the match in the searched text
    end: int
    prefixed: bool            # written after "Số" / "No."
    prefix: str               # that prefix as written ("Số: ", "số ", "No. "), else ""
    prefix_start: int         # where the prefix (or the number, without one) starts
    issues: tuple[str, ...]   # departures from Decree 30's form, in English


def _resolve_code(raw: str, context: str) -> tuple[str | None, list[str]]:
    """The canonical type code for a symbol group, and the notes about how it was read."""
    issues: list[str] = []
    low = raw.lower()
    code = _BY_LOWER.get(low)
    if code is None and low in _SAFE_FOLDED:
        code = _SAFE_FOLDED[low]
        issues.append(f"type code {raw} written without diacritics, read as {code}")
    if code is None:
        return None, issues
    if code == "HD" and raw.isascii():
        # HĐ (hợp đồng, contract) folds to HD (hướng dẫn, guidance): the title decides.
        if _mentions(context, "hợp đồng", "hop dong") and not _mentions(context, "hướng dẫn", "huong dan"):
            code = "HĐ"
            issues.append(f"type code {raw} read as HĐ (hợp đồng) from the title")
    elif code == "DA" and raw.isascii():
        # ĐA (đề án, scheme) folds to DA (dự án, project).
        if _mentions(context, "đề án", "de an") and not _mentions(context, "dự án", "du an"):
            code = "ĐA"
            issues.append(f"type code {raw} read as ĐA (đề án) from the title")
    if raw != code and not issues and raw.lower() == code.lower():
        issues.append(f"type code {raw} written in another case, read as {code}")
    return code, issues


def _mentions(context: str, marked: str, folded: str) -> bool:
    return marked in vtext.tone_key(context) or folded in vtext.lower(vtext.fold(context))


def _category(code: str | None, year: str | None, is_law: bool) -> str:
    if is_law:
        return "legal_normative"
    if code is None:
        return "legal_normative" if year else "official_letter"
    if year and code in _LEGAL_WITH_YEAR:
        return "legal_normative"
    return TYPE_CATEGORY.get(code, "administrative_other")


def _build(num: str, year: str | None, groups: list[str], *, start: int, end: int,
           prefix: str, prefix_start: int, issues: list[str], context: str,
           joint: str | None = None) -> DocNumber | None:
    # One group after the number: "2016/BTTTT" in "QCVN 102:2016/BTTTT", "24/7" are no document
    # numbers; but a công văn of a body without units is "Số: 63/HTS", "Số: 85/UBND", and a
    # joint document names its issuers after a second "/" ("01/QCPH/UBND-UBMTTQ").
    single = bool(prefix.strip().endswith(":") and len(groups) == 1 and _AGENCY.fullmatch(groups[0]))
    if not groups or (year is None and len(groups) < 2 and not joint and not single):
        return None
    is_law = bool(year and len(groups) == 1 and _LAW.fullmatch(groups[0]))
    code, notes = (None, []) if is_law else _resolve_code(groups[0], context)
    if single and code is not None and not joint:
        return None  # "Số: 12/QĐ": a type code with no issuer is not a công văn's agency
    issues = issues + notes
    rest = groups[1:] if code else groups
    if code is None and not is_law and len(groups) < 2 and year is None and not single:
        return None
    if len(num) == 1:
        issues.append("number below 10 without the leading zero")
    if code in ("NĐ", "TT", "TTLT") and year is None:
        issues.append(f"legal document type {code} without a year")
    head = f"{num}/{year}/" if year else f"{num}/"
    symbol = "-".join(([code] if code else []) + rest)
    if joint:
        symbol += "/" + joint
    return DocNumber(
        text=head + symbol, number=num, year=year, type_code=code, issuer="-".join(rest),
        category=_category(code, year, is_law), start=start, end=end, prefixed=bool(prefix),
        prefix=prefix, prefix_start=prefix_start,
        issues=tuple(issues),
    )


def find_all(text: str, *, context: str | None = None) -> list[DocNumber]:
    """Every number/symbol in ``text`` (NFC), in order; ``context`` settles HD/HĐ and DA/ĐA."""
    ctx = text if context is None else context
    found: list[DocNumber] = []
    for m in _matches(text):
        sym = m.group("sym")
        issues: list[str] = []
        spaced = bool(re.search(r"\s", m.group(0)[len(m.group("prefix") or ""):]))
        groups = [g.strip() for g in sym.split("-")]
        if spaced:
            # "07/GM-STTTT - Giay moi": a spaced dash followed by a word ends the symbol.
            kept = [groups[0]]
            for g in groups[1:]:
                if _WORDY.search(g):
                    break
                kept.append(g)
            groups = kept
            issues.append("spaces around '/' or '-'")
        prefix = m.group("prefix") or ""
        if prefix.lower().startswith("no"):
            issues.append("written with 'No.' instead of 'Số:'")
        end = m.end("sym") if len(groups) == len(sym.split("-")) else m.start("sym") + _span_of(sym, groups)
        joint = None
        joint_groups = [g.strip() for g in (m.group("joint") or "").strip().lstrip("/").split("-")]
        if (m.group("joint") and end == m.end("sym") and groups[0].upper() in _JOINT
                and all(any(c.isupper() for c in g) for g in joint_groups)):
            joint = "-".join(joint_groups)
            end = m.end()
        doc = _build(m.group("num"), m.group("year"), groups, start=m.start("num"), end=end,
                     prefix=prefix, prefix_start=m.start(), issues=issues, context=ctx, joint=joint)
        if doc is not None:
            found.append(doc)
    return found


def _matches(text: str) -> Iterator[re.Match[str]]:
    """What ``_DOC_NO.finditer(text)`` yields, with the pattern tried only where a match can start.

    finditer tries the pattern at every character (0.17 ms for a 4,000-character
    body, most of the number search). A match starts at its number, or at the
    "Số"/"No." before it: at most three characters before the white space and
    colons that precede the number's digits, which end (after white space) at a
    "/" that _SLASH finds. Trying, slash by slash, every position from there to the
    number's first digit finds every match finditer finds; the first that matches
    at or after the end of the previous match is the one finditer would give next
    (a later slash's positions all lie after this slash's number, or cannot hold a
    match: "Số"/"No." has no digit and no "/").
    """
    pos = 0  # where finditer would go on from: the end of the last match
    at = 0
    while (slash := _SLASH.search(text, at)) is not None:
        at = slash.start() + 1
        last = slash.start()  # the number's last digit, before the white space (\s is isspace)
        while last > 0 and text[last - 1].isspace():
            last -= 1
        last -= 1
        if last < 0 or not text[last].isdecimal():  # \d is a decimal digit
            continue
        first = last  # the number's first digit ...
        while first > 0 and (text[first - 1].isdecimal()
                             or (text[first - 1] == "." and first > 1 and text[first - 2].isdecimal())):
            first -= 1  # "66.18/2026/NQ-CP": a dotted number
        space = first  # ... and the white space and colons before it
        while space > 0 and (text[space - 1].isspace() or text[space - 1] == ":"):
            space -= 1
        for start in range(max(pos, space - 3), first + 1):
            m = _DOC_NO.match(text, start)
            if m is not None:
                yield m
                pos = m.end()
                at = max(at, pos)
                break


def _span_of(sym: str, groups: list[str]) -> int:
    """Length of the part of ``sym`` covered by its first ``len(groups)`` groups."""
    pos = 0
    for i, g in enumerate(groups):
        pos = sym.index(g, pos) + len(g)
    return pos


def find_in_filename(name: str, *, known_issuers: frozenset[str] = frozenset()) -> DocNumber | None:
    """The number/symbol in an attachment's file name, where "/" became "_" or similar.

    Accepted only when the type group is a known type code (or a configured agency
    code, for a công văn): "12_ab-cd.pdf" is not a document number.
    """
    direct = find_all(name)
    if direct:
        return direct[0]
    for m in _FILE_NO.finditer(name):
        groups = [m.group("type")] + m.group("rest").split("-")
        # What follows the symbol in a file name is a slug or a date, not a symbol group:
        # "24_2025_TT-BCT-ke-hoach.pdf", "7432-UBND-XD-21-7.pdf". Symbol groups are capitals.
        for i in range(1, len(groups)):
            if groups[i].isdigit() or not any(c.isupper() for c in groups[i]):
                groups = groups[:i]
                break
        low = groups[0].lower()
        if low not in _BY_LOWER and low not in _SAFE_FOLDED:
            if groups[0].upper() not in {k.upper() for k in known_issuers}:
                continue
        doc = _build(m.group("num"), m.group("year"), groups, start=m.start(), end=m.end(),
                     prefix="", prefix_start=m.start(), issues=["file name: '/' written as '_' or '-'"], context=name)
        if doc is not None:
            return doc
    return None


def parse(text: str) -> DocNumber | None:
    """The first number/symbol in ``text``, or None."""
    found = find_all(vtext.nfc(text))
    return found[0] if found else None


# The office copy before numbering: "Số:      /KH-UBND", "Số:   /2024/QĐ-UBND".
# "S(?<!\w.)" is "\bS" (S is a word character: the boundary is no word character
# before it) with the literal first, so the engine jumps from S to S instead of trying
# every position of the body: 8 against 156 us for a 3,500-character letter
# (tests/test_fast_paths.py holds it to the "\bS" pattern).
_BLANK = re.compile(r"S(?<!\w.)[ốoỐO]\s*(?::[ \t.…]*)?/\s*(?:(?P<year>(?:19|20)\d{2})\s*/\s*)?"
                    r"(?P<sym>" + _SYM + r"(?:-" + _SYM + r"){0,3})(?!\w)")


def find_blank(text: str) -> tuple[str, str | None, str, int] | None:
    """(category, type code, symbol as written, position) of a "Số: /SYM" without its number, or None.

    The symbol still names the kind of document (and a year still makes it a legal
    normative one); there is no number to report.
    """
    if "/" not in text:
        return None
    m = _BLANK.search(text)
    if m is None:
        return None
    groups = m.group("sym").split("-")
    year = m.group("year")
    if year is None and len(groups) < 2:
        return None
    is_law = bool(year and len(groups) == 1 and _LAW.fullmatch(groups[0]))
    code, _ = (None, []) if is_law else _resolve_code(groups[0], text)
    return _category(code, year, is_law), code, m.group(0).split("/", 1)[1].strip(), m.start()
