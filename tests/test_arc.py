"""ARC (RFC 8617) over real sockets: a forwarder's chain verified, a trusted forwarder's word, and our own seal.

The chains are made as a real forwarder makes them, with dkimpy: the author's
server signs with DKIM (``dkim.sign``, dkimpy's defaults); the forwarder (a mailing
list in the shape of Mailman 3: subject tag, List-* fields, footer) checks that
signature on receipt, writes its Authentication-Results, changes the message, then
seals it with ``dkim.arc_sign`` (Mailman's arc_sign handler does the same, after
decorating). The change breaks the author's DKIM signature, so DMARC fails at
mailgw; the chain is what remains. DNS answers come from a zone-style answers file.
Keys are made per test module (RSA 2048, ``cryptography``); the demo directory lists
``lists.mic.gov.vn`` under ``trusted_forwarders``.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgw.config.resolver import FileResolver, run_blocking
from mailgw.dkim import txt_record
from mailgw.message.facts import ArcFacts
from mailgw.senderauth.arc import verify, vouches
from tests.conftest import keep_records, send

LOCAL_RCPT = "vanthu.snv@binhthuan.gov.vn"
AUTHOR_DOMAIN = "hanoi.gov.vn"  # publishes p=reject; not local, not a partner
AUTHOR = f"vanphong@{AUTHOR_DOMAIN}"
LIST = "lists.mic.gov.vn"  # listed under trusted_forwarders in the demo directory.yaml
OTHER_LIST = "lists.forum.example"  # the same software, not listed
BOUNCES = "ds-tinh-bounces@{}"
HOSTNAME = "mailgw.test"  # our authserv-id (tests/conftest.py)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {"author": _key(), "list": _key(), "other": _key(), "seal": _key()}


def _zone(keys: dict[str, rsa.RSAPrivateKey], *extra: str) -> str:
    lines = [
        f'_dmarc.{AUTHOR_DOMAIN}. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{AUTHOR_DOMAIN}"',
        f'{AUTHOR_DOMAIN}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',  # the province's servers, not the list's
        f'{LIST}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',  # the list's own bounce domain: the test client
        f'{OTHER_LIST}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        txt_record(AUTHOR_DOMAIN, "mail", keys["author"]),
        txt_record(LIST, "arc", keys["list"]),
        txt_record(OTHER_LIST, "arc", keys["other"]),
        txt_record("binhthuan.gov.vn", "arc", keys["seal"]),  # our own sealing key, for the next hop to check
        *extra,
    ]
    return "\n".join(lines) + "\n"


def _dnsfunc(zone: str) -> Any:
    """dkimpy's TXT lookup, answered from the same zone text (for the forwarder's checks and the next hop's)."""
    resolver = FileResolver.from_text(zone)

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        found = run_blocking(lambda: resolver.txt(text))
        return found[0] if found else None

    return lookup


def _original(author: str = AUTHOR, subject: str = "Công văn số 45/UBND-VP về lịch họp") -> bytes:
    return (
        f"From: =?utf-8?b?VsSDbiBwaMOybmcgVUJORA==?= <{author}>\r\n"
        f"To: ds-tinh@{LIST}\r\nSubject: {subject}\r\nDate: Mon, 07 Dec 2026 08:30:00 +0700\r\n"
        f"Message-ID: <45-ubnd-vp@{author.rpartition('@')[2]}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Kính gửi các Sở, ngành.\r\nUBND thành phố thông báo lịch họp giao ban tháng 12.\r\n"
    ).encode()


