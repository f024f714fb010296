"""The checks of MAIL FROM and RCPT TO: one truth for every way mail comes in.

The SMTP edge (mailgw.smtp.edge) asks them at its MAIL and RCPT commands, the
milter (mailgw.milter.server) at the MTA's envelope events, and the Postfix
policy service (mailgw.milter.policy) at each of Postfix's requests; each gets
the same answer, a refusal from mailgw.message.replies or none, and turns it
into its own wire form. tests/test_milter.py sends the same envelopes through
all three and compares.

What each checks, by the transaction's role:

- relay: the client is in the listener's ``trusted_networks`` (a milter or
  policy listener with none leaves that to the MTA, whose service named the role);
- submission: the sender is one the login may send as;
- mx: every recipient is in one of our domains;
- all: the addresses parse, are US-ASCII unless the transaction is SMTPUTF8,
  the recipients are within ``limits.recipients`` and, in a domain whose
  mailboxes the directory lists, exist (refused now rather than bounced later
  to a sender who may be forged: backscatter).
"""

from __future__ import annotations

from mailgw.config.settings import MTA_ROLES, Listener
from mailgw.message import addresses, replies
from mailgw.message.model import Context
from mailgw.message.replies import SmtpReply


def sender_refusal(ctx: Context, listener: Listener, role: str, address: str, *, client_ip: str,
                   login: str | None, smtputf8: bool) -> tuple[str | None, SmtpReply | None]:
    """(the normalised sender, None) when MAIL FROM may go on, else (None, the refusal).

    ``address`` as the client wrote it, without the angle brackets; "" is the null sender.
    """
    if role == "relay" and not _may_relay(listener, client_ip):
        return None, replies.CLIENT_NOT_ALLOWED
    sender = addresses.sender(address)
    if sender is None:
        return None, replies.BAD_SENDER_ADDRESS
    if not smtputf8 and not address.isascii():  # as the client wrote it (an A-label is ASCII)
        return None, replies.UTF8_WITHOUT_SMTPUTF8
    if role == "submission" and (not sender or login is None or not ctx.directory.may_send_as(login, sender)):
        return None, replies.SENDER_NOT_OWNED
    return sender, None


def recipient_refusal(ctx: Context, role: str, address: str, *, count: int,
                      smtputf8: bool) -> tuple[str | None, SmtpReply | None]:
    """(the normalised recipient, None) when RCPT TO may go on, else (None, the refusal). ``count``: recipients so far."""
    if count >= ctx.settings.limits.recipients:
        return None, replies.TOO_MANY_RECIPIENTS
    rcpt = addresses.recipient(address)
    if role == "mx":
        # Whatever the trick, mx delivers only to our own domains.
        if rcpt is None or not ctx.directory.is_local(rcpt):
            return None, replies.RELAY_DENIED
    elif rcpt is None:
        return None, replies.BAD_ADDRESS
    if not smtputf8 and not address.isascii():
        return None, replies.UTF8_WITHOUT_SMTPUTF8
    if ctx.directory.unknown_local(rcpt):
        return None, replies.NO_SUCH_MAILBOX
    return rcpt, None


def _may_relay(listener: Listener, client_ip: str) -> bool:
    if listener.role in MTA_ROLES and not listener.trusted_networks:
        return True
    return listener.trusts(client_ip)
