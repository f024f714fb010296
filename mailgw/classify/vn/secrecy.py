"""Secrecy ("độ mật") and urgency ("độ khẩn") markings, for the classify stage.

The marks are those of the Law on Protection of State Secrets (2018) and its stamps;
how strongly each counts is this gateway's reading. A false secrecy block stops
legitimate work and a missed one breaks the law, so the two strengths differ:

- strong (the policy rejects): the stamp itself, "MẬT", "TỐI MẬT", "TUYỆT MẬT" in
  capitals standing alone on its line, in brackets with a capital ("[Mật]", not "(mật)"), or as the
  value of a "Độ mật:" label; "TỐI MẬT"/"TUYỆT MẬT" in capitals anywhere; ASCII
  "TOI MAT"/"TUYET MAT" in capitals written as a stamp (alone or in brackets).
- weak (the policy only tags): "mật" in running text outside the exclusion list
  (a lower-case "(mật)" included),
  "bí mật nhà nước" as a description, a capital "MẬT" inside a phrase, and every
  other ASCII form, since "mat" is also mặt and mất.
- never evidence: the exclusion list ("mật khẩu", "bảo mật", "mật độ", "mật mã",
  "mật ong", the name of the Law on Protection of State Secrets and its work), and
  "Độ mật: Thường/Không".

"GIẢI MẬT" in capitals (or bracketed, or as a "Độ mật:" value) is a declassification
stamp. The caller applies it to the marks of the same text unit only (one
attachment, or the subject): a declassified attachment does not lift a "[MẬT]"
subject. ASCII "GIAI MAT" never lifts anything (folded evidence must not decide).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re

from mailgw.classify.vn import text as vtext

SECRECY_LEVELS = ("none", "mat", "toi_mat", "tuyet_mat")
URGENCY_LEVELS = ("none", "khan", "thuong_khan", "hoa_toc")

_SECRECY_OF = {"tuyệt mật": "tuyet_mat", "tối mật": "toi_mat", "mật": "mat",
               "tuyet mat": "tuyet_mat", "toi mat": "toi_mat", "mat": "mat"}
_URGENCY_OF = {"hỏa tốc": "hoa_toc", "thượng khẩn": "thuong_khan", "khẩn": "khan",
               "hoa toc": "hoa_toc", "thuong khan": "thuong_khan", "khan": "khan"}


def _key(phrase: str) -> str:
    return vtext.tone_key(vtext.nfc(phrase))


# Exclusions, in tone_key form (lower case, one tone placement).
_EXCLUDED = tuple(_key(p) for p in (
    "luật bảo vệ bí mật nhà nước", "bảo vệ bí mật nhà nước", "danh mục bí mật nhà nước",
    "mật khẩu", "bảo mật", "mật độ", "mật mã", "mật ong", "thân mật", "mật thiết", "mật thám",
    "không mật",  # "Độ mật: không mật", "tài liệu không mật": says the document is NOT secret
))
_EXCLUDED_FOLDED = ("bao ve bi mat nha nuoc", "danh muc bi mat nha nuoc", "mat khau", "bao mat", "khong mat",
                    "mat do", "mat ma", "mat ong", "than mat", "mat thiet", "toi mat mui")
_URGENCY_EXCLUDED = tuple(_key(p) for p in (
    "khẩn trương", "khẩn cấp", "khẩn thiết", "khẩn khoản", "khẩn hoang", "khẩn cầu", "khẩn nguyện",
))
_URGENCY_EXCLUDED_FOLDED = ("khan truong", "khan cap", "khan thiet", "khan hiem", "khan tieng",
                            "khan hoang", "khan gia", "khan quang", "khan ten", "khan mat")

_EXCL_RE = re.compile("|".join(re.escape(p) for p in _EXCLUDED))
_EXCL_FOLDED_RE = re.compile("|".join(re.escape(p) for p in _EXCLUDED_FOLDED))
_UEXCL_RE = re.compile("|".join(re.escape(p) for p in _URGENCY_EXCLUDED))
_UEXCL_FOLDED_RE = re.compile("|".join(re.escape(p) for p in _URGENCY_EXCLUDED_FOLDED))

_SECRET_RE = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, [
    _key("giải mật"), _key("tuyệt mật"), _key("tối mật"), _key("mật")])) + r")(?!\w)")
_SECRET_FOLDED_RE = re.compile(r"(?<![\w])(?:giai mat|tuyet mat|toi mat|mat)(?![\w])")
_URGENT_RE = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, [
    _key("hỏa tốc"), _key("thượng khẩn"), _key("khẩn")])) + r")(?!\w)")
_URGENT_FOLDED_RE = re.compile(r"(?<!\w)(?:hoa toc|thuong khan|khan)(?!\w)")
# What every match of _SECRET_RE / _URGENT_RE holds (see _may_mark).
_SECRET_WORDS = (_key("mật"),)
_URGENT_WORDS = (_key("khẩn"), _key("hỏa tốc"))

# "Độ mật: Mật", "Độ khẩn: Thượng khẩn", also folded "Do mat:".
_LABEL_RE = re.compile(
    r"(?<!\w)(?:(?P<secrecy>" + re.escape(_key("độ mật")) + r"|do mat)"
    r"|(?P<urgency>" + re.escape(_key("mức độ khẩn")) + r"|muc do khan|" + re.escape(_key("độ khẩn"))
    + r"|do khan))\s*[:：]\s*(?P<value>[^\n,;|]{0,30})")
# Characters that may surround a stamp standing alone on its line.
_SEPARATORS = set("[](){}<>-–—:|/,;.*\"'«»“”!#")


@dataclasses.dataclass(frozen=True)
class Mark:
    """One secrecy, declassification or urgency marking found in a text."""

    kind: str       # "secrecy", "declassified" or "urgency"
    level: str      # secrecy: mat/toi_mat/tuyet_mat; urgency: khan/thuong_khan/hoa_toc; "giai_mat"
    strong: bool    # secrecy: written as a stamp (see the module docstring)
    folded: bool    # found only in text typed without diacritics
    text: str       # as written
    start: int


def _alone(line: str, start: int, end: int) -> bool:
    """True when line[start:end] has nothing but separators or spaces on either side."""
    before = line[:start].rstrip()
    after = line[end:].lstrip()
    ok_before = not before or before[-1] in _SEPARATORS
    ok_after = not after or after[0] in _SEPARATORS
    if ok_before and ok_after:
        return True
    # A PDF's two-column header puts the stamp beside other text, two spaces or a tab away.
    gap_before = len(line[:start]) - len(before)
    gap_after = len(line[end:]) - len(after)
    return (ok_before or gap_before >= 2 or "\t" in line[len(before):start]) and \
           (ok_after or gap_after >= 2 or "\t" in line[end:end + gap_after])


def _bracketed(line: str, start: int, end: int) -> bool:
    before = line[:start].rstrip()
    after = line[end:].lstrip()
    return bool(before) and bool(after) and before[-1] in "[({<«" and after[0] in "])}>»"


def _spans(regex: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in regex.finditer(text)]


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in spans)


def _labels(line: str, key: str, folded: str) -> list[re.Match[str]]:
    """"Độ mật:"/"Độ khẩn:" labels: marked ones in ``key``, typed-without-marks ones in ``folded``."""
    found = list(_LABEL_RE.finditer(key))
    taken = {m.start() for m in found}
    for m in _LABEL_RE.finditer(folded):
        if m.start() not in taken and line[m.start():m.start("value")].isascii():
            found.append(m)
    return found


def _may_mark(line: str, low: str, key: str, words: tuple[str, ...], ascii_words: tuple[str, ...]) -> bool:
    """Whether the searches of a line can find a marking in it: a label (it has a colon), a
    marked word (in ``key``, its tone_key form) or an ASCII one (in ``low``, its lower case)."""
    return ":" in line or "：" in line or any(w in key for w in words) or any(w in low for w in ascii_words)


def _lines_with(text: str, folded_text: str, needles: tuple[str, ...]) -> list[tuple[int, str]]:
    """(offset, line) for each line of ``text`` (``splitlines``, endings dropped) whose part of ``folded_text`` holds one of ``needles``.

    In order. Found from where the needles are rather than by testing every line: a
    body's sixty lines cost more than the one or two that hold a marking. A needle
    holds no line break, so each place it occurs lies inside one line.
    """
    parts = text.splitlines(keepends=True)
    starts = list(itertools.accumulate(map(len, parts), initial=0))
    found: set[int] = set()
    for needle in needles:
        at = folded_text.find(needle)
        while at >= 0:
            found.add(bisect.bisect_right(starts, at) - 1)
            at = folded_text.find(needle, at + 1)
    return [(starts[i], parts[i].rstrip("\r\n")) for i in sorted(found)]


def _folded(text: str, folded: str | None) -> str:
    """``fold(lower(text))``, or the caller's copy of it (``fold(tone_key(text))`` is the same)."""
    if folded is None or len(folded) != len(text):
        return vtext.fold(vtext.lower(text))
    return folded


