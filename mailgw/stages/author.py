"""Stage: author. Exactly one From header with exactly one valid address.

Every later decision (spoofing, official sender, login binding) keys on the
author, so an ambiguous one is refused here rather than guessed (the
"Composition Kills" attacks: two From headers, two addresses, groups, an
address hidden where one reader sees it and another does not), and the reply
says which of those it was. What is only untidy is read as every mail client
reads it: a full stop in an unquoted name (RFC 5322's obsolete phrase, written
by Outlook: ``Nguyen V. An <an@...>``), an encoded word inside quotes, a UTF-8
name or (over SMTPUTF8, RFC 6532) address, a quoted local part, an address
under a special-use domain (.test, .invalid, .local ...).
On the submission listener the login must be allowed to use that address.
"""

from __future__ import annotations

import dataclasses
import email.policy
import functools
import re
from typing import Any

from mailgw.message import fastheaders, replies
from mailgw.message.addresses import header_address
from mailgw.message.model import Context, Message
from mailgw.message.replies import Reject, SmtpReply

# Fields that also name who sent a message, and that some mail clients show: on
# submission the login must own them as it owns From; on mx the policy sees them
# (``Facts.claimed``: the shipped pack treats one of our domains there as it
# treats one in From).
IDENTITY_FIELDS = ("sender", "resent-from", "resent-sender")

# Defects of the email package's address parser that leave no doubt where the one
# address starts and ends: they concern the display name only. Any other defect
# means the parser had to guess, and the field is refused.
_BENIGN_DEFECTS = frozenset({
    ("ObsoleteHeaderDefect", "period in 'phrase'"),  # Nguyen V. An <...> (RFC 5322 obs-phrase)
    ("InvalidHeaderDefect", "encoded word inside quoted string"),  # "=?utf-8?B?...?=" <...>
    ("InvalidHeaderDefect", "missing trailing whitespace after encoded-word"),  # the closing quote follows it
    ("NonASCIILocalPartDefect", "local-part contains non-ASCII characters)"),  # RFC 6532; SMTPUTF8 checked apart
})
# Defects of the local part alone: the one address is there, and it is not a valid one.
_LOCAL_PART_DEFECTS = frozenset({
    "local-part is not dot-atom, quoted-string, or obs-local-part", "invalid repeated '.'",
    "Invalid leading '.' in local part", "Invalid trailing '.' in local part",
})
# Decoding defects of an encoded word (in the display name): its text, not the address, is in doubt.
_BENIGN_DEFECT_CLASSES = frozenset({
    "InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect", "InvalidBase64LengthDefect",
    "UndecodableBytesDefect", "CharsetError",
})


@dataclasses.dataclass(frozen=True)
class Author:
    address: str  # normalised (mailgw.message.addresses.header_address)
    name: str  # decoded display name, "" without one
    utf8: bool  # the address is written in UTF-8 (RFC 6532)


def run(message: Message, ctx: Context) -> None:
    author = _author(message)
    claimed = _claimed(message)
    message.facts.author = author.address
    message.facts.author_name = author.name  # for display-name spoofing
    message.facts.claimed = tuple(claimed)
    login = message.envelope.auth_user
    if login is not None and not all(ctx.directory.may_send_as(login, a) for a in (author.address, *claimed)):
        raise Reject(replies.FROM_NOT_OWNED)


def _author(message: Message) -> Author:
    values = [v for k, v in message.headers.raw_items() if k.lower() == "from"]
    if not values:
        raise Reject(replies.NO_FROM)
    if len(values) > 1:
        raise Reject(replies.TWO_FROM)
    found = read_from(values[0])
    if isinstance(found, SmtpReply):
        raise Reject(found)
    if found.utf8 and not message.envelope.smtputf8:
        raise Reject(dataclasses.replace(replies.FROM_UTF8_WITHOUT_SMTPUTF8, reason=f"From: {found.address}"))
    return found


