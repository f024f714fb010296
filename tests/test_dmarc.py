"""DMARC (RFC 7489): record discovery and alignment, and the shipped rules over real sockets.

DNS answers come from a zone-style answers file; DKIM signatures are made with the test
keys of tests/data/dkim (see tests/test_dkim_pipeline.py). The spoofing cases follow the
server-side attacks of espoofer (Chen et al., "Composition Kills", USENIX Security 2020):
a From domain other than the one SPF or DKIM authenticated.
"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailgw.config.resolver import FileResolver
from mailgw.dkim import sign
from mailgw.message.facts import DkimFacts, DkimSignature, SpfFacts
from mailgw.senderauth.dmarc import discover, evaluate, parse
from tests.conftest import keep_records, message, send
from tests.test_dkim_pipeline import _signing_key, _zone_line

LOCAL_RCPT = "vanthu.snv@binhthuan.gov.vn"
REJECTING = "hanoi.gov.vn"  # another province; not local, not a partner in the demo directory
QUARANTINING = "hue.gov.vn"
MONITORING = "cantho.gov.vn"
ATTACKER = "evil.example"


# --- discovery, alignment, pct ----------------------------------------------------


async def test_discovery_falls_back_to_the_organisational_domain_and_skips_other_txt():
    zone = FileResolver.from_text(
        '_dmarc.hanoi.gov.vn. IN TXT "v=spf1 -all"\n'
        '_dmarc.hanoi.gov.vn. IN TXT "v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:d@hanoi.gov.vn"\n'
        '_dmarc.own.stp.hanoi.gov.vn. IN TXT "v=DMARC1;p=none"\n')
    record = await discover("vp.stp.hanoi.gov.vn", zone)
    assert record is not None and (record.domain, record.p, record.sp, record.adkim, record.aspf) == (
        "hanoi.gov.vn", "reject", "quarantine", "s", "r")
    own = await discover("own.stp.hanoi.gov.vn", zone)
    assert own is not None and (own.domain, own.p) == ("own.stp.hanoi.gov.vn", "none")
    assert await discover("hue.gov.vn", zone) is None  # gov.vn is a public suffix: no fallback to it


def test_a_record_without_a_valid_p_is_permerror_unless_it_asks_for_reports():
    assert parse("x.vn", "v=DMARC1; p=block").p is None
    assert parse("x.vn", "v=DMARC1; p=block; rua=mailto:dmarc@x.vn").p == "none"
    assert parse("x.vn", "v=DMARC1; p=reject; pct=150; adkim=x").pct == 100
    facts = evaluate("x.vn", parse("x.vn", "v=DMARC1"), None, None, "id")
    assert (facts.result, facts.policy, facts.reason) == ("permerror", None, "no valid p= policy")


def _spf(result: str, domain: str) -> SpfFacts:
    return SpfFacts(result=result, domain=domain)


def _dkim(*signatures: tuple[str, str]) -> DkimFacts:
    return DkimFacts(signatures=[DkimSignature(d=d, s="s", a="ed25519-sha256", result=r) for d, r in signatures])


@pytest.mark.parametrize(("record", "spf", "dkim", "expected"), [
    ("p=reject", _spf("pass", "bounce.hanoi.gov.vn"), None, ("pass", "none", ["spf"])),  # relaxed: same org domain
    ("p=reject; aspf=s", _spf("pass", "bounce.hanoi.gov.vn"), None, ("fail", "reject", [])),
    ("p=reject", _spf("pass", "hanoi.gov.vn"), None, ("pass", "none", ["spf"])),
    ("p=reject", _spf("pass", "evil.example"), _dkim(("hanoi.gov.vn", "pass")), ("pass", "none", ["dkim"])),
    ("p=reject; adkim=s", None, _dkim(("mail.hanoi.gov.vn", "pass")), ("fail", "reject", [])),
    ("p=reject", _spf("fail", "hanoi.gov.vn"), _dkim(("evil.example", "pass")), ("fail", "reject", [])),
    ("p=reject", _spf("softfail", "hanoi.gov.vn"), _dkim(("hanoi.gov.vn", "fail")), ("fail", "reject", [])),
    ("p=reject", _spf("temperror", "hanoi.gov.vn"), None, ("temperror", None, [])),
    ("p=reject", _spf("pass", "evil.example"), _dkim(("hanoi.gov.vn", "temperror")), ("temperror", None, [])),
    ("p=reject", _spf("temperror", "evil.example"), None, ("fail", "reject", [])),  # not aligned: nothing to wait for
    ("p=quarantine; pct=0", None, None, ("fail", "none", [])),  # sampled out: one step lower
    ("p=reject; pct=0", None, None, ("fail", "quarantine", [])),
])
def test_alignment_and_policy(record, spf, dkim, expected):
    facts = evaluate("hanoi.gov.vn", parse("hanoi.gov.vn", "v=DMARC1; " + record), spf, dkim, "exchange-id")
    assert (facts.result, facts.policy, facts.aligned) == expected


def test_subdomain_policy_applies_to_subdomains_only():
    record = parse("hanoi.gov.vn", "v=DMARC1; p=reject; sp=none")
    assert evaluate("stp.hanoi.gov.vn", record, None, None, "x").policy == "none"
    assert evaluate("hanoi.gov.vn", record, None, None, "x").policy == "reject"


def test_pct_samples_by_exchange_id():
    record = parse("hanoi.gov.vn", "v=DMARC1; p=reject; pct=50")
    policies = [evaluate("hanoi.gov.vn", record, None, None, f"id-{n}").policy for n in range(200)]
    assert set(policies) == {"reject", "quarantine"}
    assert policies == [evaluate("hanoi.gov.vn", record, None, None, f"id-{n}").policy for n in range(200)]


# --- over real sockets ---------------------------------------------------------------


ZONE = (
    f'_dmarc.{REJECTING}. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{REJECTING}"',
    f'_dmarc.{QUARANTINING}. IN TXT "v=DMARC1; p=quarantine"',
    f'_dmarc.{MONITORING}. IN TXT "v=DMARC1; p=none"',
    f'{REJECTING}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',  # the province's own servers, not the test client
    f'bounce.{REJECTING}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',  # its mailing service: the test client
    f'{QUARANTINING}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    f'{MONITORING}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    f'{ATTACKER}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',  # the attacker's own domain passes SPF
    f'mail.{ATTACKER}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    f'slow.{REJECTING}. TIMEOUT',
    _zone_line(REJECTING, "ed"),
    _zone_line(ATTACKER, "ed"),
)


@pytest.fixture
async def gw(make_gateway: Any, tmp_path: Path) -> Any:
    (tmp_path / "answers.zone").write_text("\n".join(ZONE) + "\n")
    return await make_gateway(dns={"answers": "answers.zone"})


def _auth_results(data: bytes) -> str:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    (value,) = headers.get_all("Authentication-Results") or []
    return " ".join(str(value).split())


def _letter(author: str, signer: str | None = None) -> bytes:
    raw = message(subject="Công văn số 45/UBND-VP", sender=author, to=LOCAL_RCPT, body="Kính gửi Sở TT&TT.\r\n")
    return sign(raw, [_signing_key("ed", signer)]) + raw if signer else raw


async def _delivered(gw: Any, sink: Any, raw: bytes, mail_from: str) -> bytes:
    before = len(sink.to(LOCAL_RCPT))
    await send(gw, "mx", raw, mail_from, [LOCAL_RCPT])
    await sink.wait_for(lambda: len(sink.to(LOCAL_RCPT)) > before)
    return sink.to(LOCAL_RCPT)[-1].data


async def test_pass_by_spf_alone(gw, sink):
    records = keep_records(gw)
    data = await _delivered(gw, sink, _letter(f"vanphong@{REJECTING}"), f"bounce@bounce.{REJECTING}")
    assert "spf=pass (127.0.0.1 is allowed) smtp.mailfrom=bounce@bounce.hanoi.gov.vn; arc=none; dmarc=pass (p=REJECT) header.from=hanoi.gov.vn" in _auth_results(data)
    dmarc = records[0]["dmarc"]
    assert (dmarc["result"], dmarc["aligned"], dmarc["p"], dmarc["record_domain"]) == ("pass", ["spf"], "reject", REJECTING)
    assert records[0]["decision"]["decision"] == "accept"


async def test_pass_by_dkim_alone(gw, sink):
    # Sent through the attacker's (SPF-passing) server, but signed by the province: a forwarder, say.
    records = keep_records(gw)
    data = await _delivered(gw, sink, _letter(f"vanphong@{REJECTING}", signer=REJECTING), f"fwd@{ATTACKER}")
    results = _auth_results(data)
    assert "dkim=pass header.d=hanoi.gov.vn" in results and "spf=pass" in results and "dmarc=pass" in results
    assert (records[0]["dmarc"]["result"], records[0]["dmarc"]["aligned"]) == ("pass", ["dkim"])


async def _refused(gw: Any, raw: bytes, mail_from: str, **kw: Any) -> aiosmtplib.SMTPResponseException:
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        if kw:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.addresses["mx"][1], start_tls=False, **kw) as client:
                await client.sendmail(mail_from, [LOCAL_RCPT], raw)
        else:
            await send(gw, "mx", raw, mail_from, [LOCAL_RCPT])
    return refused.value


async def test_fail_with_p_reject_is_refused_with_the_bilingual_text(gw, sink):
    records = keep_records(gw)
    err = await _refused(gw, _letter(f"vanphong@{REJECTING}"), f"vanphong@{REJECTING}")  # SPF fail: not its server
    assert (err.code, err.message[:6]) == (550, "5.7.1 ")
    text = " ".join(err.message.split())
    assert "Thu gia danh vanphong@hanoi.gov.vn: khong duoc xac thuc (SPF, DKIM)" in text
    assert "/ Message claims to be from vanphong@hanoi.gov.vn but is not authenticated (SPF, DKIM)" in text
    (record,) = records
    assert (record["decision"]["rule"], record["dmarc"]["result"], record["dmarc"]["policy"], record["spf"]["result"]) == (
        "dmarc-reject", "fail", "reject", "fail")
    assert sink.messages == []


async def test_p_none_is_accepted_and_tagged(gw, sink):
    records = keep_records(gw)
    data = await _delivered(gw, sink, _letter(f"vanphong@{MONITORING}"), f"vanphong@{MONITORING}")
    assert "dmarc=fail (p=NONE dis=NONE) header.from=cantho.gov.vn" in _auth_results(data)
    assert "dmarc-fail" in records[0]["decision"]["tags"] and records[0]["decision"]["rule"] == "default"
    assert "dmarc-none" in records[0]["decision"]["matched"]


async def test_p_quarantine_is_held(gw, sink):
    records = keep_records(gw)
    await send(gw, "mx", _letter(f"vanphong@{QUARANTINING}"), f"vanphong@{QUARANTINING}", [LOCAL_RCPT])
    (record,) = records
    assert (record["decision"]["decision"], record["decision"]["rule"]) == ("quarantine", "dmarc-quarantine")
    assert gw.spool.ids("hold") == [record["id"]] and gw.spool.ids() == []


async def test_a_dns_timeout_on_the_aligned_spf_domain_defers_never_refuses(gw, sink):
    records = keep_records(gw)
    err = await _refused(gw, _letter(f"vanphong@{REJECTING}"), f"vanphong@slow.{REJECTING}")
    assert (err.code, err.message[:6]) == (451, "4.4.3 ")
    assert (records[0]["decision"]["rule"], records[0]["dmarc"]["result"], records[0]["spf"]["result"]) == (
        "dmarc-temperror", "temperror", "temperror")


@pytest.mark.parametrize(("mail_from", "signer", "helo"), [
    (f"attacker@{ATTACKER}", None, None),  # SPF passes for the attacker's MAIL FROM domain, From is the victim
    ("", None, f"mail.{ATTACKER}"),  # null MAIL FROM: SPF passes for the attacker's HELO name
    (f"attacker@{ATTACKER}", ATTACKER, None),  # a valid DKIM signature, by the attacker's domain
    (f"vanphong@{REJECTING}", ATTACKER, None),  # the victim's MAIL FROM (SPF fails) and the attacker's signature
    (f"attacker@{REJECTING}.{ATTACKER}", None, None),  # a lookalike MAIL FROM under the attacker's domain
], ids=["mailfrom-attacker", "null-mailfrom-helo", "dkim-attacker", "mailfrom-victim", "mailfrom-lookalike"])
async def test_espoofer_spoofs_of_a_domain_publishing_p_reject_are_refused(gw, sink, mail_from, signer, helo):
    records = keep_records(gw)
    raw = _letter(f"chutich@{REJECTING}", signer=signer)
    err = await _refused(gw, raw, mail_from, **({"local_hostname": helo} if helo else {}))
    assert (err.code, err.message[:6]) == (550, "5.7.1 ")
    (record,) = records
    assert (record["decision"]["rule"], record["dmarc"]["result"], record["dmarc"]["aligned"]) == ("dmarc-reject", "fail", [])
    assert sink.messages == []


async def test_our_own_domain_stays_with_the_stricter_rule(gw, sink):
    # An SPF pass for our domain does not help a forgery: spoof-local-domain wants an aligned DKIM signature.
    records = keep_records(gw)
    err = await _refused(gw, _letter("vanthu.sotttt@binhthuan.gov.vn"), f"attacker@{ATTACKER}")
    assert (err.code, err.message[:6]) == (550, "5.7.26")
    assert records[0]["decision"]["rule"] == "spoof-local-domain"
