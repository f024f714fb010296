"""Stage: stamp. The trace and decision headers added to the message (RFC 5321 4.4).

Comes after the decision and before DKIM signing, so the signature covers
what we add. Submitted mail without Date or Message-ID gets them here. The ``Authentication-Results`` field (RFC 8601) that dkim_verify
prepared (with the spf and dmarc stages' clauses) goes right below our ``Received``: both describe this hop.
The policy tags the settings name (``tags_header:``) go into ``X-Mailgw-Tags`` (mailgw.message.ownfields).
"""

from __future__ import annotations

import email.utils
import re

from mailgw.message import ownfields
from mailgw.message.model import Context, Message

# HELO names and addresses come from the client: keep only what is safe in a header.
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]@+]")


def run(message: Message, ctx: Context) -> None:
    env = message.envelope
    protocol = "ESMTP"
    if env.tls:
        protocol += "S"
    if env.auth_user:
        protocol += "A"
    helo = _UNSAFE.sub("?", env.helo)[:100] or "unknown"
    using = f"\r\n\t(using {_UNSAFE.sub('?', env.tls)})" if env.tls else ""
    rcpt = f"\r\n\tfor <{_UNSAFE.sub('?', env.rcpts[0])}>" if len(env.rcpts) == 1 else ""
    date = email.utils.formatdate(env.received_at, localtime=False)
    received = (
        f"Received: from {helo} ([{_UNSAFE.sub('?', env.client_ip)}])\r\n"
        f"\tby {ctx.settings.hostname} (mailgw) with {protocol} id {message.id}{using}{rcpt};\r\n"
        f"\t{date}\r\n"
    )
    added = [f"{name}: {value}\r\n" for name, value in message.verdict.headers]
    shown = ownfields.shown_tags(message.verdict.tags, ctx.settings.tags_header)
    if shown:
        added.append(ownfields.tags_field(shown).decode("ascii"))
    if env.role == "submission":
        # A mail client may leave these to its server (Postfix adds them too); mail without
        # them is refused by large providers. Made here, before signing, so DKIM covers them.
        headers = message.headers
        if "date" not in headers:
            added.append(f"Date: {date}\r\n")
        if "message-id" not in headers:
            added.append(f"Message-ID: <{message.id}@{ctx.settings.hostname}>\r\n")
    results = message.facts.authentication_results
    if results:
        added.insert(0, f"Authentication-Results: {results}\r\n")
    message.prepend[:0] = [received.encode("ascii")] + [h.encode("utf-8") for h in added]
