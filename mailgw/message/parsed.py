"""The email package, made to parse each header once and to skip what it need not parse.

The surgery on ``email.message.EmailMessage`` that :class:`mailgw.message.model.Message`
relies on: :class:`ParsedOnce` keeps every parsed header value by (name, value);
:func:`parse_header_section`, :func:`complete_one_part` and :func:`complete_multipart`
read the common shapes without the feed parser's line-by-line pass; :func:`decoded_payload`
gives a part's bytes. Each fast path gives what the email package gives
(tests/test_parsed_once.py, tests/test_fast_paths.py, tests/test_fast_multipart.py). Importing it also makes the feed parser's end-of-line search
linear (:class:`_EndOfLine`).
"""

from __future__ import annotations

import binascii
import email.feedparser
import email.headerregistry
import email.message
import email.parser
import email.policy
import functools
import re
from typing import Any, Callable

from mailgw.message import fastheaders


class _EndOfLine:
    r"""The feed parser's ``NLCRE_eol`` (``(\r\n|\r|\n)\Z``), answered from the end of the string.

    The feed parser strips the line ending before each boundary from the part
    above it with ``NLCRE_eol.search(payload)``: the regular expression is tried
    at every position of the payload, so each part costs a scan of its whole
    text (1.4 ms for a 200 KB attachment, twice per part and per parse: a third
    of the feed parser's time on mail with a PDF). The answer depends only on the
    last two characters. Same match text as the expression for every string
    (tests/test_fast_paths.py compares them); anything else goes to the expression.
    """

    _regex = re.compile(r"(\r\n|\r|\n)\Z")  # the feed parser's own expression

    def search(self, string: Any, *args: Any) -> Any:
        if args or not isinstance(string, str):
            return self._regex.search(string, *args)
        if string.endswith("\r\n"):
            return self._regex.search(string, len(string) - 2)
        if string.endswith(("\r", "\n")):
            return self._regex.search(string, len(string) - 1)
        return None


setattr(email.feedparser, "NLCRE_eol", _EndOfLine())  # see _EndOfLine


class ParsedOnce(email.message.EmailMessage):
    """An EmailMessage that parses each header value once (``Message.headers`` and ``Message.parsed``).

    ``policy.default`` builds a new header object at every ``get``, and the
    stages and the decision record ask for From, Content-Type... a dozen times
    per message: a quarter of the pipeline's time. Header objects are immutable,
    and one is a function of the field name and the stored value alone, so it
    is kept by (name, value) and shared by every caller; a ``Message`` shares
    one such cache between its two views and all its MIME parts, and short
    values come from one cache for the whole process (``_common_header``).
    A header set, replaced or deleted later has another value, parsed afresh.
    """

    _fetched: dict[tuple[str, str], Any]
    _headers: list[tuple[str, Any]]  # email.message.Message's own list of fields (not in typeshed)

    def _fetch(self, name: str, value: Any) -> Any:
        if not isinstance(value, str) or hasattr(value, "name"):  # a header object set through the API
            return self.policy.header_fetch_parse(name, value)
        cache = self.__dict__.get("_fetched")
        if cache is None:
            cache = self._fetched = {}
        parsed = cache.get((name, value))
        if parsed is None:
            if self.policy is email.policy.default and len(value) <= _COMMON_LENGTH:
                parsed = _common_header(name, value)
            else:
                parsed = _header_fetch_parse(self.policy, name, value)
            cache[(name, value)] = parsed
        return parsed

    def get(self, name: str, failobj: Any = None) -> Any:
        name = name.lower()
        for k, v in self._headers:
            if k.lower() == name:
                return self._fetch(k, v)
        return failobj

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        name = name.lower()
        values = [self._fetch(k, v) for k, v in self._headers if k.lower() == name]
        return values or failobj

    def text(self, name: str) -> str | None:
        """``str(self.get(name))`` when the field is present, else None; exact shortcuts for common shapes.

        The decoded text the record keeps (From, Subject...), without the
        parse tree when mailgw.message.fastheaders can read the value by itself.
        """
        name = name.lower()
        for k, v in self._headers:
            if k.lower() == name:
                cache = self.__dict__.get("_fetched")
                known = cache.get((k, v)) if cache is not None and isinstance(v, str) else None
                if known is None and self.policy is email.policy.default:
                    fast = fastheaders.text(k, v)
                    if fast is not None:
                        return fast
                return str(known if known is not None else self._fetch(k, v))
        return None


