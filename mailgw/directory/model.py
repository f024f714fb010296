"""The official directory: which addresses are local, official, public-service, and who may send as whom.

Where it sits: every stage that reasons about addresses asks it. The listeners
ask ``is_local`` (mx accepts only local recipients) and ``may_send_as``
(submission binds the sender to the login); the policy rules ask
``is_official``, ``is_public_service`` and ``agency_of``; the audit log records
``version`` with every decision.

Addresses are compared in one canonical form, built once at load for the
directory's own entries and on every lookup for the address asked about:

- the domain is lowercased and IDNA-encoded to its ASCII form (A-labels,
  ``xn--...``), the form DNS, DKIM ``d=`` and most envelopes use, so
  ``Bình.vn`` and ``xn--bnh-nma.vn`` are one domain; UTS 46 mapping applies,
  so full-width letters and ideographic dots fold to their ASCII twins;
- the local part is lowercased (and NFC-normalised when not ASCII). RFC 5321
  lets a server treat ``Hanh`` and ``hanh`` as two mailboxes, but the agencies'
  servers do not, and a directory where they differed would be a trap;
- a trailing dot or an empty label makes a domain unusable: ``a@binhthuan.gov.vn.``
  is not the local domain, it matches nothing.

The file is read strictly (every problem reported as ``FILE:LINE: message`` in
one pass); ``directory.yaml`` at the repository root documents the format.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import re
import types
import unicodedata
from typing import Any, Iterable, Iterator

import idna
from email_validator import EmailNotValidError, validate_email

from mailgw.config import yamlfile
from mailgw.config.yamlfile import Checker, ConfigError, Problem, YList, YMap

#: Roles a mailbox may have, with the labels the published directory shows.
ROLES: types.MappingProxyType[str, tuple[str, str]] = types.MappingProxyType(
    {
        "clerk": ("Văn thư", "Clerk (records office)"),
        "leader": ("Lãnh đạo", "Leader"),
        "staff": ("Cán bộ, công chức", "Staff"),
        "unit": ("Hộp thư chung của đơn vị", "Shared mailbox of a unit"),
        "public_service": ("Hộp thư dịch vụ công", "Public-service mailbox"),
    }
)

#: The suffix that makes an address official when the file names none.
DEFAULT_OFFICIAL_SUFFIXES = ("gov.vn",)

# Electronic organ codes of Decision 20/2020/QĐ-TTg, e.g. 000.00.00.G22.
_ORGAN_CODE = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}\Z")
# Codes of agencies and units: short, used in CLI filters and audit records.
_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
# The issuer group of a document symbol (Decree 30): STTTT, UBND, SKHĐT.
_SYMBOL = re.compile(r"[A-Za-zĐđ][A-Za-zĐđ0-9]{0,11}")
# A DKIM selector is one or more DNS labels (RFC 6376 3.1).
_SELECTOR = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\Z")
# An ASCII domain after lowercasing, with no empty label (so no trailing dot).
_ASCII_DOMAIN = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\Z")
# An unquoted ASCII local part (RFC 5322 dot-atom); lets the loader skip the
# full validator for the ordinary case, see _Reader._address.
_DOT_ATOM = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z", re.IGNORECASE)
_MAILBOX_FIELDS = "address | name | unit | roles"
_TOP_KEYS = ("name", "name_en", "updated", "official_suffixes", "authoritative", "agencies", "partners", "exceptions",
             "delegations", "trusted_forwarders")


# --- the values the rest of the gateway sees ---------------------------------


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Unit:
    """A unit of an agency (Văn phòng, a Phòng, a Trung tâm)."""

    code: str
    name: str
    name_en: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Agency:
    """An agency this gateway serves; its domains are local domains."""

    code: str
    name: str
    name_en: str | None
    organ_code: str | None
    domains: tuple[str, ...]
    units: tuple[Unit, ...]
    # The issuer group of its document symbols (Decree 30): "STTTT" in "456/STTTT-VP".
    symbol: str | None = None

    def unit(self, code: str) -> Unit | None:
        return next((u for u in self.units if u.code == code), None)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Mailbox:
    """One official address of a local agency."""

    address: str
    name: str
    agency: Agency
    unit: Unit | None
    roles: frozenset[str]

    @property
    def is_public_service(self) -> bool:
        return "public_service" in self.roles


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DkimPin:
    """A (domain, selector) a partner is expected to sign with."""

    domain: str
    selector: str


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Partner:
    """Another state body whose domains count as official."""

    name: str
    name_en: str | None
    organ_code: str | None
    domains: tuple[str, ...]
    dkim: tuple[DkimPin, ...]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class TrustedForwarder:
    """A forwarder (a mailing list, a partner's relay) whose ARC seal, by signing domain ``domain``, is trusted.

    Its ARC-Authentication-Results are taken at their word when DKIM broke on
    the way: what it says it authenticated may override a DMARC failure
    (mailgw.senderauth.arc). Never for our own domains or partners' DKIM pins.
    """

    domain: str
    name: str
    note: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class TemporaryException:
    """An address outside the official domains that counts as official until ``until`` (inclusive)."""

    address: str
    until: datetime.date
    name: str
    reason: str
    agency: Agency | None

    def valid_on(self, day: datetime.date) -> bool:
        return day <= self.until


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Delegation:
    """``login`` may send as ``address`` (a clerk for a leader or a unit), until ``until`` inclusive."""

    login: str
    address: str
    until: datetime.date | None
    note: str | None

    def valid_on(self, day: datetime.date) -> bool:
        return self.until is None or day <= self.until


@dataclasses.dataclass(frozen=True, slots=True)
class PartyInfo:
    """What the directory says of one address: the one answer the policy's facts and the record share."""

    address: str  # canonical: lowercased domain in IDNA ASCII form (the address as given if it has none)
    domain: str
    local: bool
    official: bool
    public_service: bool
    partner: bool
    exception: bool
    agency: str | None  # the agency's code
    unit: str | None  # the unit's code
    roles: tuple[str, ...]


# --- address normalisation ---------------------------------------------------


# Both are pure functions of the string, asked about the same few addresses many
# times per message (each directory lookup canonicalises its argument): remembered.
@functools.lru_cache(maxsize=4096)
def canonical_domain(domain: str) -> str | None:
    """``domain`` lowercased and in IDNA ASCII form, or None if it cannot be a domain."""
    if domain.isascii():
        domain = domain.lower()
    else:
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None
    return domain if _ASCII_DOMAIN.match(domain) else None


@functools.lru_cache(maxsize=4096)
def canonical_address(address: str) -> str | None:
    """``address`` in the directory's canonical form (see the module docstring), or None."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return None
    ascii_domain = canonical_domain(domain)
    if ascii_domain is None:
        return None
    if not local.isascii():
        local = unicodedata.normalize("NFC", local)
    return f"{local.lower()}@{ascii_domain}"


def _kind(value: Any) -> str:
    """How an error message names the type of a value an admin wrote."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _about_domain(message: str) -> str:
    """Reword the validator's message about an address's domain as one about a domain."""
    for old, new in (
        ("The part after the @-sign", "The domain"),
        ("After the @-sign, periods", "Periods"),
        ("too long after the @-sign", "too long"),
        ("An email address cannot end with a period", "A domain cannot end with a period"),
        ("An email address cannot have two periods", "A domain cannot have two periods"),
    ):
        message = message.replace(old, new)
    return message


def _domain_of(address: str) -> str | None:
    local, at, domain = address.strip().rpartition("@")
    return canonical_domain(domain) if at and local else None


def _ancestors(domain: str) -> Iterator[str]:
    """``domain`` itself, then each parent up to the top-level label."""
    yield domain
    dot = domain.find(".")
    while dot != -1:
        domain = domain[dot + 1 :]
        yield domain
        dot = domain.find(".")


# --- the directory -----------------------------------------------------------


class Directory:
    """The loaded directory; every lookup is a few dictionary probes.

    ``local_domains`` and every address it hands out are in canonical form:
    lowercase, with domains in IDNA ASCII form (``xn--...``).
    """

    def __init__(
        self,
        *,
        path: str,
        version: str,
        name: str,
        name_en: str | None,
        updated: datetime.date | None,
        official_suffixes: tuple[str, ...],
        agencies: tuple[Agency, ...],
        mailboxes: tuple[Mailbox, ...],
        partners: tuple[Partner, ...],
        exceptions: tuple[TemporaryException, ...],
        delegations: tuple[Delegation, ...],
        warnings: tuple[Problem, ...] = (),
        authoritative: frozenset[str] = frozenset(),
        trusted_forwarders: tuple[TrustedForwarder, ...] = (),
    ):
        self.path = path
        self.version = version
        self.name = name
        self.name_en = name_en
        self.updated = updated
        self.official_suffixes = official_suffixes
        self.agencies = agencies
        self.mailboxes = mailboxes
        self.partners = partners
        self.exceptions = exceptions
        self.delegations = delegations
        self.warnings = warnings
        # Local domains whose every mailbox is listed here: an unknown address there does not
        # exist (550 5.1.1 at RCPT), and only declared domains under them are local.
        self.authoritative = authoritative
        self.trusted_forwarders = trusted_forwarders
        self._forwarder_by_domain = {f.domain: f for f in trusted_forwarders}

        agencies_by_domain: dict[str, list[Agency]] = {}
        for agency in agencies:
            for domain in agency.domains:
                agencies_by_domain.setdefault(domain, []).append(agency)
        self.local_domains: frozenset[str] = frozenset(agencies_by_domain)
        self._agencies_by_domain = {d: tuple(a) for d, a in agencies_by_domain.items()}
        self._agency_by_code = {a.code: a for a in agencies}
        self._mailboxes = {m.address: m for m in mailboxes}
        self._partner_by_domain = {d: p for p in partners for d in p.domains}
        self._suffixes = frozenset(official_suffixes)
        self._exceptions = {e.address: e for e in exceptions}
        self._delegations = {(d.login, d.address): d for d in delegations}
        # Worked out once per canonical domain (the directory never changes: a reload makes a new one).
        self._facts = functools.lru_cache(maxsize=4096)(self._domain_facts)

    def __repr__(self) -> str:
        return f"<Directory {self.path} version {self.version}: {len(self.agencies)} agencies, {len(self.mailboxes)} mailboxes>"

    def agency(self, code: str) -> Agency | None:
        return self._agency_by_code.get(code)

    def trusted_forwarder(self, domain: str) -> TrustedForwarder | None:
        """The trusted forwarder whose ARC seals are signed with ``d=domain`` (exactly that domain), or None."""
        ascii_domain = canonical_domain(domain)
        return self._forwarder_by_domain.get(ascii_domain) if ascii_domain else None

    def is_local_domain(self, domain: str) -> bool:
        """Whether ``domain`` is a local domain or a subdomain of one."""
        ascii_domain = canonical_domain(domain)
        return ascii_domain is not None and self._local_root(ascii_domain) is not None

    def is_local(self, address: str) -> bool:
        """Whether the address's domain is a local domain or a subdomain of one."""
        domain = _domain_of(address)
        return domain is not None and self._local_root(domain) is not None

    def direction(self, role: str, author: str | None, rcpts: Iterable[str], mail_from: str | None = None) -> str:
        """``inbound`` (from the Internet: the mx listener), ``internal`` (the author and every
        recipient local) or ``outbound``: the one rule that the decision record and the policy
        facts share.

        The author is the From address that the author stage validated; a message without
        one (a DSN or notice the gateway makes itself) is judged by its envelope sender.
        """
        if role == "mx":
            return "inbound"
        party = author or mail_from
        if all(self.is_local(r) for r in rcpts) and (not party or self.is_local(party)):
            return "internal"
        return "outbound"

    def is_official(self, address: str, today: datetime.date | None = None) -> bool:
        """Official: local, a partner's domain, under an official suffix, or an unexpired exception."""
        canonical = canonical_address(address)
        if canonical is None:
            return False
        if self._facts(canonical[canonical.rindex("@") + 1 :])[2]:
            return True
        return self._valid_exception(canonical, today) is not None

    def is_public_service(self, address: str) -> bool:
        """Whether the directory marks the address as serving citizens and businesses."""
        box = self.mailbox(address)
        return box is not None and box.is_public_service

    def mailbox(self, address: str) -> Mailbox | None:
        canonical = canonical_address(address)
        return self._mailboxes.get(canonical) if canonical else None

    def agency_of(self, address: str) -> Agency | None:
        """The address's agency: from its mailbox, else its temporary exception's, else from a local domain only one agency has."""
        canonical = canonical_address(address)
        if canonical is None:
            return None
        box = self._mailboxes.get(canonical)
        if box is not None:
            return box.agency
        exception = self._valid_exception(canonical, None)
        if exception is not None and exception.agency is not None:
            return exception.agency  # a webmail address an agency uses until it has an official one
        # The province's domain is shared by many agencies: it says nothing about which.
        root = self._local_root(canonical[canonical.rindex("@") + 1 :])
        owners = self._agencies_by_domain.get(root, ()) if root else ()
        return owners[0] if len(owners) == 1 else None

    def party(self, address: str) -> PartyInfo:
        """Everything the directory says of ``address``, in one answer."""
        canonical = canonical_address(address) or address.lower()
        box = self.mailbox(canonical)
        agency = self.agency_of(canonical)
        return PartyInfo(
            address=canonical,
            domain=canonical.rpartition("@")[2],
            local=self.is_local(canonical),
            official=self.is_official(canonical),
            public_service=box is not None and box.is_public_service,
            partner=self.partner_of(canonical) is not None,
            exception=self.exception_for(canonical) is not None,
            agency=agency.code if agency else None,
            unit=box.unit.code if box is not None and box.unit else None,
            roles=tuple(sorted(box.roles)) if box is not None else (),
        )

    def partner_of(self, address: str) -> Partner | None:
        domain = _domain_of(address)
        return self._partner_for(domain) if domain else None

    def exception_for(self, address: str, today: datetime.date | None = None) -> TemporaryException | None:
        """The temporary exception that makes ``address`` official today, if any."""
        canonical = canonical_address(address)
        return self._valid_exception(canonical, today) if canonical else None

    def unknown_local(self, address: str) -> bool:
        """An address of an authoritative local domain that no mailbox of this directory has."""
        canonical = canonical_address(address)
        if canonical is None:
            return False
        domain = canonical[canonical.rindex("@") + 1 :]
        return domain in self.authoritative and canonical not in self._mailboxes

    def may_send_as(self, login: str, address: str, today: datetime.date | None = None) -> bool:
        """Whether the user authenticated as ``login`` may use ``address`` as sender."""
        login_c, address_c = canonical_address(login), canonical_address(address)
        if login_c is None or address_c is None:
            return False
        if login_c == address_c:
            return True
        delegation = self._delegations.get((login_c, address_c))
        return delegation is not None and delegation.valid_on(today or datetime.date.today())

    def _local_root(self, domain: str) -> str | None:
        """The most specific local domain that ``domain`` is or lies under."""
        return self._facts(domain)[0]

    def _partner_for(self, domain: str) -> Partner | None:
        return self._facts(domain)[1]

    def _domain_facts(self, domain: str) -> tuple[str | None, Partner | None, bool]:
        """(local root, partner, official by its domain alone) of a canonical domain; through ``self._facts``."""
        root = next((d for d in _ancestors(domain) if d in self._agencies_by_domain), None)
        if root in self.authoritative and root != domain:
            root = None  # an undeclared subdomain of a domain we know all of is not ours
        # A partner's subdomains are its own: only its DNS admins can create them.
        partner = next((self._partner_by_domain[d] for d in _ancestors(domain) if d in self._partner_by_domain), None)
        # Only a proper parent counts: the suffix itself ("gov.vn") is no agency's domain.
        official = (root is not None or partner is not None
                    or any(parent in self._suffixes for parent in _ancestors(domain) if parent != domain))
        return root, partner, official

    def _valid_exception(self, canonical: str, today: datetime.date | None) -> TemporaryException | None:
        exception = self._exceptions.get(canonical)
        if exception is None or not exception.valid_on(today or datetime.date.today()):
            return None
        return exception


# --- loading -----------------------------------------------------------------


def load(path: str | os.PathLike[str], *, today: datetime.date | None = None) -> Directory:
    """Read and validate the directory; raise ConfigError listing every error.

    An exception whose date has passed is kept but no longer counts (a warning
    in ``Directory.warnings``): a gateway must not refuse to start, or to
    reload, because of a date.
    """
    directory, problems = _read(path, today or datetime.date.today(), serving=True)
    if directory is None:
        raise ConfigError(problems)
    return directory


def check(path: str | os.PathLike[str], *, today: datetime.date | None = None) -> list[Problem]:
    """Every problem in the directory, errors and warnings; [] when it is clean.

    Stricter than ``load``: an expired temporary exception is an error here, so
    the admin removes or renews it.
    """
    _, problems = _read(path, today or datetime.date.today(), serving=False)
    return problems


def _read(path: str | os.PathLike[str], today: datetime.date, serving: bool) -> tuple[Directory | None, list[Problem]]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        return None, [Problem(name, 0, f"cannot read: {e.strerror}")]
    try:
        tree = yamlfile.loads(raw, name)
    except ConfigError as e:
        return None, list(e.problems)
    reader = _Reader(name, today, serving)
    parts = reader.read(tree)
    problems = sorted(reader.problems)
    if parts is None or any(not p.warning for p in problems):
        return None, problems
    version = hashlib.sha256(raw).hexdigest()[:12]
    return Directory(path=name, version=version, warnings=tuple(problems), **parts), problems


class _Reader(Checker):
    """Reads the YAML tree against the schema, recording every problem."""

    def __init__(self, file: str, today: datetime.date, serving: bool):
        super().__init__(file)
        self.today = today
        self.serving = serving
        # Validated domains of this file, so 30,000 addresses on one domain
        # cost one full validation of that domain, not 30,000.
        self._domain_cache: dict[str, str | None] = {}
        self._organ_codes: dict[str, int] = {}

    def read(self, tree: Any) -> dict[str, Any] | None:
        if not isinstance(tree, YMap):
            self.problems.append(Problem(self.file, 1, f"the directory must be a mapping, not {_kind(tree)}"))
            return None
        root = tree
        self.keys(root, _TOP_KEYS, required=("agencies",))
        suffixes = self._suffixes(root)
        agencies, mailboxes = self._agencies(root)
        agency_by_code = {a.code: a for a in agencies}
        local_domains = {d for a in agencies for d in a.domains}
        partners = self._partners(root, local_domains)
        official = (local_domains, {d for p in partners for d in p.domains}, set(suffixes))
        exceptions = self._exceptions(root, agency_by_code, official)
        delegations = self._delegations(root, mailboxes)
        authoritative = self._authoritative(root, local_domains)
        forwarders = self._forwarders(root)
        return {
            "authoritative": authoritative,
            "trusted_forwarders": tuple(forwarders),
            "name": self.typed(root, "name", str, "Danh bạ thư điện tử công vụ"),
            "name_en": self.typed(root, "name_en", str),
            "updated": self._date(root, "updated"),
            "official_suffixes": suffixes,
            "agencies": tuple(agencies),
            "mailboxes": tuple(mailboxes.values()),
            "partners": tuple(partners),
            "exceptions": tuple(exceptions),
            "delegations": tuple(delegations),
        }

    # --- top-level sections ---

    def _authoritative(self, root: YMap, local_domains: set[str]) -> frozenset[str]:
        items = self._list(root, "authoritative")
        out: set[str] = set()
        for i, item in enumerate(items or ()):
            if not isinstance(item, str):
                self.error(items, i, f"an authoritative domain must be a string, not {_kind(item)}")
                continue
            domain = self._domain(item.strip(), items, i, "authoritative domain")  # type: ignore[arg-type]
            if domain is not None and domain not in local_domains:
                self.error(items, i, f"authoritative domain {item!r} is not the domain of an agency listed here")
            elif domain is not None:
                out.add(domain)
        return frozenset(out)

    def _forwarders(self, root: YMap) -> list[TrustedForwarder]:
        items = self._list(root, "trusted_forwarders")
        out: list[TrustedForwarder] = []
        lines: dict[str, int] = {}
        for i, item in enumerate(items or ()):
            m = self.mapping(item, items, i, "a trusted forwarder")
            if m is None:
                continue
            self.keys(m, ("domain", "name", "note"), required=("domain", "name"), what="a trusted forwarder")
            text, name, note = self.typed(m, "domain", str), self._text(m, "name"), self.typed(m, "note", str)
            domain = self._domain(text.strip(), m, "domain", "forwarder domain (the d= of its ARC seals)") if text else None
            if domain is None or name is None:
                continue
            if domain in lines:
                self.error(m, "domain", f"forwarder domain {domain} is already listed at line {lines[domain]}")
                continue
            lines[domain] = m.line_of("domain")
            out.append(TrustedForwarder(domain, name, note))
        return out

    def _suffixes(self, root: YMap) -> tuple[str, ...]:
        items = self._list(root, "official_suffixes")
        if items is None:
            return DEFAULT_OFFICIAL_SUFFIXES
        out: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.error(items, i, f"an official suffix must be a string, not {_kind(item)}")
                continue
            # Written with or without the leading dot; matched on a label boundary either way.
            text = item[1:] if item.startswith(".") else item
            if "." not in text.strip("."):
                self.error(
                    items, i, f"official suffix {item!r} is a whole top-level domain: every address under it would count as official"
                )
                continue
            domain = self._domain(text, items, i, "official suffix", repr(item))
            if domain is None:
                continue
            if domain in out:
                self.error(items, i, f"official suffix {item!r} is listed twice")
                continue
            out.append(domain)
        return tuple(out)

    def _agencies(self, root: YMap) -> tuple[list[Agency], dict[str, Mailbox]]:
        agencies: list[Agency] = []
        mailboxes: dict[str, Mailbox] = {}
        mailbox_lines: dict[str, int] = {}
        items = self._list(root, "agencies")
        if items is None:
            return agencies, mailboxes
        if not items:
            self.error(root, "agencies", "'agencies' must list at least one agency: their domains are the local domains")
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "an agency")
            if m is None:
                continue
            self.keys(
                m,
                ("code", "name", "name_en", "organ_code", "symbol", "domains", "units", "mailboxes"),
                required=("code", "name", "domains"),
                what="an agency",
            )
            code = self._code(m, "code", "agency code")
            if code is not None:
                if code in seen:
                    self.error(m, "code", f"duplicate agency code {code!r} (first at line {seen[code]})")
                    code = None
                else:
                    seen[code] = m.line_of("code")
            domains = [d for d, _ in self._domains(m, "domains", required=True)]
            units = self._units(m)
            agency = Agency(
                code=code or "?",
                name=self._text(m, "name") or "",
                name_en=self.typed(m, "name_en", str),
                organ_code=self._organ_code(m),
                domains=tuple(domains),
                units=tuple(units.values()),
                symbol=self._symbol(m),
            )
            if code is not None:
                agencies.append(agency)
            clerks = self._mailboxes(m, agency, units, mailboxes, mailbox_lines)
            if code is not None and not clerks:
                self.warn(m, None, f"agency {code!r} has no mailbox with role 'clerk' (văn thư): official documents have nowhere to arrive")
        return agencies, mailboxes

    def _units(self, agency: YMap) -> dict[str, Unit]:
        units: dict[str, Unit] = {}
        items = self._list(agency, "units")
        if items is None:
            return units
        lines: dict[str, int] = {}
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "a unit")
            if m is None:
                continue
            self.keys(m, ("code", "name", "name_en"), required=("code", "name"), what="a unit")
            code = self._code(m, "code", "unit code")
            name = self._text(m, "name")
            if code is None or name is None:
                continue
            if code in units:
                self.error(m, "code", f"duplicate unit code {code!r} (first at line {lines[code]})")
                continue
            units[code] = Unit(code, name, self.typed(m, "name_en", str))
            lines[code] = m.line_of("code")
        return units

    def _mailboxes(self, agency_map: YMap, agency: Agency, units: dict[str, Unit], out: dict[str, Mailbox], lines: dict[str, int]) -> int:
        """Read an agency's mailboxes into ``out``; return how many are clerks'."""
        items = self._list(agency_map, "mailboxes")
        if items is None:
            return 0
        clerks = 0
        # Most mailboxes share a handful of role lists: parse each spelling once.
        roles_seen: dict[str, frozenset[str]] = {}
        for i, item in enumerate(items):
            if isinstance(item, str):
                fields = [f.strip() for f in item.split("|")]
                if len(fields) != 4:
                    self.error(items, i, f"a mailbox line has {len(fields)} field(s); expected '{_MAILBOX_FIELDS}' (use - for no unit)")
                    continue
                address_text, name, unit_code, roles_text = fields
                where: YMap | YList = items
                keys: tuple[Any, Any, Any, Any] = (i, i, i, i)
                roles = roles_seen.get(roles_text)
                if roles is None:
                    roles = self._roles([r.strip() for r in roles_text.split(",") if r.strip()], items, i)
                    if roles is not None:
                        roles_seen[roles_text] = roles
            elif isinstance(item, YMap):
                self.keys(item, ("address", "name", "unit", "roles"), required=("address", "name", "roles"), what="a mailbox")
                address_text = self.typed(item, "address", str)
                name = self.typed(item, "name", str)
                unit_code = self.typed(item, "unit", str, "-")
                role_list = self._list(item, "roles")
                where, keys = item, ("address", "name", "unit", "roles")
                roles = self._roles(role_list, item, "roles") if role_list is not None else None
                if address_text is None or name is None:
                    continue
            else:
                self.error(items, i, f"a mailbox must be a line '{_MAILBOX_FIELDS}' or a mapping, not {_kind(item)}")
                continue
            address = self._address(address_text, where, keys[0])
            if not name:
                self.error(where, keys[1], "a mailbox needs a name")
            unit: Unit | None = None
            if unit_code not in ("-", ""):
                unit = units.get(unit_code)
                if unit is None:
                    known = ", ".join(units) or "none"
                    self.error(where, keys[2], f"unknown unit {unit_code!r} in agency {agency.code!r} (units: {known})")
            clerks += roles is not None and "clerk" in roles
            if address is None or roles is None or not name:
                continue
            line = where.line_of(keys[0])
            if address in out:
                self.error(where, keys[0], f"duplicate mailbox {address} (first at line {lines[address]})")
                continue
            # With no valid domain the agency's own entry is already in error: say it once.
            if agency.domains and not any(d in agency.domains for d in _ancestors(address[address.rindex("@") + 1 :])):
                domains = ", ".join(agency.domains)
                self.error(where, keys[0], f"mailbox {address} is not under a domain of agency {agency.code!r} ({domains})")
                continue
            out[address] = Mailbox(address, name, agency, unit, roles)
            lines[address] = line
        return clerks

    def _partners(self, root: YMap, local_domains: set[str]) -> list[Partner]:
        partners: list[Partner] = []
        items = self._list(root, "partners")
        if items is None:
            return partners
        domain_lines: dict[str, int] = {}
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "a partner")
            if m is None:
                continue
            self.keys(m, ("name", "name_en", "organ_code", "domains", "dkim"), required=("name", "domains"), what="a partner")
            domains: list[str] = []
            listed = self._domains(m, "domains", required=True)
            domain_list = m["domains"]  # a list whenever a domain was read from it
            for domain, index in listed:
                line = domain_list.line_of(index)
                local_root = next((d for d in _ancestors(domain) if d in local_domains), None)
                if local_root is not None:
                    self.error(domain_list, index, f"partner domain {domain} is under the local domain {local_root}: it is already local")
                elif domain in domain_lines:
                    self.error(domain_list, index, f"domain {domain} is already listed by a partner at line {domain_lines[domain]}")
                else:
                    domain_lines[domain] = line
                domains.append(domain)
            pins = self._pins(m, domains)
            name, name_en, organ_code = self._text(m, "name"), self.typed(m, "name_en", str), self._organ_code(m)
            if name is None:
                continue
            partners.append(Partner(name, name_en, organ_code, tuple(domains), tuple(pins)))
        return partners

    def _pins(self, partner: YMap, domains: list[str]) -> list[DkimPin]:
        pins: list[DkimPin] = []
        items = self._list(partner, "dkim")
        if items is None:
            return pins
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "a DKIM pin")
            if m is None:
                continue
            self.keys(m, ("domain", "selector"), required=("domain", "selector"), what="a DKIM pin")
            domain_text = self.typed(m, "domain", str)
            selector = self.typed(m, "selector", str)
            domain = self._domain(domain_text, m, "domain", "DKIM domain") if domain_text is not None else None
            if selector is not None and not _SELECTOR.match(selector):
                self.error(m, "selector", f"invalid DKIM selector {selector!r}: letters, digits, '-' and '_' in dot-separated labels")
                selector = None
            if domain is None or selector is None:
                continue
            # Relaxed alignment lets a signature's d= be a parent of the From domain, not a stranger.
            if not any(d == domain or d.endswith("." + domain) or domain.endswith("." + d) for d in domains):
                self.error(m, "domain", f"DKIM domain {domain} is not one of the partner's domains, a parent or a subdomain of one")
                continue
            pins.append(DkimPin(domain, selector))
        return pins

    def _exceptions(
        self, root: YMap, agencies: dict[str, Agency], official: tuple[set[str], set[str], set[str]]
    ) -> list[TemporaryException]:
        exceptions: list[TemporaryException] = []
        items = self._list(root, "exceptions")
        if items is None:
            return exceptions
        lines: dict[str, int] = {}
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "a temporary exception")
            if m is None:
                continue
            self.keys(
                m,
                ("address", "until", "name", "reason", "agency"),
                required=("address", "until", "name", "reason"),
                what="a temporary exception",
            )
            text = self.typed(m, "address", str)
            address = self._address(text, m, "address") if text is not None else None
            until = self._date(m, "until")
            name, reason = self._text(m, "name"), self._text(m, "reason")
            agency: Agency | None = None
            agency_code = self.typed(m, "agency", str)
            if agency_code is not None:
                agency = agencies.get(agency_code)
                if agency is None:
                    self.error(m, "agency", f"unknown agency {agency_code!r} (agencies: {', '.join(agencies) or 'none'})")
            if address is None or until is None or name is None or reason is None:
                continue
            if address in lines:
                self.error(m, "address", f"duplicate temporary exception for {address} (first at line {lines[address]})")
                continue
            lines[address] = m.line_of("address")
            domain = address[address.rindex("@") + 1 :]
            local, partner, suffixes = official
            ancestors = list(_ancestors(domain))
            if any(d in local or d in partner for d in ancestors) or any(d in suffixes for d in ancestors[1:]):
                self.warn(m, "address", f"{address} is already official; the temporary exception is not needed")
            if until < self.today:
                message = f"temporary exception for {address} expired on {until.isoformat()}"
                if self.serving:
                    self.warn(m, "until", message + "; it no longer counts")
                else:
                    self.error(m, "until", message + ": remove it or set a new date")
            exceptions.append(TemporaryException(address, until, name, reason, agency))
        return exceptions

    def _delegations(self, root: YMap, mailboxes: dict[str, Mailbox]) -> list[Delegation]:
        delegations: list[Delegation] = []
        items = self._list(root, "delegations")
        if items is None:
            return delegations
        lines: dict[tuple[str, str], int] = {}
        for i, item in enumerate(items):
            m = self.mapping(item, items, i, "a delegation")
            if m is None:
                continue
            self.keys(m, ("login", "send_as", "until", "note"), required=("login", "send_as"), what="a delegation")
            text = self.typed(m, "login", str)
            login = self._address(text, m, "login") if text is not None else None
            if login is not None and login not in mailboxes:
                self.error(m, "login", f"delegation from unknown mailbox {login}")
                login = None
            until = self._date(m, "until")
            if until is not None and until < self.today:
                self.warn(m, "until", f"delegation of {text} ended on {until.isoformat()}; it no longer counts")
            note = self.typed(m, "note", str)
            targets = self._list(m, "send_as")
            if targets is None:
                continue
            for j, target_text in enumerate(targets):
                if not isinstance(target_text, str):
                    self.error(targets, j, f"send_as must list addresses, not {_kind(target_text)}")
                    continue
                target = self._address(target_text, targets, j)
                if target is None:
                    continue
                if target not in mailboxes:
                    self.error(targets, j, f"delegation to unknown mailbox {target}")
                elif target == login:
                    self.error(targets, j, f"{target} is the login itself")
                elif login is not None:
                    if (login, target) in lines:
                        self.error(targets, j, f"{login} may already send as {target} (line {lines[login, target]})")
                        continue
                    lines[login, target] = targets.line_of(j)
                    delegations.append(Delegation(login, target, until, note))
        return delegations

    # --- values ---

    def _list(self, m: YMap, key: str) -> YList | None:
        value: YList | None = self.typed(m, key, YList)
        return value

    def _text(self, m: YMap, key: str) -> str | None:
        value: str | None = self.typed(m, key, str)
        if value is not None and not value.strip():
            self.error(m, key, f"{key!r} must not be empty")
            return None
        return value.strip() if value is not None else None

    def _symbol(self, m: YMap) -> str | None:
        value: str | None = self.typed(m, "symbol", str)
        if value is not None and not _SYMBOL.fullmatch(value):
            self.error(m, "symbol", f"invalid document symbol {value!r}: a letter, then letters and digits, "
                                    "at most 12 (the issuer group of '456/STTTT-VP' is STTTT)")
            return None
        return value

    def _code(self, m: YMap, key: str, what: str) -> str | None:
        value: str | None = self.typed(m, key, str)
        if value is not None and not _CODE.match(value):
            self.error(m, key, f"invalid {what} {value!r}: lowercase letters, digits, '-' and '_', at most 32")
            return None
        return value

    def _date(self, m: YMap, key: str) -> datetime.date | None:
        if key not in m:
            return None
        value = m[key]
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        self.error(m, key, f"{key!r} must be a date written YYYY-MM-DD, not {value!r}")
        return None

    def _organ_code(self, m: YMap) -> str | None:
        code: str | None = self.typed(m, "organ_code", str)
        if code is None:
            return None
        if not _ORGAN_CODE.match(code):
            self.error(m, "organ_code", f"invalid organ code {code!r}: Decision 20/2020 codes look like 000.00.00.G22")
            return None
        line = m.line_of("organ_code")
        if code in self._organ_codes:
            self.error(m, "organ_code", f"duplicate organ code {code} (first at line {self._organ_codes[code]})")
            return None
        self._organ_codes[code] = line
        return code

    def _roles(self, names: list[Any], where: YMap | YList, key: Any) -> frozenset[str] | None:
        if not names:
            self.error(where, key, f"a mailbox needs at least one role ({', '.join(ROLES)})")
            return None
        bad = [n for n in names if n not in ROLES]
        if bad:
            self.error(where, key, f"unknown role {bad[0]!r} (roles: {', '.join(ROLES)})")
            return None
        return frozenset(names)

    def _domains(self, m: YMap, key: str, required: bool) -> list[tuple[str, int]]:
        """The valid domains listed under ``key``, each with its index in the list."""
        items = self._list(m, key)
        out: list[tuple[str, int]] = []
        if items is None:
            return out
        if required and not items:
            self.error(m, key, f"{key!r} must list at least one domain")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.error(items, i, f"a domain must be a string, not {_kind(item)}")
                continue
            domain = self._domain(item, items, i, "domain")
            if domain is None:
                continue
            if any(domain == d for d, _ in out):
                self.error(items, i, f"domain {domain} is listed twice")
                continue
            out.append((domain, i))
        return out

    def _domain(self, text: str, where: YMap | YList, key: Any, what: str, written: str | None = None) -> str | None:
        try:
            # The validator checks domains only as part of an address.
            ascii_domain: str = validate_email(f"postmaster@{text}", check_deliverability=False).ascii_domain
            return ascii_domain
        except EmailNotValidError as e:
            self.error(where, key, f"invalid {what} {written or repr(text)}: {_about_domain(str(e))}")
            return None

    def _address(self, text: str, where: YMap | YList, key: Any) -> str | None:
        """The canonical form of a valid address, else None after recording the error."""
        local, at, domain = text.rpartition("@")
        # The common case (an ASCII dot-atom on an ASCII domain already
        # validated) is exactly what the validator would accept, at a
        # fraction of its cost; anything else takes the full validation.
        if at and len(local) <= 64 and len(text) <= 254 and domain.isascii() and _DOT_ATOM.match(local):
            if domain not in self._domain_cache:
                try:
                    ascii_domain = validate_email(f"postmaster@{domain}", check_deliverability=False).ascii_domain
                except EmailNotValidError:
                    ascii_domain = None
                self._domain_cache[domain] = ascii_domain
            known = self._domain_cache[domain]
            if known is not None:
                return f"{local.lower()}@{known}"
        try:
            valid = validate_email(text, check_deliverability=False)
        except EmailNotValidError as e:
            self.error(where, key, f"invalid address {text!r}: {e}")
            return None
        return f"{valid.local_part.lower()}@{valid.ascii_domain}"
