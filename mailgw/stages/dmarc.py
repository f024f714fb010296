"""Stage: dmarc. The From domain's DMARC policy (RFC 7489) and whether SPF or DKIM aligned with it.

On ``mx`` only, after dkim_verify and spf, whose facts it reads. The record is looked
up through ``ctx.resolver`` within ``dns.timeout`` (mailgw.senderauth.dmarc explains
discovery, alignment and ``pct=``). The verdict goes to ``Facts.dmarc`` (``result``,
the ``policy`` the domain asks for this message, the methods that ``aligned``) and a
``dmarc=`` clause to ``Facts.authentication_results``. What is done with it is the
policy's: the shipped rules dmarc-reject, dmarc-quarantine, dmarc-none and
dmarc-temperror (policies/10-security.yaml).

A local policy override (RFC 7489 section 7.2, ``trusted_forwarder``): when DMARC
fails but the arc stage found a passing chain sealed last by a trusted forwarder
whose recorded results vouch for the From domain (mailgw.senderauth.arc.vouches),
``policy`` becomes ``none`` and ``override`` says why; the result stays ``fail``, as
the domain's reports should say. When that forwarder's seal could not be checked
for a DNS failure, a ``reject`` or ``quarantine`` becomes ``temperror`` (451): an
answer later may vouch for it.
"""

from __future__ import annotations

from msgspec.structs import replace

from mailgw.config.resolver import run_blocking
from mailgw.dkim.orgdomain import normalise
from mailgw.message.facts import ArcFacts, DmarcFacts
from mailgw.message.model import Context, Message
from mailgw.senderauth import bounded, resinfo_value, result_comment
from mailgw.senderauth.arc import vouches
from mailgw.senderauth.dmarc import DmarcPermError, DmarcTempError, TxtResolver, discover, evaluate


def run(message: Message, ctx: Context) -> None:
    found = message.facts
    if message.envelope.role != "mx" or not found.author or "@" not in found.author:
        found.dmarc = None
        return
    resolver = ctx.resolver
    if resolver is None:
        raise RuntimeError("no DNS resolver in the context: mx mail cannot be checked")  # a 451, logged
    from_domain = normalise(found.author.rpartition("@")[2])
    facts = run_blocking(lambda: _check(from_domain, bounded(resolver, ctx.settings.dns.timeout), message))
    found.dmarc = facts = _override(facts, found.arc)
    if found.authentication_results is not None:
        found.authentication_results += ";\r\n\t" + clause(facts)


def _override(facts: DmarcFacts, arc: ArcFacts | None) -> DmarcFacts:
    """``facts`` with the trusted forwarder's override applied, when its ARC chain vouches (module docstring)."""
    if facts.result != "fail" or arc is None or not arc.trusted or not facts.from_domain:
        return facts
    if arc.result == "temperror" and facts.policy in ("reject", "quarantine"):
        return replace(facts, result="temperror", policy=None,
                       reason=f"the ARC seal of trusted forwarder {arc.sealer} could not be checked (DNS)")
    vouched = vouches(arc, facts.from_domain, strict_dkim=facts.adkim == "s")
    if vouched is None:
        return facts
    return replace(facts, policy="none", override="trusted_forwarder",
                   override_comment=f"arc=pass as[{arc.sets}].d={arc.sealer} recorded {vouched}"[:300],
                   reason=f"{facts.reason}; vouched for by trusted forwarder {arc.sealer} (ARC)")


async def _check(from_domain: str, resolver: TxtResolver, message: Message) -> DmarcFacts:
    try:
        record = await discover(from_domain, resolver)
    except DmarcTempError as e:
        return DmarcFacts(result="temperror", from_domain=from_domain, reason=str(e))
    except DmarcPermError as e:
        return DmarcFacts(result="permerror", from_domain=from_domain, reason=str(e))
    if record is None:
        return DmarcFacts(result="none", from_domain=from_domain, reason="no DMARC record")
    return evaluate(from_domain, record, message.facts.spf, message.facts.dkim, message.id)


def clause(facts: DmarcFacts) -> str:
    """The ``dmarc=`` resinfo of Authentication-Results (RFC 7489 section 11.2): the published and applied policies."""
    if facts.p is not None:
        comment = f"p={facts.p.upper()}"
        if facts.sp:
            comment += f" sp={facts.sp.upper()}"
        if facts.result == "fail":
            comment += f" dis={(facts.policy or 'none').upper()}"
        if facts.override:
            comment += f" override={facts.override.upper()}"
    else:
        comment = facts.reason
    return f"dmarc={facts.result}{result_comment(comment)} header.from={resinfo_value(facts.from_domain or 'unknown')}"
