"""The facts a policy sees: one plain mapping per message, built from the fact stages' findings.

Everything a rule can test is here under the names of conditions.py, and the
trace of ``mailgw policy test`` prints it as it is. Parties are looked up in
the directory; nothing is taken from a header we did not check: the sender is
the From author that stage ``author`` validated, and it counts as *verified*
only when it is official and, on mail from the Internet, a passing DKIM
signature is aligned with its domain.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Callable

import msgspec

from mailgw.classify.vn.text import fold
from mailgw.directory.model import PartyInfo, canonical_address
from mailgw.dkim import orgdomain
from mailgw.message.facts import ArcFacts, AttachmentFacts, DkimFacts, DmarcFacts, SpfFacts
from mailgw.message.model import Context, Message
from mailgw.policy import lookalike


def view(message: Message, ctx: Context, *, size: int | None = None,
         parties: Callable[[str], PartyInfo] | None = None) -> dict[str, Any]:
    """What the rules see of ``message``; ``size`` stands for the bytes' length when they are not at hand (a replay).

    ``parties``: the directory's answer for an address (default ``ctx.directory.party``); a replay of
    many records passes one that remembers its answers for the run.
    """
    env = message.envelope
    directory = ctx.directory
    lookup = parties or directory.party
    inbound = env.role == "mx"
    found = message.facts
    dkim = _dkim(found.dkim)
    known = ctx.known
    author = found.author
    sender = _party(lookup, author, known) if author else None
    if sender is not None:
        sender["verified"] = sender["official"] and (not inbound or dkim["aligned_pass"])
        sender["display_spoof"] = _display_spoof(found.author_name, sender, known)
    recipients = [_party(lookup, r, known) for r in env.rcpts]
    for r in recipients:
        r["verified"] = r["official"]
    mail_from = _party(lookup, env.mail_from, known) if env.mail_from else None
    if mail_from is not None:
        mail_from["verified"] = mail_from["official"] and not inbound
    internal = directory.direction(env.role, author, env.rcpts, env.mail_from) == "internal"  # as the record says
    claimed = [_party(lookup, a, known) for a in found.claimed]
    passing = [s.d for s in (found.dkim.signatures if found.dkim else ()) if s.result == "pass" and s.covers_body]
    for c in claimed:
        # vouched for as From is: official, and on mail from the Internet a passing signature aligned with it
        c["verified"] = c["official"] and (not inbound or any(orgdomain.aligned(d, c["domain"]) for d in passing))
    return {
        "listener": env.listener,
        "role": env.role,
        "direction": "inbound" if inbound else "outbound",
        "internal": internal,
        "size": len(message.raw) if size is None else size,
        "authenticated": env.auth_user is not None,
        "auth_user": env.auth_user,
        "tls": env.tls is not None,
        "client_ip": env.client_ip,
        "classification": msgspec.to_builtins(found.classification) if found.classification else {},
        "sender": sender,
        "mail_from": mail_from,
        "recipients": recipients,
        "claimed": claimed,
        "dkim": dkim,
        "spf": _spf(found.spf),
        "dmarc": _dmarc(found.dmarc),
        "arc": _arc(found.arc),
        "attachments": msgspec.to_builtins(found.attachments or AttachmentFacts()),
        "tags": list(message.verdict.tags),
        "matched": [],
    }


def _party(lookup: Callable[[str], PartyInfo], address: str, known: Known) -> dict[str, Any]:
    p = lookup(address)
    return {
        "address": p.address, "domain": p.domain, "local": p.local, "official": p.official,
        "public_service": p.public_service, "partner": p.partner, "exception": p.exception, "agency": p.agency,
        "unit": p.unit, "roles": list(p.roles),
        "lookalike": None if p.local or p.partner else known.lookalike(p.domain),
    }


_ADDRESS_IN_NAME = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:@]+\.[^\s<>\"'(),;:@]+")


def _display_spoof(name: str, sender: dict[str, Any], known: Known) -> str | None:
    """Why the display name misleads, or None: it holds an address that is not the sender's, or,
    on an address that is not ours, it is the name of a person or agency of the directory."""
    for shown in _ADDRESS_IN_NAME.findall(name):
        if (canonical_address(shown.strip(".")) or shown.lower()) != sender["address"]:
            return f"the name shows another address: {shown[:100]}"
    if not sender["local"] and name.strip():
        key = _name_key(name)
        if key in known.names:
            return f"a name of this directory on an outside address: {name.strip()[:100]}"
    return None


def _name_key(name: str) -> str:
    """A name as compared: NFC, case-folded, diacritics and quotes dropped, spaces collapsed."""
    text = fold(unicodedata.normalize("NFC", name)).casefold()
    return " ".join(text.replace('"', " ").replace("'", " ").split())


class Known:
    """What the facts derive from one loaded directory (built with its Context): the domains a lookalike
    imitates, the names a display name may not borrow, and the lookalike answers so far.

    Whether a domain imitates a local or partner domain depends only on the
    domain and the directory, and most mail goes to and comes from the same
    few hundred domains: each is compared with the protected ones once
    (a tenth of a millisecond each), not for every message.
    """

    def __init__(self, directory: Any):
        # The domains a lookalike imitates: local and partner domains.
        self.protected = tuple(sorted(set(directory.local_domains) | {d for p in directory.partners for d in p.domains}))
        # Names a display name may not borrow on an outside address: people's and agencies'.
        names = [m.name for m in directory.mailboxes] + [a.name for a in directory.agencies]
        names += [a.name_en for a in directory.agencies if getattr(a, "name_en", None)]
        self.names = frozenset(k for k in map(_name_key, names) if len(k) >= 5)
        self.lookalike = functools.lru_cache(maxsize=4096)(self._lookalike)

    def _lookalike(self, domain: str) -> str | None:
        return lookalike.resembles(domain, self.protected)


def _dkim(found: DkimFacts | None) -> dict[str, Any]:
    """The DKIM facts in the shape conditions read; an unverified message is simply unsigned."""
    if found is None:
        return {"status": "none", "signed": False, "aligned_pass": False, "aligned_temperror": False,
                "pinned": None, "pass_domains": [], "verified": False}
    signatures = found.signatures
    return {
        "status": found.status or "none",
        "signed": bool(signatures),
        "aligned_pass": bool(found.aligned_pass),
        "aligned_temperror": any(s.result == "temperror" and s.aligned for s in signatures),
        "pinned": found.pinned,
        "pass_domains": sorted({s.d.lower() for s in signatures if s.result == "pass"}),
        "verified": True,
    }


def _spf(found: SpfFacts | None) -> dict[str, Any]:
    """The SPF facts in the shape conditions read; mail not checked (relay, submission) has none."""
    if found is None:
        return {"result": "none", "identity": None, "domain": None}
    return {"result": found.result, "identity": found.identity, "domain": found.domain}


def _dmarc(found: DmarcFacts | None) -> dict[str, Any]:
    """The DMARC facts in the shape conditions read; mail not checked (relay, submission) has none."""
    if found is None:
        return {"result": "none", "policy": None, "p": None, "aligned": [], "domain": None, "sampled_out": False,
                "override": None}
    return {"result": found.result, "policy": found.policy, "p": found.p, "aligned": list(found.aligned),
            "domain": found.from_domain, "sampled_out": found.sampled_out, "override": found.override}


def _arc(found: ArcFacts | None) -> dict[str, Any]:
    """The ARC facts in the shape conditions read; mail not checked (relay, submission) or without a chain has none."""
    if found is None:
        return {"result": "none", "sealer": None, "trusted": False, "sets": 0}
    return {"result": found.result, "sealer": found.sealer, "trusted": found.trusted and found.result == "pass",
            "sets": found.sets}
