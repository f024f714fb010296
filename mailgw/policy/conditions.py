"""The `when` vocabulary of policy rules: what an admin may test, and how.

A condition is compiled once, when the policy files load, into a small tree of
``Test`` objects; evaluating it against a message's facts (a ``View``, see
``facts.py``) returns whether it holds and, for the trace, why. Every key and
value an admin writes is checked here, with its file and line.

A ``when`` mapping holds when all of its keys hold. The keys:

message        listener, role, direction (inbound|outbound), internal,
               size, authenticated, auth_user, tls, client_ip, tags, matched
document       category, doc_type, has_doc_number, secrecy, secrecy_strength,
               declassified, urgency, confidence
parties        sender (the From author), mail_from (the envelope sender),
               any_recipient, all_recipients, any_claimed (an address of a
               Sender, Resent-From or Resent-Sender field): each a mapping of PARTY keys
DKIM           dkim: a mapping of DKIM keys
SPF            spf: a mapping of SPF keys (result, identity, domain)
DMARC          dmarc: a mapping of DMARC keys (result, policy, p, aligned, domain, override)
ARC            arc: a mapping of ARC keys (result, sealer, trusted, sets)
attachments    attachments (message-wide facts), any_attachment,
               all_attachments: each a mapping of FILE keys
logic          all: [..], any: [..], not: {..}, always: true

Values: a list means "one of these"; a number may be given as a comparison
mapping ``{gt: 10M}`` (gt, ge, lt, le; sizes with K, M, G).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
from typing import Any, Callable, Sequence

from mailgw.classify.vn.classification import CATEGORIES
from mailgw.classify.vn.secrecy import SECRECY_LEVELS, URGENCY_LEVELS
from mailgw.config.yamlfile import Checker, YList, YMap
from mailgw.config.yamlfile import kind_of as _kind

View = dict[str, Any]
Result = tuple[bool, str]

ROLES = ("mx", "relay", "submission")
DIRECTIONS = ("inbound", "outbound")
STRENGTHS = ("none", "weak", "strong")
MAILBOX_ROLES = ("clerk", "leader", "staff", "unit", "public_service")
DKIM_STATUSES = ("pass", "fail", "none", "temperror")
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
SPF_IDENTITIES = ("mailfrom", "helo")
DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")
DMARC_POLICIES = ("none", "quarantine", "reject")
DMARC_METHODS = ("spf", "dkim")
DMARC_OVERRIDES = ("trusted_forwarder",)  # RFC 7489 section 7.2 PolicyOverrideType values mailgw applies
ARC_RESULTS = ("pass", "fail", "none", "temperror")
FILE_KINDS = ("pdf", "office", "office_macro", "executable", "script", "archive", "image", "text", "calendar", "other")
DANGER_REASONS = (
    "executable", "script", "macro", "dde", "double_extension", "rtl_override",
    "encrypted_archive", "archive_limits", "type_mismatch_executable",
)
ENCRYPTIONS = ("password", "certificate", "other")


class Test:
    """One compiled condition."""

    def test(self, view: View) -> Result:
        raise NotImplementedError

    def holds(self, view: View) -> bool:
        """Whether the condition holds, without saying why: what a replay of many records asks."""
        return self.test(view)[0]

    def key(self) -> Any:
        """A canonical, hashable form, for finding rules that can never match."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Always(Test):
    def test(self, view: View) -> Result:
        return True, "always"

    def holds(self, view: View) -> bool:
        return True

    def key(self) -> Any:
        return ("always",)


@dataclasses.dataclass(frozen=True)
class All(Test):
    parts: tuple[Test, ...]

    def test(self, view: View) -> Result:
        whys = []
        for part in self.parts:
            ok, why = part.test(view)
            if not ok:
                return False, why
            whys.append(why)
        return True, "; ".join(whys)

    def holds(self, view: View) -> bool:
        for p in self.parts:  # a loop, not all(...): no generator per call (a replay makes millions)
            if not p.holds(view):
                return False
        return True

    def key(self) -> Any:
        return ("all", frozenset(p.key() for p in self.parts))