@functools.lru_cache(maxsize=4096)
def read_from(value: str) -> Author | SmtpReply:
    """The one author of a From field's stored value, or the reply that says what is wrong with it.

    A pure function of the value (most mail comes from the same few hundred
    authors), so it is remembered. ``value`` is as the bytes parser stored it:
    8-bit bytes are surrogate escapes, read here as UTF-8 (RFC 6532).
    """
    text = _utf8(fastheaders.unfold(value))
    # The usual shapes (a bare address, Name <address>) read without the full
    # parser; fastheaders takes only values the full parser reads the same
    # way and without a defect, anything else goes through the checks below.
    simple = fastheaders.addresses(text)
    if simple is not None:
        if len(simple) != 1:
            return replies.FROM_TWO_ADDRESSES
        spec, name = simple[0].addr_spec, str(simple[0].display_name or "")
    else:
        parsed = _parsed(text)
        if isinstance(parsed, SmtpReply):
            return parsed
        spec, name = parsed
    valid = header_address(spec)
    if valid.address is None:
        return dataclasses.replace(replies.FROM_INVALID_ADDRESS, reason=f"From {spec[:200]!r}: {valid.problem}")
    return Author(valid.address, name, valid.utf8)


def _parsed(text: str) -> tuple[str, str] | SmtpReply:
    """(addr-spec, display name) of the only mailbox of a From value, read by the email package's parser."""
    if not text.strip():
        return replies.FROM_NO_ADDRESS
    try:
        field: Any = email.policy.default.header_factory("From", text)
        mailboxes = list(field.addresses)
        groups = list(field.groups)
        defects = list(field.defects)
    except RecursionError:
        raise  # nested comments past the parser's depth: the pipeline's 5.6.0, the structure's fault
    except Exception as e:  # noqa: BLE001 - the parser fails on some malformed values (IndexError on "a@")
        return dataclasses.replace(replies.FROM_UNREADABLE, reason=f"From parser: {type(e).__name__}")
    if any(g.display_name is not None for g in groups):
        return replies.FROM_GROUP
    # A mailbox without a domain is what the parser makes of a word that is not an address.
    addresses = [m for m in mailboxes if m.domain]
    if len(addresses) > 1:
        return replies.FROM_TWO_ADDRESSES
    fatal = [d for d in defects if not _benign(d)]
    if len(addresses) == 1 and len(mailboxes) == 1 and fatal and all(str(d) in _LOCAL_PART_DEFECTS for d in fatal):
        return dataclasses.replace(replies.FROM_INVALID_ADDRESS, reason=f"From: {fatal[0]}")
    if not addresses or fatal or len(mailboxes) != 1:
        # No "@" at all: a name alone, "<>", nothing. Otherwise the parser had to guess.
        problem = replies.FROM_NO_ADDRESS if "@" not in text else replies.FROM_UNREADABLE
        return dataclasses.replace(problem, reason=f"From: {fatal[0]}" if fatal else "")
    name = str(addresses[0].display_name or "")
    if not name:
        # The old form "address (Name)": mail clients show the comment as the name.
        comments = getattr(field, "_parse_tree", None)
        name = " ".join(" ".join(str(c) for c in comments.comments).split()) if comments is not None else ""
    return _addr_spec(addresses[0]), name


# RFC 5322 atext, and RFC 6532's UTF-8 characters.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+)*")


def _addr_spec(mailbox: Any) -> str:
    """The mailbox's addr-spec, its local part quoted unless it is a dot-atom.

    ``Address.addr_spec`` quotes only a local part holding specials, which
    turns a quoted ``"j.o..e"`` into the invalid ``j.o..e``.
    """
    local = str(mailbox.username)
    if not _DOT_ATOM.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{mailbox.domain}"


def _benign(defect: Exception) -> bool:
    kind = type(defect).__name__
    return kind in _BENIGN_DEFECT_CLASSES or (kind, str(defect)) in _BENIGN_DEFECTS


def _utf8(value: str) -> str:
    """A stored header value with its 8-bit bytes (surrogate escapes) read as UTF-8; bytes that are not UTF-8 become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _claimed(message: Message) -> list[str]:
    """The addresses of the Sender, Resent-From and Resent-Sender fields; a field we cannot read is refused."""
    found: list[str] = []
    for name, value in message.headers.raw_items():
        if name.lower() not in IDENTITY_FIELDS:
            continue
        text = _utf8(fastheaders.unfold(value))
        simple = fastheaders.addresses(text)
        if simple is not None:
            specs = [a.addr_spec for a in simple]
        else:
            try:
                field: Any = email.policy.default.header_factory(name, text)
                specs = [a.addr_spec for a in field.addresses]
            except RecursionError:
                raise
            except Exception:  # the parser could not make sense of it: a client might
                raise Reject(replies.BAD_HEADER) from None
        for spec in specs:
            valid = header_address(spec)
            if valid.address is None:
                raise Reject(dataclasses.replace(replies.BAD_HEADER, reason=f"{name}: {valid.problem}"))
            if valid.address not in found:
                found.append(valid.address)
    return found
