"""The resolvers DKIM verification asks for keys: the answers file, and dnspython against a real (local) DNS server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailgw.config.resolver import DnsResolver, DnsTemporaryError, FileResolver
from mailgw.dkim import SigningKey, load_key, sign, txt_record, verify
from tests.dns_server import start as dns_server_start

DATA = Path(__file__).parent / "data" / "dkim"
DOMAIN = "example.gov.vn"
LETTER = (DATA / "messages" / "official-letter.eml").read_bytes()


async def test_answers_file(tmp_path):
    path = tmp_path / "answers.zone"
    path.write_text(
        "; comments and blank lines are skipped\n"
        "\n"
        'a._domainkey.Example.COM TXT "v=DKIM1; k=ed25519; p=abc"\n'
        'b._domainkey.example.com. 300 IN TXT "v=DKIM1; " "k=rsa; p=MIIB" "AQAB"\n'
        'b._domainkey.example.com. IN TXT "second record"\n'
        'q._domainkey.example.com. TXT "with \\"quotes\\" and \\059 escapes"\n'
        "slow._domainkey.example.com. TIMEOUT\n"
        "broken._domainkey.example.com. SERVFAIL\n"
    )
    resolver = FileResolver.from_file(path)
    assert await resolver.txt("a._domainkey.example.com.") == [b"v=DKIM1; k=ed25519; p=abc"]
    assert await resolver.txt("B._DOMAINKEY.example.com") == [b"v=DKIM1; k=rsa; p=MIIBAQAB", b"second record"]
    assert await resolver.txt("q._domainkey.example.com") == [b'with "quotes" and ; escapes']
    assert await resolver.txt("absent._domainkey.example.com") == []
    with pytest.raises(DnsTemporaryError, match="timeout"):
        await resolver.txt("slow._domainkey.example.com")
    with pytest.raises(DnsTemporaryError, match="SERVFAIL"):
        await resolver.txt("broken._domainkey.example.com")


@pytest.mark.parametrize(("line", "message"), [
    ("a.example.com. CNAME b.example.com.", r"<text>:2: expected TXT, MX, A, AAAA, PTR, TIMEOUT or SERVFAIL, not 'CNAME'"),
    ('a.example.com. TXT "unterminated', r"<text>:2: bad TXT data"),
    ("a.example.com. TIMEOUT 5", r"<text>:2: nothing may follow TIMEOUT"),
])
def test_answers_file_errors_name_the_line(line, message):
    with pytest.raises(ValueError, match=message):
        FileResolver.from_text("; first line\n" + line)


@pytest.fixture
async def dns_server():
    ed = txt_record(DOMAIN, "ed", load_key(DATA / "keys" / "ed25519.pem"))
    rsa = txt_record(DOMAIN, "rsa", load_key(DATA / "keys" / "rsa2048.pem"))
    server = await dns_server_start(
        {f"ed._domainkey.{DOMAIN}.": [("TXT", ed.split(" IN TXT ", 1)[1])],
         f"rsa._domainkey.{DOMAIN}.": [("TXT", rsa.split(" IN TXT ", 1)[1])]},
        servfail={"broken._domainkey.example.gov.vn."},
        silent={"slow._domainkey.example.gov.vn."},
    )
    yield server
    server.transport.close()


async def test_dnspython_resolver_answers(dns_server):
    resolver = DnsResolver(["127.0.0.1"], port=dns_server.port, timeout=2.0)
    (record,) = await resolver.txt(f"rsa._domainkey.{DOMAIN}.")
    assert record.startswith(b"v=DKIM1; k=rsa; p=MIIB") and len(record) > 255  # strings joined
    assert await resolver.txt(f"absent._domainkey.{DOMAIN}.") == []
    with pytest.raises(DnsTemporaryError, match="SERVFAIL"):
        await resolver.txt(f"broken._domainkey.{DOMAIN}.")


async def test_dnspython_resolver_times_out(dns_server):
    resolver = DnsResolver(["127.0.0.1"], port=dns_server.port, timeout=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(DnsTemporaryError, match="timeout"):
        await resolver.txt(f"slow._domainkey.{DOMAIN}.")
    assert asyncio.get_running_loop().time() - started < 2


async def test_verify_through_dns(dns_server):
    keys = [SigningKey.from_file(DOMAIN, sel, DATA / "keys" / f) for sel, f in (("rsa", "rsa2048.pem"), ("ed", "ed25519.pem"))]
    slow = SigningKey.from_file(DOMAIN, "slow", DATA / "keys" / "ed25519.pem")
    signed = sign(LETTER, keys + [slow, keys[0]]) + LETTER
    report = await verify(signed, DnsResolver(["127.0.0.1"], port=dns_server.port, timeout=0.3))
    assert [(s.s, s.result) for s in report.signatures] == [
        ("rsa", "pass"), ("ed", "pass"), ("slow", "temperror"), ("rsa", "pass")]
    assert report.aligned_pass
    # One query per distinct key, however many signatures use it (dnspython
    # retries the silent server within its time limit).
    assert dns_server.queries.count(f"rsa._domainkey.{DOMAIN}.") == 1