@dataclasses.dataclass(frozen=True)
class Any_(Test):
    parts: tuple[Test, ...]

    def test(self, view: View) -> Result:
        whys = []
        for part in self.parts:
            ok, why = part.test(view)
            if ok:
                return True, why
            whys.append(why)
        return False, "none of: " + " | ".join(whys)

    def holds(self, view: View) -> bool:
        for p in self.parts:
            if p.holds(view):
                return True
        return False

    def key(self) -> Any:
        return ("any", frozenset(p.key() for p in self.parts))


@dataclasses.dataclass(frozen=True)
class Not(Test):
    part: Test

    def test(self, view: View) -> Result:
        ok, why = self.part.test(view)
        return (not ok), (f"not ({why})")

    def holds(self, view: View) -> bool:
        return not self.part.holds(view)

    def key(self) -> Any:
        return ("not", self.part.key())


@dataclasses.dataclass(frozen=True)
class Field(Test):
    """A comparison of one fact: ``path`` into the view, a predicate, a label for the trace."""

    label: str
    getter: Callable[[View], Any] = dataclasses.field(compare=False)
    predicate: Callable[[Any], bool] = dataclasses.field(compare=False)
    wanted: str  # canonical text of what was asked for (also the key)
    spec: tuple[str, Any] = dataclasses.field(default=("eq", None), compare=False)  # see Compiled

    def test(self, view: View) -> Result:
        value = self.getter(view)
        ok = self.predicate(value)
        return ok, f"{self.label}={_show(value)} {'matches' if ok else 'does not match'} {self.wanted}"

    def holds(self, view: View) -> bool:
        return self.predicate(self.getter(view))

    def key(self) -> Any:
        return ("field", self.label, self.wanted)


@dataclasses.dataclass(frozen=True)
class Each(Test):
    """A condition over a list in the view: any item, or all items (and at least one)."""

    label: str
    getter: Callable[[View], list[View]] = dataclasses.field(compare=False)
    inner: Test
    every: bool

    def test(self, view: View) -> Result:
        items = self.getter(view)
        if not items:
            return False, f"{self.label}: none present"
        results = [(item, *self.inner.test(item)) for item in items]
        if self.every:
            bad = next(((i, w) for i, ok, w in results if not ok), None)
            if bad is not None:
                return False, f"{self.label}: {_name(bad[0])}: {bad[1]}"
            return True, f"{self.label}: all {len(items)} match"
        good = [(i, w) for i, ok, w in results if ok]
        if good:
            return True, f"{self.label}: {', '.join(_name(i) for i, _ in good)}: {good[0][1]}"
        return False, f"{self.label}: none of {len(items)} match ({results[0][2]})"

    def holds(self, view: View) -> bool:
        items = self.getter(view)
        if not items:
            return False
        inner = self.inner
        if self.every:
            for item in items:
                if not inner.holds(item):
                    return False
            return True
        for item in items:
            if inner.holds(item):
                return True
        return False

    def key(self) -> Any:
        return ("each", self.label, self.every, self.inner.key())


def _name(item: View) -> str:
    """How the trace names a recipient or a file."""
    if "address" in item:
        return str(item["address"])
    return f"{item.get('name') or '?'} ({item.get('location', '?')})"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


# --- value kinds -------------------------------------------------------------
#
# Each kind reads what the admin wrote (checking it) and returns a predicate
# over the fact's value plus a canonical text of what was asked.

# A reader's answer: the predicate, the canonical text of what was asked, and what was asked in a form
# the shadowing analysis can reason on (``_spec_implies``): ("set", values) for one of a set (any one of a
# list fact), ("range", ((op, n), ...)), ("domains", names), ("nets", networks), ("nonempty", bool), or
# ("eq", value).
Compiled = tuple[Callable[[Any], bool], str, tuple[str, Any]] | None


def _as_list(c: Checker, where: YMap, key: str, what: str) -> list[Any] | None:
    value = where[key]
    items = list(value) if isinstance(value, list) else [value]
    if not items:
        c.error(where, key, f"{key!r} must name at least one {what}")
        return None
    return items


