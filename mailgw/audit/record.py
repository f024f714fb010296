"""The exchange record: one typed model for the writer and every reader.

The record of one exchange is what the spool keeps with a message and what the
exchange log stores (as canonical JSON, hashed into its chain). Metadata and
hashes only: the body of a message is never part of it.

``build()`` makes an :class:`ExchangeRecord` from a message that went through
the pipeline; ``to_json()`` is the JSON form the spool, the journal and the log
store; :func:`decode` reads any stored record back into the model, and is what
every reader (show, export, report, verify, replay) uses. Decoding checks types:
a record of the wrong shape is an error here, not an AttributeError deep in a
report. Records of earlier releases keep reading (:func:`_upgrade`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import msgspec

from mailgw.directory.model import Directory
from mailgw.message.facts import (
    ArcFacts,
    AttachmentFacts,
    AuditModeHit,
    ClassificationFacts,
    DkimFacts,
    DmarcFacts,
    SpfFacts,
    _Model,
)
from mailgw.message.model import Context, Message

_HEADER_FIELDS = ("from", "to", "cc", "subject", "message-id", "in-reply-to", "references")


class Party(_Model, frozen=True):
    """A sender or recipient as the directory saw it when the message passed."""

    address: str
    local: bool | None = None
    official: bool | None = None
    agency: str | None = None
    unit: str | None = None
    exception: bool | None = None


class HeaderFields(_Model, frozen=True):
    """The header fields an auditor searches by (each cut at 998 characters)."""

    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    cc: str | None = None
    subject: str | None = None  # "sha256:..." in a redacted record
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None


class DecisionFacts(_Model, frozen=True):
    """The decision as recorded and the reply the client got."""

    decision: str = "accept"
    rule: str = "default"
    mode: str = "enforce"
    matched: list[str] = []
    tags: list[str] = []
    reply: str | None = None
    headers: list[tuple[str, str]] = []
    archive: list[str] = []
    notify_sender: bool = False
    redact: bool = False
    audit: list[AuditModeHit] = []


class ExchangeRecord(_Model, frozen=True):
    """The decision record of one exchange."""

    id: str
    time: str  # ISO 8601, UTC
    node: str | None = None
    listener: str | None = None
    role: str | None = None
    direction: str | None = None  # inbound, internal, outbound
    client_ip: str | None = None
    helo: str | None = None
    tls: str | None = None
    auth_user: str | None = None
    mail_from: str | None = None
    rcpts: list[str] = []
    header: HeaderFields = HeaderFields()
    sender: Party | None = None
    recipients: list[Party] = []
    size: int = 0
    sha256: str | None = None
    classification: ClassificationFacts | None = None
    dkim: DkimFacts | None = None
    spf: SpfFacts | None = None
    dmarc: DmarcFacts | None = None
    arc: ArcFacts | None = None  # added with ARC: records written before it have none
    arc_sealed: str | None = None  # d= of the ARC set mailgw added to the copy it passed on
    attachments: AttachmentFacts = AttachmentFacts()
    decision: DecisionFacts = DecisionFacts()
    policy_version: str | None = None
    directory_version: str | None = None
    redacted: bool = False
    dsn_for: str | None = None  # a DSN the gateway made: the exchange it reports on
    notice_for: str | None = None  # a held-message notice: the held exchange
    body_sha256: str | None = None  # set by the log when the body is archived

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the spool, the journal and the exchange log."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        for key in ("redacted", "dsn_for", "notice_for", "body_sha256", "arc", "arc_sealed"):
            if not out.get(key):
                out.pop(key, None)  # absent unless it applies, as records always had it
        return out


_DECODER = msgspec.json.Decoder(ExchangeRecord)


class RecordError(ValueError):
    """A stored record that does not have the record's shape."""


def decode(stored: str | bytes | Mapping[str, Any]) -> ExchangeRecord:
    """A stored record (its JSON text, or the parsed JSON) as the model."""
    try:
        if isinstance(stored, (str, bytes)):
            try:
                return _DECODER.decode(stored)
            except msgspec.ValidationError:
                stored = json.loads(stored)  # maybe a record of an earlier shape
        assert isinstance(stored, Mapping)
        return msgspec.convert(_upgrade(stored), ExchangeRecord)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, AssertionError) as e:
        raise RecordError(f"not an exchange record: {e}") from e


