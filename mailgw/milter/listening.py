"""What the milter and policy listeners share: a socket an MTA connects to, and the connections it has open."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from mailgw.config.settings import Listener
from mailgw.smtp.edge import Edge


class MtaListener:
    """One listener an MTA connects to, on TCP or a UNIX socket; ``_serve`` is one connection's work."""

    limit = 64 * 1024  # the largest line or packet the reader buffers

    def __init__(self, edge: Edge, listener: Listener):
        self.edge = edge
        self.listener = listener
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def start(self, *, reuse_port: bool = False) -> tuple[str, int]:
        l = self.listener
        if l.path:
            remove_stale_socket(l.path)
            self.server = await asyncio.start_unix_server(self._serve, l.path, limit=self.limit)
            # The MTA's user (postfix) connects: group-writable, so an admin adds it to mailgw's group.
            os.chmod(l.path, 0o660)
            return l.path, 0
        self.server = await asyncio.start_server(self._serve, l.host, l.port, reuse_address=True, reuse_port=reuse_port,
                                                 limit=self.limit)
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.connections):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


def remove_stale_socket(path: str) -> None:
    """A socket file left by a previous run is removed; any other file there is an error of the settings."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    os.unlink(path)
