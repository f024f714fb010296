"""The role of a transaction that an MTA hands over.

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

The checks of the envelope are the SMTP edge's own: mailgw.smtp.checks.
"""

from __future__ import annotations

from mailgw.config.settings import Listener


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


def strip_brackets(address: str) -> str:
    """``<a@b>`` -> ``a@b`` (Postfix hands over the address as the client wrote it, brackets included)."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        return address[1:-1]
    return address
