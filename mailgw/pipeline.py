"""The path of a message, written once: facts, then the decision, then changes.

    parse -> author -> classify -> attachments -> dkim_verify -> spf -> arc -> dmarc -> policy -> stamp
          -> arc_seal -> dkim_sign

The policy decides from facts, so every fact-finding stage runs before it; the
message is changed only after the decision, and not at all when it is refused;
the ARC seal (inbound) or DKIM signature (outbound) is made last, over the exact bytes
that will be queued. A
stage returns normally or raises replies.Reject / replies.Defer; it never
talks SMTP and never touches the spool.

:func:`run` returns the message's :class:`~mailgw.message.model.Verdict`,
reply included, whichever way the message was stopped (a rule, a stage's
refusal, a fault of ours): the edge and ``mailgw policy test`` read that one
answer, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import email.errors
import logging
import time
from typing import Callable

from mailgw.message import replies
from mailgw.message.model import Context, Message, Verdict
from mailgw.message.replies import Refusal, SmtpReply
from mailgw.stages import (
    arc,
    arc_seal,
    attachments,
    author,
    classify,
    dkim_sign,
    dkim_verify,
    dmarc,
    parse,
    policy,
    spf,
    stamp,
)

Stage = Callable[[Message, Context], None]

STAGES: tuple[Stage, ...] = (
    parse.run,  # well-formed bytes, no loop: before anything reads the message
    author.run,  # exactly one author, owned by the login on submission
    classify.run,  # the official document it carries (category, number, secrecy, urgency)
    attachments.run,  # what every attached file is, from its bytes (never refuses: the policy decides)
    dkim_verify.run,  # what inbound signatures prove; forged Authentication-Results removed
    spf.run,  # may the client send for the MAIL FROM (or HELO) domain (inbound)
    arc.run,  # does the forwarders' ARC chain hold, sealed last by a trusted one (inbound): dmarc reads it
    dmarc.run,  # last fact: the From domain's DMARC policy, and whether SPF or DKIM aligned with it (inbound)
    policy.run,  # the decision, from the facts above
    stamp.run,  # Received and decision headers: after the decision, before signing
    arc_seal.run,  # inbound mail we pass on changed: our ARC set over the exact bytes queued (mx only)
    dkim_sign.run,  # last of all: the signature covers the exact bytes that will be queued
)

DECIDED = policy.run  # the last stage `mailgw policy test` runs: nothing after it changes the decision


@dataclasses.dataclass(frozen=True)
class StageTime:
    """How long one stage took (wall time), for traces."""

    stage: str
    ms: float


log = logging.getLogger("mailgw.pipeline")


def run(message: Message, ctx: Context, *, until: Stage | None = None,
        timings: list[StageTime] | None = None) -> Verdict:
    """Run the stages in order and return the verdict; CPU-bound, so callers run it off the event loop.

    Stops after ``until`` when given, and after any stage that leaves the
    message refused (reject or defer): a refused message is never changed.
    A stage's refusal is the verdict of rule ``smtp``; an unexpected error,
    a 451 of rule ``error`` (logged with its traceback). ``timings`` collects
    each stage's name and wall time, for traces.
    """
    verdict = message.verdict
    for stage in STAGES:
        started = time.perf_counter()
        try:
            stage(message, ctx)
        except Refusal as refusal:
            return refuse(message, refusal.reply, "smtp")
        except (RecursionError, email.errors.HeaderParseError) as e:
            # The email package recurses once per MIME level and per nested comment: a structure
            # that exhausts it is the message's fault (550), not a temporary one of ours (451).
            reason = f"{_name(stage)}: {type(e).__name__}"
            return refuse(message, dataclasses.replace(replies.BAD_STRUCTURE, reason=reason), "smtp")
        except Exception:
            log.exception("exchange %s: stage %s failed", message.id, _name(stage))
            return refuse(message, replies.TEMP_FAILURE, "error")
        finally:
            if timings is not None:
                timings.append(StageTime(_name(stage), round((time.perf_counter() - started) * 1000, 2)))
        if verdict.refused:
            return verdict
        if stage is until:
            break
    verdict.reply = str(replies.queued(message.id))
    return verdict


def refuse(message: Message, reply: SmtpReply, rule: str) -> Verdict:
    """Refuse the message with ``reply``: reject for a 5xx, defer for a 4xx; ``rule`` unless a rule decided."""
    verdict = message.verdict
    verdict.kind = "defer" if reply.temporary else "reject"
    if verdict.rule == "default":
        verdict.rule = rule
    verdict.reply = str(reply.with_id(message.id))
    return verdict


def _name(stage: Stage) -> str:
    return stage.__module__.rsplit(".", 1)[-1]
