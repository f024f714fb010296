"""Stage: spf. May the client send for the envelope sender's domain (RFC 7208), for the policy and DMARC to read.

On ``mx`` only (relay and submission are our own users' mail): the MAIL FROM
domain is checked, or, for the null sender ``<>``, the HELO name (as
``postmaster@HELO``, section 2.4). DNS goes through ``ctx.resolver`` (the answers
file in tests), each lookup within ``dns.timeout`` and the whole check within
``SPF_DEADLINE`` lookups' worth of it; a DNS failure or a check that took too long
is ``temperror``, never ``fail``. The verdict goes to ``Facts.spf`` and a ``spf=``
clause to ``Facts.authentication_results`` (which dkim_verify started).
"""

from __future__ import annotations

import asyncio

from mailgw.config.resolver import run_blocking
from mailgw.dkim.orgdomain import normalise
from mailgw.message.facts import SpfFacts
from mailgw.message.model import Context, Message
from mailgw.senderauth import address_value, bounded, resinfo_value, result_comment
from mailgw.senderauth.spf import TEMPERROR, SpfResolver, check_host

SPF_DEADLINE = 4  # the whole check: this many dns.timeout (20 s by default, RFC 7208 section 4.6.4's figure)


def run(message: Message, ctx: Context) -> None:
    env = message.envelope
    if env.role != "mx":
        message.facts.spf = None
        return
    resolver = ctx.resolver
    if resolver is None:
        raise RuntimeError("no DNS resolver in the context: mx mail cannot be checked")  # a 451, logged
    local, at, domain = env.mail_from.rpartition("@")
    if at and domain:
        identity, sender = "mailfrom", env.mail_from if local else f"postmaster@{domain}"  # section 4.3
    else:
        identity, domain = "helo", env.helo.strip()
        sender = f"postmaster@{domain}"
    domain = normalise(domain) if domain else ""
    timeout = ctx.settings.dns.timeout
    facts = run_blocking(lambda: _check(env.client_ip, domain, sender, env.helo, bounded(resolver, timeout),
                                      timeout * SPF_DEADLINE, identity))
    message.facts.spf = facts
    if message.facts.authentication_results is not None:
        message.facts.authentication_results += ";\r\n\t" + clause(facts, sender)


async def _check(ip: str, domain: str, sender: str, helo: str, resolver: SpfResolver, deadline: float,
                 identity: str) -> SpfFacts:
    if not domain:
        return SpfFacts(result="none", identity=identity, domain=None, reason="no domain to check")
    try:
        found = await asyncio.wait_for(check_host(ip, domain, sender, resolver, helo=helo), deadline)
    except asyncio.TimeoutError:
        return SpfFacts(result=TEMPERROR, identity=identity, domain=domain, reason=f"no answer within {deadline:g} s")
    return SpfFacts(result=found.result, identity=identity, domain=domain, reason=found.reason,
                    mechanism=found.mechanism)


def clause(facts: SpfFacts, sender: str) -> str:
    """The ``spf=`` resinfo of Authentication-Results (RFC 8601 section 2.7.2)."""
    prop = f"smtp.mailfrom={address_value(sender)}" if facts.identity == "mailfrom" else \
        f"smtp.helo={resinfo_value(facts.domain or 'unknown')}"
    return f"spf={facts.result}{result_comment(facts.reason)} {prop}"