def choice(allowed: Sequence[str] | None, what: str, *, lower: bool = False) -> Callable[[Checker, YMap, str], Compiled]:
    def read(c: Checker, where: YMap, key: str) -> Compiled:
        items = _as_list(c, where, key, what)
        if items is None:
            return None
        out = []
        for item in items:
            if not isinstance(item, str) or not item:
                c.error(where, key, f"{key!r} takes {what} names (a string or a list of strings), not {item!r}")
                return None
            if lower:
                item = item.lower()
            if allowed is not None and item not in allowed:
                c.error(where, key, f"unknown {what} {item!r} in {key!r} (known: {', '.join(allowed) or 'none'})")
                return None
            out.append(item)
        wanted = frozenset(out)

        def pred(value: Any) -> bool:
            if isinstance(value, (list, tuple, set, frozenset)):
                return bool(wanted.intersection(value))
            return (value.lower() if lower and isinstance(value, str) else value) in wanted

        return pred, "one of [" + ", ".join(sorted(wanted)) + "]", ("set", wanted)

    return read


def flag(c: Checker, where: YMap, key: str) -> Compiled:
    value = where[key]
    if not isinstance(value, bool):
        c.error(where, key, f"{key!r} must be true or false, not {value!r}")
        return None
    return (lambda v: bool(v) == value), ("true" if value else "false"), ("eq", value)


_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?)?\s*\Z", re.IGNORECASE)
_MULT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _NUMBER.match(value)
        if m:
            return float(m.group(1)) * _MULT[(m.group(2) or "")[:1].upper()]
    return None