def _forwarded(keys: dict[str, rsa.RSAPrivateKey], zone: str, *, sealer: str = LIST, sealer_key: str = "list",
               author: str = AUTHOR, signer_key: str = "author") -> bytes:
    """The author's message, DKIM-signed, then received, decorated and ARC-sealed by a Mailman-like list at ``sealer``."""
    domain = author.rpartition("@")[2]
    original = _original(author)
    signed = dkim.sign(original, b"mail", domain.encode(), _pem(keys[signer_key]),
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"])
    signed += original
    # What the list checks on receipt, for real: the author's signature with dkimpy.
    lookup = _dnsfunc(zone)
    passed = dkim.verify(signed, dnsfunc=lookup)
    results = (f"Authentication-Results: {sealer};\r\n\tdkim={'pass' if passed else 'fail'} header.d={domain} header.s=mail;\r\n"
               f"\tdmarc={'pass' if passed else 'fail'} header.from={domain}\r\n").encode()
    head, _, body = signed.partition(b"\r\n\r\n")
    head = head.replace(b"Subject: ", b"Subject: [ds-tinh] ", 1)
    head += (f"\r\nList-Id: <ds-tinh.{sealer}>\r\nList-Post: <mailto:ds-tinh@{sealer}>\r\n"
             f"Sender: ds-tinh-bounces@{sealer}").encode()
    body += f"_______________________________________________\r\nds-tinh mailing list -- ds-tinh@{sealer}\r\n".encode()
    decorated = results + head + b"\r\n\r\n" + body
    fields = dkim.arc_sign(decorated, b"arc", sealer.encode(), _pem(keys[sealer_key]), sealer.encode())
    assert fields, "dkimpy made no ARC set"
    return b"".join(fields) + decorated


@pytest.fixture
async def gw(make_gateway: Any, tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey], request: Any) -> Any:
    extra = getattr(request, "param", ())
    (tmp_path / "answers.zone").write_text(_zone(keys, *extra))
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "seal.pem").write_bytes(_pem(keys["seal"]))
    (tmp_path / "keys" / "seal.pem").chmod(0o600)
    g = await make_gateway(dns={"answers": "answers.zone"},
                           dkim=[{"domain": "binhthuan.gov.vn", "selector": "arc", "key": "keys/seal.pem"}],
                           arc={"domain": "binhthuan.gov.vn"})
    g.records = keep_records(g)
    return g


def _header(data: bytes, name: str) -> list[str]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    return [" ".join(str(v).split()) for v in headers.get_all(name) or []]


async def _delivered(gw: Any, sink: Any, raw: bytes, sealer: str = LIST) -> bytes:
    before = len(sink.to(LOCAL_RCPT))
    await send(gw, "mx", raw, BOUNCES.format(sealer), [LOCAL_RCPT])
    await sink.wait_for(lambda: len(sink.to(LOCAL_RCPT)) > before)
    return sink.to(LOCAL_RCPT)[-1].data


async def _refused(gw: Any, raw: bytes, sealer: str = LIST) -> aiosmtplib.SMTPResponseException:
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send(gw, "mx", raw, BOUNCES.format(sealer), [LOCAL_RCPT])
    return refused.value


# --- over real sockets ---------------------------------------------------------------


