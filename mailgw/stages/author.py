"""Stage: author. Exactly one From header with exactly one valid address.

Every later decision (spoofing, official sender, login binding) keys on the
author, so an ambiguous one is refused here rather than guessed (the
"Composition Kills" attacks: two From headers, two addresses, groups).
On the submission listener the login must be allowed to use that address.
"""

from __future__ import annotations

import email_validator

from mailgw import replies
from mailgw.model import Context, Message
from mailgw.replies import Reject


def run(message: Message, ctx: Context) -> None:
    author = _author(message)
    message.facts["from"] = author
    login = message.envelope.auth_user
    if login is not None and not ctx.directory.may_send_as(login, author):
        raise Reject(replies.FROM_NOT_OWNED)


def _author(message: Message) -> str:
    fields = message.headers.get_all("From") or []
    if len(fields) != 1:
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    field = fields[0]
    try:
        addresses = field.addresses
        groups = field.groups
    except Exception:  # a header the parser could not make sense of
        raise Reject(replies.AMBIGUOUS_AUTHOR) from None
    if len(addresses) != 1 or any(g.display_name is not None for g in groups):
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    if any(type(d).__name__ in _FATAL_DEFECTS for d in getattr(field, "defects", ())):
        raise Reject(replies.AMBIGUOUS_AUTHOR)
    spec = addresses[0].addr_spec
    try:
        valid = email_validator.validate_email(spec, check_deliverability=False, allow_smtputf8=True)
    except email_validator.EmailNotValidError:
        raise Reject(replies.AMBIGUOUS_AUTHOR) from None
    return f"{valid.local_part}@{valid.domain.lower()}"


# Defects that mean the parser had to guess where an address starts or ends.
_FATAL_DEFECTS = {
    "InvalidHeaderDefect",
    "ObsoleteHeaderDefect",
    "NonPrintableDefect",
    "HeaderMissingRequiredValue",
}
