"""The `mx` route: MX lookups through the gateway's resolver, preference order, fallback, and what is permanent.

Real sinks listen on 127.0.0.2, 127.0.0.3, ... (all of 127.0.0.0/8 is the loopback)
on one port, which the settings' test-rig knob ``dns.mx_port`` points the route at;
DNS answers come from an answers file, or from a small DNS server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from pathlib import Path
from typing import AsyncIterator

import pytest

from mailgw.config.resolver import DnsNameError, DnsResolver, DnsTemporaryError, FileResolver
from tests.conftest import GatewayFactory, message, send
from tests.dns_server import DnsServer
from tests.dns_server import start as dns_server_start
from tests.sink import Sink

SENDER = "vanthu.sotttt@binhthuan.gov.vn"  # local: its DSNs go to the local route's sink


class MxSinks:
    """Recording SMTP servers on 127.0.0.2 ... 127.0.0.6, all on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.at: dict[str, Sink] = {}

    async def start(self) -> None:
        for _ in range(10):
            first = Sink("127.0.0.2", 0)
            await first.start()
            self.port, self.at = first.port, {"127.0.0.2": first}
            try:
                for last in range(3, 7):
                    sink = Sink(f"127.0.0.{last}", self.port)
                    await sink.start()
                    self.at[sink.host] = sink
                return
            except OSError:  # the port is taken on one of the addresses: try another
                await self.stop()
        raise RuntimeError("no port free on 127.0.0.2-6")

    async def stop(self) -> None:
        for sink in self.at.values():
            await sink.stop()

    def received(self) -> dict[str, list[list[str]]]:
        return {host: [m.rcpts for m in sink.messages] for host, sink in self.at.items() if sink.messages}


@pytest.fixture
async def mx_sinks() -> AsyncIterator[MxSinks]:
    sinks = MxSinks()
    await sinks.start()
    yield sinks
    await sinks.stop()


ZONE = """\
; the answers the tests' gateway gets from "DNS"
example.vn.        IN MX 20 mx2.example.vn.
example.vn.        IN MX 10 mx1.example.vn.
mx1.example.vn.    IN A  127.0.0.2
mx2.example.vn.    IN A  127.0.0.3
refusing.vn.       IN MX 10 closed.refusing.vn.
refusing.vn.       IN MX 20 open.refusing.vn.
closed.refusing.vn. IN A 127.0.0.9
open.refusing.vn.  IN A  127.0.0.3
busy.vn.           IN MX 10 mx1.example.vn.
busy.vn.           IN MX 20 mx2.example.vn.
plain.vn.          IN A  127.0.0.4
nomail.vn.         IN MX 0 .
slow.vn.           TIMEOUT
broken.vn.         SERVFAIL
halfgone.vn.       IN MX 10 gone.halfgone.vn.
halfgone.vn.       IN MX 20 mx2.example.vn.
allgone.vn.        IN MX 10 gone.allgone.vn.
bare.vn.           IN TXT "a name with neither MX nor address"
"""


async def _gateway(make_gateway: GatewayFactory, tmp_path: Path, sink: Sink, mx_sinks: MxSinks, zone: str = ZONE):  # type: ignore[no-untyped-def]
    (tmp_path / "answers.zone").write_text(zone)
    return await make_gateway(
        routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": "mx"},
        dns={"answers": "answers.zone", "mx_port": mx_sinks.port},
    )


def _dsns(sink: Sink) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
            for m in sink.messages if m.mail_from == ""]


def _status(dsn: email.message.EmailMessage) -> str:
    part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    return part.as_string()


async def test_the_most_preferred_mx_host_gets_the_message(make_gateway, tmp_path, sink, mx_sinks, caplog):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    with caplog.at_level(logging.INFO, logger="mailgw.delivery.worker"):
        await send(gw, "relay", message(to="nam@example.vn"), SENDER, ["nam@example.vn"])
        await mx_sinks.at["127.0.0.2"].wait_for(lambda: bool(mx_sinks.at["127.0.0.2"].messages))
        await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.2": [["nam@example.vn"]]}
    assert any(f"relay=mx1.example.vn[127.0.0.2]:{mx_sinks.port}" in r.getMessage() for r in caplog.records)
    assert gw.spool.ids() == []


async def test_a_refused_connection_falls_back_to_the_next_mx_in_the_same_attempt(make_gateway, tmp_path, sink, mx_sinks, caplog):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    with caplog.at_level(logging.INFO, logger="mailgw.delivery.worker"):
        await send(gw, "relay", message(to="an@refusing.vn"), SENDER, ["an@refusing.vn"])
        await mx_sinks.at["127.0.0.3"].wait_for(lambda: bool(mx_sinks.at["127.0.0.3"].messages))
        await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.3": [["an@refusing.vn"]]}
    sent = [r.getMessage() for r in caplog.records if "status=sent" in r.getMessage()]
    assert len(sent) == 1 and "attempt=1" in sent[0] and "open.refusing.vn[127.0.0.3]" in sent[0]