def scan_secrecy(text: str, *, folded: str | None = None) -> list[Mark]:
    """Secrecy and declassification marks in ``text`` (NFC), in order.

    ``folded``: ``text`` lower-cased and folded, when the caller has it already.
    """
    marks: list[Mark] = []
    if "m" not in text and "M" not in text:
        return marks  # every marking contains the letter m: skip the common case cheaply
    folded_text = _folded(text, folded)
    if "mat" not in folded_text:
        return marks  # every marking, label or stamp, folds to something with "mat"
    for offset, line in _lines_with(text, folded_text, ("mat",)):
        low, key, folded = vtext.forms(line)
        if not _may_mark(line, low, key, _SECRET_WORDS, ("mat",)):
            continue  # "mặt", "mất"
        skip = _spans(_EXCL_RE, key) + _spans(_EXCL_FOLDED_RE, folded)
        for m in _labels(line, key, folded):
            if not m.group("secrecy"):
                continue
            skip.append(m.span())
            mark = _label_value(line, m.start("value"), m.end("value"), offset)
            if mark is not None:
                marks.append(mark)
        for m in _SECRET_RE.finditer(key):
            s, e = m.span()
            if _inside(skip, s, e):
                continue
            written = line[s:e]
            word = m.group(0)
            upper = written.isupper()
            if word == _key("giải mật"):
                if upper or _bracketed(line, s, e):
                    marks.append(Mark("declassified", "giai_mat", True, False, written, offset + s))
                continue
            level = _SECRECY_OF[word]
            # A stamp is written in capitals ("[MẬT]", "(Mật)"); a lower-case "(mật)" in a
            # subject is a clerk's word, weak like any lower-case "mật".
            capital = written[:1].isupper()
            strong = (_bracketed(line, s, e) and capital) or (upper and (level != "mat" or _alone(line, s, e)))
            marks.append(Mark("secrecy", level, strong, False, written, offset + s))
        for m in _SECRET_FOLDED_RE.finditer(folded):
            s, e = m.span()
            written = line[s:e]
            if not written.isascii() or _inside(skip, s, e) or m.group(0) == "giai mat":
                continue
            level = _SECRECY_OF[m.group(0)]
            upper = written.isupper()
            if level == "mat" and not upper:
                continue  # lower-case "mat": mặt, mất, mát... not evidence at all
            if level == "toi_mat" and not upper:
                continue  # "toi mat" is also "tối mặt" (busy)
            strong = upper and level != "mat" and (_alone(line, s, e) or _bracketed(line, s, e))
            marks.append(Mark("secrecy", level, strong, True, written, offset + s))
    return marks


