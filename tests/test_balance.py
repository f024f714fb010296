"""mailgw.balance: new connections go to the least busy worker, passed over a real UNIX socket pair.

The workers here are Balancers in one process and one event loop, sharing a
Plan as the supervisor's workers do; the connections are real TCP connections
accepted on a real listening socket. tests/test_workers.py checks the same with
a gateway's real worker processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable

import pytest

from mailgw.balance import Listening, Plan


class Worker:
    """A Balancer and the connections it serves (a session is a connection it holds open)."""

    def __init__(self, plan: Plan, index: int, rig: Rig, settings: str = "relay 127.0.0.1:25"):
        self.balancer = plan.balancer(index)
        self.held: list[socket.socket] = []
        self.balancer.sessions = lambda: len(self.held)
        self.balancer.listener("relay", self.serve, settings)
        self._rig = rig

    async def serve(self, conn: socket.socket) -> None:
        conn.sendall(b"220 worker %d\r\n" % (self.balancer.me + 1))
        self.held.append(conn)
        self._rig.served()


class Rig:
    """``workers`` Balancers; every connection arrives at worker 1, as if the kernel's hash sent them all there."""

    def __init__(self, workers: int, done: Callable[[Rig], bool] = lambda rig: False, settings: tuple[str, ...] = ()):
        self.plan = Plan(workers)
        self.done = asyncio.Event()
        self._done = done
        self.workers = [Worker(self.plan, i, self, *settings[i - 1:i]) for i in range(1, workers + 1)]
        for w in self.workers:
            w.balancer.start()
        self.listening = Listening("relay", "127.0.0.1", 0, self.workers[0].balancer)
        self.listening.start()
        self.port = self.listening.sockets[0].getsockname()[1]
        self.clients: list[socket.socket] = []

    def served(self) -> None:
        if self._done(self):
            self.done.set()

    def held(self) -> list[int]:
        return [len(w.held) for w in self.workers]

    def close(self) -> None:
        self.listening.close()
        for w in self.workers:
            w.balancer.stop()
            for conn in w.held:
                conn.close()
        for c in self.clients:
            c.close()
        self.plan.close()

    def open(self, n: int) -> list[socket.socket]:
        """``n`` client connections, not waiting for anything."""
        new = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", self.port))
            c.setblocking(False)
            new.append(c)
        self.clients += new
        return new

    async def connect(self, n: int) -> list[bytes]:
        """``n`` client connections at once, then each one's greeting (which worker served it)."""
        loop = asyncio.get_running_loop()
        return [await asyncio.wait_for(loop.sock_recv(c, 100), 10) for c in self.open(n)]


async def test_connections_that_all_arrive_at_one_worker_are_spread_evenly():
    rig = Rig(3)
    try:
        greetings = await rig.connect(9)  # all nine at once: a burst, decided before any is served
        assert rig.held() == [3, 3, 3]
        assert sorted(greetings) == [b"220 worker %d\r\n" % i for i in (1, 1, 1, 2, 2, 2, 3, 3, 3)]
        balancers = [w.balancer for w in rig.workers]
        assert (balancers[0].passed, balancers[1].received, balancers[2].received) == (6, 3, 3)
        # A connection received from another worker is not inherited by the worker's children (PDF readers).
        assert not any(os.get_inheritable(conn.fileno()) for w in rig.workers[1:] for conn in w.held)
        # Nothing is on its way any more: the loads are the sessions held.
        assert [rig.plan.board.load(k) for k in range(3)] == [3, 3, 3]
    finally:
        rig.close()


async def test_a_session_that_ends_makes_room_for_the_next():
    rig = Rig(2)
    try:
        assert await rig.connect(2) == [b"220 worker 1\r\n", b"220 worker 2\r\n"]
        rig.workers[1].held.pop().close()  # worker 2's session ends
        rig.workers[1].balancer.refresh()
        assert await rig.connect(1) == [b"220 worker 2\r\n"]
        assert await rig.connect(1) == [b"220 worker 1\r\n"]  # level again: worker 1 keeps its own
    finally:
        rig.close()


async def test_a_worker_that_is_not_taking_connections_gets_none():
    rig = Rig(2)
    try:
        rig.workers[1].balancer.stop()  # draining
        assert await rig.connect(3) == [b"220 worker 1\r\n"] * 3
    finally:
        rig.close()