async def test_a_4xx_from_the_first_mx_falls_back_to_the_next(make_gateway, tmp_path, sink, mx_sinks):
    mx_sinks.at["127.0.0.2"].data_reply = lambda rcpts: "451 4.3.0 try again later"
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    await send(gw, "relay", message(to="binh@busy.vn"), SENDER, ["binh@busy.vn"])
    await mx_sinks.at["127.0.0.3"].wait_for(lambda: bool(mx_sinks.at["127.0.0.3"].messages))
    await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.3": [["binh@busy.vn"]]}
    assert not _dsns(sink)


async def test_a_5xx_from_the_first_mx_is_final(make_gateway, tmp_path, sink, mx_sinks):
    mx_sinks.at["127.0.0.2"].rcpt_reply = lambda rcpt: "550 5.1.1 no such user"
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    await send(gw, "relay", message(to="ai@busy.vn"), SENDER, ["ai@busy.vn"])
    await sink.wait_for(lambda: bool(_dsns(sink)))
    await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {}  # the second MX host is not asked to override a refusal
    assert "Status: 5.1.1" in _status(_dsns(sink)[0])


async def test_without_mx_the_domain_itself_is_the_mail_server(make_gateway, tmp_path, sink, mx_sinks):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    await send(gw, "relay", message(to="chi@plain.vn"), SENDER, ["chi@plain.vn"])
    await mx_sinks.at["127.0.0.4"].wait_for(lambda: bool(mx_sinks.at["127.0.0.4"].messages))
    await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.4": [["chi@plain.vn"]]}


@pytest.mark.parametrize(("rcpt", "status"), [
    ("dung@nowhere.vn", "5.1.2"),     # NXDOMAIN: the domain does not exist
    ("em@nomail.vn", "5.1.10"),       # null MX (RFC 7505)
    ("gia@allgone.vn", "5.4.4"),      # its only MX host does not exist
    ("ha@bare.vn", "5.4.4"),          # neither MX nor address
])
async def test_a_domain_that_takes_no_mail_gets_exactly_one_dsn(make_gateway, tmp_path, sink, mx_sinks, rcpt, status):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    await send(gw, "relay", message(to=rcpt), SENDER, [rcpt, "ok@example.vn"])
    await sink.wait_for(lambda: bool(_dsns(sink)))
    await gw.deliverer.run_until_empty()
    await asyncio.sleep(0.3)  # a second DSN, if there were one, would have been sent by now
    (dsn,) = _dsns(sink)
    report = _status(dsn)
    assert f"Final-Recipient: rfc822; {rcpt}" in report and f"Status: {status}" in report
    assert "ok@example.vn" not in report
    assert mx_sinks.received() == {"127.0.0.2": [["ok@example.vn"]]}
    assert gw.spool.ids() == []


async def test_an_mx_host_that_does_not_exist_is_skipped(make_gateway, tmp_path, sink, mx_sinks):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    await send(gw, "relay", message(to="khanh@halfgone.vn"), SENDER, ["khanh@halfgone.vn"])
    await mx_sinks.at["127.0.0.3"].wait_for(lambda: bool(mx_sinks.at["127.0.0.3"].messages))
    assert mx_sinks.received() == {"127.0.0.3": [["khanh@halfgone.vn"]]}


@pytest.mark.parametrize("domain", ["slow.vn", "broken.vn"])
async def test_a_dns_failure_is_retried_and_delivered_once_dns_answers(make_gateway, tmp_path, sink, mx_sinks, domain):
    gw = await _gateway(make_gateway, tmp_path, sink, mx_sinks)
    rcpt = f"long@{domain}"
    await send(gw, "relay", message(to=rcpt), SENDER, [rcpt])
    (msg_id,) = gw.spool.ids()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while gw.spool.load_state(msg_id).get("attempts", 0) < 2:  # retry_min is 200 ms in the tests
        assert loop.time() < deadline, "no second attempt"
        await asyncio.sleep(0.05)
    state = gw.spool.load_state(msg_id)["rcpts"][rcpt]
    assert state["status"] == "pending" and state["reply"].startswith("4.4.3 DNS lookup of MX")
    assert not _dsns(sink) and mx_sinks.received() == {}
    # DNS recovers (a new answers file, reloaded as on SIGHUP): the next attempt delivers.
    (tmp_path / "answers.zone").write_text(ZONE.replace(f"{domain}.", "old.invalid.")
                                           + f"{domain}. IN MX 10 mx1.example.vn.\n")
    assert gw.reload()
    await mx_sinks.at["127.0.0.2"].wait_for(lambda: bool(mx_sinks.at["127.0.0.2"].messages))
    await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.2": [[rcpt]]} and not _dsns(sink)


