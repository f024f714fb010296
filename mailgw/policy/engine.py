"""Evaluate the rules in order against one message's facts (VN-DOCUMENTS section 9).

Rules are read in order. A rule that matches adds its tags and headers; the
first one that rejects, quarantines or defers (or accepts with ``stop``) ends
the evaluation and names the decision; if none does, the message is accepted
by ``default``. A rule in ``audit`` mode is evaluated and reported (what it
would have done) but changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import unicodedata
from typing import Any, Iterable

from mailgw.policy.rules import PolicySet, Rule


@dataclasses.dataclass
class Outcome:
    decision: str = "accept"
    rule: str = "default"
    mode: str = "enforce"
    matched: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    archive: list[str] = dataclasses.field(default_factory=list)
    notify_sender: bool = False
    redact: bool = False
    reply: Any = None  # rules.Reply, rendered, for reject/defer
    audit: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # what audit-mode rules would have done
    trace: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def evaluate(policies: PolicySet, view: dict[str, Any], today: datetime.date | None = None) -> Outcome:
    today = today or datetime.date.today()
    out = Outcome()
    view["tags"] = list(view.get("tags") or [])
    view["matched"] = []
    values = placeholders(view)
    for rule in policies.rules:
        if not rule.in_force(today):
            out.trace.append(_step(rule, None, "not in force today"))
            continue
        ok, why = rule.when.test(view)
        out.trace.append(_step(rule, ok, why))
        if not ok:
            continue
        out.matched.append(rule.id)
        view["matched"].append(rule.id)
        values["rule"] = rule.id
        then = rule.then
        tags = [_render(t, values) for t in then.tags]
        if rule.mode == "audit":
            out.audit.append({"rule": rule.id, "would": then.decision, "tags": tags})
            out.trace[-1]["would"] = then.decision
            continue
        for tag in tags:
            if tag not in out.tags:
                out.tags.append(tag)
            if tag not in view["tags"]:
                view["tags"].append(tag)
        for name, value in then.headers:
            out.headers = [h for h in out.headers if h[0].lower() != name.lower()]
            out.headers.append((name, _render(value, values)))
        out.archive.extend(a for a in then.archive if a not in out.archive)
        out.notify_sender = out.notify_sender or then.notify_sender
        out.redact = out.redact or then.redact
        if then.decides:
            out.decision, out.rule, out.mode = then.decision, rule.id, rule.mode
            if then.reply is not None:
                out.reply = dataclasses.replace(then.reply, text=_render(then.reply.text, values))
            out.trace[-1]["decided"] = then.decision
            break
    return out


def _step(rule: Rule, matched: bool | None, why: str) -> dict[str, Any]:
    return {"rule": rule.id, "mode": rule.mode, "matched": bool(matched), "why": why, "where": rule.where}


def placeholders(view: dict[str, Any]) -> dict[str, str]:
    c = view.get("classification") or {}
    sender = view.get("sender") or {}
    files = (view.get("attachments") or {}).get("files") or []
    return {
        "rule": "",
        "category": str(c.get("category") or "general"),
        "doc_type": str(c.get("doc_type") or ""),
        "doc_number": str(c.get("doc_number") or ""),
        "secrecy": str(c.get("secrecy") or "none"),
        "urgency": str(c.get("urgency") or "none"),
        "sender": str(sender.get("address") or ""),
        "unofficial_recipients": ", ".join(r["address"] for r in view.get("recipients", []) if not r.get("official")),
        "dangerous_files": _names(f for f in files if f.get("dangerous")),
        "encrypted_files": _names(f for f in files if f.get("encrypted")),
        "damaged_files": _names(f for f in files if f.get("damaged") is not None),
        "lookalike": str(sender.get("lookalike") or ""),
    }


def _names(files: Iterable[dict[str, Any]]) -> str:
    """The files' names (their MIME part when they have none), for a reply; at most 300 characters."""
    return ", ".join(f"{f.get('name') or f.get('location')}" for f in files)[:300]


def _render(text: str, values: dict[str, str]) -> str:
    if "{" not in text and "}" not in text:
        return text  # no placeholder: what format_map would return
    return text.format_map(_Safe(values))


class _Safe:
    """``values`` as a template sees them, each made safe when a placeholder asks for it.

    Values come from the message: one line, no control or bidirectional-override characters.
    """

    def __init__(self, values: dict[str, str]):
        self._values = values

    def __getitem__(self, key: str) -> str:
        v = self._values[key]
        return " ".join("".join(ch for ch in v if unicodedata.category(ch) not in ("Cc", "Cf")).split())
