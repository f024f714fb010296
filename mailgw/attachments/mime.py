"""The MIME walker: every leaf part of a message, with its names and decoded bytes, and what is ambiguous.

Not ``Message.parsed``: that tree uses ``email.policy.default``, whose header
objects cost about 15 times more per part than ``compat32`` (20,000 empty parts in
740 KB take 3.6 s to parse against 0.24 s) and arrive already decoded and
refolded, which hides the raw duplicates and encoded-word tricks this walker
looks for. So the walker parses ``message.raw`` again with ``compat32`` through a
message class that counts the parts as the parser makes them and stops it past
the part limit, before a hostile message can cost time or memory.

The email package is lenient: it repairs what it can and notes a defect. Where
another reader (a mail client, the next hop) could see different parts, or
different bytes, in the same message, the walker reports the message as
ambiguous and names the cause and the part (``parts``: location, name, cause);
the policy decides (the shipped pack rejects, and its reply names them).
Those causes: a missing or duplicated boundary, a boundary that repeats an
enclosing one, MIME headers outside the boundaries or after a line that ends a
part's headers early, two Content-Type / Content-Transfer-Encoding /
Content-Disposition headers in one part, base64 that does not decode, an
unknown transfer encoding, an encoded message/rfc822, message/partial,
uuencoded or BinHex data inside a text body.

What every mature reader reads alike is not ambiguous, and is read as they
read it: a transfer encoding spelled loosely ("Quoted-Printable ", "7-bit",
"base-64", "quoted printable") is the encoding it names, and the part is
decoded so; a multipart whose closing boundary is missing ends with the
message (RFC 2046 calls it a defect; Postfix, amavis and mail clients read the
parts it has); a part whose headers end at a line that is not a header holds
that line as text, unless MIME headers follow it; a delivery report
(message/delivery-status and the other report types) is data, and when it is
encoded it is decoded and inspected as a file. Names are read in
every way a reader might read them (RFC 2231 and plain parameters, both
parsers of the email package, RFC 2047 words inside parameters and an encoded
whole header) and all of them are kept.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.errors
import email.feedparser
import email.message
import email.policy
import email.utils
import functools
import itertools
import re
from collections.abc import Iterator

from mailgw.attachments import names as namefacts
from mailgw.attachments.budget import Budget, OverLimit
from mailgw.classify.vn import text as vtext
from mailgw.message.parsed import base64_payload, decoded_payload, keep_payload_bytes, parse_multipart, parse_one_part

MAX_HEADER = 8192  # characters of one Content-Type or Content-Disposition value that are parsed
_FEED = 64 * 1024
_KNOWN_CTE = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable",
                        "x-uuencode", "uuencode", "x-uue", "uue"})
_IDENTITY_CTE = frozenset({"", "7bit", "8bit", "binary"})
# A transfer encoding as readers match it: case, white space, "-" and "_" do not count.
_CTE_SPELLINGS = {"7bit": "7bit", "8bit": "8bit", "binary": "binary", "base64": "base64",
                  "quotedprintable": "quoted-printable"}
_CTE_NOISE = re.compile(r"[\s_-]+")
# Defects of the parser that mean readers may split the message differently: (text, cause).
# A missing closing boundary is not one (the parts end with the message, for every reader),
# nor a part's headers ending early (see _check_headers).
_STRUCTURE_DEFECTS: dict[type[email.errors.MessageDefect], tuple[str, str]] = {
    email.errors.NoBoundaryInMultipartDefect: ("multipart without a boundary", "boundary"),
    email.errors.StartBoundaryNotFoundDefect: ("boundary not found", "boundary"),
    email.errors.MultipartInvariantViolationDefect: ("multipart that does not parse as one", "boundary"),
    email.errors.FirstHeaderLineIsContinuationDefect: ("first header line is a continuation", "headers"),
    email.errors.InvalidMultipartContentTransferEncodingDefect: ("multipart with a transfer encoding", "encoding"),
}
# Report parts (RFC 3464, 8098, 5965, 6533): header blocks about a message, data for the reader.
_REPORT_TYPES = frozenset({
    "message/delivery-status", "message/global-delivery-status", "message/disposition-notification",
    "message/global-disposition-notification", "message/feedback-report",
})
# Why a part is ambiguous, for the people who read the refusal: (Vietnamese, English).
CAUSES: dict[str, tuple[str, str]] = {
    "boundary": ("ranh giới MIME (boundary) thiếu hoặc trùng lặp", "MIME boundary missing or repeated"),
    "outside_boundaries": ("có dữ liệu MIME nằm ngoài ranh giới", "MIME data outside the boundaries"),
    "headers": ("phần đầu của phần thư lẫn vào nội dung", "part headers mixed into the content"),
    "duplicate_header": ("trường Content-Type, Content-Transfer-Encoding hoặc Content-Disposition bị lặp",
                         "a repeated Content-Type, Content-Transfer-Encoding or Content-Disposition"),
    "long_header": ("trường MIME quá dài", "a MIME header too long to read"),
    "encoding": ("kiểu mã hóa không được phép cho loại phần này", "a transfer encoding this kind of part may not have"),
    "unknown_encoding": ("kiểu mã hóa truyền tải không xác định", "an unknown Content-Transfer-Encoding"),
    "broken_base64": ("dữ liệu base64 hỏng, không giải mã được", "broken base64 that cannot be decoded"),
    "partial": ("thư bị chia mảnh (message/partial)", "a message in fragments (message/partial)"),
    "embedded_file": ("tệp uuencode hoặc BinHex giấu trong văn bản", "a uuencoded or BinHex file inside the text"),
    "limit": ("thư vượt giới hạn kiểm tra (số phần, độ sâu, dung lượng hoặc thời gian)",
              "the message exceeds the inspection limits (parts, depth, size or time)"),
    "failed": ("không kiểm tra được", "the inspection failed"),
}
# The base64 alphabet and the line breaks _strict_base64 allows, as bytes for bytes.translate.
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_SPACE = b"\r\n\t "
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
# A uuencode "begin" line, at the start of the data or after a line feed: the leading
# literal lets the regex engine jump from line feed to line feed where "(?m)^"
# would try the pattern at every byte (ten times slower for a text body).
_UUENCODE = re.compile(rb"begin(?:-base64)? [0-7]{3,4} \S")
_UUENCODE_AFTER_LF = re.compile(rb"\nbegin(?:-base64)? [0-7]{3,4} \S")
_BINHEX = b"(This file must be converted with BinHex"
_MIME_HEADER = re.compile(r"(?im)^content-(type|transfer-encoding|disposition)\s*:")
# A Content-Type or Content-Disposition line, at the start of the message or after a
# line feed (see _UUENCODE for why the line feed is in the pattern).
_MIME_HEADER_START = re.compile(rb"(content-type|content-disposition)[ \t]*:", re.IGNORECASE)
_MIME_HEADER_AFTER_LF = re.compile(rb"\n(content-type|content-disposition)[ \t]*:", re.IGNORECASE)
_LOGICAL_END = re.compile(rb"\r?\n(?![ \t])")
_FOLDING = re.compile(r"\r?\n[ \t]")
_BODY_TYPES = frozenset({None, "text/plain", "text/html"})


class _TooManyParts(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Ambiguity:
    """One ambiguous place: the part (IMAP location, "" for the message as a whole), its name if any, the cause (CAUSES)."""

    location: str
    name: str | None
    cause: str


@dataclasses.dataclass
class Leaf:
    """One leaf part: where it is, what it declares, what it is called, its decoded bytes."""

    location: str                 # IMAP-style part number: "1", "2.1", ...
    declared_type: str | None     # the Content-Type it declares, lowercased; None if absent or invalid
    disposition: str | None       # "attachment", "inline", ... lowercased
    names: list[str]              # every distinct name, decoded and NFC, Content-Disposition first
    data: bytes

    @property
    def maybe_body(self) -> bool:
        """Could be the message's text rather than a file (the bytes decide; see mailgw.attachments.inspect)."""
        return not self.names and self.disposition != "attachment" and self.declared_type in _BODY_TYPES


