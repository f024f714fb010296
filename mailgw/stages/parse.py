"""Stage: parse. The bytes are well formed SMTP data and the message is not looping.

Runs first: nothing else should read a message whose line endings could mean
one thing to us and another to the next hop (SMTP smuggling).
"""

from __future__ import annotations

import re

from mailgw import replies
from mailgw.model import Context, Message
from mailgw.replies import Reject

# A CR not followed by LF, or an LF not preceded by CR. aiosmtpd splits DATA on
# CRLF only, so these arrive inside "lines"; a next hop that honours a bare LF
# would see a different message (and maybe a second one) than we checked.
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def run(message: Message, ctx: Context) -> None:
    if _BARE.search(message.raw):
        raise Reject(replies.BARE_LINE_ENDING)
    headers = message.headers
    if headers.defects and not headers.keys():
        raise Reject(replies.BAD_HEADER)
    hops = len(headers.get_all("Received") or ())
    if hops >= ctx.settings.limits.max_received:
        raise Reject(replies.LOOP_DETECTED)
    message.facts["hops"] = hops
