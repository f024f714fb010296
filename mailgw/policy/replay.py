"""`mailgw policy replay`: what a candidate policy pack would have done to exchanges already in the log.

A replay reads no message: it runs the rules on the facts each exchange's record
keeps (envelope, author, classification, attachments, DKIM, SPF, DMARC, size), with the
parties looked up in the directory in force now and each rule's validity dates
taken on the exchange's own day. Both packs, the one in force and the candidate,
run on the same facts, so a difference shown is the candidate's alone.

What facts alone cannot replay, and is said in the result:

- exchanges refused before any rule ran (rule ``smtp``: a protocol check; ``error``:
  a fault of ours) and the DSNs and notices the gateway made itself: skipped;
- what a record does not keep: the From display name (``display_spoof``) and the
  Sender / Resent-* addresses (``any_claimed``). Rules testing them see none, so the
  pack in force may decide otherwise than it did; those exchanges are counted as
  ``differs_from_record``;
- a secret exchange (redacted record) replays on the facts it kept, and the
  result shows nothing more than the record does.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterable
from typing import Any

from mailgw.audit.record import ExchangeRecord
from mailgw.directory.model import PartyInfo
from mailgw.message.facts import Facts
from mailgw.message.model import Context, Envelope, Message
from mailgw.policy import engine, facts
from mailgw.policy.rules import PolicySet
from mailgw.stages.policy import MISSING_PARTNER_TAG

# Records of exchanges no rule decided: the protocol's refusals, our faults, what the gateway made itself.
_NOT_DECIDED_BY_RULES = frozenset({"smtp", "error", "dsn", "notice", "dmarc-report"})
_MADE_BY_THE_GATEWAY = frozenset({"dsn", "notice", "report"})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A pack's answer for one exchange."""

    decision: str
    rule: str
    tags: tuple[str, ...]
    matched: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "rule": self.rule, "tags": list(self.tags)}


@dataclasses.dataclass(frozen=True)
class Change:
    """An exchange the candidate would decide, or tag, otherwise than the pack in force."""

    id: str
    time: str
    sender: str | None
    recorded: Outcome
    current: Outcome
    candidate: Outcome

    def to_json(self) -> dict[str, Any]:
        """The published line of ``policy replay --json``: before (the policies in force), after (the candidate)."""
        return {"id": self.id, "time": self.time, "sender": self.sender, "before": self.current.to_json(),
                "after": self.candidate.to_json(), "recorded": self.recorded.to_json()}


@dataclasses.dataclass
class Report:
    replayed: int = 0
    skipped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    differs_from_record: int = 0  # the pack in force, on the kept facts, against what was recorded
    decisions: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: {"current": collections.Counter(), "candidate": collections.Counter()})
    rules: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: {"current": collections.Counter(), "candidate": collections.Counter()})
    changes: list[Change] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The last line of ``policy replay --json``."""
        return {
            "replayed": self.replayed, "changed": len(self.changes), "skipped": dict(self.skipped),
            "differs_from_record": self.differs_from_record,
            "decisions": {"before": dict(self.decisions["current"]), "after": dict(self.decisions["candidate"])},
            "rules": {"before": dict(self.rules["current"]), "after": dict(self.rules["candidate"])},
        }


def replay(ctx: Context, current: PolicySet, candidate: PolicySet, records: Iterable[ExchangeRecord]) -> Report:
    """Both packs on every record's facts; the exchanges whose decision, rule or tags would change."""
    report = Report()
    # The directory in force answers alike for an address all through the run: asked once per address.
    parties = functools.lru_cache(maxsize=65536)(ctx.directory.party)
    for rec in records:
        if rec.role in _MADE_BY_THE_GATEWAY or rec.dsn_for or rec.notice_for:
            report.skipped["made by the gateway (DSN or notice)"] += 1
            continue
        if rec.decision.rule in _NOT_DECIDED_BY_RULES:
            report.skipped[f"refused before the rules (rule {rec.decision.rule})"] += 1
            continue
        view, day = _view(ctx, rec, parties)
        memo: dict[int, bool] = {}  # the conditions both packs share are tested once
        now, then = _outcome(current, view, day, memo), _outcome(candidate, view, day, memo)
        report.replayed += 1
        recorded = Outcome(rec.decision.decision, rec.decision.rule, tuple(sorted(rec.decision.tags)),
                           tuple(rec.decision.matched))
        if (recorded.decision, recorded.rule, recorded.tags) != (now.decision, now.rule, now.tags):
            report.differs_from_record += 1
        for name, o in (("current", now), ("candidate", then)):
            report.decisions[name][o.decision] += 1
            report.rules[name].update(o.matched)
        if (now.decision, now.rule, now.tags) != (then.decision, then.rule, then.tags):
            report.changes.append(Change(rec.id, rec.time, rec.sender.address if rec.sender else None,
                                         recorded, now, then))
    return report


def _view(ctx: Context, rec: ExchangeRecord,
          parties: Callable[[str], PartyInfo] | None = None) -> tuple[dict[str, Any], dt.date]:
    when = dt.datetime.fromisoformat(rec.time.replace("Z", "+00:00"))
    env = Envelope(mail_from=rec.mail_from or "", rcpts=list(rec.rcpts), listener=rec.listener or "",
                   role=rec.role or "", client_ip=rec.client_ip or "", helo=rec.helo or "", tls=rec.tls,
                   auth_user=rec.auth_user, received_at=when.timestamp())
    message = Message(id=rec.id, envelope=env, raw=b"")
    message.facts = Facts(author=rec.sender.address if rec.sender else None, classification=rec.classification,
                          attachments=rec.attachments, dkim=rec.dkim, spf=rec.spf, dmarc=rec.dmarc,
                          arc=rec.arc)
    view = facts.view(message, ctx, size=rec.size, parties=parties)
    if rec.dkim is not None and rec.dkim.pinned is False:
        view["tags"] = [MISSING_PARTNER_TAG]  # as the policy stage tags it before the rules
    # The rules' validity dates are Vietnam days.
    return view, (when + dt.timedelta(hours=7)).date()


def _outcome(pack: PolicySet, view: dict[str, Any], day: dt.date, memo: dict[int, bool] | None = None) -> Outcome:
    seen = {**view, "tags": list(view.get("tags") or []), "matched": []}  # the engine adds to both
    out = engine.evaluate(pack, seen, today=day, explain=False, memo=memo)
    tags = list(view.get("tags") or []) + [t for t in out.tags if t not in (view.get("tags") or [])]
    return Outcome(out.decision, out.rule, tuple(sorted(tags)), tuple(out.matched))
