"""Envelope address checks shared by the SMTP edge and the CLI.

A recipient address is accepted only in its plain form: no ``%`` or ``!``
routing (RFC 1123 "percent hack", UUCP bang paths), no quoted local part, no
IP literal, no trailing dot. Those forms exist mostly to trick a relay into
forwarding somewhere other than the domain it checked.

Both checks are pure functions of the address (no DNS), and the same few
hundred addresses come back all day: the answers are remembered (LRU).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import email_validator

# The usual shape of an address, written as it is in a MAIL or RCPT path: a dot-atom
# local part, "@", LDH labels. Shortcuts on the edge (mailgw.smtp.edge) and in delivery
# (mailgw.delivery.transports) take it where the libraries' full parses give the same answer.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"


@functools.lru_cache(maxsize=4096)
def recipient(address: str) -> str | None:
    """The normalised recipient address, or None when it is not a plain mailbox."""
    if not address or any(ch in address for ch in '%!"\\[]') or address.startswith("@"):
        return None
    try:
        valid = email_validator.validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except email_validator.EmailNotValidError:
        return None
    return f"{valid.local_part}@{valid.domain.lower()}"


@functools.lru_cache(maxsize=4096)
def sender(address: str) -> str | None:
    """The normalised MAIL FROM address ("" for the null sender), or None when invalid."""
    if address in ("", "<>"):
        return ""
    try:
        valid = email_validator.validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=False,
        )
    except email_validator.EmailNotValidError:
        return None
    return f"{valid.local_part}@{valid.domain.lower()}"


class HeaderAddress(NamedTuple):
    """An address read from a header field (From, Sender ...): normalised, or why it is not one."""

    address: str | None  # local@domain as the gateway compares it; None when not valid
    utf8: bool = False  # written with non-ASCII characters (RFC 6532: only over SMTPUTF8); an A-label domain is ASCII
    problem: str = ""  # why it is not valid (English, for the log)


# Names RFC 6761, 6762 and 7686 reserve (.test, .invalid, .localhost, .local, .onion, .arpa),
# which email_validator refuses whatever its options: whether mail can reach them is a
# question of deliverability, and an author is judged on the form of the address alone.
_SPECIAL_USE = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)


@functools.lru_cache(maxsize=4096)
def header_address(spec: str) -> HeaderAddress:
    """The addr-spec of a From, Sender, Resent-From or Resent-Sender mailbox, normalised.

    Wider than an envelope address, as mail clients write them: a quoted local
    part (``"joe public"@example.com``; one quoted without need is unquoted, so
    ``"vanthu"@x`` is ``vanthu@x``), a UTF-8 address (RFC 6532; ``utf8`` says so),
    a domain without a dot or under a special-use name. Not an IP literal (no
    domain to align a signature or a policy with), nor a quoted local part that
    holds an address of its own (``"boss@agency.gov.vn"@evil.example``).
    """
    local, at, domain = spec.rpartition("@")
    if not at:
        return HeaderAddress(None, problem="no @ in the address")
    reserved = next((d for d in _SPECIAL_USE if domain.lower() == d or domain.lower().endswith("." + d)), None)
    checked = spec
    if reserved is not None:
        # The same syntax with the reserved last label written as an ordinary one of its length.
        checked = f"{local}@{domain[: len(domain) - len(reserved)]}{'x' * len(reserved)}"
    try:
        valid = email_validator.validate_email(
            checked,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=False,
            globally_deliverable=False,
        )
    except email_validator.EmailNotValidError as e:
        return HeaderAddress(None, problem=str(e))
    if valid.local_part.startswith('"') and "@" in valid.local_part:
        return HeaderAddress(None, problem="an address inside the quoted local part")
    domain_out = valid.domain.lower()
    if reserved is not None:
        domain_out = domain_out[: len(domain_out) - len(reserved)] + reserved
    return HeaderAddress(f"{valid.local_part}@{domain_out}", utf8=not spec.isascii())
