"""A reply as it goes on the wire: US-ASCII unless the transaction is SMTPUTF8, lines of at most 512 octets.

RFC 5321 4.5.3.1.5 limits a reply line to 512 octets, CRLF included, and text
outside US-ASCII is allowed only in a transaction that asked for SMTPUTF8
(RFC 6531 3.7.4). The gateway's texts are Vietnamese then English: without
SMTPUTF8 the Vietnamese is folded to ASCII (``Thư bị từ chối`` ->
``Thu bi tu choi``), anything else outside ASCII becomes ``?``. A text too
long for one line is split at spaces into continuation lines (``550-5.7.1
...``), each with the code and enhanced code; the exchange id (`` [ID]`` at
the end) stays on the last line, whole, where a clerk and a truncating server
both find it. The full diacritics stay in DSNs, notices and the log.
"""

from __future__ import annotations

import re

from mailgw.classify.vn.text import fold

MAX_LINE = 512  # octets, CRLF included
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?= |$)")


def reply_lines(status: str, *, utf8: bool) -> list[str]:
    """The lines (without CRLF) that carry ``status``, a one-line reply ``CODE[ -]TEXT``."""
    if not utf8 and not status.isascii():
        status = fold(status).encode("ascii", "replace").decode("ascii")
    if len(status.encode("utf-8")) + 2 <= MAX_LINE or len(status) < 4 or status[3] != " ":
        return [status]
    code, text = status[:3], status[4:]
    m = _ENHANCED.match(text)
    prefix = code + "%s" + (m.group(0) + " " if m else "")
    words = text[m.end():].split() if m else text.split()
    room = MAX_LINE - 2 - len((prefix % " ").encode("utf-8"))
    lines: list[str] = []
    current = ""
    for word in words:
        while len(word.encode("utf-8")) > room:  # a word longer than a line: cut it where it must be
            head = word.encode("utf-8")[:room].decode("utf-8", "ignore")
            if current:
                lines.append(current)
                current = ""
            lines.append(head)
            word = word[len(head):]
        candidate = f"{current} {word}" if current else word
        if len(candidate.encode("utf-8")) <= room:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current or not lines:
        lines.append(current)
    return [(prefix % ("-" if i < len(lines) - 1 else " ")) + line for i, line in enumerate(lines)]
