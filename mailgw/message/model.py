"""Shared value types on a message's path: Envelope, Message, Verdict."""

from __future__ import annotations

import dataclasses
import email.feedparser
import email.headerregistry
import email.message
import email.parser
import email.policy
import os
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from mailgw.message.facts import AuditModeHit, Facts
from mailgw.message.parsed import (
    ParsedOnce,
    complete_multipart,
    complete_one_part,
    crlf_only,
    header_section,
    parse_header_section,
)

if TYPE_CHECKING:
    from mailgw.classify.engine import ClassifyLimits
    from mailgw.config.resolver import DnsResolver, FileResolver
    from mailgw.config.settings import Settings
    from mailgw.directory.model import Directory
    from mailgw.policy.engine import RuleStep
    from mailgw.policy.facts import Known
    from mailgw.policy.rules import PolicySet
    from mailgw.senderauth.arc import ArcSealKey
    from mailgw.smtp.credentials import Credentials
    from mailgw.stages.dkim_sign import Keyring


T = TypeVar("T")


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
class Verdict:
    """The one answer to "what happens to this message".

    The policy stage fills it; :func:`mailgw.pipeline.run` completes and
    returns it, with ``reply`` always set: the refusal the client gets, or
    the 250 it gets once the message is durable. The edge replies and spools
    by it, ``mailgw policy test`` prints it, the exchange record keeps it.
    """

    kind: str = "accept"  # accept | reject | quarantine | defer
    rule: str = "default"  # the rule that decided; "smtp" for the protocol checks, "error" for a fault of ours
    mode: str = "enforce"
    matched: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    reply: str = ""  # the final reply line, exchange id included
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # to add to the message
    archive: list[str] = dataclasses.field(default_factory=list)  # extra recipients of a copy
    notify_sender: bool = False  # tell the envelope sender (of a quarantine)
    redact: bool = False  # keep only metadata and hashes in the record (secret documents)
    audit: list[AuditModeHit] = dataclasses.field(default_factory=list)  # audit-mode rules: what they would have done
    # Why, for traces: the policy set's version, the facts the rules saw, each rule's step.
    policy_version: str | None = None
    seen: dict[str, Any] | None = None  # the rules' namespace (policy.facts.view), JSON-ready
    steps: list[RuleStep] = dataclasses.field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Reject or defer: nothing is spooled, the message is not changed."""
        return self.kind in ("reject", "defer")


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
    facts: Facts = dataclasses.field(default_factory=Facts)
    verdict: Verdict = dataclasses.field(default_factory=Verdict)
    prepend: list[bytes] = dataclasses.field(default_factory=list)
    _headers: ParsedOnce | None = dataclasses.field(default=None, repr=False)
    _parsed: ParsedOnce | None = dataclasses.field(default=None, repr=False)
    # The parsed header values of both views and every MIME part, by (name, value): see ParsedOnce.
    _header_cache: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    # (raw, {check: its answer}) for the raw they were asked of: see of_raw.
    _raw_checks: tuple[bytes, dict[Callable[[bytes], Any], Any]] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False)

    @property
    def headers(self) -> ParsedOnce:
        """The header section only (cheap: the body is neither parsed nor read)."""
        if self._headers is None:
            if self._parsed is not None:
                self._headers = self._parsed  # the same header section, already parsed
            else:
                self._headers = parse_header_section(  # type: ignore[assignment]
                    header_section(self.raw), email.policy.default, self._part_factory())
        assert self._headers is not None
        return self._headers

    @property
    def parsed(self) -> ParsedOnce:
        """The whole MIME tree, parsed on first use (stages that read the body share it)."""
        if self._parsed is None:
            # One part, or a simple multipart: the header section (parsed already, or now) and
            # the body cut where the feed parser would cut it, without its line-by-line pass.
            factory = self._part_factory()
            head = self._headers
            if head is None:
                head = parse_header_section(header_section(self.raw), email.policy.default, factory)  # type: ignore[assignment]
            assert head is not None
            if complete_one_part(head, self.raw) or complete_multipart(head, self.raw, factory,
                                                                       crlf=self._known(crlf_only) is True):
                self._parsed = head
        if self._parsed is None:
            # Fed in 64 KiB slices: parsebytes holds the whole message as one text and
            # one list of lines at once (146 MiB at peak for a 20 MiB message, 35 this way).
            parser = email.feedparser.BytesFeedParser(_factory=self._part_factory(), policy=email.policy.default)
            for start in range(0, len(self.raw), 65536):
                parser.feed(self.raw[start:start + 65536])
            self._parsed = parser.close()  # type: ignore[assignment]
        assert self._parsed is not None
        return self._parsed

    def parsed_if_any(self) -> ParsedOnce | None:
        """The whole MIME tree if a stage parsed it already (of ``raw`` as it is now), else None: never parses."""
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
        self._raw_checks = None  # asked afresh of the new bytes (and the old ones not kept alive for it)

    def of_raw(self, check: Callable[[bytes], T]) -> T:
        """``check(self.raw)``, asked once per ``raw``: a check of the whole message two stages need.

        The parse stage counts line ends and looks for overlong MIME headers; the
        DKIM signer and the attachment walker ask the same of the same bytes (each
        a pass over the whole message: 0.2-0.3 ms for 200 KB). A ``raw`` replaced
        (``sanitise``) is asked afresh.
        """
        if self._raw_checks is None or self._raw_checks[0] is not self.raw:
            self._raw_checks = (self.raw, {})
        known = self._raw_checks[1]
        if check not in known:
            known[check] = check(self.raw)
        answer: T = known[check]
        return answer

    def _known(self, check: Callable[[bytes], Any]) -> Any:
        """What ``of_raw(check)`` answered for the present ``raw``, or None when it was not asked (never asks)."""
        if self._raw_checks is None or self._raw_checks[0] is not self.raw:
            return None
        return self._raw_checks[1].get(check)

    def crlf_only(self) -> bool:
        """Whether every line of ``raw`` ends in CRLF (mailgw.message.parsed.crlf_only), counted once per ``raw``."""
        return self.of_raw(crlf_only)

    def final_crlf_only(self) -> bool:
        """``crlf_only(self.final_bytes())``, or False where only counting the joined bytes would say True.

        The added header lines are counted apart from ``raw``; a piece ending in
        a bare CR, which the next would complete, answers False (the signer then
        reads the message the slow way, as if it had not been told).
        """
        return self.crlf_only() and crlf_only(b"".join(self.prepend))

    def final_bytes(self) -> bytes:
        """The bytes that will be queued and sent: added headers, then the message."""
        return b"".join(self.prepend) + self.raw


def new_id() -> str:
    """A sortable, unique exchange id: milliseconds since the epoch, then randomness."""
    ms = time.time_ns() // 1_000_000
    return f"{ms:011x}{os.urandom(5).hex()}".upper()


@dataclasses.dataclass(frozen=True)
class Context:
    """What the stages may consult: the settings and data in force for this message.

    A reload builds a new Context; a message keeps the one it started with.
    """

    settings: Settings
    directory: Directory
    credentials: Credentials | None = None  # when a submission listener exists
    policies: PolicySet | None = None
    resolver: DnsResolver | FileResolver | None = None  # from settings `dns:`
    signing_keys: Keyring = dataclasses.field(default_factory=dict)  # domain -> its keys, from `dkim:`
    arc_key: ArcSealKey | None = None  # the key that seals inbound mail, from `arc:` (one of `dkim:`)
    # Derived from the directory once, when the Context is made (a reload makes a new one): no stage
    # keeps a cache keyed by the directory.
    classify_limits: ClassifyLimits = dataclasses.field(init=False, repr=False, compare=False)
    known: Known = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from mailgw.classify.engine import limits_for
        from mailgw.policy.facts import Known

        object.__setattr__(self, "classify_limits", limits_for(self.directory))
        object.__setattr__(self, "known", Known(self.directory))
