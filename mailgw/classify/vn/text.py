"""Text helpers for the classify stage: decoding, NFC, folding and subject clean-up.

Every function here returns text of the same length as its input where it says so
(``fold``, ``tone_key``): the classifier finds a cue in one form and reports the
span of the original text, so the forms must stay aligned character by character.
"""

from __future__ import annotations

import codecs
import email.header
import html.parser
import re
import types
import unicodedata
from typing import Any

# Vietnamese mail still arrives in Windows-1258 from old clients; latin-1 never fails.
_FALLBACK_CHARSETS = ("utf-8", "cp1258", "latin-1")


def nfc(text: str) -> str:
    """The NFC form: macOS file names and some clients send NFD (decomposed marks)."""
    return unicodedata.normalize("NFC", text)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text from bytes: the declared charset if it works, else UTF-8, Windows-1258, latin-1."""
    candidates: list[str] = []
    if charset:
        name = charset.strip().strip('"').lower()
        try:
            candidates.append(codecs.lookup(name).name)
        except LookupError:
            pass
    for fallback in _FALLBACK_CHARSETS:
        if fallback not in candidates:
            candidates.append(fallback)
    for name in candidates:
        try:
            return nfc(data.decode(name))
        except (UnicodeDecodeError, LookupError):
            continue
    return nfc(data.decode("utf-8", errors="replace"))  # not reached: latin-1 decodes anything


# A raw 8-bit byte, as the email package keeps one in a header: a surrogate escape.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def has_escaped_bytes(text: str) -> bool:
    """Whether ``text`` holds raw 8-bit bytes kept as surrogate escapes (U+DC80 to U+DCFF)."""
    return _ESCAPED_BYTE.search(text) is not None


def decode_header(value: object) -> str:
    """A header value as text, RFC 2047 encoded words decoded, NFC; never raises.

    ``email.policy.default`` already decodes, but ``compat32`` messages and
    encoded words inside parameters (Outlook's ``name="=?UTF-8?B?...?="``) do not.
    """
    try:
        text = str(value) if value is not None else ""
    except Exception:  # a malformed header object: nothing to read
        return ""
    if has_escaped_bytes(text):
        # Raw 8-bit bytes in a header (kept by the parser as surrogate escapes): UTF-8,
        # else Windows-1258, else latin-1, as for a body without a charset.
        text = decode_bytes(text.encode("utf-8", "surrogateescape"))
    if "=?" not in text:
        return nfc(text)
    try:
        parts = email.header.decode_header(text)
    except Exception:
        return nfc(text)
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes) and charset is None:
            # decode_header returns the plain parts beside encoded words as raw-unicode-escape bytes.
            out.append(chunk.decode("raw-unicode-escape", errors="replace"))
        elif isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    # decode_header keeps the whitespace between an encoded word and plain text
    # in the plain chunk, and drops it between two encoded words (RFC 2047 6.2).
    return nfc("".join(out))


def _fold_table() -> types.MappingProxyType[int, str]:
    table: dict[int, str] = {ord("đ"): "d", ord("Đ"): "D"}
    for block in (range(0xC0, 0x250), range(0x1E00, 0x1F00)):
        for cp in block:
            decomposed = unicodedata.normalize("NFD", chr(cp))
            if len(decomposed) > 1 and decomposed[0].isascii():
                table[cp] = decomposed[0]
    return types.MappingProxyType(table)


_FOLD = _fold_table()
# The same mapping as a string indexed by code point: str.translate looks a character
# up in it twice as fast as in a dict, and leaves characters past its end unchanged.
_FOLD_STR = "".join(_FOLD.get(cp, chr(cp)) for cp in range(max(_FOLD) + 1))


def _charmap_alphabet() -> str:
    """256 characters: printable ASCII, its white space and NUL, the Vietnamese letters in both cases, common punctuation."""
    tones = ("", "\u0300", "\u0301", "\u0303", "\u0309", "\u0323")
    small = sorted({nfc(vowel + tone) for vowel in "aăâeêioôơuưy" for tone in tones} - set("aeiouy")) + ["đ"]
    letters = "".join(small) + "".join(small).upper()
    punctuation = "\u00a0“”‘’–—…•·«»°€×±§©®™²³"
    # NUL first: charmap_build makes its fast table only for an alphabet that starts with it.
    alphabet = "\x00\t\n\x0c\r" + "".join(map(chr, range(0x20, 0x7F))) + letters + punctuation
    assert len(set(alphabet)) == len(alphabet) == 256
    return alphabet


# ``fold`` and ``lower`` in two C passes each. ``str.translate`` looks every non-ASCII
# character up through a Python call and ``str.lower`` reads the Unicode database for
# each (0.15 and 0.04 ms for a 4,000-character Vietnamese body). The charmap codecs
# use plain tables: encoding turns each character of the alphabet into its index,
# decoding turns an index into the folded or lower-case form of that character
# (0.03 ms for both). Any other character makes the encoding fail, and the functions
# do what they did before; either way the result is the same.
_ALPHABET = _charmap_alphabet()
_CHARMAP = codecs.charmap_build(_ALPHABET)
assert not isinstance(_CHARMAP, dict)  # the C table, not a dictionary (no faster than translate)
_FOLDED_BY_INDEX = _ALPHABET.translate(_FOLD_STR)
_LOWER_BY_INDEX = "".join(c.lower() for c in _ALPHABET)  # one character each: no İ, no final Σ here
assert len(_LOWER_BY_INDEX) == 256
_FOLDED_LOWER_BY_INDEX = _LOWER_BY_INDEX.translate(_FOLD_STR)


def _indices(text: str) -> bytes | None:
    """The index of each character of ``text`` in the alphabet; None if one is not in it."""
    try:
        return codecs.charmap_encode(text, "strict", _CHARMAP)[0]
    except UnicodeEncodeError:
        return None


def _charmap(text: str, table: str) -> str | None:
    """``text`` with each character replaced by its entry in ``table``; None if one is not in the alphabet."""
    indices = _indices(text)
    return codecs.charmap_decode(indices, "strict", table)[0] if indices is not None else None


def fold(text: str) -> str:
    """ASCII-folded copy, same length: marks stripped, đ/Đ to d/D (for text typed without diacritics)."""
    if text.isascii():
        return text
    folded = _charmap(text, _FOLDED_BY_INDEX)
    return folded if folded is not None else text.translate(_FOLD_STR)


def lower(text: str) -> str:
    """Lower case without changing the length (``"İ".lower()`` has two characters)."""
    if not text.isascii():
        low = _charmap(text, _LOWER_BY_INDEX)
        if low is not None:
            return low
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _tone_pairs() -> types.MappingProxyType[str, str]:
    # "hoả"/"hỏa", "thoả"/"thỏa", "uỷ"/"ủy": both placements are in use. Map each
    # pair to the mark-on-first-vowel spelling; cues go through the same mapping,
    # so which spelling is "right" does not matter, only that both agree.
    pairs: dict[str, str] = {}
    for first, second in (("o", "a"), ("o", "e"), ("u", "y")):
        for mark in ("\u0300", "\u0301", "\u0303", "\u0309", "\u0323"):
            on_second = nfc(first + second + mark)
            on_first = nfc(first + mark + second)
            pairs[on_second] = on_first
    return types.MappingProxyType(pairs)


_TONE_PAIRS = _tone_pairs()
# Each pair is an "o" or a "u" and one marked vowel: as "o[...]|u[...]" the regex
# engine skips from one "o" or "u" to the next, where the alternation of all 30
# pairs was tried at every character. It matches the same pairs.
_TONE_RE = re.compile("|".join(
    first + "[" + "".join(p[1] for p in _TONE_PAIRS if p[0] == first) + "]" for first in sorted({p[0] for p in _TONE_PAIRS})))
assert all(len(p) == 2 for p in _TONE_PAIRS)


def tone_key(text: str) -> str:
    """Lower-case NFC text with one tone placement (Hỏa = Hoả), same length as ``text``."""
    low = lower(text)
    return _TONE_RE.sub(_one_tone_placement, low)


def _one_tone_placement(m: re.Match[str]) -> str:
    return _TONE_PAIRS[m.group(0)]


_WORD = re.compile(r"\w")  # what the patterns below call a word character
# The lower-case and folded forms with every non-word character a space (see PhraseFinder).
_SPACED_LOWER_BY_INDEX = "".join(c if _WORD.match(c) else " " for c in _LOWER_BY_INDEX)
_SPACED_FOLDED_BY_INDEX = "".join(c if _WORD.match(c) else " " for c in _FOLDED_LOWER_BY_INDEX)
_ASCII_SPACED = str.maketrans({c: " " for c in map(chr, range(128)) if not _WORD.match(c)})


def forms(text: str) -> tuple[str, str, str]:
    """``(lower(text), tone_key(text), fold(lower(text)))``: the forms the classifier searches, all at once.

    ``fold(lower(text))`` is also ``fold(tone_key(text))``: moving a tone mark from
    one vowel to the other changes nothing once marks are stripped. One pass of the
    codec gives both the lower-case and the folded form.
    """
    indices = None if text.isascii() else _indices(text)
    if indices is None:
        low = lower(text)
        return low, _TONE_RE.sub(_one_tone_placement, low), fold(low)
    low = codecs.charmap_decode(indices, "strict", _LOWER_BY_INDEX)[0]
    folded = codecs.charmap_decode(indices, "strict", _FOLDED_LOWER_BY_INDEX)[0]
    return low, _TONE_RE.sub(_one_tone_placement, low), folded


def search_forms(text: str) -> tuple[str, str, str, str | None, str | None]:
    """``forms(text)``, then the lower-case and the folded form with every non-word character
    a space and one space in front, for PhraseFinder (None for text outside the codec's alphabet)."""
    if text.isascii():  # no tone pair, nothing to fold; translate has a fast path for ASCII
        low = text.lower()
        spaced = " " + low.translate(_ASCII_SPACED)
        return low, low, low, spaced, spaced
    indices = _indices(text)
    if indices is None:
        return (*forms(text), None, None)
    low = codecs.charmap_decode(indices, "strict", _LOWER_BY_INDEX)[0]
    return (low, _TONE_RE.sub(_one_tone_placement, low),
            codecs.charmap_decode(indices, "strict", _FOLDED_LOWER_BY_INDEX)[0],
            " " + codecs.charmap_decode(indices, "strict", _SPACED_LOWER_BY_INDEX)[0],
            " " + codecs.charmap_decode(indices, "strict", _SPACED_FOLDED_BY_INDEX)[0])


def phrases_pattern(phrases: list[str] | tuple[str, ...]) -> str:
    """A regex alternation matching the longest of ``phrases`` at a position, as a trie.

    Same matches as ``"|".join(sorted(phrases, key=len, reverse=True))`` (at one
    position every phrase that matches is a prefix of the longest, and each branch
    tries the longer continuation first), but the regex engine picks a branch by its
    first character instead of trying a hundred alternatives one by one.
    """
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for phrase in phrases:
        node = trie
        for ch in phrase:
            node = node.setdefault(ch, {})
        node[""] = {}  # a phrase ends here

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        ends = "" in node
        branches = [re.escape(ch) + emit(child) for ch, child in node.items() if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # the longer continuation first, then stop here
            return "(?:" + body + ")?" if len(branches) > 1 or len(body) > 1 else body + "?"
        return body

    return emit(trie)


def tone_spellings(key: str) -> list[str]:
    """Every text whose ``tone_key`` is ``key`` (lower case): each tone pair in either placement."""
    spellings = [""]
    pos = 0
    for m in _TONE_KEYED_RE.finditer(key):
        between = key[pos:m.start()]
        spellings = [s + between + pair for s in spellings for pair in (m.group(0), _TONE_UNKEYED[m.group(0)])]
        pos = m.end()
    return [s + key[pos:] for s in spellings]


_TONE_UNKEYED = {on_first: on_second for on_second, on_first in _TONE_PAIRS.items()}
_TONE_KEYED_RE = re.compile("|".join(sorted(_TONE_UNKEYED)))


class PhraseFinder:
    r"""Whole-word phrases in a text: ``finditer`` gives what ``pattern.finditer`` gives.

    ``pattern`` is ``(?<!\w)(?:phrase|...)(?!\w)``, the longest phrase first. The regex
    engine tries it at every character (a look-behind first keeps it from jumping
    ahead): 0.15 ms for a 4,000-character body. Given the same text with every
    non-word character a space (``search_forms``), a pattern that starts with a literal
    space lets the engine jump from space to space and try the phrases only there
    (0.06 ms). Every place where ``pattern`` matches follows a non-word character, so
    this finds all of them, and some more (a phrase written with other punctuation);
    ``pattern`` itself, tried at each in order, at or after the end of the last
    match, gives the matches finditer gives.

    ``spellings``: every form a phrase may have in the spaced text when ``pattern``
    matches the phrase in the searched text (``tone_spellings`` when the searched
    text is ``tone_key`` of the spaced one).
    """

    def __init__(self, phrases: list[str], spellings: Any = lambda phrase: [phrase]):
        self.pattern = re.compile(r"(?<!\w)(?:" + phrases_pattern(phrases) + r")(?!\w)")
        spaced = {"".join(c if _WORD.match(c) else " " for c in spelling)
                  for phrase in phrases for spelling in spellings(phrase)}
        self._after_space = re.compile(" (?:" + phrases_pattern(sorted(spaced)) + r")(?!\w)")

    def finditer(self, text: str, spaced: str | None = None) -> list[re.Match[str]]:
        """The matches of ``pattern`` in ``text``; ``spaced``: " " + ``text`` with non-word characters as spaces, if known."""
        if spaced is None:
            return list(self.pattern.finditer(text))
        found: list[re.Match[str]] = []
        end = at = 0
        while (candidate := self._after_space.search(spaced, at)) is not None:
            start = candidate.start()  # the space before, in ``spaced``: the phrase's start in ``text``
            at = start + 1
            if start >= end and (m := self.pattern.match(text, start)) is not None:
                found.append(m)
                end = m.end()
        return found


_PREFIX_RE = re.compile(
    r"^\s*(?:"
    r"(?:re|tl|fw|fwd|chuyển\s+tiếp|chuyen\s+tiep|trả\s+lời|tra\s+loi)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]"
    r"|\[\s*external\s*\]|\(\s*external\s*\)"
    r")\s*",
    re.IGNORECASE,
)


def strip_prefixes(subject: str) -> str:
    """The subject without reply/forward markers: RE:, TL:, FW:, Fwd:, Chuyển tiếp:, [EXTERNAL]."""
    text = subject.strip()
    for _ in range(32):  # "RE: RE: Fwd: ..." chains; bounded for hostile input
        stripped = _PREFIX_RE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text


class _HtmlText(html.parser.HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "td", "th", "title"})
    _SKIP = frozenset({"script", "style", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body, one line per block element; never raises."""
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; this is for the unforeseen
        pass
    lines = ("".join(parser.parts)).splitlines()
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())
