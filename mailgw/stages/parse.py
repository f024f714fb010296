"""Stage: parse. The bytes are well formed SMTP data and the message is not looping.

Runs first: nothing else should read a message whose line endings could mean
one thing to us and another to the next hop (SMTP smuggling).
"""

from __future__ import annotations

import dataclasses
import re

from mailgw.attachments.mime import overlong_mime_header
from mailgw.message import replies
from mailgw.message.model import Context, Message
from mailgw.message.replies import Reject

# A header line: a field name (printable ASCII but ':') and a colon, or a
# continuation that starts with white space (RFC 5322 2.2, 3.2.2).
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")
# A field name with white space before its colon (RFC 5322 4.5, obsolete syntax: "From :").
_SPACED_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)


def run(message: Message, ctx: Context) -> None:
    if not message.crlf_only():
        # A CR not followed by LF, or an LF not preceded by CR. aiosmtpd splits DATA on CRLF
        # only, so these arrive inside "lines"; a next hop that honours a bare LF would see a
        # different message (and maybe a second one) than we checked. Counted in C, once per
        # message (Message.crlf_only: the DKIM signer asks it again).
        raise Reject(replies.BARE_LINE_ENDING)
    if b"\x00" in message.raw:
        # RFC 5321 4.1.1.4 and RFC 5322 forbid it; readers stop at it or keep it, differently.
        raise Reject(replies.NUL_BYTE)
    end = message.raw.find(b"\r\n\r\n")
    section = message.raw[: end if end >= 0 else len(message.raw)]
    limits = ctx.settings.limits
    if len(section) > limits.header_size or section.count(b"\r\n") >= limits.header_lines:
        # Every reader of the header section works on all of it; bounded before any of them runs.
        raise Reject(replies.HEADER_TOO_BIG)
    lines = section.split(b"\r\n")
    # Python's parser takes a line that is not a header for the start of the body,
    # so every header after it would be seen by the next hop and not by us.
    if lines[0][:1] in (b" ", b"\t") or any(line and not _FIELD.match(line) for line in lines):
        raise Reject(replies.BAD_HEADER)
    if _SPACED_NAME.search(section):
        # "From : x" is a From field to a mail client and to RFC 5322, and an mbox line to
        # Python's parser, which drops it: one more author that only the next hop would see.
        # Written as "From: x" for every reader, ours and theirs (relaxed DKIM
        # canonicalization deletes that white space too, so such signatures still verify).
        message.sanitise(_SPACED_NAME.sub(rb"\1:", section) + message.raw[len(section):])
    overlong = message.of_raw(overlong_mime_header)  # asked again by the attachment walker
    if overlong:
        # Before anything parses the MIME tree: the email package's parameter
        # parsing is quadratic in such a header's length.
        raise Reject(dataclasses.replace(replies.BAD_HEADER, reason=overlong))
    headers = message.headers
    if headers.defects and not headers.keys():
        raise Reject(replies.BAD_HEADER)
    hops = len(headers.get_all("Received") or ())
    if hops >= ctx.settings.limits.max_received:
        raise Reject(replies.LOOP_DETECTED)
    message.facts.hops = hops

