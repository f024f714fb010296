"""Header fields only this gateway writes into delivered mail, and their removal from mail that arrives.

``X-Mailgw-Tags`` carries the policy tags the settings name (``tags_header:``) to the
recipient, whose mail client can show it or filter on it. A recipient trusts it
because the gateway wrote it: so the stamp stage writes it, and the dkim_verify stage
removes every field of that name a message arrives with, on every listener, whether
the setting is on or not (a sender must not be able to tag its own mail
``verified`` or hide a warning).
"""

from __future__ import annotations

import email.header
import fnmatch
from collections.abc import Iterable, Sequence

from mailgw.message.parsed import header_end

TAGS_FIELD = "X-Mailgw-Tags"
OWN_FIELDS = frozenset({TAGS_FIELD.lower().encode("ascii")})

_EXPLANATION_VI = "nhãn do cổng thư gắn theo quy định của cơ quan"
_EXPLANATION_EN = "labels the mail gateway added under the agency's policies"


def shown_tags(tags: Iterable[str], wanted: Sequence[str]) -> list[str]:
    """The tags the setting names (exact names or shell patterns such as ``urgency:*``), in the verdict's order."""
    return [t for t in tags if any(fnmatch.fnmatchcase(t, w) for w in wanted)]


def tags_field(tags: Sequence[str]) -> bytes:
    """``X-Mailgw-Tags: tag1, tag2; Vietnamese / English``: the tags in plain text first, so a mail client's
    filter on the field finds them, then what they are (the Vietnamese in RFC 2047, as the warning fields
    are written), folded."""
    header = email.header.Header(", ".join(tags) + ";", "us-ascii" if _ascii(tags) else "utf-8",
                                 header_name=TAGS_FIELD)
    header.append(_EXPLANATION_VI, "utf-8")
    header.append("/ " + _EXPLANATION_EN, "us-ascii")
    return f"{TAGS_FIELD}: ".encode("ascii") + header.encode(linesep="\r\n").encode("ascii") + b"\r\n"


def _ascii(tags: Sequence[str]) -> bool:
    return all(t.isascii() for t in tags)


def strip_own_fields(raw: bytes) -> tuple[bytes, int]:
    """``raw`` without the fields only this gateway may write, and how many there were.

    The body and every other field are kept byte for byte.
    """
    end = header_end(raw)
    kept: list[bytes] = []
    removed = 0
    dropping = False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a continuation line goes with its field
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
        dropping = name in OWN_FIELDS
        if dropping:
            removed += 1
        else:
            kept.append(line)
    if not removed:
        return raw, 0
    return b"".join(kept) + raw[end:], removed


