"""Organisational domains and identifier alignment, for judging whose DKIM signature vouches for a From address.

The organisational domain is the public suffix plus one label (RFC 7489
section 3.2), so ``stp.binhthuan.gov.vn`` and ``binhthuan.gov.vn`` share the
organisational domain ``binhthuan.gov.vn`` while ``binhthuan.gov.vn`` and
``daklak.gov.vn`` do not (``gov.vn`` is a public suffix). The list is the copy
bundled with the ``publicsuffixlist`` package: nothing is fetched at run time,
and upgrading that package updates the list.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList


@functools.cache
def _psl() -> PublicSuffixList:
    # Parsing the list takes tens of milliseconds: do it once per process.
    return PublicSuffixList()


def normalise(domain: str) -> str:
    """Lower-case A-label form without a trailing dot (``Bình.vn`` -> ``xn--bnh-lna.vn``)."""
    domain = domain.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def organisational_domain(domain: str) -> str:
    """The registrable domain ``domain`` belongs to; a bare public suffix is its own."""
    domain = normalise(domain)
    return _psl().privatesuffix(domain) or domain


def is_public_suffix(domain: str) -> bool:
    return _psl().is_public(normalise(domain))


def aligned(signer: str, author: str, *, strict: bool = False) -> bool:
    """Whether a signing domain (DKIM ``d=``) is aligned with the author's (From) domain.

    Strict alignment wants the same name; relaxed alignment the same
    organisational domain. A public suffix aligns with nothing, even itself:
    a signature by ``gov.vn`` must not vouch for every agency below it.
    """
    signer, author = normalise(signer), normalise(author)
    if not signer or not author or is_public_suffix(signer) or is_public_suffix(author):
        return False
    if strict:
        return signer == author
    return organisational_domain(signer) == organisational_domain(author)