def number(c: Checker, where: YMap, key: str) -> Compiled:
    value = where[key]
    tests: list[tuple[str, float]] = []
    if isinstance(value, YMap):
        c.keys(value, _OPS, what=f"the comparison {key!r}")
        for op in value:
            if op in _OPS:
                n = _number(value[op])
                if n is None:
                    c.error(value, op, f"{key}.{op} must be a number (sizes may use K, M, G), not {value[op]!r}")
                    return None
                tests.append((op, n))
        if not tests:
            c.error(where, key, f"{key!r} needs a comparison: gt, ge, lt, le or eq")
            return None
    else:
        n = _number(value)
        if n is None:
            c.error(where, key, f"{key!r} must be a number or a comparison like {{gt: 10M}}, not {value!r}")
            return None
        tests.append(("eq", n))

    def pred(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and all(_OPS[op](v, n) for op, n in tests)

    return pred, " and ".join(f"{op} {n:g}" for op, n in tests), ("range", tuple(tests))


def patterns(what: str) -> Callable[[Checker, YMap, str], Compiled]:
    """Shell-style patterns (``*.exe``, ``application/x-*``), case-insensitive."""

    def read(c: Checker, where: YMap, key: str) -> Compiled:
        items = _as_list(c, where, key, what)
        if items is None:
            return None
        if not all(isinstance(i, str) and i for i in items):
            c.error(where, key, f"{key!r} takes {what}s (a string or a list of strings)")
            return None
        compiled = [re.compile(fnmatch.translate(i.lower())) for i in items]

        def pred(v: Any) -> bool:
            values = v if isinstance(v, (list, tuple)) else [v]
            return any(isinstance(x, str) and any(p.match(x.lower()) for p in compiled) for x in values)

        lowered = frozenset(i.lower() for i in items)
        return pred, "like [" + ", ".join(sorted(lowered)) + "]", ("set", lowered)

    return read


def domains(c: Checker, where: YMap, key: str) -> Compiled:
    """Domains: a fact matches a domain or any subdomain of it."""
    items = _as_list(c, where, key, "domain")
    if items is None:
        return None
    out = []
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", item.strip(".")):
            c.error(where, key, f"{key!r} takes domain names like binhthuan.gov.vn, not {item!r}")
            return None
        out.append(item.strip(".").lower())
    wanted = tuple(out)

    def pred(v: Any) -> bool:
        values = v if isinstance(v, (list, tuple)) else [v]
        return any(isinstance(d, str) and any(d == w or d.endswith("." + w) for w in wanted) for d in values)

    return pred, "in or under [" + ", ".join(sorted(wanted)) + "]", ("domains", wanted)


def addresses(c: Checker, where: YMap, key: str) -> Compiled:
    items = _as_list(c, where, key, "address")
    if items is None:
        return None
    out = []
    for item in items:
        if not isinstance(item, str) or item.count("@") != 1 or item.startswith("@") or item.endswith("@"):
            c.error(where, key, f"{key!r} takes e-mail addresses, not {item!r}")
            return None
        out.append(item.strip().lower())
    wanted = frozenset(out)
    return ((lambda v: isinstance(v, str) and v.lower() in wanted), "one of [" + ", ".join(sorted(wanted)) + "]",
            ("set", wanted))


def networks(c: Checker, where: YMap, key: str) -> Compiled:
    items = _as_list(c, where, key, "network")
    if items is None:
        return None
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            c.error(where, key, f"{key!r} takes IP networks like 10.0.0.0/8, not {item!r}")
            return None

    def pred(v: Any) -> bool:
        try:
            ip = ipaddress.ip_address(v)
        except (TypeError, ValueError):
            return False
        return any(ip in n for n in nets)

    return pred, "in [" + ", ".join(str(n) for n in nets) + "]", ("nets", tuple(nets))


def danger(c: Checker, where: YMap, key: str) -> Compiled:
    """``dangerous: true`` (any reason) or a list of the reasons that count."""
    if isinstance(where[key], bool):
        value = where[key]
        return (lambda v: bool(v) == value), ("true" if value else "false"), ("nonempty", value)
    return choice(DANGER_REASONS, "danger reason")(c, where, key)


# --- the vocabulary ----------------------------------------------------------

Reader = Callable[[Checker, YMap, str], Compiled]


@dataclasses.dataclass(frozen=True)
class Known:
    """What the directory and the rules defined so far allow a rule to name."""

    agencies: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    rule_ids: frozenset[str] = frozenset()


def _get(*path: str) -> Callable[[View], Any]:
    if len(path) == 1:  # the common case, without the loop
        key = path[0]

        def get_one(view: View) -> Any:
            return view.get(key) if isinstance(view, dict) else None

        return get_one

    def get(view: View) -> Any:
        value: Any = view
        for p in path:
            if not isinstance(value, dict):
                return None
            value = value.get(p)
        return value

    return get


def _message_fields(known: Known) -> dict[str, tuple[Reader, Callable[[View], Any]]]:
    return {
        "listener": (choice(None, "listener"), _get("listener")),
        "role": (choice(ROLES, "role"), _get("role")),
        "direction": (choice(DIRECTIONS, "direction"), _get("direction")),
        "internal": (flag, _get("internal")),
        "size": (number, _get("size")),
        "authenticated": (flag, _get("authenticated")),
        "auth_user": (addresses, _get("auth_user")),
        "tls": (flag, _get("tls")),
        "client_ip": (networks, _get("client_ip")),
        "tags": (choice(None, "tag"), _get("tags")),
        "matched": (choice(sorted(known.rule_ids), "rule id (of a rule above this one)"), _get("matched")),
        "category": (choice(CATEGORIES, "category"), _get("classification", "category")),
        "doc_type": (choice(None, "document type"), _get("classification", "doc_type")),
        "has_doc_number": (flag, lambda v: bool(_get("classification", "doc_number")(v))),
        "secrecy": (choice(SECRECY_LEVELS, "secrecy level"), _get("classification", "secrecy")),
        "secrecy_strength": (choice(STRENGTHS, "secrecy strength"), _get("classification", "secrecy_strength")),
        "declassified": (flag, _get("classification", "declassified")),
        "urgency": (choice(URGENCY_LEVELS, "urgency level"), _get("classification", "urgency")),
        "confidence": (number, _get("classification", "confidence")),
    }


def _party_fields(known: Known) -> dict[str, tuple[Reader, Callable[[View], Any]]]:
    return {
        "local": (flag, _get("local")),
        "official": (flag, _get("official")),
        "verified": (flag, _get("verified")),
        "public_service": (flag, _get("public_service")),
        "partner": (flag, _get("partner")),
        "exception": (flag, _get("exception")),
        "lookalike": (flag, lambda p: p.get("lookalike") is not None),
        "display_spoof": (flag, lambda p: p.get("display_spoof") is not None),
        "agency": (choice(sorted(known.agencies), "agency code"), _get("agency")),
        "unit": (choice(sorted(known.units), "unit code"), _get("unit")),
        "role": (choice(MAILBOX_ROLES, "mailbox role"), _get("roles")),
        "domain": (domains, _get("domain")),
        "address": (addresses, _get("address")),
    }


_DKIM_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "status": (choice(DKIM_STATUSES, "DKIM status"), _get("status")),
    "signed": (flag, _get("signed")),
    "aligned_pass": (flag, _get("aligned_pass")),
    "aligned_temperror": (flag, _get("aligned_temperror")),
    "pinned": (flag, _get("pinned")),
    "pass_domain": (domains, _get("pass_domains")),
}

