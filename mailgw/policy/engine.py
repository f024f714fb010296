"""Evaluate the rules in order against one message's facts.

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

from mailgw.attachments.mime import CAUSES
from mailgw.message.facts import AuditModeHit
from mailgw.policy.rules import PolicySet, Rule


@dataclasses.dataclass
class RuleStep:
    """One rule as evaluated for one message: whether it matched, why, and what it decided or would have."""

    rule: str
    mode: str
    matched: bool
    why: str
    where: str  # FILE:LINE of the rule
    decided: str | None = None  # the decision it made (it ended the evaluation)
    would: str | None = None  # an audit-mode rule: the decision it would have made

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "mode": self.mode, "matched": self.matched, "why": self.why,
                               "where": self.where}
        if self.decided is not None:
            out["decided"] = self.decided
        if self.would is not None:
            out["would"] = self.would
        return out


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
    audit: list[AuditModeHit] = dataclasses.field(default_factory=list)  # what audit-mode rules would have done
    trace: list[RuleStep] = dataclasses.field(default_factory=list)


def evaluate(policies: PolicySet, view: dict[str, Any], today: datetime.date | None = None, *,
             explain: bool = True, memo: dict[int, bool] | None = None) -> Outcome:
    """The rules in order on ``view``.

    ``explain=False`` leaves the trace empty: a replay of many records needs the outcome only,
    and saying why each condition held or not is most of the work. ``memo`` (with it) keeps the
    answers of conditions on the facts alone (``Rule.memo_key``), for another pack run on the
    same facts: the candidate's rules that are the same as those in force are not tested twice.
    """
    today = today or datetime.date.today()
    out = Outcome()
    view["tags"] = list(view.get("tags") or [])
    view["matched"] = []
    values: dict[str, str] | None = None  # the placeholders' values, worked out when a text has one
    for rule in policies.rules if explain else policies.in_force(today):
        if explain:
            if not rule.in_force(today):
                out.trace.append(_step(rule, None, "not in force today"))
                continue
            ok, why = rule.when.test(view)
            out.trace.append(_step(rule, ok, why))
        elif memo is not None and (number := rule.memo_key) is not None:
            known = memo.get(number)
            ok = memo[number] = rule.when.holds(view) if known is None else known
        else:
            ok = rule.when.holds(view)
        if not ok:
            continue
        out.matched.append(rule.id)
        view["matched"].append(rule.id)
        then = rule.then
        if values is None and rule.templated:
            values = placeholders(view)
        if values is not None:
            values["rule"] = rule.id
        tags = [_render(t, values) for t in then.tags]
        if rule.mode == "audit":
            out.audit.append(AuditModeHit(rule=rule.id, would=then.decision, tags=tags))
            if explain:
                out.trace[-1].would = then.decision
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
            if explain:
                out.trace[-1].decided = then.decision
            break
    return out


def _step(rule: Rule, matched: bool | None, why: str) -> RuleStep:
    return RuleStep(rule=rule.id, mode=rule.mode, matched=bool(matched), why=why, where=rule.where)


def placeholders(view: dict[str, Any]) -> dict[str, str]:
    c = view.get("classification") or {}
    sender = view.get("sender") or {}
    attachments = view.get("attachments") or {}
    files = attachments.get("files") or []
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
        "attachment_problems": _attachment_problems(attachments, 0),
        "attachment_problems_en": _attachment_problems(attachments, 1),
    }


_LISTED = 4  # problems named in a reply; the rest are counted
_NAME_CHARS = 60
_GENERIC = ("cấu trúc thư quá mập mờ để kiểm tra", "the structure is too ambiguous to inspect")


def _attachment_problems(attachments: dict[str, Any], lang: int) -> str:
    """What the attachments' refusal names, in Vietnamese (``lang`` 0) or English (1).

    Each dangerous file by its name (or part number), then each place too
    ambiguous to inspect: the part, its name if it has one, and why. A long
    list is cut: the reply must fit SMTP lines, and the log has it all.
    """
    items = [str(f.get("name") or f.get("location") or "")[:_NAME_CHARS]
             for f in attachments.get("files") or () if f.get("dangerous")]
    parts = list(attachments.get("ambiguous_parts") or ())
    for p in parts:
        loc, name = p.get("location") or "", p.get("name")
        where = (f"phần {loc}", f"part {loc}")[lang] if loc else ("thư", "the message")[lang]
        if name:
            where += f" ({str(name)[:_NAME_CHARS]})"
        items.append(f"{where}: {CAUSES.get(p.get('cause') or '', _GENERIC)[lang]}")
    if attachments.get("ambiguous") and not parts:  # facts from before parts were recorded
        items.append(_GENERIC[lang])
    if len(items) > _LISTED:
        rest = len(items) - _LISTED + 1
        items = items[: _LISTED - 1] + [(f"và {rest} vấn đề khác", f"and {rest} more")[lang]]
    return "; ".join(items)


def _names(files: Iterable[dict[str, Any]]) -> str:
    """The files' names (their MIME part when they have none), for a reply; at most 300 characters."""
    return ", ".join(f"{f.get('name') or f.get('location')}" for f in files)[:300]


def _render(text: str, values: dict[str, str] | None) -> str:
    if "{" not in text and "}" not in text:
        return text  # no placeholder: what format_map would return
    assert values is not None  # evaluate() works them out before the first templated rule
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