def _label_value(line: str, start: int, end: int, offset: int) -> Mark | None:
    """The mark a "Độ mật: ..." / "Độ khẩn: ..." label's value stands for, or None ("Thường")."""
    value = line[start:end].strip().strip(".").strip()
    key = vtext.tone_key(value)
    folded = vtext.fold(key)
    is_ascii = value.isascii()
    for phrase, level in _SECRECY_OF.items():
        probe = folded if phrase.isascii() else key
        if phrase.isascii() != is_ascii:
            continue
        if re.match(re.escape(phrase) + r"(?!\w)", probe):
            if probe.startswith(("giai", _key("giải"))):
                break
            # A marked value after the label is the stamp; ASCII "Do mat: TOI MAT" too,
            # but ASCII "Mat" stays weak (mặt, mất).
            strong = not is_ascii or (level != "mat" and value[: len(phrase)].isupper())
            return Mark("secrecy", level, strong, is_ascii, value, offset + start)
    if key.startswith(_key("giải mật")) and not is_ascii:
        return Mark("declassified", "giai_mat", True, False, value, offset + start)
    for phrase, level in _URGENCY_OF.items():
        probe = folded if phrase.isascii() else key
        if phrase.isascii() != is_ascii:
            continue
        if re.match(re.escape(phrase) + r"(?!\w)", probe):
            return Mark("urgency", level, True, is_ascii, value, offset + start)
    return None


