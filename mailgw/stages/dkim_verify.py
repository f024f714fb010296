"""Stage: dkim_verify. What the DKIM signatures of inbound mail prove, for the policy to decide on.

The last fact-finding stage, on every message:

- on every listener, an ``Authentication-Results`` field that claims our
  hostname is removed (RFC 8601 section 5): only this gateway may speak in its
  name, and a forged field would make the next hop trust a check we never made.
  Signatures are verified over the bytes as received, before the removal, since
  a sender may have signed such a field. Fields only this gateway writes into
  delivered mail (``X-Mailgw-Tags``, mailgw.message.ownfields) go the same way;
- on ``mx`` every DKIM-Signature is verified (up to ``MAX_SIGNATURES``), keys
  fetched through ``ctx.resolver`` within ``dns.timeout``; the verdict goes to
  ``Facts.dkim`` and the ``Authentication-Results`` value for the next hop to
  ``Facts.authentication_results`` (stamp adds the field after the decision);
- on relay and submission ``Facts.dkim`` is None: that is our own users'
  mail, which dkim_sign signs rather than this stage verifies.

``Facts.dkim`` on mx is ``DkimReport.to_json()`` as :class:`DkimFacts` (``status``,
``aligned_pass``, ``from_domain``, ``signatures``...) plus ``signed`` (the
message carries at least one signature) and ``pinned``: True when the From
address belongs to a partner whose DKIM pins the directory lists and one of
those pinned signatures passed (aligned, whole body), False when none did (the
policy stage tags the message ``dkim-missing-partner``), None when there are no pins to check
or a pinned key could not be fetched now (DNS temperror: a rule must not
refuse for good what an answer later may prove).
"""

from __future__ import annotations

import asyncio
import re

import msgspec

from mailgw.config.resolver import DnsTemporaryError, TxtResolver, run_blocking
from mailgw.dkim import DkimReport, authentication_results, pinned_ok, strip_forged_authentication_results, verify
from mailgw.dkim.orgdomain import normalise
from mailgw.dkim.results import TEMPERROR
from mailgw.message.facts import DkimFacts
from mailgw.message.model import Context, Message
from mailgw.message.ownfields import strip_own_fields


def run(message: Message, ctx: Context) -> None:
    hostname = ctx.settings.hostname
    received = message.raw
    if message.envelope.role != "mx":
        message.facts.dkim = None
        _strip(message, received, hostname)
        return
    resolver = ctx.resolver
    if resolver is None:
        raise RuntimeError("no DNS resolver in the context: mx mail cannot be verified")  # a 451, logged
    report = run_blocking(lambda: verify(received, _Bounded(resolver, ctx.settings.dns.timeout)))
    _strip(message, received, hostname)
    pinned = _pinned(report, ctx, message.facts.author)
    message.facts.dkim = msgspec.convert(report.to_json() | {"signed": bool(report.signatures), "pinned": pinned},
                                         DkimFacts)
    message.facts.authentication_results = authentication_results(hostname, report)


def _strip(message: Message, received: bytes, hostname: str) -> None:
    cleaned = strip_forged_authentication_results(received, hostname)
    if cleaned != received:
        message.facts.forged_authentication_results = _count(received) - _count(cleaned)
    cleaned, _ = strip_own_fields(cleaned)  # X-Mailgw-Tags: only this gateway writes it
    if cleaned != received:
        message.sanitise(cleaned)


_AR_FIELD = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _count(raw: bytes) -> int:
    """How many Authentication-Results fields the header section has."""
    end = raw.find(b"\r\n\r\n")
    return len(_AR_FIELD.findall(raw if end < 0 else raw[:end]))


def _pinned(report: DkimReport, ctx: Context, author: str | None) -> bool | None:
    """Whether a partner's mail carries one of its pinned signatures (see the module docstring)."""
    partner = ctx.directory.partner_of(author) if author else None
    if partner is None or not partner.dkim:
        return None
    pins = [(pin.domain, pin.selector) for pin in partner.dkim]
    if pinned_ok(report, pins):
        return True
    wanted = {(normalise(d), s.lower()) for d, s in pins}
    if any(sig.result == TEMPERROR and (sig.d, sig.s) in wanted for sig in report.signatures):
        return None
    return False


class _Bounded:
    """A resolver whose every lookup ends within ``timeout`` seconds, whatever kind it is (a late answer is a temperror)."""

    def __init__(self, resolver: TxtResolver, timeout: float):
        self._resolver = resolver
        self._timeout = timeout

    async def txt(self, name: str) -> list[bytes]:
        if self._resolver is None:
            raise DnsTemporaryError("no DNS resolver configured")
        try:
            return await asyncio.wait_for(self._resolver.txt(name), self._timeout)
        except asyncio.TimeoutError as e:
            raise DnsTemporaryError(f"timeout looking up {name}") from e