async def test_a_trusted_forwarders_chain_is_accepted_where_dkim_broke(gw, sink, keys, tmp_path):
    zone = (tmp_path / "answers.zone").read_text()
    raw = _forwarded(keys, zone)
    assert not dkim.verify(raw, dnsfunc=_dnsfunc(zone))  # the list's changes broke the author's signature
    data = await _delivered(gw, sink, raw)
    (results,) = [v for v in _header(data, "Authentication-Results") if v.startswith(HOSTNAME + ";")]
    assert f"dkim=fail (2048-bit key; body hash mismatch) header.d={AUTHOR_DOMAIN}" in results
    assert f"arc=pass (i=1 sealed by {LIST}, a trusted forwarder)" in results
    assert f"dmarc=fail (p=REJECT dis=NONE override=TRUSTED_FORWARDER) header.from={AUTHOR_DOMAIN}" in results
    (record,) = gw.records
    arc, dmarc = record["arc"], record["dmarc"]
    assert (arc["result"], arc["sets"], arc["sealer"], arc["trusted"]) == ("pass", 1, LIST, True)
    assert arc["recorded"] == [f"dkim=pass header.d={AUTHOR_DOMAIN} header.s=mail", f"dmarc=pass header.from={AUTHOR_DOMAIN}"]
    assert (dmarc["result"], dmarc["p"], dmarc["policy"], dmarc["override"]) == ("fail", "reject", "none", "trusted_forwarder")
    assert dmarc["override_comment"] == f"arc=pass as[1].d={LIST} recorded dmarc=pass header.from={AUTHOR_DOMAIN}"
    assert record["decision"]["decision"] == "accept" and "dmarc-reject" not in record["decision"]["matched"]
    assert "dmarc-fail" in record["decision"]["tags"]  # dmarc-none still says DMARC failed
    from mailgw.audit.dmarc import source_row
    from mailgw.audit.record import decode

    # The aggregate report tells the domain why its p=reject was not applied (RFC 7489's PolicyOverrideType).
    row = source_row(record, dt.datetime(2026, 12, 7))
    assert row is not None and (row["disposition"], row["reason"]) == ("none", "trusted_forwarder")
    kept = decode(record)  # as every reader of the exchange log decodes it
    assert kept.arc is not None and kept.arc.chain[0].seal_valid and kept.dmarc is not None and kept.dmarc.override
    # Our seal, i=2 over the list's i=1, verified as the next hop would: dkimpy's arc_verify.
    assert record["arc_sealed"] == "binhthuan.gov.vn"
    cv, chain, reason = dkim.arc_verify(data, dnsfunc=_dnsfunc(zone))
    assert (cv, reason) == (b"pass", "success")
    assert [(r["instance"], r["as-domain"], r["cv"]) for r in chain] == [(2, b"binhthuan.gov.vn", b"pass"), (1, LIST.encode(), b"none")]
    (ours,) = [v for v in _header(data, "ARC-Authentication-Results") if v.startswith("i=2")]
    assert ours.startswith(f"i=2; {HOSTNAME};") and "arc=pass" in ours and "dmarc=fail" in ours


async def test_the_same_chain_from_an_unlisted_forwarder_is_refused_under_p_reject(gw, sink, keys, tmp_path):
    raw = _forwarded(keys, (tmp_path / "answers.zone").read_text(), sealer=OTHER_LIST, sealer_key="other")
    err = await _refused(gw, raw, OTHER_LIST)
    assert (err.code, err.message[:6]) == (550, "5.7.1 ")
    (record,) = gw.records
    assert (record["arc"]["result"], record["arc"]["sealer"], record["arc"]["trusted"]) == ("pass", OTHER_LIST, False)
    assert (record["decision"]["rule"], record["dmarc"]["policy"], record["dmarc"]["override"]) == ("dmarc-reject", "reject", None)
    assert sink.messages == []


@pytest.mark.parametrize("tamper", ["body", "recorded-results", "seal-domain"])
async def test_a_tampered_chain_fails_and_vouches_for_nothing(gw, sink, keys, tmp_path, tamper):
    raw = _forwarded(keys, (tmp_path / "answers.zone").read_text())
    if tamper == "body":  # changed after the list sealed it
        raw = raw.replace("lịch họp giao ban".encode(), "tài khoản mới để chuyển tiền".encode())
    elif tamper == "recorded-results":  # what the list said it saw, rewritten
        raw = raw.replace(b"ARC-Authentication-Results: i=1; lists.mic.gov.vn;", b"ARC-Authentication-Results: i=1; lists.mic.gov.vn; arc=pass;")
    else:  # the seal claims the trusted list but was made with another key
        raw = _forwarded(keys, (tmp_path / "answers.zone").read_text(), sealer_key="other")
    err = await _refused(gw, raw)
    assert (err.code, err.message[:6]) == (550, "5.7.1 ")
    (record,) = gw.records
    assert (record["arc"]["result"], record["decision"]["rule"], record["dmarc"]["override"]) == ("fail", "dmarc-reject", None)


@pytest.mark.parametrize("gw", [(f"arc._domainkey.{LIST}. TIMEOUT",)], indirect=True)
async def test_a_trusted_forwarders_key_that_cannot_be_fetched_defers(gw, sink, keys, tmp_path):
    raw = _forwarded(keys, _zone(keys))  # made with the key the gateway cannot fetch now
    err = await _refused(gw, raw)
    assert (err.code, err.message[:6]) == (451, "4.4.3 ")
    (record,) = gw.records
    assert (record["arc"]["result"], record["dmarc"]["result"], record["decision"]["rule"]) == ("temperror", "temperror", "dmarc-temperror")


