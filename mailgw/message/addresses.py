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

