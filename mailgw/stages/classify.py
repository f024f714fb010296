"""The classify stage: the classification of the message becomes its fact (``mailgw.classify.engine``)."""

from __future__ import annotations

import msgspec

from mailgw.classify.engine import classify
from mailgw.message.facts import ClassificationFacts
from mailgw.message.model import Context, Message


def run(message: Message, ctx: Context) -> None:
    """Pipeline stage: the classification becomes a fact of the message and of its record."""
    found = classify(message.parsed, limits=ctx.classify_limits)
    message.facts.classification = msgspec.convert(found.to_json(), ClassificationFacts)
