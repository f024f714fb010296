"""DMARC (RFC 7489): the From domain's published policy, and whether SPF or DKIM vouch for that domain.

``await discover(from_domain, resolver)`` finds the policy record (section 6.6.3):
``_dmarc.<From domain>``, else ``_dmarc.<organisational domain>`` (the bundled Public
Suffix List, mailgw.dkim.orgdomain). ``evaluate(...)`` then decides, from the SPF and
DKIM facts already found, the :class:`~mailgw.message.facts.DmarcFacts` of the message.

Invariants:

- DMARC passes when a passing SPF check's domain or a passing, whole-body DKIM
  signature's ``d=`` is aligned with the From domain, relaxed or strict as ``aspf=`` /
  ``adkim=`` ask (a public suffix aligns with nothing);
- a DNS failure is ``temperror``, never ``fail``: also when no method passed aligned
  but an aligned one could not be checked (SPF temperror on an aligned domain, or an
  aligned DKIM signature whose key lookup failed), since an answer later may pass it;
- a record without a valid ``p=`` is ``permerror`` (no policy), unless it has a
  ``rua=`` address: then it is read as ``p=none`` (section 6.6.3 step 6);
- ``pct=`` below 100 samples by the exchange id (the same message gets the same
  answer); a message sampled out gets the next lower policy (section 6.6.4).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Protocol

from msgspec.structs import replace

from mailgw.config.resolver import DnsTemporaryError
from mailgw.dkim.orgdomain import aligned, normalise, organisational_domain
from mailgw.message.facts import DkimFacts, DmarcFacts, SpfFacts

__all__ = ["POLICIES", "RESULTS", "DmarcRecord", "discover", "evaluate", "parse"]

RESULTS = ("pass", "fail", "none", "temperror", "permerror")
POLICIES = ("none", "quarantine", "reject")
MAX_RECORD = 2048  # characters of a DMARC record we read
_LOWER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


class TxtResolver(Protocol):
    async def txt(self, name: str) -> list[bytes]: ...


@dataclasses.dataclass(frozen=True)
class DmarcRecord:
    domain: str  # where it was found
    p: str | None  # None: no valid p= (permerror unless rua= made it "none")
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    problem: str = ""


class DmarcTempError(Exception):
    pass


class DmarcPermError(Exception):
    pass


async def discover(from_domain: str, resolver: TxtResolver) -> DmarcRecord | None:
    """The record that applies to ``from_domain``; None when there is none.

    Raises DmarcTempError when DNS could not answer, DmarcPermError when a name
    publishes more than one record.
    """
    from_domain = normalise(from_domain)
    names = [from_domain]
    org = organisational_domain(from_domain)
    if org != from_domain:
        names.append(org)
    for name in names:
        try:
            answers = await resolver.txt(f"_dmarc.{name}")
        except DnsTemporaryError as e:
            raise DmarcTempError(str(e)) from e
        found = [a for a in answers if _is_dmarc(a)]
        if len(found) > 1:
            raise DmarcPermError(f"_dmarc.{name} publishes {len(found)} DMARC records")
        if found:
            return parse(name, found[0][:MAX_RECORD].decode("ascii", "replace"))
    return None


def _is_dmarc(answer: bytes) -> bool:
    """Whether a TXT record starts with the tag v=DMARC1 (section 6.6.3 step 3)."""
    head = answer[:64].split(b";", 1)[0]
    name, eq, value = head.partition(b"=")
    return bool(eq) and name.strip() == b"v" and value.strip() == b"DMARC1"


def parse(domain: str, text: str) -> DmarcRecord:
    """The tags of one record (section 6.3); invalid optional tags keep their defaults."""
    tags: dict[str, str] = {}
    for part in text.split(";")[:32]:
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    problem = ""
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        problem = "no valid p= policy" if p not in POLICIES else "invalid sp= policy"
        if "mailto:" in tags.get("rua", "").lower():
            p, sp = "none", None  # step 6: a record that asks for reports is read as p=none
        else:
            return DmarcRecord(domain, None, problem=problem)
    pct = tags.get("pct", "100")
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        domain, p, sp,
        pct=int(pct) if pct.isdigit() and int(pct) <= 100 else 100,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        problem=problem,
    )


def evaluate(from_domain: str, record: DmarcRecord, spf: SpfFacts | None, dkim: DkimFacts | None, sample_key: str) -> DmarcFacts:
    """The DMARC verdict of a message from ``from_domain`` under ``record``."""
    from_domain = normalise(from_domain)
    base = DmarcFacts(from_domain=from_domain, record_domain=record.domain, p=record.p, sp=record.sp, pct=record.pct,
                      adkim=record.adkim, aspf=record.aspf)
    if record.p is None:
        return replace(base, result="permerror", reason=record.problem)
    methods = []
    spf_aligned = bool(spf and spf.domain and aligned(spf.domain, from_domain, strict=record.aspf == "s"))
    if spf_aligned and spf is not None and spf.result == "pass":
        methods.append("spf")
    signatures = dkim.signatures if dkim else []
    dkim_aligned = [s for s in signatures if s.covers_body and aligned(s.d, from_domain, strict=record.adkim == "s")]
    if any(s.result == "pass" for s in dkim_aligned):
        methods.append("dkim")
    if methods:
        return replace(base, result="pass", policy="none", aligned=methods, reason="aligned " + " and ".join(methods))
    if (spf_aligned and spf is not None and spf.result == "temperror") or any(s.result == "temperror" for s in dkim_aligned):
        return replace(base, result="temperror", reason="an aligned check could not be completed (DNS)")
    policy = record.sp if record.sp and record.domain != from_domain else record.p
    sampled_out = record.pct < 100 and _sample(sample_key) >= record.pct
    if sampled_out:
        policy = _LOWER[policy]
    return replace(base, result="fail", policy=policy, sampled_out=sampled_out,
                   reason="neither SPF nor DKIM passed aligned with the From domain")


def _sample(key: str) -> int:
    """0-99, fixed for a key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100