def compat_copy(tree: email.message.Message, max_parts: int) -> email.message.Message | None:
    """The tree the feed parser makes under ``compat32`` from the bytes ``tree`` was parsed from, copied from ``tree``.

    The feed parser splits and stores the same text whatever its policy (both
    policies read a header line alike); the policy counts only where the parser
    asks a part for its content type, its boundary and (on a multipart) its
    transfer encoding. So the copy holds the same headers, payloads, preambles,
    epilogues and defects, read through ``compat32``, when every part answers
    those three alike under both policies; None when one does not (then the
    caller parses). Raises ``_TooManyParts`` past ``max_parts`` parts, as the
    counting parse does. tests/test_fast_paths.py holds it to the parse.
    """
    count = [0]

    def copy(src: email.message.Message) -> email.message.Message | None:
        count[0] += 1
        if count[0] > max_parts:
            raise _TooManyParts()
        dst = email.message.Message(email.policy.compat32)
        dst._headers = list(src._headers)  # type: ignore[attr-defined]  # the stored (name, value) pairs
        dst._unixfrom = src._unixfrom  # type: ignore[attr-defined]
        dst._charset = src._charset  # type: ignore[attr-defined]
        dst.preamble, dst.epilogue = src.preamble, src.epilogue
        dst.defects = list(src.defects)
        dst.set_default_type(src.get_default_type())
        ctype = dst.get_content_type()
        if ctype != src.get_content_type():
            return None
        if ctype.startswith("multipart/") and (
                dst.get_boundary() != src.get_boundary()
                or str(dst.get("content-transfer-encoding", "8bit")).lower()
                != str(src.get("content-transfer-encoding", "8bit")).lower()):
            return None
        payload = src._payload  # type: ignore[attr-defined]
        if isinstance(payload, list):
            children = []
            for child in payload:
                made = copy(child)
                if made is None:
                    return None
                children.append(made)
            dst._payload = children  # type: ignore[attr-defined]
        else:
            dst._payload = payload  # type: ignore[attr-defined]
            keep_payload_bytes(src, dst)
        return dst

    try:
        return copy(tree)
    except RecursionError:
        return None


