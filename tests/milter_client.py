"""A small MTA side of the milter protocol, for the tests: what Postfix sends, through kilter.protocol's messages.

It negotiates like Postfix 3 (protocol version 6, every action and protocol
option offered), honours the no-reply options the filter asks for, and
returns the filter's answer to each event, the header and recipient actions
at the end of the message included. :func:`apply` makes the message the MTA
would queue from those actions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from typing import Any

from kilter.protocol import (
    AddRecipient,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    InsertHeader,
    Macro,
    Negotiate,
    Quarantine,
    ReplyCode,
)
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.messages import ActionFlags, Message, ProtocolFlags, Stage

FINAL = ("Continue", "Reject", "Discard", "Accept", "TemporaryFailure", "ReplyCode", "Skip")
NR = {
    "Connect": ProtocolFlags.NR_CONNECT, "Helo": ProtocolFlags.NR_HELO, "EnvelopeFrom": ProtocolFlags.NR_SENDER,
    "EnvelopeRecipient": ProtocolFlags.NR_RECIPIENT, "Header": ProtocolFlags.NR_HEADER,
    "EndOfHeaders": ProtocolFlags.NR_END_OF_HEADERS, "Body": ProtocolFlags.NR_BODY,
}


@dataclasses.dataclass
class Outcome:
    """The filter's answer to a whole transaction: the final answer, its reply text, the actions."""

    answer: str  # Continue, ReplyCode, TemporaryFailure ...
    reply: str = ""  # the replycode's text
    actions: list[Any] = dataclasses.field(default_factory=list)
    stage: str = "EndOfMessage"  # the event that got a final answer other than Continue

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


class MilterClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.negotiated: Negotiate | None = None

    async def open(self, host: str, port: int) -> Negotiate:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        return await self._negotiate()

    async def _negotiate(self) -> Negotiate:
        offer = Negotiate(6, ActionFlags.ALL, ProtocolFlags(0x1FFFFF))  # as Postfix 3: everything it can
        answers = await self.send(offer)
        assert len(answers) == 1 and isinstance(answers[0], Negotiate), answers
        self.negotiated = answers[0]
        return self.negotiated

    async def open_unix(self, path: str) -> Negotiate:
        self.reader, self.writer = await asyncio.open_unix_connection(path)
        return await self._negotiate()

    async def close(self) -> None:
        if self.writer is not None:
            await self._write(Close())
            self.writer.close()

    async def _write(self, message: Message) -> None:
        assert self.writer is not None
        buf = SimpleBuffer(1 << 20)
        message.pack(buf)
        self.writer.write(buf[:].tobytes())
        await self.writer.drain()

    async def _read(self) -> Message:
        assert self.reader is not None
        head = await self.reader.readexactly(4)
        packet = head + await self.reader.readexactly(int.from_bytes(head, "big"))
        buf = SimpleBuffer(len(packet))
        buf[:] = packet
        message, _ = Message.unpack(buf)
        message.freeze()
        return message

    def _needs_answer(self, event: Message) -> bool:
        if isinstance(event, (Macro, Close)):
            return False
        flag = NR.get(type(event).__name__)
        return not (flag and self.negotiated and flag in self.negotiated.protocol_flags)

    async def send(self, event: Message, macros: dict[str, str] | None = None, stage: Stage | None = None) -> list[Any]:
        """Send one event (its macros first); the filter's answers, up to its final one."""
        if macros:
            await self._write(Macro(_macro_stage(stage), macros))
        await self._write(event)
        if not isinstance(event, Negotiate) and not self._needs_answer(event):
            return []
        out = []
        while True:
            m = await self._read()
            out.append(m)
            if isinstance(m, Negotiate) or type(m).__name__ in FINAL:
                return out

    async def transaction(self, mail_from: str, rcpts: list[str], raw: bytes, *, client: str = "127.0.0.1",
                          helo: str = "mail.example", macros: dict[str, str] | None = None, connect: bool = True,
                          esmtp_args: tuple[str, ...] = ()) -> Outcome:
        """One SMTP transaction as Postfix hands it over; stops at the first final answer that is not continue.

        ``esmtp_args``: the MAIL FROM parameters (``SMTPUTF8``, ``BODY=8BITMIME``), which Postfix passes with the sender.
        """
        m = dict(macros or {})
        steps: list[tuple[Message, dict[str, str], Stage | None]] = []
        if connect:
            steps.append((Connect("client.example", ipaddress.ip_address(client), 40000),
                          {k: v for k, v in m.items() if k in ("j", "{daemon_name}", "{client_addr}")}, Stage.CONNECT))
            steps.append((Helo(helo), {}, Stage.HELO))
        steps.append((EnvelopeFrom(f"<{mail_from}>".encode(), [a.encode() for a in esmtp_args]), {"i": "4XYZ", **{k: v for k, v in m.items() if k == "{auth_authen}"}},
                      Stage.ENVELOPE_FROM))
        for r in rcpts:
            steps.append((EnvelopeRecipient(f"<{r}>".encode(), []), {}, Stage.ENVELOPE_RECIPIENT))
        head, _, body = raw.partition(b"\r\n\r\n")
        for field in split(head):
            name, _, value = field.partition(b":")
            steps.append((Header(name.decode(), value.replace(b"\r\n", b"\n")), {}, None))
        steps.append((EndOfHeaders(), {}, None))
        for start in range(0, len(body), 65535):
            steps.append((Body(body[start:start + 65535]), {}, None))
        steps.append((EndOfMessage(b""), {"i": "4XYZ"}, Stage.END_MESSAGE))
        for event, macros_now, stage in steps:
            answers = await self.send(event, macros_now or None, stage)
            if not answers:
                continue
            final = answers[-1]
            name = type(final).__name__
            if isinstance(event, EndOfMessage) or name != "Continue":
                reply = bytes(final.content).decode() if isinstance(final, ReplyCode) else ""
                return Outcome(name, reply, answers[:-1], type(event).__name__)
        raise AssertionError("no answer to the end of the message")


def _macro_stage(stage: Stage | None) -> int:
    # The command a macro packet is for: its first byte names it (C, H, M, R, E ...).
    return {Stage.CONNECT: ord("C"), Stage.HELO: ord("H"), Stage.ENVELOPE_FROM: ord("M"),
            Stage.ENVELOPE_RECIPIENT: ord("R"), Stage.END_MESSAGE: ord("E")}.get(stage or Stage.CONNECT, ord("C"))


def split(head: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields


def apply(raw: bytes, actions: list[Any]) -> bytes:
    """The message as the MTA queues it after the filter's header actions (insert at 0, delete by index)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = split(head)
    for action in actions:
        if isinstance(action, InsertHeader):
            value = bytes(action.value).replace(b"\n", b"\r\n")
            fields.insert(action.index, action.name.encode() + b":" + value)
        elif isinstance(action, ChangeHeader):
            seen = 0
            for i, f in enumerate(fields):
                if f.partition(b":")[0].strip().lower() == action.name.lower().encode():
                    seen += 1
                    if seen == action.index:
                        if bytes(action.value):
                            fields[i] = action.name.encode() + b":" + bytes(action.value).replace(b"\n", b"\r\n")
                        else:
                            del fields[i]
                        break
    return b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


__all__ = ["AddRecipient", "ChangeHeader", "Continue", "InsertHeader", "MilterClient", "Outcome", "Quarantine", "apply", "split"]