async def test_a_connection_that_cannot_be_passed_is_served_where_it_arrived(caplog):
    rig = Rig(2)
    inbox = rig.plan._pairs[1][0]
    try:
        asyncio.get_running_loop().remove_reader(inbox.fileno())
        inbox.shutdown(socket.SHUT_RDWR)  # worker 2's inbox is gone, yet its row says it takes connections
        assert await rig.connect(4) == [b"220 worker 1\r\n"] * 4
        assert rig.workers[0].balancer.passed == 0
        assert rig.plan.board.load(1) == 0  # a failed pass is not left counted as on its way
        assert "cannot pass a connection to worker 2" in caplog.text
    finally:
        asyncio.get_running_loop().add_reader(inbox.fileno(), lambda: None)  # stop() takes it off again
        rig.close()


async def test_a_worker_behind_on_its_queue_gets_what_fits_and_the_rest_is_served_where_it_arrived():
    n = 60
    rig = Rig(2, done=lambda rig: len(rig.workers[0].held) + rig.workers[0].balancer.passed >= n)
    inbox = rig.plan._pairs[1][0]
    loop = asyncio.get_running_loop()
    loop.remove_reader(inbox.fileno())  # worker 2 reads nothing for now
    # Its queue is bounded by the senders' buffer (a few hundred passes by default; here a handful).
    rig.plan._pairs[1][1].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        connecting = loop.create_task(rig.connect(n))
        await asyncio.wait_for(rig.done.wait(), 10)  # every connection accepted and placed
        # Worker 2 looked less busy at every other connection (n / 2 passes), but its queue filled up.
        passed = rig.workers[0].balancer.passed
        assert 0 < passed < n // 2, passed
        loop.add_reader(inbox.fileno(), rig.workers[1].balancer._receive)  # worker 2 catches up
        greetings = await connecting
        assert rig.held() == [n - passed, passed]  # every connection served, none lost
        assert greetings.count(b"220 worker 2\r\n") == passed
    finally:
        rig.close()


async def test_connections_go_only_to_workers_with_the_same_listeners():
    rig = Rig(2, settings=("relay 127.0.0.1:25", "relay 127.0.0.1:2525"))  # worker 2 started after a change
    try:
        assert await rig.connect(4) == [b"220 worker 1\r\n"] * 4
    finally:
        rig.close()


@pytest.mark.parametrize("how", ["the worker stops", "the worker dies"])
async def test_connections_queued_for_a_worker_that_stops_or_dies_are_closed_and_not_counted(how):
    rig = Rig(2, done=lambda rig: rig.workers[0].balancer.passed == 1 and len(rig.workers[0].held) == 1)
    inbox = rig.plan._pairs[1][0]
    loop = asyncio.get_running_loop()
    loop.remove_reader(inbox.fileno())  # worker 2 is busy: what is passed to it waits
    try:
        first, second = rig.open(2)
        await asyncio.wait_for(rig.done.wait(), 10)
        assert rig.plan.board.load(1) == 1  # on its way
        if how == "the worker stops":
            loop.add_reader(inbox.fileno(), lambda: None)  # stop() takes it off
            rig.workers[1].balancer.stop()
        else:
            rig.plan.gone(2)  # the supervisor, once the worker has exited
        assert await asyncio.wait_for(loop.sock_recv(first, 100), 10) == b"220 worker 1\r\n"
        assert await asyncio.wait_for(loop.sock_recv(second, 100), 10) == b""  # closed, never greeted
        assert rig.plan.board.load(1) == 0 and not rig.plan.board.taking(1)
        assert await rig.connect(1) == [b"220 worker 1\r\n"]  # nothing more goes to it
    finally:
        rig.close()


@pytest.mark.parametrize("workers", [2, 5])
def test_the_board_counts_what_is_on_its_way(workers):
    plan = Plan(workers)
    try:
        board = plan.board
        board.set_open(1, 4)
        board.add_sent(0, 1, 1)
        board.add_sent(0, 1, 1)
        assert board.load(1) == 6
        board.add_taken(0, 1)
        assert board.load(1) == 5
        board.set_taking(1, True)
        assert board.taking(1) and not board.taking(0)
        plan.gone(2)
        assert not board.taking(1) and board.load(1) == 0  # its sessions went with it, and what was on its way
        board.set_listeners(0, 12345)
        assert board.listeners(0) == 12345 and board.listeners(1) == 0
    finally:
        plan.close()