class Walker:
    """Walks one message; ``leaves()`` yields its leaf parts, ``ambiguities`` says what was unclear."""

    def __init__(self, raw: bytes, budget: Budget, parsed: email.message.Message | None = None, *,
                 headers_checked: bool = False):
        """``parsed``: the feed parser's tree of ``raw`` under another policy, if one is at hand (see compat_copy).

        ``headers_checked``: overlong_mime_header(raw) is known to be None (the parse stage asked it).
        """
        self.raw = raw
        self.headers_checked = headers_checked
        self.budget = budget
        self.limits = budget.limits
        self.parsed = parsed
        self.ambiguities: list[str] = []
        self.parts: list[Ambiguity] = []

    def note(self, reason: str, cause: str, loc: str = "", node: email.message.Message | None = None) -> None:
        """Record an ambiguity: ``reason`` in English for the log, and where and why for the reply."""
        if reason not in self.ambiguities:
            self.ambiguities.append(reason)
            place = Ambiguity(loc, _first_name(node) if node is not None else None, cause)
            if place not in self.parts:
                self.parts.append(place)

    def leaves(self) -> Iterator[Leaf]:
        """Every leaf part in order; raises OverLimit past a limit."""
        root = self._parse()
        yield from self._message(root, "", 0, ())

    def _parse(self) -> email.message.Message:
        self._check_header_lengths()
        if self.limits.max_parts >= 1:
            # One part (a text body alone, most mail): the header section parsed alone and
            # the body set as its payload, the same tree as the feed parser's (see
            # mailgw.message.parsed.complete_one_part) without its line-by-line pass over the body.
            if self.raw:
                self.budget.check_time()  # as the loop below does before its first slice
            one = parse_one_part(self.raw, email.policy.compat32)
            if one is not None:
                return one
        if self.parsed is not None:
            # The message's own tree (classification parsed it): copied, not parsed again,
            # when the copy is the tree this parse would make (compat_copy).
            if self.raw:
                self.budget.check_time()
            try:
                copied = compat_copy(self.parsed, self.limits.max_parts)
            except _TooManyParts:
                raise OverLimit(f"more than {self.limits.max_parts} MIME parts") from None
            if copied is not None:
                return copied
        # A simple multipart (a letter and its attachments): cut at its delimiter lines, the
        # same tree as the feed parser's (mailgw.message.parsed.complete_multipart); more
        # parts than the limit go to the counting parse below, which stops at the limit.
        fast = parse_multipart(self.raw, email.policy.compat32, max_parts=self.limits.max_parts)
        if fast is not None:
            return fast
        made = 0
        cap = self.limits.max_parts + 1  # the parser makes one probe instance first

        class CountedPart(email.message.Message):
            def __init__(self, policy: email.policy.Policy = email.policy.compat32):
                nonlocal made
                made += 1
                if made > cap:
                    raise _TooManyParts()
                super().__init__(policy)

        # Fed in slices: BytesParser.parsebytes would hold the whole message as text
        # and as a list of lines at once (146 MiB at peak for an 18.5 MiB message,
        # against 35 MiB this way), and the time budget is checked between slices.
        parser = email.feedparser.BytesFeedParser(_factory=CountedPart, policy=email.policy.compat32)
        try:
            for start in range(0, len(self.raw), _FEED):
                self.budget.check_time()
                parser.feed(self.raw[start:start + _FEED])
            return parser.close()
        except _TooManyParts:
            raise OverLimit(f"more than {self.limits.max_parts} MIME parts") from None
        except RecursionError:
            raise OverLimit("MIME structure nested too deeply to parse") from None

    def _check_header_lengths(self) -> None:
        if self.headers_checked:
            return
        problem = overlong_mime_header(self.raw)
        if problem:
            raise OverLimit(problem)

    # The tree: a message holds one body (multipart or leaf); a multipart holds parts;
    # a message/rfc822 part holds a message. Locations follow IMAP (RFC 3501 6.4.5).

    def _message(self, msg: email.message.Message, loc: str, depth: int,
                 bounds: tuple[str, ...]) -> Iterator[Leaf]:
        if msg.is_multipart() and msg.get_content_maintype() == "multipart":
            yield from self._multipart(msg, loc, depth, bounds)
        else:
            yield from self._part(msg, _sub(loc, 1), depth, bounds)

    def _multipart(self, node: email.message.Message, loc: str, depth: int,
                   bounds: tuple[str, ...]) -> Iterator[Leaf]:
        where = _where(loc)
        if depth > self.limits.max_depth:
            raise OverLimit(f"MIME depth over {self.limits.max_depth}")
        self._check_headers(node, loc)
        boundary = node.get_boundary()
        params = [k for k, _ in (node.get_params() or []) if k.lower() == "boundary"]
        if len(params) > 1:
            self.note(f"two boundary parameters in {where}", "boundary", loc)
        if boundary is not None:
            for outer in bounds:
                if boundary.startswith(outer) or outer.startswith(boundary):
                    self.note(f"boundary of {where} repeats an enclosing part's", "boundary", loc)
                    break
            bounds = bounds + (boundary,)
        cte = _cte(node)
        if cte not in _IDENTITY_CTE:
            self.note(f"multipart with Content-Transfer-Encoding {cte!r} in {where}", "encoding", loc)
        for text, side in ((node.preamble, "before the first"), (node.epilogue, "after the closing")):
            if text and (_MIME_HEADER.search(text) or any(f"\n--{b}" in "\n" + text for b in bounds)):
                self.note(f"MIME data {side} boundary of {where}", "outside_boundaries", loc)
        children = node.get_payload()
        if not isinstance(children, list):
            return
        for i, child in enumerate(children, start=1):
            self.budget.check_time()
            yield from self._part(child, _sub(loc, i), depth + 1, bounds)

    def _part(self, node: email.message.Message, loc: str, depth: int, bounds: tuple[str, ...]) -> Iterator[Leaf]:
        """One part at ``loc``: a multipart, an encapsulated message, or a leaf."""
        if depth > self.limits.max_depth:
            raise OverLimit(f"MIME depth over {self.limits.max_depth}")
        if node.is_multipart() and node.get_content_maintype() == "multipart":
            yield from self._multipart(node, loc, depth, bounds)
            return
        where = _where(loc)
        self._check_headers(node, loc)
        ctype = _declared_type(node)
        cte = _cte(node)
        if ctype == "message/partial":
            self.note(f"message/partial (a message in fragments) in {where}", "partial", loc, node)
        if node.is_multipart() and ctype in _REPORT_TYPES and cte not in _IDENTITY_CTE:
            # An encoded report: its readers decode it before they read its fields, so it is
            # decoded and inspected as a file (the parser read the encoded text as fields).
            yield from self._leaf(node, loc, ctype, cte, _body_text(node), rebuilt=True)
            return
        if node.is_multipart():  # message/rfc822, message/global, a report, or a part the parser nested
            if cte not in _IDENTITY_CTE:
                # RFC 2046 5.2.1: never encoded; some clients decode it anyway, the parser does not.
                self.note(f"{ctype or 'message'} with Content-Transfer-Encoding {cte!r} in {where}",
                          "encoding", loc, node)
            for inner in node.get_payload():
                if isinstance(inner, email.message.Message):
                    yield from self._message(inner, loc, depth + 1, bounds)
            return
        if ctype == "message/external-body":
            return  # carries a reference, not bytes
        yield from self._leaf(node, loc, ctype, cte, node._payload)  # type: ignore[attr-defined]  # as parsed

    def _leaf(self, node: email.message.Message, loc: str, ctype: str | None, cte: str,
              payload: object, rebuilt: bool = False) -> Iterator[Leaf]:
        """A part holding bytes: decoded as its transfer encoding says.

        ``payload`` is its text as parsed, or (``rebuilt``) as written back out
        from the messages the parser made of it.
        """
        where = _where(loc)
        if cte not in _KNOWN_CTE:
            self.note(f"unknown Content-Transfer-Encoding {cte!r} in {where}", "unknown_encoding", loc, node)
        if cte == "base64" and isinstance(payload, str) and not _strict_base64(payload):
            self.note(f"broken base64 in {where}", "broken_base64", loc, node)
        data = _decode(node, cte, payload, rebuilt)
        self.budget.add_decoded(len(data), loc)
        disposition, found = self._names(node, loc)
        leaf = Leaf(loc, ctype, disposition, found, data)
        if leaf.maybe_body:
            if _has_uuencode(data[:1 << 20]):
                self.note(f"uuencoded data inside the text of {where}", "embedded_file", loc, node)
            elif _BINHEX in data[:1 << 20]:
                self.note(f"BinHex data inside the text of {where}", "embedded_file", loc, node)
        yield leaf

    def _check_headers(self, node: email.message.Message, loc: str) -> None:
        where = _where(loc)
        for defect in node.defects:
            for kind, (text, cause) in _STRUCTURE_DEFECTS.items():
                if isinstance(defect, kind):
                    self.note(f"{text} in {where}", cause, loc, node)
            if isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect) and _headers_in_body(node):
                # A line that is not a header ended the part's headers, and MIME headers follow
                # it: a reader that skips the line takes them for the part's own.
                self.note(f"headers not separated from the body in {where}", "headers", loc, node)
        counts: dict[str, int] = {}
        for name, _ in node.raw_items():
            key = name.lower()
            if key in ("content-type", "content-transfer-encoding", "content-disposition"):
                counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            if n > 1:
                self.note(f"{n} {_TITLE[key]} headers in {where}", "duplicate_header", loc, node)

    def _names(self, node: email.message.Message, loc: str) -> tuple[str | None, list[str]]:
        """The disposition and every name the part carries, in both headers and every reading."""
        found: list[str] = []
        disposition: str | None = None
        for header in ("content-disposition", "content-type"):
            for raw in _raw_values(node, header):
                if len(raw) > MAX_HEADER:
                    self.note(f"{_TITLE[header]} header over {MAX_HEADER} characters in {_where(loc)}",
                              "long_header", loc)
                    continue
                value = _text(raw)
                readings = [value]
                decoded = vtext.decode_header(value)
                if decoded != vtext.nfc(value) and "=?" in value.split(";", 1)[0]:
                    readings.append(decoded)  # a whole header sent as one encoded word
                for reading in readings:
                    kind, names = _params(reading, header)
                    if header == "content-disposition" and disposition is None and kind:
                        disposition = kind
                    for n in names:
                        if n and n not in found:
                            found.append(n)
        return disposition, found