_SPF_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "result": (choice(SPF_RESULTS, "SPF result"), _get("result")),
    "identity": (choice(SPF_IDENTITIES, "SPF identity"), _get("identity")),
    "domain": (domains, _get("domain")),
}

_DMARC_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "result": (choice(DMARC_RESULTS, "DMARC result"), _get("result")),
    "policy": (choice(DMARC_POLICIES, "DMARC policy"), _get("policy")),
    "p": (choice(DMARC_POLICIES, "DMARC policy"), _get("p")),
    "aligned": (choice(DMARC_METHODS, "DMARC method"), _get("aligned")),
    "domain": (domains, _get("domain")),
    "override": (choice(DMARC_OVERRIDES, "DMARC policy override"), _get("override")),
}

_ARC_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "result": (choice(ARC_RESULTS, "ARC result"), _get("result")),
    "sealer": (domains, _get("sealer")),
    "trusted": (flag, _get("trusted")),
    "sets": (number, _get("sets")),
}

_ATTACHMENTS_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "count": (number, _get("count")),
    "total_size": (number, _get("total_size")),
    "ambiguous": (flag, _get("ambiguous")),
    "signed_any": (flag, _get("signed_any")),
}

_FILE_FIELDS: dict[str, tuple[Reader, Callable[[View], Any]]] = {
    "name": (patterns("file name pattern"), _get("names")),
    "extension": (choice(None, "extension", lower=True), _get("extension")),
    "kind": (choice(FILE_KINDS, "file kind"), _get("kind")),
    "true_type": (patterns("MIME type pattern"), _get("true_type")),
    "declared_type": (patterns("MIME type pattern"), _get("declared_type")),
    "size": (number, _get("size")),
    "dangerous": (danger, lambda f: f.get("dangerous") or []),
    "executable": (flag, _get("executable")),
    "script": (flag, _get("script")),
    "macro": (flag, _get("macro")),
    "double_extension": (flag, _get("double_extension")),
    "rtl_override": (flag, _get("rtl_override")),
    "encrypted": (flag, _get("encrypted")),
    "encryption": (choice(ENCRYPTIONS, "encryption"), _get("encryption")),
    "decrypted": (flag, _get("decrypted")),
    "damaged": (flag, lambda f: f.get("damaged") is not None),
    "dde": (flag, _get("dde")),
    "signed": (flag, _get("signed")),
    "type_mismatch": (flag, _get("type_mismatch")),
    "in_archive": (flag, _get("in_archive")),
}

LOGIC = ("all", "any", "not", "always")
PARTY_KEYS = ("sender", "mail_from", "any_recipient", "all_recipients", "any_claimed")
FILE_KEYS = ("any_attachment", "all_attachments")
NESTED = ("dkim", "spf", "dmarc", "arc", "attachments", *PARTY_KEYS, *FILE_KEYS)


def all_keys(known: Known) -> list[str]:
    return [*_message_fields(known), *NESTED, *LOGIC]