_COMMON_LENGTH = 100  # longer values (subjects, boundaries, file names) are seldom seen twice


@functools.lru_cache(maxsize=512)
def _common_header(name: str, value: str) -> Any:
    """A short header value's object under ``policy.default``, shared by every message that carries it.

    "Content-Type: text/plain; charset=utf-8", "MIME-Version: 1.0", the
    Content-Transfer-Encoding of every part, the From and To of regular
    correspondents: the same values come back all day and each costs 40 to
    250 us to parse. Header objects are never changed once made (nothing in
    the email package or here alters a header or its parse tree; a header set
    or replaced is a new value), so one can serve every message.
    """
    return _header_fetch_parse(email.policy.default, name, value)


# Header classes by (specialised class, base class): see _header_fetch_parse.
_HEADER_CLASSES: dict[tuple[type, type], type] = {}


def _header_fetch_parse(policy: Any, name: str, value: str) -> Any:
    """``policy.header_fetch_parse(name, value)`` without making a new class for each value.

    The standard HeaderRegistry creates the header's class with ``type()`` at
    every call (15 us, more than parsing a Content-Transfer-Encoding); the
    class depends only on the registry entry for the name and the base class,
    so one is made per pair and kept. Any other policy or factory: as is.
    """
    factory = policy.header_factory
    if type(policy) is not email.policy.EmailPolicy or type(factory) is not email.headerregistry.HeaderRegistry:
        return policy.header_fetch_parse(name, value)
    # What EmailPolicy.header_fetch_parse does, the class taken from _HEADER_CLASSES.
    value = fastheaders.unfold(value)
    key = (factory.registry.get(name.lower(), factory.default_class), factory.base_class)
    cls = _HEADER_CLASSES.get(key)
    if cls is None:
        cls = _HEADER_CLASSES.setdefault(key, factory[name])
    return cls(name, value)


def complete_one_part(head: email.message.Message, raw: bytes) -> bool:
    """Make ``head``, the header section of ``raw`` parsed alone, what the feed parser makes of all of ``raw`` when it is one part.

    One part: a top-level Content-Type that is neither multipart/* nor message/*.
    For such a message the feed parser, after the headers, adds every remaining
    line to the payload unchanged, one line at a time (a third of the time it spends
    on a 5 KB message); the payload is just the rest of the input, so it is set in
    one piece. Returns False, changing nothing, for a multipart or message/* part
    (whose tree only the feed parser builds) and for anything unexpected.

    ``head`` must come from a parser with the same policy and message class as the
    full parse would use (the Content-Type decides through them). It keeps what
    the header parse put in its payload (the section after the end of the headers:
    nothing, a character, or lines after a non-header line), and gets the rest of
    ``raw`` after it, decoded as the bytes parsers decode (ASCII, surrogate escapes).
    """
    payload = head.__dict__.get("_payload")  # the text as parsed: get_payload() would decode 8-bit bytes
    if not isinstance(payload, str) or head.get_content_maintype() in ("multipart", "message"):
        return False
    body = raw[len(header_section(raw)):]
    text = payload + body.decode("ascii", "surrogateescape")
    head.set_payload(text)
    if len(body) <= _PAYLOAD_BYTES_KEPT:
        try:  # the same text as bytes, for decoded_payload (bytes parsers make only ASCII and escapes)
            head.__dict__[_PAYLOAD_BYTES] = (text, payload.encode("ascii", "surrogateescape") + body)
        except UnicodeEncodeError:
            pass
    return True


# Kept with the parsed message for as long as the message is in the pipeline: a large
# body is encoded again when asked for (a small part of what reading it costs).
_PAYLOAD_BYTES_KEPT = 1 << 20


def parse_one_part(raw: bytes, policy: email.policy.Policy) -> email.message.Message | None:
    """``raw`` parsed as the feed parser would with ``policy``, when it is one part (see complete_one_part); else None."""
    head = parse_header_section(header_section(raw), policy)
    return head if complete_one_part(head, raw) else None


