"""Sessions spread evenly over the serving processes (``workers: N``, mailgw.workers).

The workers share each SMTP port through SO_REUSEPORT, and the kernel picks a
worker for every new connection from a hash of its addresses. Over many short
sessions that evens out; over a few long ones it does not. A mail server that
keeps 5 sessions open to the gateway lands them 4 to 1 or 5 to 0 on two
workers about one time in three, and 20 sessions land 12 to 8 or worse as
often as not. For as long as those sessions stay open one worker's core does
most of the work while the other idles: on the Postfix bench (5 KB, 5
sessions) a 0:5 run gave 302 messages a second and a p99 of 24.8 ms, a 2:3 run
424 and 16.7 ms (README, Performance). Postfix gives each session a process of
its own, and the kernel's scheduler shares the cores among them.

So each worker still accepts on its own socket, but one that holds more
sessions than the least busy other worker passes the new connection to that
worker before a byte is sent, as Postfix's master hands a listening socket's
next connection to an idle ``smtpd``. The connection's file descriptor goes over a
private UNIX socket pair the supervisor made (SCM_RIGHTS), with the listener's
name; the other worker serves it as if it had accepted it itself, and the
client sees nothing but its greeting. Sessions are never moved once they have
begun, and a worker never passes on a connection it was given.

Who holds how many sessions is on a **board** in shared memory (a ``memfd``
the supervisor made): a row of 64-bit cells per worker. Each cell has one
writer, so no lock is needed; a value read while it changes is only a hint.

- ``open[k]``, written by worker k: its SMTP sessions, and connections it is starting;
- ``taking[k]``, written by worker k (and by the supervisor once k has died): 1 while k
  takes connections;
- ``listeners[k]``, written by worker k: a digest of its listeners' settings. Connections
  are passed only between workers whose listeners are the same (a worker started again
  after a reload reads the settings file as it is now, and listeners change only at a restart);
- ``sent[s][k]``, written by worker s: connections it passed to worker k, ever;
- ``taken[s][k]``, written by worker k: of those, the ones it has received.

Worker k's load is ``open[k]`` plus what was passed to it and is not taken
yet, so a burst of connections that arrive together is spread too, not sent
all to the worker that looked least busy before it began.

If passing fails (that worker's queue is full), the worker that accepted
serves the connection itself. Connections still queued for a worker that
stops, or dies, are closed (by the worker as it drains, or by the supervisor
when it sees the worker gone), as the kernel closes what waits in a closed
listener's queue; their clients have not been greeted and try again. The
supervisor keeps the socket pair for the worker started in its place.

The milter and policy listeners are spread by the kernel alone.
"""

from __future__ import annotations

import array
import asyncio
import errno
import hashlib
import logging
import mmap
import os
import socket
import struct
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

BACKLOG = 100  # as asyncio's create_server
_CELL = struct.Struct("q")
_NAME_MAX = 256  # a listener's name and the sender's index, in one datagram