def compile_when(c: Checker, node: Any, parent: YMap | YList, key: Any, known: Known) -> Test | None:
    """Compile a `when` mapping (or a list item of all/any); None after recording errors."""
    if not isinstance(node, YMap):
        c.error(parent, key, "a condition must be a mapping of tests (e.g. {category: report}), not " + _kind(node))
        return None
    if not node:
        c.error(parent, key, "an empty condition matches every message; write 'always: true' if that is meant")
        return None
    message_fields = _message_fields(known)
    parts: list[Test] = []
    ok = True
    for name in node:
        t: Test | None = None
        if name in message_fields:
            t = _field(c, node, name, name, *message_fields[name])
        elif name == "always":
            if node[name] is not True:
                c.error(node, name, "'always' can only be true")
            else:
                t = Always()
        elif name in ("all", "any"):
            items = node[name]
            if not isinstance(items, YList) or not items:
                c.error(node, name, f"{name!r} takes a non-empty list of conditions")
            else:
                subs = [compile_when(c, item, items, i, known) for i, item in enumerate(items)]
                if all(s is not None for s in subs):
                    t = All(tuple(subs)) if name == "all" else Any_(tuple(subs))  # type: ignore[arg-type]
        elif name == "not":
            sub = compile_when(c, node[name], node, name, known)
            t = Not(sub) if sub is not None else None
        elif name in PARTY_KEYS:
            t = _nested(c, node, name, _party_fields(known), "a party test")
            if t is not None:
                if name in ("sender", "mail_from"):
                    inner = t
                    getter = _get(name)

                    t = _Sub(name, getter, inner)
                elif name == "any_claimed":
                    t = Each(name, _get("claimed"), t, every=False)
                else:
                    t = Each(name, _get("recipients"), t, every=name == "all_recipients")
        elif name == "dkim":
            inner = _nested(c, node, name, _DKIM_FIELDS, "a DKIM test")
            t = _Sub("dkim", _get("dkim"), inner) if inner is not None else None
        elif name == "spf":
            inner = _nested(c, node, name, _SPF_FIELDS, "an SPF test")
            t = _Sub("spf", _get("spf"), inner) if inner is not None else None
        elif name == "dmarc":
            inner = _nested(c, node, name, _DMARC_FIELDS, "a DMARC test")
            t = _Sub("dmarc", _get("dmarc"), inner) if inner is not None else None
        elif name == "arc":
            inner = _nested(c, node, name, _ARC_FIELDS, "an ARC test")
            t = _Sub("arc", _get("arc"), inner) if inner is not None else None
        elif name == "attachments":
            inner = _nested(c, node, name, _ATTACHMENTS_FIELDS, "an attachments test")
            t = _Sub("attachments", _get("attachments"), inner) if inner is not None else None
        elif name in FILE_KEYS:
            inner = _nested(c, node, name, _FILE_FIELDS, "a file test")
            if inner is not None:
                t = Each(name, _get("attachments", "files"), inner, every=name == "all_attachments")
        else:
            c.error(node, name, f"unknown condition {name!r} (known: {', '.join(all_keys(known))})")
        if t is None:
            ok = False
        else:
            parts.append(t)
    if not ok:
        return None
    return parts[0] if len(parts) == 1 else All(tuple(parts))


@dataclasses.dataclass(frozen=True)
class _Sub(Test):
    """A test over a sub-mapping of the view (the sender, the DKIM facts ...)."""

    label: str
    getter: Callable[[View], Any] = dataclasses.field(compare=False)
    inner: Test

    def test(self, view: View) -> Result:
        sub = self.getter(view)
        if not isinstance(sub, dict):
            return False, f"{self.label}: none"
        ok, why = self.inner.test(sub)
        return ok, f"{self.label}.{why}"

    def holds(self, view: View) -> bool:
        sub = self.getter(view)
        return isinstance(sub, dict) and self.inner.holds(sub)

    def key(self) -> Any:
        return ("sub", self.label, self.inner.key())


def _nested(c: Checker, node: YMap, name: str, fields: dict[str, tuple[Reader, Callable[[View], Any]]], what: str) -> Test | None:
    m = node[name]
    if not isinstance(m, YMap) or not m:
        c.error(node, name, f"{name!r} takes a mapping of tests (known: {', '.join(fields)})")
        return None
    parts = []
    ok = True
    for key in m:
        if key not in fields:
            c.error(m, key, f"unknown test {key!r} in {name!r} (known: {', '.join(fields)})")
            ok = False
            continue
        t = _field(c, m, key, key, *fields[key])
        if t is None:
            ok = False
        else:
            parts.append(t)
    if not ok:
        return None
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _field(c: Checker, node: YMap, key: str, label: str, reader: Reader, getter: Callable[[View], Any]) -> Test | None:
    compiled = reader(c, node, key)
    if compiled is None:
        return None
    pred, wanted, spec = compiled
    return Field(label, getter, pred, wanted, spec)


# Facts the evaluation itself adds to as rules match: a condition on them may hold for a
# later rule and not for an earlier one on the same message.
STATE = frozenset({"tags", "matched"})


def reads_state(t: Test) -> bool:
    """Whether ``t`` tests the tags or rules matched so far (anywhere inside it)."""
    if isinstance(t, Field):
        return t.label in STATE
    if isinstance(t, (All, Any_)):
        return any(reads_state(p) for p in t.parts)
    if isinstance(t, Not):
        return reads_state(t.part)
    return False  # Always; _Sub and Each test sub-mappings (a party, a file), where neither is


