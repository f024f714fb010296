"""The decision record of one exchange: what the spool keeps and the audit log stores.

Metadata and hashes only: the body of a message is never part of it.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from mailgw.message.model import Context, Message

_HEADER_FIELDS = ("from", "to", "cc", "subject", "message-id", "in-reply-to", "references")


def build(message: Message, ctx: Context, reply: str) -> dict[str, Any]:
    env = message.envelope
    directory = ctx.directory
    author = message.facts.get("from")
    record: dict[str, Any] = {
        "id": message.id,
        "time": datetime.datetime.fromtimestamp(env.received_at, datetime.timezone.utc).isoformat(),
        "node": ctx.settings.node,
        "listener": env.listener,
        "role": env.role,
        "direction": direction(message, ctx),
        "client_ip": env.client_ip,
        "helo": env.helo,
        "tls": env.tls,
        "auth_user": env.auth_user,
        "mail_from": env.mail_from,
        "rcpts": list(env.rcpts),
        "header": _headers(message),
        "sender": _party(directory, author) if author else None,
        "recipients": [_party(directory, r) for r in env.rcpts],
        "size": len(message.raw),
        "sha256": hashlib.sha256(message.raw).hexdigest(),
        "classification": message.facts.get("classification"),
        "dkim": message.facts.get("dkim"),
        "attachments": message.facts.get("attachments", []),
        "decision": message.decision.to_json() | {"reply": reply},
        "policy_version": message.facts.get("policy_version"),
        "directory_version": directory.version,
    }
    if message.decision.redact:
        _redact(record)
    return record


def _redact(record: dict[str, Any]) -> None:
    """Metadata and hashes only (a secret document, VN-DOCUMENTS section 5: keep no copy).

    The subject becomes its hash; the classification keeps its cues and where
    they were found, and the text of only the secrecy marks themselves.
    """
    subject = record["header"].get("subject")
    if subject is not None:
        record["header"]["subject"] = "sha256:" + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()
    c = record.get("classification")
    if c:
        c = dict(c)
        c["evidence"] = [
            {**e, "text": e.get("text", "")[:40] if e.get("cue", "").startswith("secrecy") else ""}
            for e in c.get("evidence", [])
        ]
        record["classification"] = c
    record["redacted"] = True


def direction(message: Message, ctx: Context) -> str:
    """inbound (arrived on mx), internal (every party local) or outbound."""
    env = message.envelope
    if env.role == "mx":
        return "inbound"
    is_local = ctx.directory.is_local
    if all(is_local(r) for r in env.rcpts) and (not env.mail_from or is_local(env.mail_from)):
        return "internal"
    return "outbound"


def _headers(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        headers = message.headers
        for name in _HEADER_FIELDS:
            value = headers.text(name)  # str(headers.get(name)), without a parse tree for the usual shapes
            out[name.replace("-", "_")] = value[:998] if value is not None else None
    except Exception:  # a record is written even for a message whose headers do not parse
        pass
    return out


def _party(directory: Any, address: str) -> dict[str, Any]:
    box = directory.mailbox(address)
    agency = directory.agency_of(address)
    return {
        "address": address,
        "local": directory.is_local(address),
        "official": directory.is_official(address),
        "agency": agency.code if agency else None,
        "unit": box.unit.code if box and box.unit else None,
        "exception": directory.exception_for(address) is not None,
    }
