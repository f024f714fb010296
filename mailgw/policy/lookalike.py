"""Domains that pretend to be ours: the `lookalike` fact behind rule `lookalike-domain`.

A domain resembles a protected one (a local or partner domain) when, after
folding homoglyphs (Cyrillic and Greek letters that look Latin, 0/o, 1/l, rn/m ...):

- it is the same name (``g0v``, a Cyrillic ``а``);
- it is the same name with its dots moved or turned into hyphens
  (``binhthuan-gov.vn``, ``binhthuangovvn.com``);
- it carries the protected name inside a longer one (``binhthuan.gov.vn.com``,
  ``binhthuan.gov.vn-secure.net``);
- it is within a small edit distance of it (``blnhthuan.gov.vn``): at most 2,
  and at most a quarter of the distinguishing label's length, so that two short,
  genuinely different names (``hanoi.gov.vn``, ``hanam.gov.vn``) are not confused.

The protected domains and their subdomains are never lookalikes of anything.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Iterable

import idna

# Letters of other scripts that render like Latin ones, and digits used for letters.
_CONFUSABLES = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "һ": "h", "ԁ": "d", "ɡ": "g", "ո": "n", "ν": "v", "ο": "o", "α": "a", "ι": "i", "κ": "k", "τ": "t",
    "м": "m", "т": "t", "н": "h", "в": "b", "к": "k", "ℓ": "l",
    "0": "o", "1": "l", "3": "e", "5": "s", "7": "t", "|": "l", "!": "i",
})


@functools.lru_cache(maxsize=4096)
def skeleton(domain: str) -> str:
    """The domain in Unicode, lowercased, accents removed, confusables folded; 'rn' read as 'm'."""
    try:
        text = idna.decode(domain) if "xn--" in domain else domain
    except idna.IDNAError:
        text = domain
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).replace("đ", "d")
    return _pairs(text.translate(_CONFUSABLES).replace("l", "i"))


def _pairs(s: str) -> str:
    """Letter pairs that read as one letter."""
    return s.replace("rn", "m")


def _flat(s: str) -> str:
    return _pairs(s.replace(".", "").replace("-", "").replace("_", ""))


def resembles(domain: str, protected: Iterable[str]) -> str | None:
    """The protected domain ``domain`` imitates, with how; None when it imitates none."""
    domain = domain.lower().rstrip(".")
    protected = [p.lower() for p in protected]
    if any(domain == p or domain.endswith("." + p) for p in protected):
        return None
    d_skel = skeleton(domain)
    d_flat = _flat(d_skel)
    for p in protected:
        p_skel = skeleton(p)
        p_flat = _flat(p_skel)
        if d_skel == p_skel:
            return f"{p} (look-alike letters)"
        if d_flat == p_flat:
            return f"{p} (dots and hyphens moved)"
        if len(p_flat) >= 6 and p_flat in d_flat:
            return f"{p} (inside a longer name)"
        limit = min(2, max(1, len(_label(p)) // 4))
        for a, b in ((d_skel, p_skel), (domain, p)):
            if abs(len(a) - len(b)) <= limit and (d := _distance(a, b, limit)) <= limit:
                return f"{p} (differs by {d} letter(s))"
    return None


def _label(domain: str) -> str:
    """The label that tells this domain apart: the first one (``binhthuan`` of binhthuan.gov.vn)."""
    return domain.split(".", 1)[0]


def _distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, giving up (returning limit + 1) once it must exceed ``limit``."""
    if a == b:
        return 0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]
