"""Stage: arc_seal. Our ARC set on inbound mail we pass on changed, so that the next hop can trust what we checked.

When: on ``mx`` mail accepted for delivery (never refused mail), when the settings
name a sealing key (``arc: {domain, selector}``, one of the RSA keys of ``dkim:``).
That is the mail mailgw forwards after changing it: it adds Received,
Authentication-Results and the policy's fields (warnings, urgency), and the next hop
(the agency's mail server, a hosted mailbox service that trusts mailgw as an ARC
sealer) sees mailgw's address, not the sender's, so its own SPF check fails and only
our recorded results can tell it what the message was. Relay and submission mail is
the agencies' own, DKIM-signed by dkim_sign: not sealed.

Made last, over the exact bytes that will be queued, with dkimpy (mailgw.senderauth.arc.seal):
our Authentication-Results becomes the ARC-Authentication-Results, ``cv=`` is our
``arc=`` verdict. Not sealed: a chain an earlier hop marked ``cv=fail`` (RFC 8617
section 5.1.1: the chain has ended), a chain of 50 sets (the limit), a chain whose
keys could not be fetched now (a ``cv=fail`` seal would end a chain that may hold).
A seal that cannot be made is logged and the message goes on unsealed: the seal is
for the next hop's benefit, and refusing mail from the Internet (451) for a fault of
ours that a retry would repeat helps nobody.
"""

from __future__ import annotations

import logging

from mailgw.message.model import Context, Message
from mailgw.senderauth.arc import MAX_SETS, ArcSealError, seal

log = logging.getLogger(__name__)


def run(message: Message, ctx: Context) -> None:
    key = ctx.arc_key
    if key is None or message.envelope.role != "mx" or message.verdict.refused:
        return
    arc = message.facts.arc
    if arc is not None and (arc.result == "temperror" or arc.sets >= MAX_SETS or any(s.cv == "fail" for s in arc.chain)):
        return
    try:
        fields = seal(message.final_bytes(), domain=key.domain, selector=key.selector, pem=key.pem,
                      authserv_id=ctx.settings.hostname, key=key.private_key)
    except ArcSealError as e:
        log.warning("exchange %s: no ARC seal added: %s", message.id, e)
        return
    message.prepend[:0] = [fields]
    message.facts.arc_sealed = key.domain
