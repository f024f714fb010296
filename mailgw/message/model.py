"""Shared value types on a message's path: Envelope, Message, Decision."""

from __future__ import annotations

import copy
import dataclasses
import email.feedparser
import email.headerregistry
import email.message
import email.parser
import email.policy
import functools
import os
import re
import time
from typing import Any, Callable

from mailgw.message import fastheaders


@dataclasses.dataclass
class Envelope:
    """What the SMTP session told us about one message."""

    mail_from: str  # "" for the null sender <>
    rcpts: list[str]
    listener: str
    role: str  # mx | relay | submission
    client_ip: str
    helo: str = ""
    tls: str | None = None  # negotiated protocol, e.g. "TLSv1.3"
    auth_user: str | None = None
    smtputf8: bool = False
    received_at: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        # dataclasses.asdict, written out: it deep-copies field by field (a tenth of a millisecond).
        return {
            "mail_from": self.mail_from, "rcpts": list(self.rcpts), "listener": self.listener, "role": self.role,
            "client_ip": self.client_ip, "helo": self.helo, "tls": self.tls, "auth_user": self.auth_user,
            "smtputf8": self.smtputf8, "received_at": self.received_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Envelope:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class Decision:
    """What the policy decided, and which rule decided it (CONTRACT section 5)."""

    decision: str = "accept"  # accept | reject | quarantine | defer
    rule: str = "default"
    mode: str = "enforce"
    matched: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    reply: str = ""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # to add to the message
    archive: list[str] = dataclasses.field(default_factory=list)  # extra recipients of a copy
    notify_sender: bool = False  # tell the envelope sender (of a quarantine)
    redact: bool = False  # keep only metadata and hashes in the record (secret documents)
    audit: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # audit-mode rules: what they would have done

    def to_json(self) -> dict[str, Any]:
        # dataclasses.asdict, written out (fields in order, every container copied), headers as lists.
        return {
            "decision": self.decision, "rule": self.rule, "mode": self.mode, "matched": list(self.matched),
            "tags": list(self.tags), "reply": self.reply, "headers": [list(h) for h in self.headers],
            "archive": list(self.archive), "notify_sender": self.notify_sender, "redact": self.redact,
            "audit": _copied(self.audit),
        }


def _copied(value: Any) -> Any:
    """A copy of JSON-like data, containers copied all the way down (what asdict does to a non-dataclass value)."""
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, dict):
        return {_copied(k): _copied(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return copy.deepcopy(value)


@dataclasses.dataclass
class Message:
    """One message on its way through the pipeline.

    ``raw`` is the message as received (CRLF line endings, dot-stuffing undone).
    Stages add facts; only the final stage changes the bytes, through
    ``prepend`` (header lines added at the top, most recent first).
    """

    id: str
    envelope: Envelope
    raw: bytes
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    decision: Decision = dataclasses.field(default_factory=Decision)
    prepend: list[bytes] = dataclasses.field(default_factory=list)
    _headers: ParsedOnce | None = dataclasses.field(default=None, repr=False)
    _parsed: ParsedOnce | None = dataclasses.field(default=None, repr=False)
    # The parsed header values of both views and every MIME part, by (name, value): see ParsedOnce.
    _header_cache: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def headers(self) -> ParsedOnce:
        """The header section only (cheap: the body is neither parsed nor read)."""
        if self._headers is None:
            if self._parsed is not None:
                self._headers = self._parsed  # the same header section, already parsed
            else:
                self._headers = parse_header_section(  # type: ignore[assignment]
                    _header_section(self.raw), email.policy.default, self._part_factory())
        assert self._headers is not None
        return self._headers

    @property
    def parsed(self) -> ParsedOnce:
        """The whole MIME tree, parsed on first use (stages that read the body share it)."""
        if self._parsed is None and self._headers is not None and complete_one_part(self._headers, self.raw):
            self._parsed = self._headers  # one part: the header section, already parsed, and the body as it is
        if self._parsed is None:
            # Fed in 64 KiB slices: parsebytes holds the whole message as one text and
            # one list of lines at once (146 MiB at peak for a 20 MiB message, 35 this way).
            parser = email.feedparser.BytesFeedParser(_factory=self._part_factory(), policy=email.policy.default)
            for start in range(0, len(self.raw), 65536):
                parser.feed(self.raw[start:start + 65536])
            self._parsed = parser.close()  # type: ignore[assignment]
        assert self._parsed is not None
        return self._parsed

    def _part_factory(self) -> Callable[..., ParsedOnce]:
        """Makes the parser's message objects, all sharing this message's cache of parsed header values.

        So the Content-Type the header parser read is not parsed again for
        the MIME tree, nor a "Content-Transfer-Encoding: base64" for every part.
        """
        cache = self._header_cache

        def factory(policy: Any = email.policy.compat32) -> ParsedOnce:
            part = ParsedOnce(policy=policy)
            part._fetched = cache
            return part

        return factory

    def sanitise(self, raw: bytes) -> None:
        """Replace ``raw`` by a cleaned copy (a fact stage removing forged fields); the parsed views are rebuilt on next use.

        Only before the decision: after it, changes go through ``prepend``.
        """
        self.raw = raw
        self._headers = None
        self._parsed = None

    def final_bytes(self) -> bytes:
        """The bytes that will be queued and sent: added headers, then the message."""
        return b"".join(self.prepend) + self.raw


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
    payload = head._payload  # the text as parsed: get_payload() would decode 8-bit bytes
    if not isinstance(payload, str) or head.get_content_maintype() in ("multipart", "message"):
        return False
    body = raw[len(_header_section(raw)):]
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
    head = parse_header_section(_header_section(raw), policy)
    return head if complete_one_part(head, raw) else None


# A header line the feed parser reads as a field (a name and a colon) or a continuation;
# not "From " (an mbox separator) nor an empty name (a defect), which it treats apart.
_PLAIN_HEADER_LINE = re.compile(r"[\041-\071\073-\176]+:|[\t ]")


def parse_header_section(section: bytes, policy: email.policy.Policy, factory: Any = None) -> email.message.Message:
    """What ``BytesHeaderParser(_class=factory, policy=policy).parsebytes(section)`` gives, faster for a plain section.

    A section from _header_section is plain when every line ends with CRLF, the
    last is the empty line that ends it, the first is a field and every other a
    field or a continuation: then the feed parser (line by line through a buffer
    and a generator, 0.1 ms for a dozen fields) stores, for each field, what the
    policy's ``header_source_parse`` makes of its lines, and nothing else (no
    defect, no mbox "From " line, an empty payload). Anything else goes to it.
    """
    text = section.decode("ascii", "surrogateescape")
    lines = text.split("\r\n")
    # Plain: "...\r\n\r\n" at the end (so lines ends with two empty strings) and no other CR or LF.
    if (len(lines) < 3 or lines[-1] or lines[-2] or text.count("\r") != len(lines) - 1
            or text.count("\n") != len(lines) - 1 or lines[0][:1] in (" ", "\t")
            or not all(map(_PLAIN_HEADER_LINE.match, lines[:-2]))):
        return email.parser.BytesHeaderParser(_class=factory, policy=policy).parsebytes(section)
    if factory is None:
        factory = policy.message_factory or email.message.Message
    msg = factory(policy=policy)
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
    payload = part._payload
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


def _header_section(raw: bytes) -> bytes:
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


def new_id() -> str:
    """A sortable, unique exchange id: milliseconds since the epoch, then randomness."""
    ms = time.time_ns() // 1_000_000
    return f"{ms:011x}{os.urandom(5).hex()}".upper()


@dataclasses.dataclass(frozen=True)
class Context:
    """What the stages may consult: the settings and data in force for this message.

    A reload builds a new Context; a message keeps the one it started with.
    """

    settings: Any  # mailgw.config.settings.Settings
    directory: Any  # mailgw.directory.model.Directory
    credentials: Any = None  # mailgw.smtp.credentials.Credentials, when a submission listener exists
    policies: Any = None  # mailgw.policy.PolicySet
    resolver: Any = None  # mailgw.config.resolver resolver (DnsResolver or FileResolver), from settings `dns:`
    signing_keys: Any = dataclasses.field(default_factory=dict)  # domain -> tuple of mailgw.dkim.SigningKey, from `dkim:`
