"""The path of a message, written once: facts, then the decision, then changes.

    parse -> author -> classify -> [attachments] -> dkim_verify -> [policy] -> stamp -> dkim_sign

Stages in brackets arrive with their own issues and slot in where shown: the
policy decides from facts, so every fact-finding stage runs before it; the
message is changed only after the decision; the DKIM signature is made last,
over the exact bytes that will be queued. A stage returns normally or raises
replies.Reject / replies.Defer; it never talks SMTP and never touches the spool.
"""

from __future__ import annotations

from typing import Callable

from mailgw.model import Context, Message
from mailgw.stages import author, classify, dkim_sign, dkim_verify, parse, stamp

Stage = Callable[[Message, Context], None]

STAGES: tuple[Stage, ...] = (
    parse.run,  # well-formed bytes, no loop: before anything reads the message
    author.run,  # exactly one author, owned by the login on submission
    classify.run,  # the official document it carries (category, number, secrecy, urgency)
    dkim_verify.run,  # last fact: what inbound signatures prove; forged Authentication-Results removed
    stamp.run,  # Received and decision headers: after the decision, before signing
    dkim_sign.run,  # last of all: the signature covers the exact bytes that will be queued
)


def run(message: Message, ctx: Context) -> None:
    """Run every stage in order; CPU-bound, so callers run it off the event loop."""
    for stage in STAGES:
        stage(message, ctx)
