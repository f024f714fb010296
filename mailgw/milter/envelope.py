"""The role of a transaction that an MTA hands over, and the envelope checks of the SMTP edge.

One Postfix may run several ``smtpd`` services (port 25 from the Internet, 587
for staff, one for the agencies' own servers); the milter and policy listeners
learn which one a transaction came through from the MTA and give it the role
the SMTP edge's listener would have had:

1. the service's name (Postfix ``{daemon_name}``, set per service with
   ``-o milter_macro_daemon_name=NAME``; or a policy request's
   ``policy_context``) listed in the listener's ``daemons``;
2. else an authenticated client (``{auth_authen}``, ``sasl_username``): submission;
3. else a client in the listener's ``trusted_networks``: relay;
4. else mx: mail from the Internet, for local recipients only.

The checks are those of mailgw.smtp.edge's MAIL and RCPT handlers, with the
same replies.
"""

from __future__ import annotations

from mailgw.config.settings import Listener
from mailgw.message import addresses, replies
from mailgw.message.model import Context
from mailgw.message.replies import SmtpReply


def role_for(listener: Listener, service: str | None, login: str | None, client_ip: str) -> str:
    """mx, relay or submission, by the rules above."""
    if service:
        for name, role in listener.daemons:
            if name == service:
                return role
    if login:
        return "submission"
    if listener.trusted_networks and listener.trusts(client_ip):
        return "relay"
    return "mx"


def sender_refusal(ctx: Context, listener: Listener, role: str, client_ip: str, login: str | None,
                   address: str) -> tuple[str, SmtpReply | None]:
    """(the normalised sender, None) when MAIL FROM may go on, else ("", the refusal)."""
    if role == "relay" and listener.trusted_networks and not listener.trusts(client_ip):
        return "", replies.CLIENT_NOT_ALLOWED
    sender = addresses.sender(address)
    if sender is None:
        return "", replies.BAD_SENDER_ADDRESS
    if role == "submission" and (not sender or login is None or not ctx.directory.may_send_as(login, sender)):
        return "", replies.SENDER_NOT_OWNED
    return sender, None


def recipient_refusal(ctx: Context, role: str, address: str, count: int) -> tuple[str, SmtpReply | None]:
    """(the normalised recipient, None) when RCPT TO may go on, else ("", the refusal). ``count``: recipients so far."""
    if count >= ctx.settings.limits.recipients:
        return "", replies.TOO_MANY_RECIPIENTS
    rcpt = addresses.recipient(address)
    if role == "mx":
        # Whatever the trick, mx delivers only to our own domains.
        if rcpt is None or not ctx.directory.is_local(rcpt):
            return "", replies.RELAY_DENIED
    elif rcpt is None:
        return "", replies.BAD_ADDRESS
    if ctx.directory.unknown_local(rcpt):
        return "", replies.NO_SUCH_MAILBOX
    return rcpt, None


def strip_brackets(address: str) -> str:
    """``<a@b>`` -> ``a@b`` (Postfix hands over the address as the client wrote it, brackets included)."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        return address[1:-1]
    return address