def scan_urgency(text: str, *, corroborated: bool = False, folded: str | None = None) -> list[Mark]:
    """Urgency marks in ``text`` (NFC), in order.

    "HỎA TỐC" and "THƯỢNG KHẨN" count in any case. A bare "khẩn" counts in capitals
    or standing alone ("Khẩn: Giấy mời", "[Khẩn]"), never in "khẩn trương" (promptly)
    or "khẩn cấp" (emergency, the content). ASCII "KHAN" (also khan: dry, scarce)
    counts only in capitals standing alone, or when ``corroborated`` (the message is
    flagged high importance). ``folded``: ``text`` lower-cased and folded, when the
    caller has it already.
    """
    marks: list[Mark] = []
    folded_text = _folded(text, folded)
    if "khan" not in folded_text and "hoa toc" not in folded_text:
        return marks  # every marking, label or stamp, folds to something with one of these
    for offset, line in _lines_with(text, folded_text, ("khan", "hoa toc")):
        low, key, folded = vtext.forms(line)
        if not _may_mark(line, low, key, _URGENT_WORDS, ("khan", "hoa toc")):
            continue  # "khó khăn"
        skip = _spans(_UEXCL_RE, key) + _spans(_UEXCL_FOLDED_RE, folded)
        for m in _labels(line, key, folded):
            if not m.group("urgency"):
                continue
            skip.append(m.span())
            mark = _label_value(line, m.start("value"), m.end("value"), offset)
            if mark is not None and mark.kind == "urgency":
                marks.append(mark)
        for m in _URGENT_RE.finditer(key):
            s, e = m.span()
            if _inside(skip, s, e):
                continue
            written = line[s:e]
            level = _URGENCY_OF[m.group(0)]
            if level == "khan" and not (written.isupper() or _alone(line, s, e) or _bracketed(line, s, e)):
                continue
            marks.append(Mark("urgency", level, True, False, written, offset + s))
        for m in _URGENT_FOLDED_RE.finditer(folded):
            s, e = m.span()
            written = line[s:e]
            if not written.isascii() or _inside(skip, s, e):
                continue
            level = _URGENCY_OF[m.group(0)]
            if level == "khan":
                standing = _alone(line, s, e) or _bracketed(line, s, e)
                if not ((written.isupper() and standing) or (corroborated and standing)):
                    continue
            marks.append(Mark("urgency", level, True, True, written, offset + s))
    return marks


def level_max(levels: list[str], order: tuple[str, ...]) -> str:
    """The highest of ``levels`` in ``order`` ("none" when empty)."""
    best = 0
    for level in levels:
        if level in order:
            best = max(best, order.index(level))
    return order[best]
