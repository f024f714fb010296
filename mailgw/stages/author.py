"""Stage: author. Exactly one From header with exactly one valid address.

Every later decision (spoofing, official sender, login binding) keys on the
author, so an ambiguous one is refused here rather than guessed (the
"Composition Kills" attacks: two From headers, two addresses, groups).
On the submission listener the login must be allowed to use that address.
"""

from __future__ import annotations

import functools
from typing import Any

import email_validator

from mailgw.message import fastheaders, replies
from mailgw.message.model import Context, Message
from mailgw.message.replies import Reject

# Fields that also name who sent a message, and that some mail clients show: on
# submission the login must own them as it owns From; on mx the policy sees them
# (``Facts.claimed``: the shipped pack treats one of our domains there as it
# treats one in From).
IDENTITY_FIELDS = ("sender", "resent-from", "resent-sender")


def run(message: Message, ctx: Context) -> None:
    author, name = _author(message)
    claimed = _claimed(message)
    message.facts.author = author
    message.facts.author_name = name  # for display-name spoofing
    message.facts.claimed = tuple(claimed)
    login = message.envelope.auth_user
    if login is not None and not all(ctx.directory.may_send_as(login, a) for a in (author, *claimed)):
        raise Reject(replies.FROM_NOT_OWNED)


def _claimed(message: Message) -> list[str]:
    """The addresses of the Sender, Resent-From and Resent-Sender fields; a field we cannot read is refused."""
    found: list[str] = []
    for name, value in message.headers.raw_items():
        if name.lower() not in IDENTITY_FIELDS:
            continue
        simple = fastheaders.addresses(value)
        if simple is not None:
            specs = [a.addr_spec for a in simple]
        else:
            try:
                field = message.headers.get_all(name)
                specs = [a.addr_spec for f in field or () for a in f.addresses]
            except Exception:  # the parser could not make sense of it: a client might
                raise Reject(replies.BAD_HEADER) from None
        for spec in specs:
            valid = _validated(spec)
            if valid is None:
                raise Reject(replies.BAD_HEADER)
            if valid not in found:
                found.append(valid)
    return found


def _author(message: Message) -> tuple[str, str]:
    headers = message.headers
    values = [v for k, v in headers.raw_items() if k.lower() == "from"]
    if len(values) != 1:
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    # The usual shapes (a bare address, Name <address>) read without the full
    # parser; fastheaders takes only values the full parser reads the same
    # way and without a defect, anything else goes through the checks below.
    simple = fastheaders.addresses(values[0])
    if simple is not None:
        if len(simple) != 1:
            raise Reject(replies.AMBIGUOUS_AUTHOR)
        spec, name = simple[0].addr_spec, simple[0].display_name
    else:
        spec, name = _parsed_author(headers.get_all("From")[0])
    valid = _validated(spec)
    if valid is None:
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    return valid, name or ""


def _parsed_author(field: Any) -> tuple[str, str]:
    """The addr-spec and display name of the only address of a From field parsed by the email package, else Reject."""
    try:
        addresses = field.addresses
        groups = field.groups
    except Exception:  # a header the parser could not make sense of
        raise Reject(replies.AMBIGUOUS_AUTHOR) from None
    if len(addresses) != 1 or any(g.display_name is not None for g in groups):
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    if any(type(d).__name__ in _FATAL_DEFECTS for d in getattr(field, "defects", ())):
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    spec: str = addresses[0].addr_spec
    return spec, str(addresses[0].display_name or "")


@functools.lru_cache(maxsize=4096)
def _validated(spec: str) -> str | None:
    """The author address in the form the gateway uses, or None when it is not a valid address.

    A pure function of the string (no DNS: deliverability is not checked), so
    it is remembered: most mail comes from the same few hundred authors.
    """
    try:
        valid = email_validator.validate_email(spec, check_deliverability=False, allow_smtputf8=True)
    except email_validator.EmailNotValidError:
        return None
    return f"{valid.local_part}@{valid.domain.lower()}"


# Defects that mean the parser had to guess where an address starts or ends.
_FATAL_DEFECTS = {
    "InvalidHeaderDefect",
    "ObsoleteHeaderDefect",
    "NonPrintableDefect",
    "HeaderMissingRequiredValue",
}