def _upgrade(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Records written before the attachment facts were a mapping kept them as a list of files."""
    out = dict(rec)
    for key in ("audit", "deliveries", "body"):  # what readers add beside the record
        out.pop(key, None)
    files = out.get("attachments")
    if isinstance(files, list):
        out["attachments"] = {
            "count": len(files), "files": [_upgrade_file(f) for f in files if isinstance(f, Mapping)],
            "total_size": sum(f.get("size") or 0 for f in files if isinstance(f, Mapping)),
            "signed_any": any(f.get("signed") for f in files if isinstance(f, Mapping)),
        }
    elif files is None:
        out.pop("attachments", None)
    return out


def _upgrade_file(f: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in f.items() if k != "signer"}
    if f.get("signer") and not f.get("pdf"):
        out["pdf"] = {"signatures": 1, "signers": [f["signer"]]}
    return out


def build(message: Message, ctx: Context, reply: str, *, dsn_for: str | None = None,
          notice_for: str | None = None) -> ExchangeRecord:
    """The record of a message the pipeline has decided on (a DSN or notice names its exchange)."""
    env = message.envelope
    directory = ctx.directory
    found = message.facts
    author = found.author
    verdict = message.verdict
    record = ExchangeRecord(
        id=message.id,
        time=datetime.datetime.fromtimestamp(env.received_at, datetime.timezone.utc).isoformat(),
        node=ctx.settings.node,
        listener=env.listener,
        role=env.role,
        direction=direction(message, ctx),
        client_ip=env.client_ip,
        helo=env.helo,
        tls=env.tls,
        auth_user=env.auth_user,
        mail_from=env.mail_from,
        rcpts=list(env.rcpts),
        header=_headers(message),
        sender=_party(directory, author) if author else None,
        recipients=[_party(directory, r) for r in env.rcpts],
        size=len(message.raw),
        sha256=hashlib.sha256(message.raw).hexdigest(),
        classification=found.classification,
        dkim=found.dkim,
        spf=found.spf,
        dmarc=found.dmarc,
        arc=found.arc,
        arc_sealed=found.arc_sealed,
        attachments=found.attachments or AttachmentFacts(),
        decision=DecisionFacts(
            decision=verdict.kind, rule=verdict.rule, mode=verdict.mode, matched=list(verdict.matched),
            tags=list(verdict.tags), reply=reply, headers=[(str(n), str(v)) for n, v in verdict.headers],
            archive=list(verdict.archive), notify_sender=verdict.notify_sender, redact=verdict.redact,
            audit=list(verdict.audit),
        ),
        policy_version=verdict.policy_version,
        directory_version=directory.version,
        dsn_for=dsn_for,
        notice_for=notice_for,
    )
    return _redacted(record) if verdict.redact else record


def _redacted(record: ExchangeRecord) -> ExchangeRecord:
    """Metadata and hashes only (a secret document: no copy of it may be kept).

    The subject becomes its hash; the classification keeps its cues and where
    they were found, and the text of only the secrecy marks themselves.
    """
    header = record.header
    if header.subject is not None:
        digest = hashlib.sha256(header.subject.encode("utf-8", "surrogateescape")).hexdigest()
        header = msgspec.structs.replace(header, subject="sha256:" + digest)
    c = record.classification
    if c:
        c = msgspec.structs.replace(c, evidence=[
            msgspec.structs.replace(e, text=e.text[:40] if e.cue.startswith("secrecy") else "") for e in c.evidence
        ])
    return msgspec.structs.replace(record, header=header, classification=c, redacted=True)


def direction(message: Message, ctx: Context) -> str:
    """inbound, internal or outbound, by the directory's one rule (the policy's ``internal`` is the same)."""
    env = message.envelope
    return str(ctx.directory.direction(env.role, message.facts.author, env.rcpts, env.mail_from))


def _headers(message: Message) -> HeaderFields:
    out: dict[str, Any] = {}
    try:
        headers = message.headers
        for name in _HEADER_FIELDS:
            value = headers.text(name)  # str(headers.get(name)), without a parse tree for the usual shapes
            out["from_" if name == "from" else name.replace("-", "_")] = value[:998] if value is not None else None
    except Exception:  # a record is written even for a message whose headers do not parse
        pass
    return HeaderFields(**out)


def _party(directory: Directory, address: str) -> Party:
    """A party as the record keeps it: the address as written, what the directory says of it."""
    p = directory.party(address)
    return Party(address=address, local=p.local, official=p.official, agency=p.agency, unit=p.unit,
                 exception=p.exception)
