"""Stage: attachments. What every attached file is, from its bytes, for the policy to judge.

Runs after classify (both read the body; the policy needs both) and never
refuses a message itself: a hostile or ambiguous structure becomes a fact
(``ambiguous`` with its reason), and the policy decides.
"""

from __future__ import annotations

import msgspec

from mailgw.attachments import inspect_message
from mailgw.attachments.mime import overlong_mime_header
from mailgw.config.settings import AttachmentLimits
from mailgw.message.facts import AttachmentFacts
from mailgw.message.model import Context, Message


def run(message: Message, ctx: Context) -> None:
    limits = getattr(ctx.settings, "attachments", None) or AttachmentLimits()
    # Classification parsed the message already: its tree is read, not parsed again.
    facts = inspect_message(message.raw, limits, message.parsed_if_any(),
                            headers_checked=message.of_raw(overlong_mime_header) is None)
    message.facts.attachments = msgspec.convert(facts, AttachmentFacts)