_TITLE = {"content-type": "Content-Type", "content-transfer-encoding": "Content-Transfer-Encoding",
          "content-disposition": "Content-Disposition"}


def _sub(loc: str, i: int) -> str:
    return f"{loc}.{i}" if loc else str(i)


def _where(loc: str) -> str:
    return f"part {loc}" if loc else "the message"


def _raw_values(node: email.message.Message, header: str) -> list[str]:
    return [v if isinstance(v, str) else str(v) for k, v in node.raw_items() if k.lower() == header]


def _text(raw: str) -> str:
    """A raw header value as text: unfolded, 8-bit bytes (surrogate escapes) decoded."""
    value = _FOLDING.sub(" ", raw).strip()
    if vtext.has_escaped_bytes(value):
        value = vtext.decode_bytes(value.encode("utf-8", "surrogateescape"))
    return value


def _declared_type(node: email.message.Message) -> str | None:
    values = _raw_values(node, "content-type")
    if not values:
        return None
    kind = _text(values[0][:MAX_HEADER]).split(";", 1)[0].strip().lower()
    return kind if _CONTENT_TYPE.fullmatch(kind) else None


def _cte(node: email.message.Message) -> str:
    """The part's transfer encoding, lowercased; a loose spelling of a known one ("Quoted-Printable ", "7-bit") as that one."""
    values = _raw_values(node, "content-transfer-encoding")
    if not values:
        return ""
    cte = _text(values[0][:200]).strip().lower()
    return _CTE_SPELLINGS.get(_CTE_NOISE.sub("", cte), cte)


