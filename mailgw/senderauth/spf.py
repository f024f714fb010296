"""SPF (RFC 7208): whether the client's address may send mail for a domain, through the gateway's own resolver.

``await check_host(ip, domain, sender, resolver, helo=...)`` is the function of RFC 7208
section 4: it returns an :class:`SpfResult` whose ``result`` is one of ``pass``,
``fail``, ``softfail``, ``neutral``, ``none``, ``permerror`` or ``temperror``.

Invariants:

- the whole record is parsed before any term is evaluated: a syntax error anywhere is
  ``permerror`` (section 4.6), whatever an earlier mechanism would have matched;
- at most ``MAX_LOOKUPS`` (10) DNS-querying terms (include, a, mx, ptr, exists,
  redirect) over the whole evaluation, includes and redirects included; at most
  ``MAX_VOID`` (2) lookups that find nothing; at most 10 MX or PTR names per term;
  past any of them, ``permerror`` (section 4.6.4). Recursion is bounded by the same
  count, so an include loop ends in ``permerror``;
- a DNS failure (``DnsTemporaryError``) is ``temperror``, never ``fail``;
- every string read from DNS or the client is bounded: a record over ``MAX_RECORD``
  characters or a macro expansion over 253 is cut or refused, never grown.

The ``p`` macro (the validated client name) expands to ``unknown``, as the RFC allows;
``exp=`` explanations are parsed but not fetched (no one reads them at an MX).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from typing import Protocol, Sized

from mailgw.config.resolver import DnsNameError, DnsTemporaryError

__all__ = ["MAX_LOOKUPS", "MAX_VOID", "RESULTS", "SpfResolver", "SpfResult", "check_host"]

PASS, FAIL, SOFTFAIL, NEUTRAL, NONE, PERMERROR, TEMPERROR = (
    "pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
RESULTS = (PASS, FAIL, SOFTFAIL, NEUTRAL, NONE, PERMERROR, TEMPERROR)

MAX_LOOKUPS = 10  # DNS-querying terms (section 4.6.4)
MAX_VOID = 2  # lookups that found nothing (section 4.6.4)
MAX_NAMES = 10  # MX names of one mx term, PTR names of one ptr term (section 4.6.4)
MAX_RECORD = 4096  # characters of one SPF record (a TXT answer is at most 64 KiB)
MAX_TERMS = 100  # terms of one record
MAX_EXPANSION = 4096  # characters the macros of one domain-spec may expand to, before trimming to 253

_QUALIFIERS = {"+": PASS, "-": FAIL, "~": SOFTFAIL, "?": NEUTRAL}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")


class SpfResolver(Protocol):
    """What SPF needs from DNS (mailgw.config.resolver's resolvers have it all)."""

    async def txt(self, name: str) -> list[bytes]: ...

    async def mx(self, name: str) -> list[tuple[int, str]]: ...

    async def lookup(self, name: str, rdtype: str) -> list[str]: ...


@dataclasses.dataclass(frozen=True)
class SpfResult:
    result: str
    domain: str  # the domain whose policy decided (the checked one; not an include's)
    reason: str = ""  # for the record and the Authentication-Results comment
    mechanism: str | None = None  # the term that matched, as written


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Term:
    qualifier: str
    name: str  # a mechanism name, or "redirect" / "exp" / another modifier
    arg: str | None  # domain-spec or address, as written (macros unexpanded)
    cidr4: int | None = None
    cidr6: int | None = None
    text: str = ""


@dataclasses.dataclass(frozen=True)
class _Record:
    terms: tuple[_Term, ...]
    redirect: str | None


class _State:
    def __init__(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, sender: str, helo: str, resolver: SpfResolver):
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.resolver = resolver
        self.lookups = 0
        self.void = 0

    def count_lookup(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS-querying terms")

    def count_void(self, found: Sized) -> None:
        if not found:
            self.void += 1
            if self.void > MAX_VOID:
                raise _PermError(f"more than {MAX_VOID} void DNS lookups")


async def check_host(ip: str, domain: str, sender: str, resolver: SpfResolver, *, helo: str = "") -> SpfResult:
    """RFC 7208 ``check_host(ip, domain, sender)``; ``sender`` is ``postmaster@HELO`` for a HELO check."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return SpfResult(PERMERROR, domain, f"not an IP address: {ip[:60]}")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client seen through a dual-stack socket (section 5)
    domain = domain.strip().rstrip(".").lower()
    if not _valid_domain(domain):
        return SpfResult(NONE, domain, "not a valid domain name")
    state = _State(address, sender, helo, resolver)
    try:
        result, mechanism = await _check(state, domain)
    except _PermError as e:
        return SpfResult(PERMERROR, domain, str(e))
    except _TempError as e:
        return SpfResult(TEMPERROR, domain, str(e))
    reason = {PASS: f"{address} is allowed", FAIL: f"{address} is not allowed",
              SOFTFAIL: f"{address} is probably not allowed", NEUTRAL: f"no statement on {address}",
              NONE: "no SPF record"}.get(result, "")
    return SpfResult(result, domain, reason, mechanism)


async def _check(state: _State, domain: str) -> tuple[str, str | None]:
    """(result, matched term) of ``domain``'s record; raises _PermError / _TempError."""
    record = await _record(state, domain)
    if record is None:
        return NONE, None
    for term in record.terms:
        if await _matches(state, term, domain):
            return _QUALIFIERS[term.qualifier], term.text
    if record.redirect is not None:
        state.count_lookup()
        target = _expand_domain(record.redirect, state, domain)
        if not _valid_domain(target):
            raise _PermError(f"redirect to an invalid domain: {target[:60]}")
        result, matched = await _check(state, target)
        if result == NONE:
            raise _PermError(f"redirect to {target}, which has no SPF record")
        return result, matched
    return NEUTRAL, None


async def _record(state: _State, domain: str) -> _Record | None:
    try:
        answers = await state.resolver.txt(domain)
    except DnsTemporaryError as e:
        raise _TempError(str(e)) from e
    found = [a for a in answers if a[:6].lower() == b"v=spf1" and (len(a) == 6 or a[6:7] == b" ")]
    if not found:
        return None
    if len(found) > 1:
        raise _PermError(f"{domain} publishes {len(found)} SPF records")
    text = found[0]
    if len(text) > MAX_RECORD:
        raise _PermError(f"the SPF record of {domain} is over {MAX_RECORD} characters")
    try:
        return _parse(text.decode("ascii"))
    except UnicodeDecodeError as e:
        raise _PermError(f"the SPF record of {domain} is not ASCII") from e


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_CIDR = re.compile(r"(?:/(\d{1,2}))?(?://(\d{1,3}))?\Z")
_CIDR_SUFFIX = re.compile(r"(?:/\d+)?(?://\d+)?\Z")


def _parse(text: str) -> _Record:
    """A record's terms in order, and its redirect; raises _PermError on any syntax error (section 4.6)."""
    words = text.split(" ")[1:]
    terms: list[_Term] = []
    redirect: str | None = None
    seen: set[str] = set()
    for word in words:
        if not word:
            continue
        if len(terms) >= MAX_TERMS:
            raise _PermError(f"more than {MAX_TERMS} terms")
        name_match = _NAME.match(word)
        if name_match and word[name_match.end():name_match.end() + 1] == "=":  # a modifier
            name = name_match.group(0).lower()
            value = word[name_match.end() + 1:]
            _check_macro_string(value)
            if name in ("redirect", "exp"):
                if name in seen:
                    raise _PermError(f"more than one {name}= modifier")
                seen.add(name)
                if not value:
                    raise _PermError(f"{name}= without a domain")
                _check_domain_spec(value)
                if name == "redirect":
                    redirect = value
            continue
        qualifier = "+"
        body = word
        if body[0] in _QUALIFIERS:
            qualifier, body = body[0], body[1:]
        match = re.match(r"[A-Za-z0-9]+", body)
        mech = match.group(0).lower() if match else ""
        if mech not in _MECHANISMS:
            raise _PermError(f"unknown mechanism {word[:40]!r}")
        rest = body[len(mech):]
        terms.append(_mechanism(qualifier, mech, rest, word))
    if "all" in {t.name for t in terms}:
        redirect = None  # section 6.1: redirect is ignored when the record has an "all"
    return _Record(tuple(terms), redirect)


def _mechanism(qualifier: str, mech: str, rest: str, word: str) -> _Term:
    if mech == "all":
        if rest:
            raise _PermError(f"bad term {word[:40]!r}")
        return _Term(qualifier, mech, None, text=word)
    if mech in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise _PermError(f"{mech} without an address: {word[:40]!r}")
        addr, sep, length = rest[1:].partition("/")
        if sep and not length:
            raise _PermError(f"bad prefix length in {word[:60]!r}")
        network: ipaddress.IPv4Network | ipaddress.IPv6Network
        try:
            if mech == "ip4":
                ipaddress.IPv4Address(addr)
                network = ipaddress.IPv4Network(f"{addr}/{length or 32}", strict=False)
            else:
                ipaddress.IPv6Address(addr)
                network = ipaddress.IPv6Network(f"{addr}/{length or 128}", strict=False)
        except ValueError as e:
            raise _PermError(f"bad {mech} network {word[:60]!r}") from e
        if length and (not length.isdigit() or length.startswith("0") and length != "0"):
            raise _PermError(f"bad prefix length in {word[:60]!r}")
        return _Term(qualifier, mech, str(network), text=word)
    spec: str | None = None
    cidr_part = ""
    if mech in ("a", "mx"):  # a dual-cidr-length ends the term; the domain-spec may hold "/" and ":" itself
        m = _CIDR_SUFFIX.search(rest)
        if m is not None and m.group(0):
            cidr_part, rest = m.group(0), rest[:m.start()]
    if rest.startswith(":"):
        spec = rest[1:]
        if not spec:
            raise _PermError(f"empty domain in {word[:40]!r}")
        _check_macro_string(spec)
        _check_domain_spec(spec)
    elif rest:
        raise _PermError(f"bad term {word[:40]!r}")
    if mech in ("include", "exists") and spec is None:
        raise _PermError(f"{mech} needs a domain: {word[:40]!r}")
    cidr4 = cidr6 = None
    if cidr_part:
        m = _CIDR.match(cidr_part)
        if not m or (m.group(1) is None and m.group(2) is None):
            raise _PermError(f"bad prefix length in {word[:40]!r}")
        for digits in (m.group(1), m.group(2)):
            if digits is not None and len(digits) > 1 and digits.startswith("0"):
                raise _PermError(f"bad prefix length in {word[:40]!r}")
        cidr4 = int(m.group(1)) if m.group(1) is not None else None
        cidr6 = int(m.group(2)) if m.group(2) is not None else None
        if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
            raise _PermError(f"prefix length out of range in {word[:40]!r}")
    return _Term(qualifier, mech, spec, cidr4, cidr6, word)


async def _matches(state: _State, term: _Term, domain: str) -> bool:
    ip = state.ip
    name = term.name
    if name == "all":
        return True
    if name == "ip4":
        return isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network(term.arg or "")
    if name == "ip6":
        return isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network(term.arg or "")
    state.count_lookup()
    target = _expand_domain(term.arg, state, domain) if term.arg is not None else domain
    if not _valid_domain(target):
        return False  # a name a macro made invalid matches nothing; one written so is refused by _parse
    if name == "include":
        result, _ = await _check(state, target)
        if result == PASS:
            return True
        if result in (FAIL, SOFTFAIL, NEUTRAL):
            return False
        raise _PermError(f"include:{target} has no SPF record" if result == NONE else f"include:{target}: {result}")
    if name == "exists":
        found = await _addresses(state, target, "A")
        state.count_void(found)
        return bool(found)
    if name == "a":
        found = await _addresses(state, target, _family(ip))
        state.count_void(found)
        return _in_any(ip, found, term)
    if name == "mx":
        try:
            exchanges = await state.resolver.mx(target)
        except DnsNameError:
            exchanges = []
        except DnsTemporaryError as e:
            raise _TempError(str(e)) from e
        state.count_void(exchanges)
        if len(exchanges) > MAX_NAMES:
            raise _PermError(f"{target} has more than {MAX_NAMES} MX records")
        for _, host in exchanges:
            if host and _in_any(ip, await _addresses(state, host, _family(ip)), term):
                return True
        return False
    if name == "ptr":
        return await _ptr(state, target)
    raise _PermError(f"unknown mechanism {name}")  # not reached: _parse refuses it


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "A" if isinstance(ip, ipaddress.IPv4Address) else "AAAA"


async def _addresses(state: _State, name: str, rdtype: str) -> list[str]:
    try:
        return await state.resolver.lookup(name, rdtype)
    except DnsTemporaryError as e:
        raise _TempError(str(e)) from e


def _in_any(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, found: list[str], term: _Term) -> bool:
    length = term.cidr4 if isinstance(ip, ipaddress.IPv4Address) else term.cidr6
    for text in found:
        try:
            network = ipaddress.ip_network(f"{text}/{length}" if length is not None else text, strict=False)
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


async def _ptr(state: _State, target: str) -> bool:
    """Section 5.5: a validated reverse name of the client equal to or under ``target``."""
    try:
        names = await state.resolver.lookup(state.ip.reverse_pointer, "PTR")
    except DnsTemporaryError:
        return False  # section 5.5: a failed PTR lookup is a non-match
    state.count_void(names)
    for name in names[:MAX_NAMES]:
        name = name.rstrip(".").lower()
        if not (name == target or name.endswith("." + target)):
            continue
        try:
            forward = await state.resolver.lookup(name, _family(state.ip))
        except DnsTemporaryError:
            continue
        if any(_same(state.ip, a) for a in forward):
            return True
    return False


def _same(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


# --- macros (section 7) ---------------------------------------------------------

_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)


def _check_macro_string(text: str) -> None:
    """Section 7.1 syntax: every % starts a macro, %%, %_ or %-; letters c, r, t only in exp."""
    i = 0
    while True:
        i = text.find("%", i)
        if i < 0:
            return
        m = _MACRO.match(text, i)
        if m is None:
            raise _PermError(f"bad macro in {text[:60]!r}")
        if m.group(1) is not None:
            if m.group(1).lower() not in "slodiphv":
                raise _PermError(f"unknown macro letter in {text[:60]!r}")
            if m.group(2) and int(m.group(2)) == 0:
                raise _PermError(f"a macro keeping zero labels in {text[:60]!r}")
        elif m.group(5) not in "%_-":
            raise _PermError(f"bad macro in {text[:60]!r}")
        i = m.end()


_TOPLABEL = re.compile(r"(?=[A-Za-z0-9-]*[A-Za-z])(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _check_domain_spec(spec: str) -> None:
    """Section 7.1 ``domain-end``: a name without macros must end in a dot and a top label."""
    if "%" in spec:
        return
    name = spec[:-1] if spec.endswith(".") else spec
    head, dot, top = name.rpartition(".")
    if not dot or not head or not _TOPLABEL.match(top):
        raise _PermError(f"not a domain name: {spec[:60]!r}")


def _expand(text: str, state: _State, domain: str) -> str:
    sender = state.sender
    local, _, sender_domain = sender.rpartition("@")
    values = {
        "s": sender, "l": local or "postmaster", "o": sender_domain, "d": domain, "h": state.helo or "unknown",
        "p": "unknown", "v": "in-addr" if isinstance(state.ip, ipaddress.IPv4Address) else "ip6",
        "i": str(state.ip) if isinstance(state.ip, ipaddress.IPv4Address) else ".".join(state.ip.exploded.replace(":", "")),
    }

    grown = 0

    def one(m: re.Match[str]) -> str:
        nonlocal grown
        if m.group(5) is not None:
            return {"%": "%", "_": " ", "-": "%20"}[m.group(5)]
        letter, digits, reverse, delimiters = m.group(1), m.group(2), m.group(3), m.group(4)
        value = values[letter.lower()]
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            parts = parts[-int(digits):]
        out = ".".join(parts)
        grown += len(out)
        if grown > MAX_EXPANSION:  # a record repeating %{s} must not make megabytes of a client's address
            raise _PermError(f"macro expansion over {MAX_EXPANSION} characters")
        return urllib.parse.quote(out, safe="") if letter.isupper() else out

    return _MACRO.sub(one, text)


def _expand_domain(spec: str, state: _State, domain: str) -> str:
    """A domain-spec expanded; over 253 characters, left labels dropped until it fits (section 7.3)."""
    name = _expand(spec, state, domain).rstrip(".")
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name.lower()


def _valid_domain(name: str) -> bool:
    """A multi-label name of 1-63 character labels, at most 253 characters (section 4.3; DNS labels may hold any octet)."""
    if not name or len(name) > 253 or "." not in name:
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))
