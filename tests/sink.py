"""A recording downstream SMTP server for the tests (the next hop of the gateway)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from typing import Callable

from aiosmtpd.smtp import SMTP


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    mail_options: list[str] = dataclasses.field(default_factory=list)


class Sink:
    """Accepts mail and remembers it; ``rcpt_reply``/``data_reply`` script failures."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.messages: list[Received] = []
        self.mail_reply: Callable[[str], str | None] = lambda sender: None
        self.rcpt_reply: Callable[[str], str | None] = lambda rcpt: None
        self.data_reply: Callable[[list[str]], str | None] = lambda rcpts: None
        self.server: asyncio.base_events.Server | None = None
        self.port = port
        self.arrived = asyncio.Event()
        self.smtputf8 = True  # offer SMTPUTF8 (set before start)
        self.tls_context: ssl.SSLContext | None = None  # offer STARTTLS (set before start)
        self.tls_sessions = 0  # transactions that arrived over TLS
        # Offer PIPELINING (RFC 2920): aiosmtpd reads commands sent together one by one, as they come.
        self.pipelining = False
        self.sessions: list[SMTP] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        def session() -> SMTP:
            self.sessions.append(SMTP(self, hostname="sink.test", enable_SMTPUTF8=self.smtputf8, decode_data=False,
                                      tls_context=self.tls_context))
            return self.sessions[-1]

        self.server = await loop.create_server(session, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        # Sessions a gateway keeps open (its connection cache) end with the sink, so the
        # test's event loop closes with nothing open (uvloop refuses to close otherwise).
        for s in self.sessions:
            if s.transport is not None and not s.transport.is_closing():
                s.transport.close()
        self.sessions.clear()
        await asyncio.sleep(0)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001
        session.host_name = hostname  # the hook's job (aiosmtpd)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: ANN001
        reply = self.mail_reply(address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001
        reply = self.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        reply = self.data_reply(envelope.rcpt_tos)
        if reply:
            return reply
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        self.tls_sessions += session.ssl is not None
        self.messages.append(Received(mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      list(envelope.mail_options)))
        self.arrived.set()
        return "250 2.0.0 OK sink"

    def to(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpts]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out waiting for the sink")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