def _strict_base64(payload: str) -> bool:
    """Only the base64 alphabet and line breaks (CR, LF, tab, space), padding at the end only.

    Missing padding is not broken: every decoder that reads the text reads the
    same bytes from it (a lone last character, which carries no whole byte, is).
    Same answer as the regular expression and length count it replaces (kept in
    tests/test_fast_paths.py, which compares them), in two bytes.translate passes:
    a third of the expression's time on a 200 KB part.
    """
    if not payload.isascii():
        return False
    core = payload.encode("ascii").translate(None, _BASE64_SPACE)  # without line breaks: alphabet, then "="s
    text = core.rstrip(b"=")
    if len(core) - len(text) > 2 or text.translate(None, _BASE64_ALPHABET):
        return False
    return len(core) % 4 != 1


def _decode(node: email.message.Message, cte: str, payload: object, rebuilt: bool = False) -> bytes:
    """The part's decoded bytes, as its (normalised) transfer encoding says.

    Base64 and quoted-printable are decoded here, straight from the parsed
    text: the email package would first copy base64 twice, line by line, and
    leaves a loosely spelled encoding ("Quoted-Printable ") undecoded, where
    mail clients decode it. Anything else goes through the email package's
    lenient decoders, which is what a lenient client sees.
    """
    if cte in ("base64", "quoted-printable") and isinstance(payload, str):
        try:
            if cte == "quoted-printable":
                return binascii.a2b_qp(payload.encode("ascii", "surrogateescape"))
            return base64_payload(node, payload)  # classification decoded it already
        except (ValueError, binascii.Error, UnicodeEncodeError):
            # Base64 without its padding, text that is not ASCII: as the email package
            # decodes the encoding named (its decoders are lenient, as clients are).
            named = email.message.Message()
            named["Content-Transfer-Encoding"] = cte
            named.set_payload(payload)
            data = named.get_payload(decode=True)
            return data if isinstance(data, bytes) else b""
    if rebuilt:
        return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    data = decoded_payload(node)
    return data if isinstance(data, bytes) else b""



