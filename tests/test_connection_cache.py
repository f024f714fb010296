"""Delivery keeps SMTP sessions open for the next message to the same host, like Postfix's connection cache."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP

from mailgw.delivery import transports
from tests.conftest import message, send
from tests.sink import Sink

# Each test with a next hop that offers PIPELINING (MAIL, RCPT and DATA sent together) and one that does not.
pytestmark = pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelining"])


class CountingSink(Sink):
    """The recording sink, counting the sessions it was opened and the QUITs it got."""

    def __init__(self, pipelining: bool) -> None:
        super().__init__()
        self.pipelining = pipelining
        self.leave_at_second_mail = False
        self.sessions: list[SMTP] = []
        self.quits = 0

    async def start(self) -> None:
        sink = self

        class Session(SMTP):
            async def smtp_QUIT(self, arg: str) -> None:
                sink.quits += 1
                await super().smtp_QUIT(arg)

            async def smtp_MAIL(self, arg: str) -> None:
                self.transactions = getattr(self, "transactions", 0) + 1
                if sink.leave_at_second_mail and self.transactions == 2:  # a next hop that restarts between two
                    await self.push("421 4.3.2 shutting down")
                    self.transport.close()
                    return
                await super().smtp_MAIL(arg)

            async def smtp_RCPT(self, arg: str) -> None:
                if "drop" in arg:  # the next hop goes away in the middle of a transaction
                    await self.push("421 4.3.2 going away")
                    self.transport.close()
                    return
                await super().smtp_RCPT(arg)

        def factory() -> SMTP:
            session = Session(self, hostname="sink.test", enable_SMTPUTF8=True, decode_data=False)
            self.sessions.append(session)
            return session

        self.server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


async def _relay(gw, n: int, tag: str) -> None:
    for i in range(n):
        await send(gw, "relay", message(subject=f"{tag} {i}"), "vanthu.sotttt@binhthuan.gov.vn", [f"{tag}{i}@hanoi.gov.vn"])
        await gw.deliverer.run_until_empty()


async def test_one_session_carries_consecutive_messages_and_is_closed_at_drain(make_gateway, pipelining):
    sink = CountingSink(pipelining)
    await sink.start()
    try:
        gw = await make_gateway(routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"})
        await _relay(gw, 5, "a")
        assert len(sink.messages) == 5
        assert len(sink.sessions) == 1 and sink.quits == 0  # still open, waiting for the next message
        await gw.drain()
        await asyncio.sleep(0.1)
        assert sink.quits == 1
    finally:
        await sink.stop()


async def test_a_session_closed_by_the_next_hop_is_replaced_without_a_failure(make_gateway, pipelining):
    sink = CountingSink(pipelining)
    await sink.start()
    try:
        gw = await make_gateway(routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"})
        events: list[dict] = []
        gw.deliverer.on_event = events.append
        await _relay(gw, 1, "b")
        # The next hop drops the idle session without a word (a timeout, a restart).
        sink.sessions[0].transport.abort()
        await asyncio.sleep(0.05)
        await _relay(gw, 1, "c")
        assert [m.rcpts for m in sink.messages] == [["b0@hanoi.gov.vn"], ["c0@hanoi.gov.vn"]]
        assert [e["status"] for e in events] == ["sent", "sent"]  # no deferral on the way
        assert len(sink.sessions) == 2
    finally:
        await gw.drain()
        await sink.stop()


async def test_a_kept_session_whose_hop_refuses_the_next_mail_is_replaced_without_a_failure(make_gateway, pipelining):
    """The kept session still looks open, but the hop answers the next MAIL with 421 and leaves:
    nothing was accepted on it, so a new session carries the message (no deferral)."""
    sink = CountingSink(pipelining)
    sink.leave_at_second_mail = True
    await sink.start()
    try:
        gw = await make_gateway(routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"})
        events: list[dict] = []
        gw.deliverer.on_event = events.append
        await _relay(gw, 2, "k")
        assert [m.rcpts for m in sink.messages] == [["k0@hanoi.gov.vn"], ["k1@hanoi.gov.vn"]]
        assert [e["status"] for e in events] == ["sent", "sent"]
        assert len(sink.sessions) == 2
    finally:
        await gw.drain()
        await sink.stop()


async def test_sessions_wait_at_most_the_idle_limit(make_gateway, monkeypatch, pipelining):
    sink = CountingSink(pipelining)
    await sink.start()
    try:
        gw = await make_gateway(routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"})
        transports.connection_cache().idle = 0.2
        await _relay(gw, 1, "d")
        await asyncio.sleep(0.6)
        assert sink.quits == 1  # closed politely once idle too long
        await _relay(gw, 1, "e")
        assert len(sink.sessions) == 2 and len(sink.messages) == 2
    finally:
        await gw.drain()
        await sink.stop()


async def test_a_session_whose_transaction_did_not_end_is_not_reused(make_gateway, pipelining):
    sink = CountingSink(pipelining)
    await sink.start()
    try:
        gw = await make_gateway(
            routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"},
            queue={"retry_min": "60s", "retry_max": "60s"},  # one attempt only
        )
        sink.rcpt_reply = lambda rcpt: "450 4.2.1 try later" if rcpt.startswith("f") else None
        await send(gw, "relay", message(), "vanthu.sotttt@binhthuan.gov.vn", ["f0@hanoi.gov.vn"])
        await asyncio.sleep(0.3)  # the attempt: every recipient refused, no DATA, so MAIL is still open
        assert len(sink.sessions) == 1 and sink.quits == 1
        await _relay(gw, 1, "g")
        assert len(sink.sessions) == 2 and [m.rcpts for m in sink.messages] == [["g0@hanoi.gov.vn"]]
    finally:
        await gw.drain()
        await sink.stop()


async def test_a_session_the_next_hop_dropped_mid_transaction_is_closed_not_kept(make_gateway, pipelining):
    sink = CountingSink(pipelining)
    await sink.start()
    try:
        gw = await make_gateway(
            routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{sink.port}"},
            queue={"retry_min": "60s", "retry_max": "60s"},
        )
        events: list[dict] = []
        gw.deliverer.on_event = events.append
        await send(gw, "relay", message(), "vanthu.sotttt@binhthuan.gov.vn", ["drop@hanoi.gov.vn"])
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        assert [e["status"] for e in events] == ["deferred"] and "421" in events[0]["reply"], events
        await _relay(gw, 1, "h")  # a new session: the dropped one was not kept
        assert len(sink.sessions) == 2 and [m.rcpts for m in sink.messages] == [["h0@hanoi.gov.vn"]]
    finally:
        await gw.drain()
        await sink.stop()
