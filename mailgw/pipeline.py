"""The path of a message, written once: facts, then the decision, then changes.

    parse -> author -> classify -> attachments -> [dkim_verify] -> [policy] -> stamp -> [dkim_sign]

Stages in brackets arrive with their own issues and slot in where shown: the
policy decides from facts, so every fact-finding stage runs before it; the
message is changed only after the decision; the DKIM signature is made last,
over the exact bytes that will be queued. A stage returns normally or raises
replies.Reject / replies.Defer; it never talks SMTP and never touches the spool.
"""

from __future__ import annotations

from typing import Callable

from mailgw.model import Context, Message
from mailgw.stages import attachments, author, classify, parse, stamp

Stage = Callable[[Message, Context], None]

STAGES: tuple[Stage, ...] = (
    parse.run,  # well-formed bytes, no loop: before anything reads the message
    author.run,  # exactly one author, owned by the login on submission
    classify.run,  # the official document it carries (category, number, secrecy, urgency)
    attachments.run,  # what every attached file is, from its bytes (never refuses: the policy decides)
    stamp.run,  # Received and decision headers: after the decision, before signing
)


def run(message: Message, ctx: Context) -> None:
    """Run every stage in order; CPU-bound, so callers run it off the event loop."""
    for stage in STAGES:
        stage(message, ctx)