async def test_a_chain_never_vouches_for_our_own_domain(gw, sink, keys, tmp_path):
    # Our own clerk's message through the trusted list: spoof-local-domain wants our own signature, checked by us.
    zone = _zone(keys, txt_record("binhthuan.gov.vn", "mail", keys["author"]))
    (tmp_path / "answers.zone").write_text(zone)
    raw = _forwarded(keys, zone, author="vanthu.sotttt@binhthuan.gov.vn")
    err = await _refused(gw, raw)
    assert (err.code, err.message[:6]) == (550, "5.7.26")
    assert (gw.records[0]["arc"]["result"], gw.records[0]["arc"]["trusted"], gw.records[0]["decision"]["rule"]) == (
        "pass", True, "spoof-local-domain")


async def test_a_chain_never_stands_for_a_partners_pinned_signature(gw, sink, keys, tmp_path):
    # moha.gov.vn is a partner whose mail must carry its pinned signature (selector "mail" of the demo
    # directory): through the trusted list that signature broke, and the chain does not stand in for it.
    zone = _zone(keys, txt_record("moha.gov.vn", "mail", keys["author"]))
    (tmp_path / "answers.zone").write_text(zone)
    await _delivered(gw, sink, _forwarded(keys, zone, author="vanphong@moha.gov.vn"))
    (record,) = gw.records
    assert (record["arc"]["result"], record["arc"]["trusted"], record["dkim"]["pinned"]) == ("pass", True, False)
    assert "dkim-missing-partner" in record["decision"]["tags"]


async def test_plain_inbound_mail_is_sealed_as_the_first_hop(gw, sink, keys, tmp_path):
    # Signed by the province itself and sent from its MAIL FROM through the mailing service SPF allows.
    zone = _zone(keys, f'bounce.{AUTHOR_DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"')
    (tmp_path / "answers.zone").write_text(zone)
    original = _original()
    raw = dkim.sign(original, b"mail", AUTHOR_DOMAIN.encode(), _pem(keys["author"])) + original
    before = len(sink.to(LOCAL_RCPT))
    await send(gw, "mx", raw, f"bounce@bounce.{AUTHOR_DOMAIN}", [LOCAL_RCPT])
    await sink.wait_for(lambda: len(sink.to(LOCAL_RCPT)) > before)
    data = sink.to(LOCAL_RCPT)[-1].data
    (results,) = _header(data, "Authentication-Results")
    assert "; arc=none; dmarc=pass" in results  # no chain
    cv, chain, _ = dkim.arc_verify(data, dnsfunc=_dnsfunc(zone))
    assert cv == b"pass" and [(r["instance"], r["cv"]) for r in chain] == [(1, b"none")]
    assert data.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=binhthuan.gov.vn; s=arc;")
    # A quarantined message released later goes out with the release's warning on top: the seal still holds.
    from mailgw.delivery.worker import warning_field

    assert dkim.arc_verify(warning_field("lookalike-domain", "root") + data, dnsfunc=_dnsfunc(zone))[0] == b"pass"
    # A next hop that changes the body after our seal breaks it: the seal covers what we passed on.
    assert dkim.arc_verify(data.replace(b"giao ban", b"GIAO BAN"), dnsfunc=_dnsfunc(zone))[0] == b"fail"


async def test_relay_and_submission_mail_is_not_sealed(gw, sink):
    raw = _original(author="vanthu.sotttt@binhthuan.gov.vn").replace(f"ds-tinh@{LIST}".encode(), LOCAL_RCPT.encode())
    await send(gw, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL_RCPT])
    await sink.wait_for(lambda: len(sink.to(LOCAL_RCPT)) == 1)
    data = sink.to(LOCAL_RCPT)[0].data
    assert not _header(data, "ARC-Seal") and _header(data, "DKIM-Signature")
    assert "arc_sealed" not in gw.records[0] and "arc" not in gw.records[0]


# --- the chain check and the vouching rule, directly ------------------------------------


