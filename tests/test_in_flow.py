"""limits.in_flow (off by default): while a process is deciding messages, a new transaction waits at MAIL, not after DATA.

Real sessions over real sockets against the gateway. A message is held in its
decision by holding the exchange log's answer for it (a slow database, which
is what the wait is for too); nothing is timed: the tests look at who got a
reply, and at the admission's own counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailgw.smtp.edge import Admission
from tests.conftest import message, port, until
from tests.dialog import Dialog

SENDER = "vanthu.sotttt@binhthuan.gov.vn"
RCPT = "vanthu.snv@binhthuan.gov.vn"


def hold_records(gw: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """(entered, release): the next spooled message's record waits for ``release``; ``entered`` is set when one does."""
    entered, release = asyncio.Event(), asyncio.Event()
    keep = gw.edge.spooled_recorder

    async def held(rec: dict[str, Any]) -> None:
        entered.set()
        await release.wait()
        await keep(rec)

    gw.edge.spooled_recorder = held
    return entered, release


async def session(gw: Any) -> Dialog:
    d = await Dialog.open(port(gw, "relay"))
    assert (await d.reply())[0] == 220
    assert (await d.cmd("EHLO client.test"))[0] == 250
    return d


async def start_message(d: Dialog, subject: str) -> asyncio.Task[tuple[int, str]]:
    """MAIL, RCPT, DATA and the message; the task is the reply to its end of data."""
    assert (await d.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250
    assert (await d.cmd(f"RCPT TO:<{RCPT}>"))[0] == 250
    assert (await d.cmd("DATA"))[0] == 354
    d.send(message(subject=subject) + b".\r\n")
    return asyncio.create_task(d.reply())


async def one_held(gw: Any) -> tuple[Dialog, asyncio.Task[tuple[int, str]], asyncio.Event]:
    """Session A with a message being decided (its record held), A's reply to come, and what releases it."""
    entered, release = hold_records(gw)
    a = await session(gw)
    a_reply = await start_message(a, "Thư đang chờ ghi nhật ký")
    await entered.wait()
    return a, a_reply, release


def waits(outcome: str) -> float:
    return REGISTRY.get_sample_value("mailgw_smtp_in_flow_waits_total", {"outcome": outcome}) or 0.0


async def test_a_full_process_holds_mail_until_a_transaction_ends_one_place_per_end(make_gateway, sink):
    gw = await make_gateway(limits={"in_flow": 1, "in_flow_delay": "60s", "idle_timeout": "120s"})
    admitted = waits("admitted")
    a, a_reply, release = await one_held(gw)  # A is being decided, and A is the one transaction allowed
    b, c = await session(gw), await session(gw)
    b.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    await until(lambda: len(gw.edge.admission._waiting) == 1)
    c.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    await until(lambda: len(gw.edge.admission._waiting) == 2)
    assert not a_reply.done()

    release.set()
    assert (await a_reply)[0] == 250
    assert (await b.reply())[0] == 250  # A's end gave its place to the first waiter, and to it only
    assert len(gw.edge.admission._waiting) == 1 and gw.edge.admission.active == 1
    assert (await b.cmd(f"RCPT TO:<{RCPT}>"))[0] == 250
    assert (await b.cmd("DATA"))[0] == 354
    assert (await b.cmd(message(subject="Thư thứ hai") + b".\r\n"))[0] == 250
    assert (await c.reply())[0] == 250  # then B's end to C
    assert waits("admitted") - admitted == 2
    assert (await c.cmd(f"RCPT TO:<{RCPT}>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd(message(subject="Thư thứ ba") + b".\r\n"))[0] == 250
    for d in (a, b, c):
        assert (await d.cmd("QUIT"))[0] == 221
        await d.close()
    await sink.wait_for(lambda: len(sink.to(RCPT)) == 3)
    await until(lambda: gw.edge.admission.active == 0)


async def test_a_mail_waits_no_longer_than_in_flow_delay(make_gateway, sink):
    gw = await make_gateway(limits={"in_flow": 1, "in_flow_delay": "200ms"})
    timeouts = waits("timeout")
    a, a_reply, release = await one_held(gw)
    b = await session(gw)
    assert (await b.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250  # after the delay, over the limit
    assert waits("timeout") - timeouts == 1
    assert not gw.edge.admission._waiting  # no dead waiter left to hold a later MAIL
    assert not a_reply.done() and gw.edge.admission.active == 2
    release.set()
    assert (await a_reply)[0] == 250
    assert gw.edge.admission.active == 1  # A's transaction ended with its reply
    assert (await b.cmd("RSET"))[0] == 250
    assert gw.edge.admission.active == 0  # and B's with RSET
    for d in (a, b):
        assert (await d.cmd("QUIT"))[0] == 221
        await d.close()
    await until(lambda: gw.edge.admission.active == 0)


async def test_a_client_that_leaves_while_it_waits_takes_no_place(make_gateway, sink):
    gw = await make_gateway(limits={"in_flow": 1, "in_flow_delay": "60s", "idle_timeout": "120s"})
    a, a_reply, release = await one_held(gw)
    b = await session(gw)
    b.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    await until(lambda: len(gw.edge.admission._waiting) == 1)
    await b.close()  # gone while it waits
    await until(lambda: len(gw.edge.sessions) == 1)
    await until(lambda: not gw.edge.admission._waiting)  # its wait is forgotten, not left in the queue
    release.set()
    assert (await a_reply)[0] == 250
    assert (await a.cmd("QUIT"))[0] == 221
    await a.close()
    await until(lambda: gw.edge.admission.active == 0)
    c = await session(gw)
    assert (await c.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250  # nothing left counted for B
    assert gw.edge.admission.active == 1
    assert (await c.cmd("QUIT"))[0] == 221
    await c.close()
    await until(lambda: gw.edge.admission.active == 0)


async def test_open_transactions_alone_hold_nobody_back(make_gateway, sink):
    """Clients slow to send (a long upload) fill the limit, but with nothing being decided a MAIL goes on at once."""
    gw = await make_gateway(limits={"in_flow": 1, "in_flow_delay": "60s", "idle_timeout": "120s"})
    a = await session(gw)
    assert (await a.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250
    assert (await a.cmd(f"RCPT TO:<{RCPT}>"))[0] == 250
    assert (await a.cmd("DATA"))[0] == 354
    a.send(b"Subject: dang gui\r\n\r\nphan dau")  # the rest has not come yet
    b = await session(gw)
    assert (await b.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250
    assert gw.edge.admission.active == 2 and not gw.edge.admission._waiting
    for d in (a, b):
        await d.close()
    await until(lambda: gw.edge.admission.active == 0)


async def test_in_flow_zero_never_holds(make_gateway, sink):
    gw = await make_gateway()  # limits.in_flow is 0 unless set
    a, a_reply, release = await one_held(gw)
    b = await session(gw)
    assert (await b.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250
    release.set()
    assert (await a_reply)[0] == 250
    for d in (a, b):
        await d.close()


async def test_a_waiter_cancelled_just_after_it_was_given_a_place_passes_the_place_on():
    """The session goes away in the same turn of the loop as its place comes (Python 3.11's wait_for would
    swallow that cancellation and send a 250 to a closed session): the place goes to the next waiter."""
    admission = Admission(lambda: True)  # a message is always being decided
    await admission.enter(1, 60.0)
    first = asyncio.create_task(admission.enter(1, 60.0))
    second = asyncio.create_task(admission.enter(1, 60.0))
    for _ in range(100):
        if len(admission._waiting) == 2:
            break
        await asyncio.sleep(0)  # one turn of the loop: both tasks reach their wait
    assert len(admission._waiting) == 2
    admission.leave()  # the place goes to the first waiter ...
    first.cancel()  # ... whose session is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)  # the bound only turns a regression into a failure, not a hang
    await asyncio.wait_for(second, 10)  # the place went on to the second
    assert admission.active == 1 and not admission._waiting


async def test_a_transaction_whose_decision_failed_gives_its_place_back(make_gateway, sink, monkeypatch):
    """An error of ours while deciding (the DATA hook raises): the client gets a 451 and the
    transaction ends there, so its place goes to the next MAIL and the session can send again."""
    gw = await make_gateway(limits={"in_flow": 1, "in_flow_delay": "60s", "idle_timeout": "120s"})
    accept = gw.edge.accept
    failures = [RuntimeError("a bug of ours")]

    async def failing_once(msg: Any, ctx: Any) -> str:
        if failures:
            raise failures.pop()
        return await accept(msg, ctx)

    monkeypatch.setattr(gw.edge, "accept", failing_once)
    a = await session(gw)
    code, text = await (await start_message(a, "Lỗi của cổng"))
    assert code == 451 and "bug" not in text
    assert gw.edge.admission.active == 0  # the place was given back
    entered, release = hold_records(gw)
    b = await session(gw)
    b_reply = await start_message(b, "Thư sau")  # admitted at once: no MAIL is held
    await entered.wait()
    release.set()
    assert (await b_reply)[0] == 250
    assert (await a.cmd(f"MAIL FROM:<{SENDER}>"))[0] == 250  # A's transaction ended too: not a nested MAIL
    for d in (a, b):
        await d.close()
