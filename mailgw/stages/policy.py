"""Stage: policy. The decision, from the facts the earlier stages found (issue 4).

Runs the rules of the policies folder in order (mailgw.policy) and writes the
outcome into ``message.decision``: reject and defer stop the message with the
rule's reply (ending with the exchange id), quarantine holds it in the queue,
accept lets it through with the rules' tags and headers. A message blocked
with ``redact`` (secret documents) keeps only metadata and hashes in its record.
"""

from __future__ import annotations

from mailgw.message import replies
from mailgw.message.model import Context, Message
from mailgw.policy import engine, facts


def run(message: Message, ctx: Context) -> None:
    policies = ctx.policies
    if policies is None:
        return
    view = facts.view(message, ctx)
    out = engine.evaluate(policies, view)
    message.facts["policy_version"] = policies.version
    message.facts["policy_view"] = view
    message.facts["policy_trace"] = out.trace
    d = message.decision
    d.decision, d.rule, d.mode = out.decision, out.rule, out.mode
    d.matched = list(out.matched)
    d.tags.extend(t for t in out.tags if t not in d.tags)
    d.headers.extend(out.headers)
    d.archive = list(out.archive)
    d.notify_sender = out.notify_sender
    d.redact = out.redact
    d.audit = list(out.audit)
    if out.decision in ("reject", "defer"):
        if out.reply is not None:
            reply = replies.SmtpReply(out.reply.code, out.reply.detail(), out.reply.text, reason=f"rule {out.rule}")
        else:
            reply = replies.DEFAULT_REJECT if out.decision == "reject" else replies.DEFAULT_DEFER
        d.reply = str(reply.with_id(message.id))
