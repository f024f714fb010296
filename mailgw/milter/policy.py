"""Postfix's access-policy delegation (``check_policy_service``): the envelope checks, before DATA.

A lighter way in than the milter: Postfix asks, at each RCPT TO (and wherever
``check_policy_service`` is listed), whether the transaction may go on; mailgw
answers from the envelope alone, with the checks and replies of its SMTP edge
(mailgw.smtp.checks): relay only from trusted networks, the sender bound to
the login on submission, recipients local and known on mx. The message itself
is never seen, so there is no classification, policy or exchange record here:
that is the milter's work.

The protocol (Postfix SMTPD_POLICY_README): ``name=value`` lines ending with an
empty line, one request after the other on a connection; the answer is
``action=...`` and an empty line. mailgw answers ``DUNNO`` (go on with the
other restrictions) or the refusal ``5NN X.Y.Z text`` / ``4NN X.Y.Z text``, in
US-ASCII on one line. A request that is not one is answered ``DEFER_IF_PERMIT``
and logged; so is a fault of ours (Postfix would otherwise use its
``default_action`` after its timeout, 451).
"""

from __future__ import annotations

import asyncio
import logging

from mailgw import logsetup, metrics
from mailgw.message.replies import SmtpReply
from mailgw.milter.envelope import role_for
from mailgw.milter.listening import MtaListener
from mailgw.smtp import checks, wire

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # a Postfix request is a few hundred bytes (certificate names included)
MAX_LINE = 512  # octets of an SMTP reply line, which the action becomes


class PolicyListener(MtaListener):
    """One policy listener: its server and open connections."""

    limit = MAX_REQUEST

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                request: dict[str, str] = {}
                size = 0
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    size += len(line)
                    line = line.rstrip(b"\r\n")
                    if not line:
                        break
                    name, sep, value = line.decode("utf-8", "replace").partition("=")
                    if sep and size <= MAX_REQUEST:
                        request[name] = value
                if not request:
                    continue
                writer.write(f"action={self.decide(request)}\n\n".encode("ascii"))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    def decide(self, request: dict[str, str]) -> str:
        """The action for one request: DUNNO, or the refusal the SMTP edge would give."""
        if request.get("request") != "smtpd_access_policy":
            log.warning("%s: not a Postfix policy request: %r", self.listener.name, sorted(request)[:10])
            return "DEFER_IF_PERMIT 4.3.5 Policy service misconfigured"
        try:
            return self._decide(request)
        except Exception:
            log.exception("%s: policy request failed", self.listener.name)
            return "DEFER_IF_PERMIT 4.3.0 Temporary policy service error"

    def _decide(self, request: dict[str, str]) -> str:
        ctx = self.edge.context()
        login = request.get("sasl_username", "").lower() or None
        client = request.get("client_address", "")
        role = role_for(self.listener, request.get("policy_context"), login, client)
        stage, arg = "MAIL", request.get("sender", "")
        # Postfix itself refuses a non-ASCII address that came without SMTPUTF8 (and does not say which it was).
        _, refusal = checks.sender_refusal(ctx, self.listener, role, arg, client_ip=client, login=login, smtputf8=True)
        recipient = request.get("recipient", "")
        if refusal is None and recipient:
            stage, arg = "RCPT", recipient
            # Postfix asks once per recipient: the count of the ones before is its, not ours.
            _, refusal = checks.recipient_refusal(ctx, role, recipient, count=int(request.get("recipient_count") or 0),
                                                  smtputf8=True)
        if refusal is None:
            return "DUNNO"
        return self._refuse(refusal, stage, arg, role, request)

    def _refuse(self, refusal: SmtpReply, stage: str, arg: str, role: str, request: dict[str, str]) -> str:
        text = wire.reply_lines(str(refusal), utf8=False)
        line = " ".join(text[0].split()) if len(text) == 1 else str(refusal)
        line = line.encode("ascii", "replace").decode("ascii")[:MAX_LINE - 2]
        metrics.REFUSALS.labels(self.listener.name, stage).inc()
        logsetup.event(log, logging.INFO, "reject", stage=stage, listener=self.listener.name, role=role,
                       client=request.get("client_address") or None, helo=request.get("helo_name") or None,
                       auth=request.get("sasl_username") or None, **{"from": request.get("sender") or None},
                       arg=arg[:200], reply=line, mta_id=request.get("queue_id") or None)
        return line
