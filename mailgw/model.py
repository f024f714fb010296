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
import time
from typing import Any, Callable

from mailgw import fastheaders


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
                parser = email.parser.BytesHeaderParser(_class=self._part_factory(), policy=email.policy.default)
                self._headers = parser.parsebytes(_header_section(self.raw))  # type: ignore[assignment]
        assert self._headers is not None
        return self._headers

    @property
    def parsed(self) -> ParsedOnce:
        """The whole MIME tree, parsed on first use (stages that read the body share it)."""
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
        parse tree when mailgw.fastheaders can read the value by itself.
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


def _header_section(raw: bytes) -> bytes:
    """``raw`` up to and including its first empty line (all of it when there is none).

    The header parser would otherwise still split the whole body into lines (a
    millisecond for a message with a 200 KB attachment). An empty line ends the
    header section whatever the line endings ("\n\r\n" or "\n\n"); cutting after
    it, or later, gives the parser the same headers.
    """
    if raw[:1] in (b"\n", b"\r"):
        return raw[:2]
    ends = [i for i in (raw.find(b"\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[: min(ends) + 3] if ends else raw


def new_id() -> str:
    """A sortable, unique exchange id: milliseconds since the epoch, then randomness."""
    ms = time.time_ns() // 1_000_000
    return f"{ms:011x}{os.urandom(5).hex()}".upper()


@dataclasses.dataclass(frozen=True)
class Context:
    """What the stages may consult: the settings and data in force for this message.

    A reload builds a new Context; a message keeps the one it started with.
    """

    settings: Any  # mailgw.settings.Settings
    directory: Any  # mailgw.directory.Directory
    credentials: Any = None  # mailgw.credentials.Credentials, when a submission listener exists
    policies: Any = None  # mailgw.policy.PolicySet
    resolver: Any = None  # mailgw.dnsanswers resolver (DnsResolver or FileResolver), from settings `dns:`
    signing_keys: Any = dataclasses.field(default_factory=dict)  # domain -> tuple of mailgw.dkim.SigningKey, from `dkim:`