class Board:
    """Shared counts of the workers' sessions (see the module's docstring); worker indexes from 0."""

    def __init__(self, fd: int, workers: int):
        self.workers = workers
        self._map = mmap.mmap(fd, self.size(workers))

    @staticmethod
    def size(workers: int) -> int:
        return _CELL.size * (3 * workers + 2 * workers * workers)

    @classmethod
    def create(cls, workers: int) -> tuple[Board, int]:
        """A new board, zeroed, and its file descriptor (close-on-exec: passed to a worker explicitly)."""
        fd = os.memfd_create("mailgw-board", os.MFD_CLOEXEC)
        os.ftruncate(fd, cls.size(workers))
        return cls(fd, workers), fd

    def _at(self, cell: int) -> int:
        return int(_CELL.unpack_from(self._map, cell * _CELL.size)[0])

    def _put(self, cell: int, value: int) -> None:
        _CELL.pack_into(self._map, cell * _CELL.size, value)

    def _sent(self, s: int, k: int) -> int:
        return 3 * self.workers + s * self.workers + k

    def _taken(self, s: int, k: int) -> int:
        return 3 * self.workers + self.workers * self.workers + s * self.workers + k

    def set_open(self, k: int, count: int) -> None:
        self._put(k, count)

    def set_taking(self, k: int, taking: bool) -> None:
        self._put(self.workers + k, 1 if taking else 0)

    def taking(self, k: int) -> bool:
        return self._at(self.workers + k) == 1

    def set_listeners(self, k: int, digest: int) -> None:
        self._put(2 * self.workers + k, digest)

    def listeners(self, k: int) -> int:
        return self._at(2 * self.workers + k)

    def load(self, k: int) -> int:
        """Worker k's sessions, and the connections passed to it that it has not received yet."""
        n = self.workers
        waiting = sum(self._at(self._sent(s, k)) - self._at(self._taken(s, k)) for s in range(n) if s != k)
        return self._at(k) + max(0, waiting)

    def add_sent(self, s: int, k: int, delta: int) -> None:
        self._put(self._sent(s, k), self._at(self._sent(s, k)) + delta)

    def add_taken(self, s: int, k: int) -> None:
        self._put(self._taken(s, k), self._at(self._taken(s, k)) + 1)

    def gone(self, k: int) -> None:
        """The supervisor's, once worker k has died and what was queued for it is closed: its
        sessions went with it, nothing is on its way to it, and it takes nothing until it listens again."""
        self.set_taking(k, False)
        self.set_open(k, 0)
        for s in range(self.workers):
            if s != k:
                self._put(self._taken(s, k), self._at(self._sent(s, k)))

    def close(self) -> None:
        self._map.close()


class Plan:
    """The supervisor's side: the board and one socket pair per worker (its inbox), for the whole run.

    A worker started again gets the same inbox, emptied when the worker it replaces exited (``gone``).
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.board, self._board_fd = Board.create(workers)
        # [0]: the worker's end (it receives), [1]: every other worker's end (they send)
        self._pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]

    def fds(self) -> tuple[int, ...]:
        """What a worker inherits (pass_fds)."""
        return (self._board_fd, *(p[0].fileno() for p in self._pairs), *(p[1].fileno() for p in self._pairs))

    def spec(self, index: int) -> str:
        """The ``--balance`` argument for worker ``index`` (from 1, as ``--worker``)."""
        inboxes = ",".join(str(p[0].fileno()) for p in self._pairs)
        outboxes = ",".join(str(p[1].fileno()) for p in self._pairs)
        return f"{self._board_fd}:{index - 1}:{inboxes}:{outboxes}"

    def gone(self, index: int) -> None:
        """Worker ``index`` has exited: close the connections queued for it (never greeted), then clear its row."""
        closed = len(_discard_queued(self._pairs[index - 1][0]))
        if closed:
            log.warning("balance: %d connection(s) passed to worker %d as it died closed; their clients try again",
                        closed, index)
        self.board.gone(index - 1)

    def balancer(self, index: int) -> Balancer:
        """Worker ``index``'s side in this process (tests; a worker builds its own from ``spec``)."""
        me = index - 1
        return Balancer(self.board, me, self._pairs[me][0], {k: p[1] for k, p in enumerate(self._pairs) if k != me})

    def close(self) -> None:
        for a, b in self._pairs:
            a.close()
            b.close()
        self.board.close()
        os.close(self._board_fd)


Serve = Callable[[socket.socket], Awaitable[Any]]


