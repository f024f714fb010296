"""A scripted SMTP client over a raw socket, for what real clients refuse to send."""

from __future__ import annotations

import asyncio


class Dialog:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", local_addr: tuple[str, int] | None = None) -> "Dialog":
        reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
        return cls(reader, writer)

    async def reply(self, timeout: float = 10.0) -> tuple[int, str]:
        """One whole reply (all lines of a multi-line one): its code and its text."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed by server: " + " | ".join(lines))
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(l[4:] for l in lines)

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return await self.reply()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionError, asyncio.TimeoutError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def envelope(self, mail_from: str, rcpts: list[str]) -> None:
        """EHLO, MAIL, RCPT..., asserting each is accepted."""
        assert (await self.reply())[0] == 220
        assert (await self.cmd("EHLO client.test"))[0] == 250
        code, text = await self.cmd(f"MAIL FROM:<{mail_from}>")
        assert code == 250, text
        for r in rcpts:
            code, text = await self.cmd(f"RCPT TO:<{r}>")
            assert code == 250, text
