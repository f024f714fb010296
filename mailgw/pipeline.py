"""The path of a message, written once: facts, then the decision, then changes.

    parse -> author -> classify -> attachments -> dkim_verify -> policy -> stamp -> dkim_sign

The policy decides from facts, so every fact-finding stage runs before it; the
message is changed only after the decision, and not at all when it is refused;
the DKIM signature is made last, over the exact bytes that will be queued. A
stage returns normally or raises replies.Reject / replies.Defer; it never
talks SMTP and never touches the spool.
"""

from __future__ import annotations

import dataclasses
import email.errors
import time
from typing import Any, Callable

from mailgw.message import replies
from mailgw.message.model import Context, Message
from mailgw.message.replies import Reject
from mailgw.stages import attachments, author, classify, dkim_sign, dkim_verify, parse, policy, stamp

Stage = Callable[[Message, Context], None]

STAGES: tuple[Stage, ...] = (
    parse.run,  # well-formed bytes, no loop: before anything reads the message
    author.run,  # exactly one author, owned by the login on submission
    classify.run,  # the official document it carries (category, number, secrecy, urgency)
    attachments.run,  # what every attached file is, from its bytes (never refuses: the policy decides)
    dkim_verify.run,  # last fact: what inbound signatures prove; forged Authentication-Results removed
    policy.run,  # the decision, from the facts above
    stamp.run,  # Received and decision headers: after the decision, before signing
    dkim_sign.run,  # last of all: the signature covers the exact bytes that will be queued
)

DECIDED = policy.run  # the last stage `mailgw policy test` runs: nothing after it changes the decision


def run(message: Message, ctx: Context, *, until: Stage | None = None, timings: list[dict[str, Any]] | None = None) -> None:
    """Run the stages in order; CPU-bound, so callers run it off the event loop.

    Stops after ``until`` when given, and after any stage that leaves the
    message refused (reject or defer): a refused message is never changed.
    ``timings`` collects each stage's name and wall time, for traces.
    """
    for stage in STAGES:
        started = time.perf_counter()
        try:
            stage(message, ctx)
        except (RecursionError, email.errors.HeaderParseError) as e:
            # The email package recurses once per MIME level and per nested comment: a structure
            # that exhausts it is the message's fault (550), not a temporary one of ours (451).
            reason = f"{stage.__module__.rsplit('.', 1)[-1]}: {type(e).__name__}"
            raise Reject(dataclasses.replace(replies.BAD_STRUCTURE, reason=reason)) from None
        finally:
            if timings is not None:
                timings.append({"stage": stage.__module__.rsplit(".", 1)[-1],
                                "ms": round((time.perf_counter() - started) * 1000, 2)})
        if stage is until or message.decision.decision in ("reject", "defer"):
            return