async def test_verify_reads_the_chain_and_what_the_sealer_recorded(keys):
    zone = _zone(keys)
    facts = await verify(_forwarded(keys, zone), FileResolver.from_text(zone))
    assert (facts.result, facts.sets, facts.sealer) == ("pass", 1, LIST)
    assert [(s.instance, s.seal_domain, s.cv, s.seal_valid, s.signature_valid) for s in facts.chain] == [
        (1, LIST, "none", True, True)]
    assert (await verify(_original(), FileResolver.from_text(zone))) == ArcFacts()


def _sets(count: int) -> bytes:
    """``count`` ARC sets by ``count`` different hosts, with signatures that cannot verify."""
    return b"".join(b"ARC-Seal: i=%d; cv=%s; a=rsa-sha256; d=h%d.example; s=s; b=AAAA\r\n"
                    b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=h%d.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
                    b"ARC-Authentication-Results: i=%d; h%d.example; dmarc=pass header.from=hanoi.gov.vn\r\n"
                    % (i, b"none" if i == 1 else b"pass", i, i, i, i, i) for i in range(1, count + 1))


async def test_hostile_chains_fail_without_work(keys):
    zone = FileResolver.from_text(_zone(keys))
    rest = b"From: a@hanoi.gov.vn\r\nSubject: x\r\n\r\nbody\r\n"
    no_instance = b"ARC-Seal: cv=none; a=rsa-sha256; d=x.example; s=s; b=AAAA\r\n" + rest
    assert (await verify(no_instance, zone)).reason == "ARC fields without an instance tag i="
    facts = await verify(_sets(51) + rest, zone)
    assert (facts.result, facts.sets) == ("fail", 51) and "more than 50" in facts.reason
    facts = await verify(_sets(11) + rest, zone)
    assert (facts.result, facts.reason) == ("fail", "the chain needs more than 10 keys")
    facts = await verify(_sets(3).replace(b"ARC-Message-Signature: i=2;", b"ARC-Message-Signature: i=4;") + rest, zone)
    assert (facts.result, facts.reason) == ("fail", "ARC set 2 is incomplete or missing")
    unspaced = _sets(1).replace(b"ARC-Message-Signature: i=1;", b"ARC-Message-Signature:i=1;") + rest
    assert (await verify(unspaced, zone)).result == "fail"  # dkimpy trips on it (IndexError): a fail, not a crash


@pytest.mark.parametrize(("recorded", "from_domain", "vouched"), [
    (["dmarc=pass header.from=hanoi.gov.vn"], "hanoi.gov.vn", True),
    (["dmarc=pass header.from=evil.example"], "hanoi.gov.vn", False),  # another domain's pass
    (["dkim=pass header.d=hanoi.gov.vn header.s=mail"], "vp.hanoi.gov.vn", True),  # relaxed alignment
    (["dkim=pass header.d=evil.example"], "hanoi.gov.vn", False),  # the attacker's own signature
    (["dkim=fail header.d=hanoi.gov.vn", "spf=pass smtp.mailfrom=x@hanoi.gov.vn"], "hanoi.gov.vn", False),
    (["dmarc=fail header.from=hanoi.gov.vn", "arc=pass"], "hanoi.gov.vn", False),
])
def test_what_a_trusted_forwarders_record_vouches_for(recorded, from_domain, vouched):
    facts = ArcFacts(result="pass", sets=1, sealer=LIST, trusted=True, recorded=recorded)
    assert (vouches(facts, from_domain) is not None) is vouched
    assert vouches(ArcFacts(result="pass", sets=1, sealer=LIST, trusted=False, recorded=recorded), from_domain) is None
    assert vouches(ArcFacts(result="fail", sets=1, sealer=LIST, trusted=True, recorded=recorded), from_domain) is None


