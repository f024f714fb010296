"""Stage: arc. Whether the ARC chain of inbound mail holds (RFC 8617), and whether its last sealer is a trusted forwarder.

On ``mx`` only, after spf and before dmarc, which reads it: when DKIM broke on the
way (a mailing list's subject tag and footer), a passing chain sealed last by one of
the directory's ``trusted_forwarders`` can vouch for the From domain
(mailgw.senderauth.arc.vouches; the dmarc stage applies it). Keys are looked up
through ``ctx.resolver`` within ``dns.timeout``. The verdict goes to ``Facts.arc``
(None without ARC fields: most mail, checked in microseconds) and an ``arc=`` clause
(``none`` without a chain) to ``Facts.authentication_results``.

``trusted`` says that the latest seal names a trusted forwarder; only with
``result: pass`` is the seal that forwarder's. Our own domains and partners' DKIM
pins are never vouched for by a chain (README, "Security: ARC and forwarders").
"""

from __future__ import annotations

from msgspec.structs import replace

from mailgw.config.resolver import run_blocking
from mailgw.message.facts import ArcFacts
from mailgw.message.model import Context, Message
from mailgw.senderauth import bounded, result_comment
from mailgw.senderauth.arc import present, verify


def run(message: Message, ctx: Context) -> None:
    found = message.facts
    if message.envelope.role != "mx":
        found.arc = None
        return
    raw = message.raw
    if not present(raw):
        found.arc = None  # no chain (most mail): nothing in the record, arc=none for the next hop
        if found.authentication_results is not None:
            found.authentication_results += ";\r\n\tarc=none"
        return
    resolver = ctx.resolver
    if resolver is None:
        raise RuntimeError("no DNS resolver in the context: mx mail cannot be checked")  # a 451, logged
    facts = run_blocking(lambda: verify(raw, bounded(resolver, ctx.settings.dns.timeout)))
    if facts.sealer and ctx.directory.trusted_forwarder(facts.sealer) is not None:
        facts = replace(facts, trusted=True)
    found.arc = facts
    if found.authentication_results is not None:
        found.authentication_results += ";\r\n\t" + clause(facts)


def clause(facts: ArcFacts) -> str:
    """The ``arc=`` resinfo of Authentication-Results (RFC 8617 section 10.1: none, pass, fail).

    A temperror is written ``fail`` with the reason in the comment (ARC has no
    temperror result); the seal we add then carries no set of ours (arc_seal).
    """
    result = "fail" if facts.result == "temperror" else facts.result
    comment = f"i={facts.sets}"
    if facts.sealer:
        comment += f" sealed by {facts.sealer}" + (", a trusted forwarder" if facts.trusted and result == "pass" else "")
    if facts.result != "pass" and facts.reason:
        comment += f": {facts.reason}"
    return f"arc={result}{result_comment(comment)}"