def complete_multipart(head: email.message.Message, raw: bytes, factory: Any = None,
                       max_parts: int = 1000, crlf: bool = False) -> bool:
    """Make ``head``, the header section of ``raw`` parsed alone, the tree the feed parser makes of all of ``raw`` when it is a simple multipart.

    The feed parser reads a multipart line by line through its buffer and
    generators (2,600 lines and 1.5 ms for a letter with a 150 KB PDF). Its
    tree follows from where the delimiter lines are, so for the simple shapes
    the text is cut at them with ``bytes.find`` and every piece stored as the
    parser stores it (see _fill_multipart). Simple: every header section
    (the message's and each part's) plain as parse_header_section reads it,
    every part a leaf or a simple multipart, nothing the parser would note as
    a defect, at most ``max_parts`` parts. Anything else returns False,
    changing nothing in ``head``, and the caller runs the feed parser.

    ``head`` must come from parse_header_section of header_section(raw), with
    the policy of the full parse and ``factory`` its message factory (None: the
    policy's); the parts are made with them, as the parser makes them.
    """
    section = header_section(raw)
    # The section must end at its empty line (so the body starts after it) and the header
    # parse must have read it to that line, without a defect or a line pushed back.
    if (not section.endswith(b"\n\r\n") or head.__dict__.get("_payload") != "" or head.defects
            or head.get_content_maintype() != "multipart"):
        return False
    # Lines end in CR, LF or CRLF for the parser; delimiter lines are found after LF, so a body
    # with a bare CR (which the parse stage refuses anyway) goes to the parser.
    # ``crlf``: the caller knows crlf_only(raw) (Message.of_raw), so there is none to search for.
    if not crlf and _BARE_CR.search(raw, len(section)) is not None:
        return False
    if factory is None:
        factory = head.policy.message_factory or email.message.Message
    made = _fill_multipart(head, raw, len(section), len(raw), factory, [max_parts - 1, _PAYLOAD_BYTES_KEPT], 0)
    if made is None:
        return False
    head._payload, head.preamble, head.epilogue = made  # type: ignore[attr-defined]
    return True


def parse_multipart(raw: bytes, policy: email.policy.Policy, factory: Any = None,
                    max_parts: int = 1000) -> email.message.Message | None:
    """``raw`` parsed as the feed parser would with ``policy``, when it is a simple multipart (see complete_multipart); else None."""
    section = header_section(raw)
    if not section.endswith(b"\n\r\n"):
        return None
    head = _parse_plain_section(section, policy, factory)
    return head if head is not None and complete_multipart(head, raw, factory, max_parts) else None


_MAX_DEPTH = 8  # multiparts nested deeper go to the feed parser
_BLANKS = re.compile(rb"[ \t]*")  # after a delimiter, before its line end


