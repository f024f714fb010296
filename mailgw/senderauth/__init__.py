"""Sender authentication beyond DKIM: SPF (spf.py), DMARC (dmarc.py) and ARC (arc.py), and what they share.

Both look DNS up through the gateway's resolver (mailgw.config.resolver), each
lookup bounded by :func:`bounded`; their verdicts become typed facts
(mailgw.message.facts.SpfFacts, DmarcFacts, ArcFacts) and clauses of our
Authentication-Results field, written with the helpers below.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mailgw.config.resolver import DnsTemporaryError
from mailgw.dkim.results import _comment, _value

__all__ = ["address_value", "bounded", "resinfo_value", "result_comment"]


class _Bounded:
    """A resolver whose every lookup ends within ``timeout`` seconds (a late answer is a DnsTemporaryError)."""

    def __init__(self, resolver: Any, timeout: float):
        self._resolver = resolver
        self._timeout = timeout

    async def _wait(self, what: str, name: str, make: Any) -> Any:
        try:
            return await asyncio.wait_for(make, self._timeout)
        except asyncio.TimeoutError as e:
            raise DnsTemporaryError(f"timeout looking up {what} {name}") from e

    async def txt(self, name: str) -> list[bytes]:
        result: list[bytes] = await self._wait("TXT", name, self._resolver.txt(name))
        return result

    async def mx(self, name: str) -> list[tuple[int, str]]:
        result: list[tuple[int, str]] = await self._wait("MX", name, self._resolver.mx(name))
        return result

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        result: list[str] = await self._wait(rdtype, name, self._resolver.lookup(name, rdtype))
        return result


def bounded(resolver: Any, timeout: float) -> _Bounded:
    return _Bounded(resolver, timeout)


def resinfo_value(text: str) -> str:
    """A token as it is, anything else as a quoted-string (RFC 8601 ``value``)."""
    return _value(text)


def address_value(address: str) -> str:
    """An address as an RFC 8601 ``pvalue``: ``local@domain`` with the local part a token or a quoted-string."""
    local, at, domain = address.rpartition("@")
    if at and local and _value(domain) == domain:
        return f"{_value(local)}@{domain}"
    return _value(address)


def result_comment(text: str) -> str:
    """`` (text)`` as an RFC 5322 comment, printable ASCII and bounded; "" for no text."""
    return f" ({_comment(text)})" if text else ""