class Balancer:
    """A worker's side: where each new connection is served, and the connections other workers pass to it."""

    def __init__(self, board: Board, me: int, inbox: socket.socket, outboxes: dict[int, socket.socket]):
        """Worker ``me`` (from 0) of ``board``: ``inbox`` receives what the others pass to it, ``outboxes[k]`` reach worker k."""
        self.board = board
        self.me = me
        self._inbox = inbox
        self._outboxes = outboxes
        for sock in (inbox, *outboxes.values()):
            sock.setblocking(False)
        self._serve: dict[str, Serve] = {}
        self._keys: list[str] = []
        self._digest = -1  # of this worker's listeners, once it takes connections
        self._stopped = False
        self._starts: set[asyncio.Task[None]] = set()
        self.starting = 0  # connections being started here (not yet sessions)
        self.sessions: Callable[[], int] = lambda: 0
        self.passed = 0  # connections this worker passed on (for the log at the end)
        self.received = 0

    @classmethod
    def from_spec(cls, spec: str) -> Balancer:
        """A worker's, from ``Plan.spec``'s text (the descriptors inherited from the supervisor)."""
        board_fd, me_text, inboxes, outboxes = spec.split(":")
        me = int(me_text)
        ins = [int(fd) for fd in inboxes.split(",")]
        outs = [int(fd) for fd in outboxes.split(",")]
        board = Board(int(board_fd), len(ins))
        os.close(int(board_fd))  # the mapping stays
        for k, fd in enumerate(ins):  # the other workers' inboxes are theirs to read
            if k != me:
                os.close(fd)
        os.close(outs[me])
        for fd in (ins[me], *(fd for k, fd in enumerate(outs) if k != me)):
            os.set_inheritable(fd, False)  # pass_fds made them inheritable: no child of the worker gets them
        return cls(board, me, socket.socket(fileno=ins[me]), {k: socket.socket(fileno=fd) for k, fd in enumerate(outs) if k != me})

    # --- set-up, by the gateway --------------------------------------------------------------

    def listener(self, name: str, serve: Serve, settings: str = "") -> None:
        """Connections of listener ``name`` are started by ``serve`` (here or in the worker they are passed to).

        ``settings``: the listener's settings as text; connections go only to workers whose listeners are the same.
        """
        self._serve[name] = serve
        self._keys.append(f"{name}\0{settings}")

    def start(self) -> None:
        """Take connections: from the other workers, and (through ``pick``) from the kernel."""
        asyncio.get_running_loop().add_reader(self._inbox.fileno(), self._receive)
        digest = hashlib.sha256("\n".join(sorted(self._keys)).encode()).digest()
        self._digest = int.from_bytes(digest[:7], "big")
        self.board.set_listeners(self.me, self._digest)
        self.refresh()
        self.board.set_taking(self.me, True)

    def stop(self) -> None:
        """Take no more (drain): connections queued here are closed, as in a closed listener's queue."""
        self._stopped = True
        self.board.set_taking(self.me, False)
        asyncio.get_running_loop().remove_reader(self._inbox.fileno())
        for sender in _discard_queued(self._inbox):
            self._taken_from(sender)
        if self.passed or self.received:
            log.info("balance: %d connection(s) passed to other workers, %d received from them", self.passed,
                     self.received)

    def out_of_files(self) -> None:
        """This worker cannot accept (out of descriptors): take nothing from the others for a second."""
        self.board.set_taking(self.me, False)
        asyncio.get_running_loop().call_later(1.0, self._take_again)

    def _take_again(self) -> None:
        if not self._stopped:
            self.board.set_taking(self.me, True)

    def refresh(self) -> None:
        """Publish this worker's session count (called when a session begins or ends)."""
        self.board.set_open(self.me, self.sessions() + self.starting)

    # --- a new connection -------------------------------------------------------------------

    def dispatch(self, name: str, conn: socket.socket) -> None:
        """Serve ``conn`` (just accepted on listener ``name``) here, or pass it to a less busy worker."""
        k = self.pick()
        if k is not None and self._pass(k, name, conn):
            conn.close()
            return
        self._serve_here(name, conn)

    def pick(self) -> int | None:
        """The worker to pass a new connection to: one with fewer sessions than this one, the least busy."""
        board = self.board
        best, target = board.load(self.me), None
        for k in self._outboxes:
            if board.taking(k) and board.listeners(k) == self._digest:
                load = board.load(k)
                if load < best:
                    best, target = load, k
        return target

    def _pass(self, k: int, name: str, conn: socket.socket) -> bool:
        self.board.add_sent(self.me, k, 1)  # before the send: the receiver's count never runs ahead of it
        try:
            socket.send_fds(self._outboxes[k], [f"{self.me} {name}".encode()], [conn.fileno()])  # read by _label
        except OSError as e:  # full (that worker is behind) or gone: serve it here
            self.board.add_sent(self.me, k, -1)
            if not isinstance(e, BlockingIOError):
                log.warning("balance: cannot pass a connection to worker %d (%s); served here", k + 1, e)
            return False
        self.passed += 1
        return True

    def _receive(self) -> None:
        for _ in range(BACKLOG):
            try:
                data, fds, flags = _recv_fd(self._inbox, 0)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.error("balance: reading passed connections failed: %s", e)
                return
            sender, name = _label(data)
            if flags & socket.MSG_CTRUNC:  # the kernel could not give us the descriptor: that client was cut off
                log.error("balance: a connection passed by worker %d was lost: out of file descriptors", sender + 1)
            for extra in fds[1:]:
                os.close(extra)
            conn = socket.socket(fileno=fds[0]) if fds else None
            if conn is not None and name not in self._serve:  # never: the workers run the same settings
                log.error("balance: a connection passed for unknown listener %r closed", name)
                conn.close()
                conn = None
            if conn is not None:
                self.received += 1
                self._serve_here(name, conn)  # counted here before it stops counting as on its way
            self._taken_from(sender)

    def _taken_from(self, sender: int) -> None:
        """A connection worker ``sender`` passed here is no longer on its way (served or closed)."""
        if 0 <= sender < self.board.workers and sender != self.me:
            self.board.add_taken(sender, self.me)

    def _serve_here(self, name: str, conn: socket.socket) -> None:
        self.starting += 1
        self.refresh()
        task = asyncio.get_running_loop().create_task(self._start(name, conn))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _start(self, name: str, conn: socket.socket) -> None:
        try:
            await self._serve[name](conn)
        except OSError as e:  # the client left already
            log.debug("listener %s: connection not started: %s", name, e)
            conn.close()
        finally:
            self.starting -= 1
            self.refresh()