# --- the real resolver, against a DNS server on 127.0.0.1 -------------------------------------


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = await dns_server_start(
        {
            "example.vn.": [("MX", "20 mx2.example.vn."), ("MX", "10 mx1.example.vn.")],
            "mx1.example.vn.": [("A", "127.0.0.2")],
            "mx2.example.vn.": [("A", "127.0.0.3"), ("AAAA", "::1")],
            "plain.vn.": [("A", "127.0.0.4")],
            "nomail.vn.": [("MX", "0 .")],
        },
        servfail={"broken.vn."}, silent={"slow.vn."},
    )
    yield server
    server.transport.close()


async def test_the_dnspython_resolver_answers_mx_and_addresses(dns_server):
    resolver = DnsResolver(["127.0.0.1"], port=dns_server.port, timeout=0.5)
    assert sorted(await resolver.mx("example.vn")) == [(10, "mx1.example.vn"), (20, "mx2.example.vn")]
    assert await resolver.mx("nomail.vn") == [(0, "")]
    assert await resolver.mx("plain.vn") == []  # the name exists, without MX
    assert await resolver.addresses("mx2.example.vn") == ["127.0.0.3", "::1"]
    assert await resolver.addresses("nomail.vn") == []
    with pytest.raises(DnsNameError):
        await resolver.mx("nowhere.vn")
    with pytest.raises(DnsNameError):
        await resolver.addresses("nowhere.vn")
    with pytest.raises(DnsTemporaryError, match="SERVFAIL"):
        await resolver.mx("broken.vn")
    with pytest.raises(DnsTemporaryError, match="timeout"):
        await resolver.mx("slow.vn")


async def test_delivery_through_a_real_dns_server(make_gateway, sink, mx_sinks, dns_server):
    gw = await make_gateway(
        routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": "mx"},
        dns={"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": "1s", "mx_port": mx_sinks.port},
    )
    await send(gw, "relay", message(to="nam@example.vn"), SENDER, ["nam@example.vn", "chi@plain.vn", "em@nomail.vn"])
    await sink.wait_for(lambda: bool(_dsns(sink)))
    await gw.deliverer.run_until_empty()
    assert mx_sinks.received() == {"127.0.0.2": [["nam@example.vn"]], "127.0.0.4": [["chi@plain.vn"]]}
    (dsn,) = _dsns(sink)
    assert "Final-Recipient: rfc822; em@nomail.vn" in _status(dsn) and "Status: 5.1.10" in _status(dsn)


# --- the answers file -----------------------------------------------------------------------


async def test_answers_file_mx_and_address_records():
    resolver = FileResolver.from_text(ZONE + "mx2.example.vn. 300 IN AAAA ::1\nrel.vn. MX 5 mx.rel.vn\n")
    assert sorted(await resolver.mx("EXAMPLE.vn.")) == [(10, "mx1.example.vn"), (20, "mx2.example.vn")]
    assert await resolver.mx("rel.vn") == [(5, "mx.rel.vn")]  # names in the data are absolute too
    assert await resolver.mx("nomail.vn") == [(0, "")]
    assert await resolver.mx("plain.vn") == []
    assert await resolver.addresses("mx2.example.vn") == ["127.0.0.3", "::1"]
    assert await resolver.txt("bare.vn") == [b"a name with neither MX nor address"]
    assert await resolver.txt("nowhere.vn") == []  # unchanged for DKIM: absent means no record
    with pytest.raises(DnsNameError):
        await resolver.mx("nowhere.vn")
    with pytest.raises(DnsTemporaryError, match="timeout"):
        await resolver.addresses("slow.vn")
    with pytest.raises(DnsTemporaryError, match="SERVFAIL"):
        await resolver.mx("broken.vn")


@pytest.mark.parametrize(("line", "problem"), [
    ("x.vn. MX ten mx.x.vn.", r"<text>:1: bad MX data"),
    ("x.vn. A 300.1.1.1", r"<text>:1: bad A data"),
    ("x.vn. AAAA 127.0.0.1", r"<text>:1: bad AAAA data"),
    ("x.vn. CNAME y.vn.", r"<text>:1: expected TXT, MX, A, AAAA, PTR, TIMEOUT or SERVFAIL, not 'CNAME'"),
])
def test_answers_file_errors_name_the_line(line, problem):
    with pytest.raises(ValueError, match=problem):
        FileResolver.from_text(line)