# --- shadowing: one condition implied by another -------------------------------------------------

# Each list a rule may test item by item, by the name of the test.
_EACH_SOURCE = {"any_recipient": "recipients", "all_recipients": "recipients", "any_claimed": "claimed",
                "any_attachment": "files", "all_attachments": "files"}


def implies(a: Test, b: Test) -> bool:
    """Whether every message on which ``a`` holds makes ``b`` hold too, where that is certain.

    Sound, not complete: False means "not shown", never "a message exists". Tests are compared
    only where their meaning is known: one of a set within a larger set (``secrecy: [mat]`` and
    ``secrecy: [mat, toi_mat, tuyet_mat]``), a number range within a range, a domain under a
    domain, a network within a network, the same test on the same fact; ``all`` of more
    conditions than another. Tests on the tags and rules matched so far imply nothing: they
    change as rules match, so the same test may hold for a later rule and not for an earlier one.
    """
    if isinstance(b, Always):
        return True
    if isinstance(b, All):
        return all(implies(a, p) for p in b.parts)
    if isinstance(a, Any_):
        return all(implies(p, b) for p in a.parts)
    if isinstance(a, All):
        return any(implies(p, b) for p in a.parts)
    if isinstance(b, Any_):
        return any(implies(a, p) for p in b.parts)
    if isinstance(a, Not) and isinstance(b, Not):
        return implies(b.part, a.part)
    if isinstance(a, _Sub) and isinstance(b, _Sub):
        return a.label == b.label and implies(a.inner, b.inner)
    if isinstance(a, Each) and isinstance(b, Each):
        # all items (and at least one) answer as any item does; not the other way round
        source = _EACH_SOURCE.get(a.label)
        return source is not None and source == _EACH_SOURCE.get(b.label) and (a.every or not b.every) \
            and implies(a.inner, b.inner)
    if isinstance(a, Field) and isinstance(b, Field):
        return a.label == b.label and a.label not in STATE and _spec_implies(a.spec, b.spec)
    return False  # a kind of test this analysis does not know: never a claim


def _spec_implies(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    kind_a, want_a = a
    kind_b, want_b = b
    if kind_a == "set" and kind_b == "set":
        return bool(want_a) and want_a <= want_b
    if kind_a == "set" and b == ("nonempty", True):
        return bool(want_a)  # one of these reasons: so at least one reason (``dangerous``)
    if kind_a == "range" and kind_b == "range":
        return _range_implies(want_a, want_b)
    if kind_a == "domains" and kind_b == "domains":
        return all(any(d == w or d.endswith("." + w) for w in want_b) for d in want_a)
    if kind_a == "nets" and kind_b == "nets":
        return all(any(n.version == m.version and n.subnet_of(m) for m in want_b) for n in want_a)
    if kind_a == kind_b and kind_a in ("eq", "nonempty"):
        return want_a is not None and bool(want_a == want_b)
    return False


def _range_implies(a: tuple[tuple[str, float], ...], b: tuple[tuple[str, float], ...]) -> bool:
    """Whether every number passing all of ``a``'s comparisons passes all of ``b``'s."""
    lo: tuple[float, bool] | None = None  # the lower bound, and whether it is itself excluded (gt)
    hi: tuple[float, bool] | None = None  # the upper bound, and whether it is itself excluded (lt)
    for op, n in a:
        if op in ("gt", "ge", "eq"):
            bound = (n, op == "gt")
            lo = bound if lo is None or bound > lo else lo  # the higher, and at one number the excluding
        if op in ("lt", "le", "eq"):
            bound = (n, op == "lt")
            hi = bound if hi is None or (bound[0], not bound[1]) < (hi[0], not hi[1]) else hi
    for op, n in b:
        if op == "gt" and not (lo is not None and (lo[0] > n or (lo[0] == n and lo[1]))):
            return False
        if op == "ge" and not (lo is not None and lo[0] >= n):
            return False
        if op == "lt" and not (hi is not None and (hi[0] < n or (hi[0] == n and hi[1]))):
            return False
        if op == "le" and not (hi is not None and hi[0] <= n):
            return False
        if op == "eq" and not (lo == hi == (n, False)):
            return False
    return True