def _body_text(node: email.message.Message) -> str:
    """The text of a part the parser split into messages (a report's field blocks), written back out."""
    text = node.as_string(policy=email.policy.compat32)
    end = min((i for i in (text.find("\n\n"), text.find("\r\n\r\n")) if i >= 0), default=-1)
    return text[end:].lstrip("\r\n") if end >= 0 else ""


def _headers_in_body(node: email.message.Message) -> bool:
    """Whether the lines the parser took for the start of the body, up to the first empty line, hold a MIME header."""
    payload = node.get_payload()
    if not isinstance(payload, str):
        return True  # the parser built parts from it: what is there is structure
    head = re.split(r"\r?\n[ \t]*\r?\n", payload[:MAX_HEADER * 8], maxsplit=1)[0]
    return _MIME_HEADER.search(head) is not None


def _first_name(node: email.message.Message) -> str | None:
    """The part's file name (Content-Disposition first), decoded, for a reply; None without one."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            value = node.get_param(param, header=header)
        except Exception:  # noqa: BLE001 - a malformed header has no name to give
            continue
        if value:
            try:
                text = email.utils.collapse_rfc2231_value(value, errors="replace", fallback_charset="utf-8")
            except Exception:  # noqa: BLE001
                text = str(value)
            return _name(str(text))[:200] or None
    return None


def _params(value: str, header: str) -> tuple[str | None, list[str]]:
    """The first token and every name/filename parameter, read by both parsers of the email package."""
    if len(value) <= _PARAMS_CACHED_LENGTH and "(" not in value:
        first, names = _params_cached(value, header)
        return first, list(names)
    return _read_params(value, header)


# Reading one value costs 0.1 ms (most of it policy.default's parser) and the values
# of ordinary parts repeat from message to message ("text/plain; charset=utf-8"):
# short ones are remembered. Not those with a comment: how deep the parser may
# recurse into nested comments depends on the caller's stack, not on the value alone.
_PARAMS_CACHED_LENGTH = 256


@functools.lru_cache(maxsize=512)
def _params_cached(value: str, header: str) -> tuple[str | None, tuple[str, ...]]:
    first, names = _read_params(value, header)
    return first, tuple(names)


def _read_params(value: str, header: str) -> tuple[str | None, list[str]]:
    names: list[str] = []
    first: str | None = None
    # compat32: keeps duplicates and both the RFC 2231 and plain forms of a parameter.
    holder = email.message.Message()
    holder[header] = value
    try:
        params = holder.get_params(header=header) or []
    except Exception:
        params = []
    for i, (key, val) in enumerate(params):
        if i == 0:
            first = key.strip().lower() or None
            continue
        if key.strip().lower() in ("filename", "name"):
            try:
                text = email.utils.collapse_rfc2231_value(val, errors="replace", fallback_charset="utf-8")
            except Exception:
                text = val[2] if isinstance(val, tuple) else str(val)
            names.append(_name(text))
    # policy.default: its own tokenizer, which reads some malformed values differently.
    try:
        parsed = email.policy.default.header_factory(header, value)
        for key, val in getattr(parsed, "params", {}).items():
            if key.lower() in ("filename", "name"):
                names.append(_name(str(val)))
    except Exception:
        pass
    return first, names


def _name(text: str) -> str:
    return namefacts.normalize(vtext.decode_header(text)).strip("\x00")


def _has_uuencode(data: bytes) -> bool:
    """A uuencode "begin" line anywhere in ``data`` (what ``(?m)^begin...`` finds)."""
    return bool(_UUENCODE.match(data) or _UUENCODE_AFTER_LF.search(data))


def overlong_mime_header(raw: bytes) -> str | None:
    """What is wrong when a Content-Type or Content-Disposition is too long to parse safely, else None.

    The email package splits parameters in time quadratic in the length of the
    value (a 32 KB value of quoted semicolons costs 0.5 s, 5 MB would cost hours),
    and it does so inside one call that no budget can interrupt; legitimate values,
    even RFC 2231 names in Vietnamese, stay far below the limit.
    """
    first = _MIME_HEADER_START.match(raw)
    for m in itertools.chain([first] if first else [], _MIME_HEADER_AFTER_LF.finditer(raw)):
        end = _LOGICAL_END.search(raw, m.end())
        length = (end.start() if end else len(raw)) - m.start(1)
        if length > MAX_HEADER:
            name = _TITLE.get(m.group(1).lower().decode("ascii"), "MIME")
            return f"{name} header over {MAX_HEADER} characters"
    return None
