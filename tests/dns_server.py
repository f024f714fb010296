"""A tiny authoritative DNS server on 127.0.0.1, for the tests that go through the real resolver (dnspython).

It answers from a table (name -> (type, data) pairs, in zone-file text),
NXDOMAIN for names it lacks, SERVFAIL for the names in ``servfail``, and
nothing at all for the names in ``silent`` and below them (the resolver's
timeout: a DNS server that does not answer). Both sets may change while it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, records: dict[str, list[tuple[str, str]]], servfail: Iterable[str] = (),
                 silent: Iterable[str] = ()):
        self.records = records
        self.servfail = set(servfail)
        self.silent = set(silent)
        self.port = 0
        self.queries: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append(name)
        bare = name.rstrip(".")
        if any(bare == s.rstrip(".") or bare.endswith("." + s.rstrip(".")) for s in self.silent):
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            wanted = dns.rdatatype.to_text(question.rdtype)
            values = [v for t, v in self.records[name] if t == wanted]
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 300, dns.rdataclass.IN, wanted, values))
        self.transport.sendto(response.to_wire(), addr)


async def start(records: dict[str, list[tuple[str, str]]], **kw: Any) -> DnsServer:
    """A DnsServer listening on 127.0.0.1, a free port (``.port``), on the running loop; ``.transport.close()`` stops it."""
    server = DnsServer(records, **kw)
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    server.port = server.transport.get_extra_info("sockname")[1]
    return server