async def test_only_the_latest_message_signature_hashes_the_body(keys, monkeypatch):
    from dkim.canonicalization import CanonicalizationPolicy

    zone = _zone(keys)
    resolver = FileResolver.from_text(zone)
    once = _forwarded(keys, zone)  # the list's set 1; a second list (the same key, for the test) seals it again
    results = b"Authentication-Results: lists.mic.gov.vn; arc=pass; dmarc=fail header.from=hanoi.gov.vn\r\n"
    twice = b"".join(dkim.arc_sign(results + once, b"arc", LIST.encode(), _pem(keys["list"]), LIST.encode())) + results + once
    hashed: list[int] = []
    original = CanonicalizationPolicy.canonicalize_body

    def counting(self: Any, body: bytes) -> bytes:
        hashed.append(len(body))
        return original(self, body)

    monkeypatch.setattr(CanonicalizationPolicy, "canonicalize_body", counting)
    facts = await verify(twice, resolver)
    assert (facts.result, facts.sets) == ("pass", 2)
    assert [(s.instance, s.cv, s.seal_valid, s.signature_valid) for s in facts.chain] == [
        (1, "none", True, None), (2, "pass", True, True)]
    assert [n for n in hashed if n] == [len(twice.split(b"\r\n\r\n", 1)[1])]  # the body, once


def test_strict_dkim_alignment_is_honoured():
    facts = ArcFacts(result="pass", sets=1, sealer=LIST, trusted=True, recorded=["dkim=pass header.d=hanoi.gov.vn"])
    assert vouches(facts, "vp.hanoi.gov.vn", strict_dkim=True) is None
    assert vouches(facts, "hanoi.gov.vn", strict_dkim=True) is not None


# --- the sealing key in the settings ------------------------------------------------


@pytest.mark.parametrize(("arc", "problem"), [
    ({"domain": "binhthuan.gov.vn", "selector": "ed"}, "arc: the key of binhthuan.gov.vn (selector ed) is not RSA: ARC seals are RSA-SHA256"),
    ({"domain": "hue.gov.vn"}, "arc: no key of 'dkim:' is for hue.gov.vn: the sealing key must be one of them"),
    ({"domain": "binhthuan.gov.vn", "selector": "rsa", "colour": "red"}, "unknown key 'colour' in arc"),
])
def test_a_sealing_key_that_cannot_seal_is_a_file_line_problem(tmp_path, ca, password_hash, arc, problem):
    from mailgw.app import load_context
    from mailgw.config.yamlfile import ConfigError
    from tests.conftest import write_config
    from tests.test_dkim_pipeline import _dkim_settings

    path = write_config(tmp_path, 2525, ca, password_hash, dkim=_dkim_settings(tmp_path, "rsa", "ed"), arc=arc)
    with pytest.raises(ConfigError) as failed:
        load_context(str(path))
    wanted = "  colour:" if "colour" in arc else "arc:"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(wanted))
    assert any(p.file == str(path) and p.line == line and problem in p.message for p in failed.value.problems), failed.value.problems


def test_policy_test_traces_the_chain_and_the_override(tmp_path, ca, password_hash, keys):
    import json

    from tests.conftest import write_config
    from tests.test_cli import mailgw

    zone = _zone(keys)
    (tmp_path / "answers.zone").write_text(zone)
    config = write_config(tmp_path, 2525, ca, password_hash, dns={"answers": "answers.zone"})
    eml = tmp_path / "forwarded.eml"
    eml.write_bytes(_forwarded(keys, zone))
    args = ("policy", "test", str(eml), "--config", str(config), "--listener", "mx", "--client-ip", "127.0.0.1",
            "--mail-from", BOUNCES.format(LIST), "--rcpt", LOCAL_RCPT)
    done = mailgw(*args, "--json")
    assert done.returncode == 0, done.stderr
    trace = json.loads(done.stdout)
    assert (trace["decision"], trace["arc"]["result"], trace["arc"]["trusted"], trace["dmarc"]["override"]) == (
        "accept", "pass", True, "trusted_forwarder")
    assert trace["facts"]["arc"] == {"result": "pass", "sealer": LIST, "trusted": True, "sets": 1}
    text = mailgw(*args).stdout
    assert f"ARC: pass, 1 bộ / sets, niêm phong cuối / sealed last by {LIST} (tin cậy / trusted forwarder)" in text
    assert "ngoại lệ / override: trusted_forwarder" in text
