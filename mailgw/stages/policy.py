"""Stage: policy. The decision, from the facts the earlier stages found.

Runs the rules of the policies folder in order (mailgw.policy) and writes the
outcome into ``message.verdict``: reject and defer stop the message with the
rule's reply (ending with the exchange id), quarantine holds it in the queue,
accept lets it through with the rules' tags and headers. A message blocked
with ``redact`` (secret documents) keeps only metadata and hashes in its record.
"""

from __future__ import annotations

from mailgw.message import replies
from mailgw.message.model import Context, Message
from mailgw.policy import engine, facts

# A partner whose DKIM keys the directory pins sent mail none of them signed (Facts.dkim.pinned False).
MISSING_PARTNER_TAG = "dkim-missing-partner"


def run(message: Message, ctx: Context) -> None:
    v = message.verdict
    dkim = message.facts.dkim
    if dkim is not None and dkim.pinned is False and MISSING_PARTNER_TAG not in v.tags:
        v.tags.append(MISSING_PARTNER_TAG)
    policies = ctx.policies
    if policies is None:
        return
    view = facts.view(message, ctx)
    out = engine.evaluate(policies, view)
    v.policy_version = policies.version
    v.seen = view
    v.steps = out.trace
    v.kind, v.rule, v.mode = out.decision, out.rule, out.mode
    v.matched = list(out.matched)
    v.tags.extend(t for t in out.tags if t not in v.tags)
    v.headers.extend(out.headers)
    v.archive = list(out.archive)
    v.notify_sender = out.notify_sender
    v.redact = out.redact
    v.audit = list(out.audit)
    if out.decision in ("reject", "defer"):
        if out.reply is not None:
            reply = replies.SmtpReply(out.reply.code, out.reply.detail(), out.reply.text, reason=f"rule {out.rule}")
        else:
            reply = replies.DEFAULT_REJECT if out.decision == "reject" else replies.DEFAULT_DEFER
        v.reply = str(reply.with_id(message.id))