def _fill_multipart(node: email.message.Message, raw: bytes, start: int, end: int, factory: Any,
                    room: list[int], depth: int) -> tuple[list[email.message.Message], str | None, str] | None:
    r"""The parts, preamble and epilogue the feed parser gives ``node``, a multipart whose body is ``raw[start:end]``; None if not simple.

    The feed parser's reading of a multipart body (email.feedparser, _parsegen):
    a delimiter line is "--" boundary, "--" for the close delimiter, spaces or
    tabs, the line's end; the line end before a delimiter line belongs to it;
    the text before the first delimiter is the preamble (None when there is
    none); each part runs to the next delimiter line (or one of an enclosing
    multipart: ``raw[start:end]`` ends before the enclosing delimiter, so it
    holds none); after the close delimiter line comes the epilogue, to
    ``end``. Lines end with CR, LF or CRLF, as the parser splits them. Not
    simple, so None: no boundary or no delimiter, a transfer encoding the
    parser notes as a defect, a missing close delimiter, two delimiter lines
    in a row (the parser drops the second), a part that is message/*, whose
    header section is not plain, or that is not ended by an empty line, more
    parts than ``room[0]`` allows (``room[1]``: the bytes still to keep for decoded_payload), nesting past _MAX_DEPTH.
    """
    boundary = node.get_boundary()
    if boundary is None or depth > _MAX_DEPTH or (
            str(node.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary")):
        return None
    if "\r" in boundary or "\n" in boundary:
        # The parser compares one line at a time: such a boundary (folded under compat32, or
        # RFC 2231-encoded) never matches, and the message is one text with defects.
        return None
    try:
        sep = ("--" + boundary).encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # no line of a bytes parse holds it
        return None
    line_sep = b"\n" + sep
    # The delimiter lines, in order, to the close delimiter: (line start, line end). Only line
    # starts are searched (in C), each byte once, and the search stops as soon as the parser's
    # reading would differ (two delimiter lines in a row) or the parts would be too many.
    delimiters: list[tuple[int, int]] = []
    closed = False
    at = start
    i = start if raw.startswith(sep, start, end) else -1
    while not closed:
        if i < 0:
            j = raw.find(line_sep, at, end)
            if j < 0:
                return None  # no close delimiter (or no delimiter at all)
            i = j + 1
        k = at = i + len(sep)
        closed = raw.startswith(b"--", k, end)
        if closed:
            k += 2
        k = _BLANKS.match(raw, k, end).end()  # type: ignore[union-attr]
        if k < end:
            if raw[k] == 13:
                k += 2 if raw.startswith(b"\n", k + 1, end) else 1
            elif raw[k] == 10:
                k += 1
            else:
                closed, i = False, -1
                continue  # "--boundary" and more: text
        if delimiters and delimiters[-1][1] == i:
            return None  # two delimiter lines in a row: the parser drops the second
        delimiters.append((i, k))
        if len(delimiters) - 1 > room[0] + 1:
            return None  # more parts than allowed: the counting parse says so
        i = -1
    if len(delimiters) < 2:
        return None  # the close delimiter first: no part (a defect)
    preamble = None
    first = delimiters[0][0]
    if first > start:  # lines before the first delimiter, their last line end dropped
        preamble = raw[start:first - _eol_length(raw, start, first)].decode("ascii", "surrogateescape")
    digest = node.get_content_type() == "multipart/digest"
    parts: list[email.message.Message] = []
    policy = node.policy
    for (_, part_start), (part_end, _) in zip(delimiters, delimiters[1:]):
        room[0] -= 1
        if part_start >= part_end or room[0] < 0:
            return None  # two delimiter lines in a row (or a delimiter at the very end), or too many parts
        if raw.startswith(b"\r\n", part_start):  # no header fields
            part = factory(policy=policy)
            body = part_start + 2
        else:
            blank = raw.find(b"\r\n\r\n", part_start, part_end)
            if blank < 0:
                return None
            part = _parse_plain_section(raw[part_start:blank + 4], policy, factory)
            if part is None:
                return None
            body = blank + 4
        if digest:
            part.set_default_type("message/rfc822")
        maintype = part.get_content_maintype()
        if maintype == "multipart":
            made = _fill_multipart(part, raw, body, part_end, factory, room, depth + 1)
            if made is None:
                return None
            epilogue = made[2]
            # What the parser does to a multipart's epilogue before the next delimiter line.
            part._payload, part.preamble = made[0], made[1]
            part.epilogue = None if epilogue == "" else epilogue[:len(epilogue) - _eol_length_text(epilogue)]
        elif maintype == "message":
            return None
        else:
            stop = part_end - _eol_length(raw, body, part_end)
            text = raw[body:stop].decode("ascii", "surrogateescape")
            part._payload = text
            if stop - body <= room[1] and str(part.get("content-transfer-encoding", "")).lower() not in _DECODED_CTE:
                room[1] -= stop - body  # at most _PAYLOAD_BYTES_KEPT for the whole message, as complete_one_part
                part.__dict__[_PAYLOAD_BYTES] = (text, raw[body:stop])  # for decoded_payload
        parts.append(part)
    close_end = delimiters[-1][1]
    return parts, preamble, raw[close_end:end].decode("ascii", "surrogateescape")


def _eol_length(raw: bytes, start: int, end: int) -> int:
    """Length of the line end that closes ``raw[start:end]`` (what the parser's NLCRE_eol strips): 2, 1 or 0."""
    if end - start >= 2 and raw.startswith(b"\r\n", end - 2):
        return 2
    return 1 if end > start and raw[end - 1] in b"\r\n" else 0


def _eol_length_text(text: str) -> int:
    """Length of the line end that closes ``text``, as _eol_length."""
    if text.endswith("\r\n"):
        return 2
    return 1 if text.endswith(("\r", "\n")) else 0


# A header line the feed parser reads as a field (a name and a colon) or a continuation;
# not "From " (an mbox separator) nor an empty name (a defect), which it treats apart.
_PLAIN_HEADER_LINE = re.compile(r"[\041-\071\073-\176]+:|[\t ]")


def parse_header_section(section: bytes, policy: email.policy.Policy, factory: Any = None) -> email.message.Message:
    """What ``BytesHeaderParser(_class=factory, policy=policy).parsebytes(section)`` gives, faster for a plain section.

    A section from header_section is plain when every line ends with CRLF, the
    last is the empty line that ends it, the first is a field and every other a
    field or a continuation: then the feed parser (line by line through a buffer
    and a generator, 0.1 ms for a dozen fields) stores, for each field, what the
    policy's ``header_source_parse`` makes of its lines, and nothing else (no
    defect, no mbox "From " line, an empty payload). Anything else goes to it.
    """
    plain = _parse_plain_section(section, policy, factory)
    if plain is None:
        parsed: email.message.Message = email.parser.BytesHeaderParser(_class=factory, policy=policy).parsebytes(section)
        return parsed
    return plain


def _parse_plain_section(section: bytes, policy: email.policy.Policy, factory: Any = None) -> email.message.Message | None:
    """parse_header_section's fast way for a plain section (see there); None when ``section`` is not plain."""
    text = section.decode("ascii", "surrogateescape")
    lines = text.split("\r\n")
    # Plain: "...\r\n\r\n" at the end (so lines ends with two empty strings) and no other CR or LF.
    if (len(lines) < 3 or lines[-1] or lines[-2] or text.count("\r") != len(lines) - 1
            or text.count("\n") != len(lines) - 1 or lines[0][:1] in (" ", "\t")
            or not all(map(_PLAIN_HEADER_LINE.match, lines[:-2]))):
        return None
    if factory is None:
        factory = policy.message_factory or email.message.Message
    msg: email.message.Message = factory(policy=policy)
    field: list[str] = []
    for line in lines[:-2]:
        if line[0] not in " \t" and field:
            msg.set_raw(*policy.header_source_parse(field))
            field = []
        field.append(line + "\r\n")
    msg.set_raw(*policy.header_source_parse(field))
    msg.set_payload("")
    return msg


# What Message.get_payload(decode=True) decodes (compared as it compares: lowered, not stripped).
_DECODED_CTE = frozenset({"quoted-printable", "base64", "x-uuencode", "uuencode", "uue", "x-uue"})


def decoded_payload(part: email.message.Message) -> Any:
    """``part.get_payload(decode=True)``, faster for a part whose transfer encoding it leaves as is.

    For such a part (7bit, 8bit, none) the email package returns the parsed text
    back as bytes, after probing it for 8-bit bytes by encoding it whole to UTF-8,
    which fails (an exception and a copy) for Vietnamese text. Text from a bytes
    parser holds only ASCII and surrogate escapes, which this encodes directly;
    anything else goes the email package's way.
    """
    payload = part.__dict__.get("_payload")  # the text as parsed
    if isinstance(payload, str) and str(part.get("content-transfer-encoding", "")).lower() not in _DECODED_CTE:
        known = part.__dict__.get(_PAYLOAD_BYTES)
        if known is not None and known[0] is payload:
            return known[1]  # the bytes complete_one_part read this very text from
        try:
            return payload.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            pass
    return part.get_payload(decode=True)


_PAYLOAD_BYTES = "_mailgw_payload_bytes"  # (payload text, its bytes): kept by complete_one_part


def base64_payload(part: email.message.Message, text: str) -> bytes:
    """``binascii.a2b_base64(text)`` for ``part``'s base64 text, decoded once per part and text.

    Classification and the attachment walker both read every base64 part of the
    same parsed tree (0.4 ms each for a 200 KB PDF); the bytes are kept with the
    part, by the text they came from, so the second reader gets them without
    decoding again. Raises as ``a2b_base64`` does (nothing is kept then); a part
    whose text changed is decoded afresh (tests/test_fast_paths.py compares).
    """
    known = part.__dict__.get(_BASE64_BYTES)
    if known is not None and (known[0] is text or known[0] == text):
        data: bytes = known[1]
        return data
    data = a2b_base64(text)
    part.__dict__[_BASE64_BYTES] = (text, data)
    return data


_simd_b64decode: Callable[[str | bytes], bytes] | None
try:
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # pragma: no cover - installed with mailgw; binascii does the same work, slower
    _simd_b64decode = None


def _padding_last(text: str | bytes) -> bool:
    """No "=" in ``text``, or only "=" and white space from the first one on."""
    if isinstance(text, str):
        at = text.find("=")
        return at < 0 or not text[at:].strip("= \t\r\n")
    at = text.find(b"=")
    return at < 0 or not text[at:].strip(b"= \t\r\n")


def a2b_base64(text: str | bytes) -> bytes:
    """``binascii.a2b_base64(text)``: the same bytes, or the same error.

    pybase64 (SIMD, the aklomp/base64 library) decodes a 200 KB attachment in a
    sixth of binascii's time. Unvalidated, it skips what is not base64 (line
    breaks, stray characters) as binascii does, but it also skips a "=" that
    binascii stops at ("AAA=A" is two bytes to binascii, three to pybase64): it
    is asked only when nothing but padding and white space follows the first
    "=". Where it refuses the text (missing padding, non-ASCII text) binascii
    answers. tests/test_fast_paths.py compares the two on generated text.
    """
    if _simd_b64decode is not None and isinstance(text, (str, bytes)) and _padding_last(text):
        try:
            data: bytes = _simd_b64decode(text)
            return data
        except (binascii.Error, ValueError, TypeError):
            pass
    return binascii.a2b_base64(text)


_BASE64_BYTES = "_mailgw_base64_bytes"  # (base64 text, its bytes): kept by base64_payload


def keep_payload_bytes(src: email.message.Message, dst: email.message.Message) -> None:
    """Give ``dst``, a copy of ``src`` with the same payload text, the bytes kept with ``src``'s payload.

    The attachment walker reads a compat32 copy of the tree classification read
    (mailgw.attachments.mime.compat_copy): without them it decoded a 200 KB
    PDF's base64 a second time. Each entry is still checked against the text
    when it is read (base64_payload, decoded_payload).
    """
    for key in (_BASE64_BYTES, _PAYLOAD_BYTES):
        known = src.__dict__.get(key)
        if known is not None:
            dst.__dict__[key] = known


_BARE_CR = re.compile(rb"\r(?!\n)")


def crlf_only(data: bytes) -> bool:
    """Whether every line end in ``data`` is CRLF: no CR without an LF after it, no LF without a CR before it.

    Three counts (CR, LF, CRLF) answered it, in C; counting the two-byte CRLF is the slow
    one (0.15 ms for 200 KB, a single byte 0.05 ms), and a message was counted so four
    times on its way (parse, DKIM, the MIME split, delivery). Without a bare CR every CR
    starts a CRLF, so the CRLFs are as many as the CRs, and there is no bare LF exactly
    when the LFs are as many too (tests/test_fast_paths.py compares with the counts).
    """
    return data.count(b"\r") == data.count(b"\n") and _BARE_CR.search(data) is None


def header_end(raw: bytes) -> int:
    """Offset of the empty line that ends the header section (the whole message if there is none)."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    crlf = raw.find(b"\n\r\n")
    # A "\n\n" only matters before it: a CRLF message is not searched to its end for one
    # (the same offset as the earlier of the two, tests/test_fast_paths.py compares).
    lf = raw.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(raw))
    ends = [i + 1 for i in (crlf, lf) if i >= 0]
    return min(ends) if ends else len(raw)


def header_section(raw: bytes) -> bytes:
    """``raw`` up to and including its first empty line (all of it when there is none).

    The header parser would otherwise still split the whole body into lines (a
    millisecond for a message with a 200 KB attachment). An empty line ends the
    header section whatever the line endings ("\n\r\n" or "\n\n"); cutting after
    it, or later, gives the parser the same headers.
    """
    if raw[:1] in (b"\n", b"\r"):
        return raw[:2]
    crlf = raw.find(b"\n\r\n")
    # A "\n\n" only matters before it: a CRLF message is not searched to its end for one.
    lf = raw.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(raw))
    end = lf if lf >= 0 else crlf
    return raw[: end + 3] if end >= 0 else raw