class Listening:
    """One TCP listener whose connections go through a Balancer: the parts of asyncio's Server the gateway uses."""

    def __init__(self, name: str, host: str, port: int, balancer: Balancer):
        self.name = name
        self.balancer = balancer
        self.sockets = _bind(host, port)
        self._serving = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._serving = True

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if self._serving:
            loop = asyncio.get_running_loop()
            for sock in self.sockets:
                loop.remove_reader(sock.fileno())
            self._serving = False
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        return None  # as asyncio's Server of Python 3.11 once closed: the sessions are the gateway's to wait for

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(BACKLOG):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # As asyncio does: out of descriptors or memory, stop accepting for a second.
                    log.error("listener %s: cannot accept (%s); trying again in 1 s", self.name, e)
                    self.balancer.out_of_files()
                    loop = asyncio.get_running_loop()
                    loop.remove_reader(sock.fileno())
                    loop.call_later(1.0, self._resume, sock)
                    return
                log.error("listener %s: cannot accept: %s", self.name, e)
                return
            self.balancer.dispatch(self.name, conn)

    def _resume(self, sock: socket.socket) -> None:
        if self._serving:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host``:``port`` sharing the port with the other workers, as asyncio's create_server makes them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # that family is not on this machine (IPv6 turned off): as asyncio, the others serve
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                raise OSError(e.errno, f"error while attempting to bind on address {address!r}: {e.strerror}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"no socket could be made for {host}:{port}")
    return sockets


def _recv_fd(inbox: socket.socket, flags: int) -> tuple[bytes, list[int], int]:
    """One passed connection: (datagram, descriptors, message flags), the descriptors close-on-exec.

    Python 3.11's ``socket.recv_fds`` drops its ``flags`` (MSG_CMSG_CLOEXEC, MSG_DONTWAIT): this is it with them.
    """
    fds = array.array("i")
    data, ancillary, msg_flags, _ = inbox.recvmsg(_NAME_MAX, socket.CMSG_LEN(fds.itemsize),
                                                         flags | socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), msg_flags


def _label(data: bytes) -> tuple[int, str]:
    """A passed connection's datagram: the index of the worker that passed it (-1 if unreadable) and its listener."""
    sender, _, name = data.decode("utf-8", "replace").partition(" ")
    return (int(sender) if sender.isdigit() else -1), name


def _discard_queued(inbox: socket.socket) -> list[int]:
    """Close the connections waiting in ``inbox`` (never greeted); the index of the worker that passed each."""
    senders: list[int] = []
    while True:
        try:
            data, fds, _ = _recv_fd(inbox, socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError: nothing queued
            return senders
        for fd in fds:
            os.close(fd)
        senders.append(_label(data)[0])
