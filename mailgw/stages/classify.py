"""The classify stage: the classification of the message becomes its fact (``mailgw.classify.engine``)."""

from __future__ import annotations

from mailgw.classify.engine import classify, limits_for
from mailgw.message.model import Context, Message


def run(message: Message, ctx: Context) -> None:
    """Pipeline stage: the classification becomes a fact of the message and of its record."""
    message.facts["classification"] = classify(message.parsed, limits=limits_for(ctx.directory)).to_json()
