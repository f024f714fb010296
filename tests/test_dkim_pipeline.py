"""DKIM in the gateway, over real SMTP: outbound mail signed (checked by OpenDKIM and by us), inbound mail verified.

Keys are the test keys of tests/data/dkim; DNS answers come from a zone file
written by each test (settings ``dns: {answers: ...}``) or from a DNS server
on 127.0.0.1 that dnspython queries for real.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import os
import shutil
import stat
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim as dkimpy
import pytest
import yaml

from mailgw.config.resolver import FileResolver
from mailgw.dkim import SigningKey, load_key, sign, txt_record, verify
from tests.conftest import keep_records, message, send
from tests.dns_server import start as dns_server_start
from tests.test_dkim_opendkim import opendkim, opendkim_verify  # noqa: F401 - opendkim is a fixture

KEY_DATA = Path(__file__).parent / "data" / "dkim" / "keys"
KEY_FILES = {"rsa": "rsa2048.pem", "ed": "ed25519.pem", "short": "rsa512.pem", "tiny": "rsa384.pem"}
LOCAL = "binhthuan.gov.vn"
SENDER = "vanthu.sotttt@binhthuan.gov.vn"
REMOTE = "hanoi.gov.vn"  # a province that is neither local nor a partner in the demo directory
PARTNER = "moha.gov.vn"  # the demo directory pins its DKIM selector "mail"
LOCAL_RCPT = "vanthu.snv@binhthuan.gov.vn"


# --- helpers ------------------------------------------------------------------


def _keyfile(tmp_path: Path, name: str) -> str:
    """A copy of test key ``name`` under tmp_path/keys, mode 0600 as keygen makes it; the path relative to the settings."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    target = tmp_path / "keys" / f"{name}.pem"
    if not target.exists():
        shutil.copy(KEY_DATA / KEY_FILES[name], target)
        target.chmod(0o600)
    return f"keys/{name}.pem"


def _dkim_settings(tmp_path: Path, *selectors: str, domain: str = LOCAL) -> list[dict[str, str]]:
    return [{"domain": domain, "selector": s, "key": _keyfile(tmp_path, s)} for s in selectors]


def _signing_key(selector: str, domain: str) -> SigningKey:
    return SigningKey.from_file(domain, selector, KEY_DATA / KEY_FILES[selector])


def _zone_line(domain: str, selector: str, key_name: str | None = None) -> str:
    return txt_record(domain, selector, load_key(KEY_DATA / KEY_FILES[key_name or selector]))


def _answers(tmp_path: Path, *lines: str) -> dict[str, str]:
    """Write the DNS answers file and return the settings' ``dns:`` section that uses it."""
    (tmp_path / "answers.zone").write_text("\n".join(lines) + "\n")
    return {"answers": "answers.zone"}


def _public_records(*pairs: tuple[str, str]) -> dict[str, str]:
    """name -> TXT value for OpenDKIM's TestPublicKeys, from (domain, selector) pairs of our test keys."""
    out = {}
    for domain, selector in pairs:
        line = _zone_line(domain, selector)
        out[f"{selector}._domainkey.{domain}"] = "".join(line.split('"')[1::2])
    return out


def _header_fields(data: bytes, name: str) -> list[str]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    return [" ".join(str(v).split()) for v in headers.get_all(name) or []]


def _field_names(data: bytes) -> list[str]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    return [k.lower() for k in headers.keys()]


def _inbound(subject: str = "Công văn số 45/UBND-VP", sender: str = f"vanphong@{REMOTE}", body: str = "Kính gửi Sở TT&TT.\r\nNội dung công văn.\r\n") -> bytes:
    return message(subject=subject, sender=sender, to=LOCAL_RCPT, body=body)


async def _deliver(gw: Any, sink: Any, listener: str, raw: bytes, mail_from: str, rcpt: str, **kw: Any) -> bytes:
    """Send ``raw`` and return what the next hop received."""
    before = len(sink.to(rcpt))
    await send(gw, listener, raw, mail_from, [rcpt], **kw)
    await sink.wait_for(lambda: len(sink.to(rcpt)) > before)
    return sink.to(rcpt)[-1].data


def _utf8_letter_with_attachment() -> bytes:
    """Raw UTF-8 headers (SMTPUTF8), a multipart body with a binary attachment and lines that start with a dot."""
    msg = EmailMessage(policy=email.policy.SMTPUTF8)
    msg["From"] = "Văn thư Sở Thông tin và Truyền thông <vanthu.sotttt@binhthuan.gov.vn>"
    msg["To"] = "Văn phòng UBND thành phố Hà Nội <vanphong@hanoi.gov.vn>"
    msg["Cc"] = "Phòng Bưu chính <bcvt.sotttt@binhthuan.gov.vn>"
    msg["Subject"] = "Công văn số 123/STTTT-VP về việc   chuyển đổi số năm 2026"
    msg["Date"] = "Sat, 21 Nov 2026 09:00:00 +0700"
    msg["Message-ID"] = "<cv123.stttt@binhthuan.gov.vn>"
    msg.set_content("Kính gửi: Văn phòng UBND thành phố Hà Nội\n.\n..dòng bắt đầu bằng dấu chấm\nTrân trọng.   \n\n\n")
    msg.add_attachment(bytes(range(256)) * 64, maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet", filename="Bảng số liệu.xlsx")
    return msg.as_bytes()


# --- outbound: signing ----------------------------------------------------------


@pytest.mark.parametrize("selectors", [("rsa",), ("ed",), ("rsa", "ed")], ids="+".join)
async def test_outbound_mail_arrives_signed_and_verifies_with_opendkim_and_ours(make_gateway, sink, tmp_path, opendkim, selectors):  # noqa: F811
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, *selectors))
    records = keep_records(gw)
    data = await _deliver(gw, sink, "relay", message(), SENDER, "friend@example.com")

    # The signatures come first, over everything else we send, our Received included.
    names = _field_names(data)
    assert names[: len(selectors)] == ["dkim-signature"] * len(selectors)
    assert names[len(selectors)] == "received"
    signatures = _header_fields(data, "DKIM-Signature")
    assert [f" s={s};" in f" {f}" for f, s in zip(signatures, selectors)] == [True] * len(selectors)
    assert all("c=relaxed/relaxed;" in f and " l=" not in f and "d=binhthuan.gov.vn;" in f for f in signatures)

    verdicts = opendkim_verify(opendkim, tmp_path, data, _public_records(*((LOCAL, s) for s in selectors)))
    assert sorted(verdicts) == sorted(("pass", LOCAL, s) for s in selectors)
    report = await verify(data, FileResolver.from_text("\n".join(_zone_line(LOCAL, s) for s in selectors)))
    assert [(s.s, s.result, s.aligned) for s in report.signatures] == [(s, "pass", True) for s in selectors]

    (record,) = records
    assert record["dkim"]["signed"] is True
    assert [(s["d"], s["s"]) for s in record["dkim"]["signatures"]] == [(LOCAL, s) for s in selectors]


async def test_utf8_headers_and_attachment_are_signed_over_the_bytes_sent(make_gateway, sink, tmp_path, opendkim):  # noqa: F811
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "rsa", "ed"))
    raw = _utf8_letter_with_attachment()
    assert not raw.split(b"\r\n\r\n", 1)[0].isascii()  # raw UTF-8 in the header section
    data = await _deliver(gw, sink, "relay", raw, SENDER, "vanphong@hanoi.gov.vn", mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert data.endswith(raw)  # nothing of the message changed on the way, dot lines included
    records = _public_records((LOCAL, "rsa"), (LOCAL, "ed"))
    assert sorted(opendkim_verify(opendkim, tmp_path, data, records)) == [("pass", LOCAL, "ed"), ("pass", LOCAL, "rsa")]
    report = await verify(data, FileResolver.from_text(_zone_line(LOCAL, "rsa") + "\n" + _zone_line(LOCAL, "ed")))
    assert report.aligned_pass and [s.result for s in report.signatures] == ["pass", "pass"]
    # And the verdict means something: one changed octet of the attachment fails both.
    body_start = data.index(b"\r\n\r\n")
    tampered = data[:body_start] + data[body_start:].replace(b"AAECAwQF", b"AAECAwQG", 1)
    assert tampered != data
    assert sorted(opendkim_verify(opendkim, tmp_path, tampered, records)) == [("fail", LOCAL, "ed"), ("fail", LOCAL, "rsa")]


async def test_a_subdomain_author_is_signed_with_the_parent_domain_key(make_gateway, sink, tmp_path):
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed"))
    raw = message(sender="vanthu@stttt.binhthuan.gov.vn")
    data = await _deliver(gw, sink, "relay", raw, "vanthu@stttt.binhthuan.gov.vn", "friend@example.com")
    report = await verify(data, FileResolver.from_text(_zone_line(LOCAL, "ed")))
    assert [(s.d, s.result, s.aligned) for s in report.signatures] == [(LOCAL, "pass", True)]


async def test_no_key_for_the_author_domain_means_no_signature(make_gateway, sink, tmp_path):
    # Keys for another local domain only: mail from binhthuan.gov.vn goes out as it came.
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed", domain="stttt.binhthuan.gov.vn"))
    records = keep_records(gw)
    data = await _deliver(gw, sink, "relay", message(), SENDER, "friend@example.com")
    assert "dkim-signature" not in _field_names(data)
    assert records[0]["dkim"] is None


async def test_without_a_dkim_section_nothing_is_signed(gateway, sink):
    records = keep_records(gateway)
    data = await _deliver(gateway, sink, "relay", message(), SENDER, "friend@example.com")
    assert "dkim-signature" not in _field_names(data) and "authentication-results" not in _field_names(data)
    assert records[0]["dkim"] is None


async def test_submission_mail_is_signed_too(make_gateway, sink, tmp_path, client_tls):
    from tests.conftest import LOGIN, PASSWORD

    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed"))
    await aiosmtplib.send(message(sender=LOGIN), sender=LOGIN, recipients=["friend@example.com"], hostname="127.0.0.1",
                          port=gw.addresses["submission"][1], start_tls=True, tls_context=client_tls,
                          username=LOGIN, password=PASSWORD)
    await sink.wait_for(lambda: sink.to("friend@example.com"))
    data = sink.to("friend@example.com")[0].data
    assert _field_names(data)[0] == "dkim-signature"
    report = await verify(data, FileResolver.from_text(_zone_line(LOCAL, "ed")))
    assert report.aligned_pass


async def test_a_signing_failure_gives_451_and_nothing_is_sent(make_gateway, sink, tmp_path, monkeypatch):
    # A 384-bit RSA key loads (once its size check is relaxed for this test),
    # but OpenSSL refuses to make an RSA-SHA256 signature with it: a real
    # failure at signing time, which must never let the message out unsigned.
    monkeypatch.setattr("mailgw.dkim.keys.MIN_SIGNING_RSA_BITS", 256)
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed", "tiny"))
    records = keep_records(gw)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(gw, "relay", message(), SENDER, ["friend@example.com"])
    assert refused.value.code == 451 and refused.value.message.startswith("4.3.0 ")
    assert "DKIM" not in refused.value.message  # the client is not told how we work inside
    (record,) = records
    assert record["decision"]["decision"] == "defer" and record["decision"]["reply"].startswith("451 4.3.0")
    await asyncio.sleep(0.3)
    assert not sink.messages and gw.spool.ids() == []


async def test_a_header_the_signer_cannot_parse_is_refused_not_deferred(make_gateway, sink, tmp_path):
    # A line without a colon among the header fields: Python's parser takes it
    # as the start of the body, the signer refuses it. The message's own
    # fault: 550, so the client does not retry it forever.
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed"))
    raw = message().replace(b"MIME-Version:", b"this line is not a header\r\nMIME-Version:")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(gw, "relay", raw, SENDER, ["friend@example.com"])
    assert refused.value.code == 550 and refused.value.message.startswith("5.6.0 ")
    assert not sink.messages


async def test_reload_reads_the_keys_again_and_keeps_them_when_a_key_is_bad(make_gateway, sink, tmp_path):
    gw = await make_gateway(dkim=_dkim_settings(tmp_path, "ed"))
    settings = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    settings["dkim"] = _dkim_settings(tmp_path, "rsa", "ed")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings, allow_unicode=True))
    assert gw.reload()
    data = await _deliver(gw, sink, "relay", message(subject="một"), SENDER, "friend@example.com")
    assert _field_names(data)[:2] == ["dkim-signature", "dkim-signature"]
    # A key file broken on disk: the reload fails, the running keys keep signing.
    (tmp_path / "keys" / "rsa.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    assert not gw.reload()
    data = await _deliver(gw, sink, "relay", message(subject="hai"), SENDER, "friend@example.com")
    report = await verify(data, FileResolver.from_text(_zone_line(LOCAL, "rsa") + "\n" + _zone_line(LOCAL, "ed")))
    assert [(s.s, s.result) for s in report.signatures] == [("rsa", "pass"), ("ed", "pass")]


# --- inbound: verification --------------------------------------------------------


async def test_inbound_signed_mail_gets_authentication_results_and_facts(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "rsa"), _zone_line(REMOTE, "ed")))
    records = keep_records(gw)
    raw = _inbound()
    signed = sign(raw, [_signing_key("rsa", REMOTE), _signing_key("ed", REMOTE)]) + raw
    data = await _deliver(gw, sink, "mx", signed, f"vanphong@{REMOTE}", LOCAL_RCPT)

    assert _field_names(data)[:2] == ["received", "authentication-results"]  # ours, for this hop
    (results,) = _header_fields(data, "Authentication-Results")
    assert results.startswith("mailgw.test; dkim=pass (2048-bit key) header.d=hanoi.gov.vn header.s=rsa header.a=rsa-sha256")
    assert "; dkim=pass header.d=hanoi.gov.vn header.s=ed header.a=ed25519-sha256" in results
    assert data.endswith(signed)

    facts = records[0]["dkim"]
    assert (facts["status"], facts["aligned_pass"], facts["signed"], facts["from_domain"], facts["pinned"]) == (
        "pass", True, True, REMOTE, None)
    assert [(s["s"], s["result"]) for s in facts["signatures"]] == [("rsa", "pass"), ("ed", "pass")]


async def test_unsigned_mail_claiming_a_local_domain_on_mx_is_refused_5_7_26(make_gateway, sink, tmp_path):
    # The shipped rule spoof-local-domain decides from these facts: the From
    # domain is local and no signature that passes is aligned with it.
    gw = await make_gateway(dns=_answers(tmp_path))
    records = keep_records(gw)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, "mx", message(), SENDER, [LOCAL_RCPT])
    assert (err.value.code, err.value.message[:6]) == (550, "5.7.26")
    assert records[0]["decision"]["rule"] == "spoof-local-domain"
    assert sink.messages == []
    facts = records[0]["dkim"]
    assert (facts["from_domain"], facts["aligned_pass"], facts["signed"], facts["status"]) == (LOCAL, False, False, "none")


async def test_forged_authentication_results_for_our_host_are_removed_others_kept(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "ed")))
    raw = _inbound()
    signed = sign(raw, [_signing_key("ed", REMOTE)]) + raw
    forged = (
        b"Authentication-Results: mailgw.test;\r\n\tdkim=pass header.d=binhthuan.gov.vn header.s=mailgw\r\n"
        b"Authentication-Results: mx.hanoi.gov.vn; dkim=pass header.d=hanoi.gov.vn\r\n"
        b"authentication-results:   (comment) MAILGW.TEST. ; spf=pass smtp.mailfrom=binhthuan.gov.vn\r\n"
    )
    data = await _deliver(gw, sink, "mx", forged + signed, f"vanphong@{REMOTE}", LOCAL_RCPT)
    fields = _header_fields(data, "Authentication-Results")
    assert fields == [
        "mailgw.test; dkim=pass header.d=hanoi.gov.vn header.s=ed header.a=ed25519-sha256 header.b=" + fields[0].rsplit("header.b=", 1)[1],
        "mx.hanoi.gov.vn; dkim=pass header.d=hanoi.gov.vn",
    ]
    assert b"binhthuan.gov.vn header.s=mailgw" not in data and b"MAILGW.TEST" not in data
    # The signature still verifies at the next hop: only whole forged fields went.
    report = await verify(data, FileResolver.from_text(_zone_line(REMOTE, "ed")))
    assert report.aligned_pass


async def test_forged_authentication_results_are_removed_on_relay_too(make_gateway, sink, tmp_path):
    gw = await make_gateway()
    raw = b"Authentication-Results: mailgw.test; dkim=pass header.d=mic.gov.vn\r\n" + message()
    data = await _deliver(gw, sink, "relay", raw, SENDER, LOCAL_RCPT)
    assert _header_fields(data, "Authentication-Results") == []  # removed, and none of ours: relay mail is not verified


async def test_dns_timeout_is_temperror_not_fail(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, f"ed._domainkey.{REMOTE}. TIMEOUT"))
    records = keep_records(gw)
    raw = _inbound()
    data = await _deliver(gw, sink, "mx", sign(raw, [_signing_key("ed", REMOTE)]) + raw, f"vanphong@{REMOTE}", LOCAL_RCPT)
    (results,) = _header_fields(data, "Authentication-Results")
    assert results.startswith("mailgw.test; dkim=temperror (key lookup failed: timeout")
    assert records[0]["dkim"]["status"] == "temperror" and not records[0]["dkim"]["aligned_pass"]


@pytest.fixture
async def dns_server():
    """A DNS server on 127.0.0.1 with the hanoi.gov.vn keys; one selector never answers."""
    server = await dns_server_start(
        {f"{s}._domainkey.{REMOTE}.": [("TXT", _zone_line(REMOTE, s).split(" IN TXT ", 1)[1])] for s in ("rsa", "ed")},
        silent={f"slow._domainkey.{REMOTE}."},
    )
    yield server
    server.transport.close()


async def test_real_dns_lookups_from_the_pipeline_thread_pass_and_time_out(make_gateway, sink, tmp_path, dns_server):
    # dnspython's asynchronous resolver, from the worker thread the pipeline
    # runs in, against a real DNS server; the silent name hits dns.timeout.
    gw = await make_gateway(dns={"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": "300ms"})
    records = keep_records(gw)
    raw = _inbound()
    keys = [_signing_key("rsa", REMOTE), SigningKey(REMOTE, "slow", "ed25519-sha256", load_key(KEY_DATA / "ed25519.pem"))]
    started = time.monotonic()
    data = await _deliver(gw, sink, "mx", sign(raw, keys) + raw, f"vanphong@{REMOTE}", LOCAL_RCPT)
    assert time.monotonic() - started < 5
    (results,) = _header_fields(data, "Authentication-Results")
    assert "dkim=pass (2048-bit key) header.d=hanoi.gov.vn header.s=rsa" in results
    assert "dkim=temperror (key lookup failed: timeout" in results and "header.s=slow" in results
    assert records[0]["dkim"]["status"] == "pass"  # the aligned pass counts; the timeout does not undo it
    assert f"rsa._domainkey.{REMOTE}." in dns_server.queries and f"slow._domainkey.{REMOTE}." in dns_server.queries


async def test_tampered_body_fails(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "rsa")))
    records = keep_records(gw)
    raw = _inbound()
    signed = sign(raw, [_signing_key("rsa", REMOTE)]) + raw
    tampered = signed.replace("Nội dung công văn.".encode(), "Nội dung đã bị sửa.".encode())
    data = await _deliver(gw, sink, "mx", tampered, f"vanphong@{REMOTE}", LOCAL_RCPT)
    (results,) = _header_fields(data, "Authentication-Results")
    assert results.startswith("mailgw.test; dkim=fail (2048-bit key; body hash mismatch) header.d=hanoi.gov.vn")
    assert (records[0]["dkim"]["status"], records[0]["dkim"]["aligned_pass"]) == ("fail", False)


async def test_tampered_signed_header_fails(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "ed")))
    raw = _inbound(subject="Công văn số 45/UBND-VP")
    signed = sign(raw, [_signing_key("ed", REMOTE)]) + raw
    changed = _inbound(subject="Công văn số 46/UBND-VP")
    tampered = signed[: len(signed) - len(raw)] + changed
    data = await _deliver(gw, sink, "mx", tampered, f"vanphong@{REMOTE}", LOCAL_RCPT)
    (results,) = _header_fields(data, "Authentication-Results")
    assert results.startswith("mailgw.test; dkim=fail (signature did not verify) header.d=hanoi.gov.vn header.s=ed")


async def test_a_second_from_above_a_signed_one_is_refused(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "ed")))
    raw = _inbound()
    signed = sign(raw, [_signing_key("ed", REMOTE)]) + raw
    forged = b"From: Chu tich UBND <chutich@binhthuan.gov.vn>\r\n" + signed
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(gw, "mx", forged, f"vanphong@{REMOTE}", [LOCAL_RCPT])
    assert refused.value.code == 550 and refused.value.message.startswith("5.7.1 ")
    await asyncio.sleep(0.2)
    assert not sink.messages


async def test_l_tag_with_appended_content_never_counts(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "rsa")))
    records = keep_records(gw)
    raw = _inbound()
    pem = (KEY_DATA / "rsa2048.pem").read_bytes()
    signed = dkimpy.sign(raw, b"rsa", REMOTE.encode(), pem, canonicalize=(b"relaxed", b"relaxed"), length=True) + raw
    appended = signed + b"\r\nThong bao: dang nhap http://evil.example/ de xac nhan tai khoan\r\n"
    data = await _deliver(gw, sink, "mx", appended, f"vanphong@{REMOTE}", LOCAL_RCPT)
    (results,) = _header_fields(data, "Authentication-Results")
    assert "dkim=pass (2048-bit key; body signed only up to l=" in results
    facts = records[0]["dkim"]
    assert (facts["status"], facts["aligned_pass"], facts["signatures"][0]["covers_body"]) == ("fail", False, False)


async def test_expired_signature_and_short_key(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "ed"), _zone_line(REMOTE, "short")))
    records = keep_records(gw)
    raw = _inbound()
    expired = sign(raw, [_signing_key("ed", REMOTE)], now=time.time() - 7200, expire_after=3600)
    short = dkimpy.sign(raw, b"short", REMOTE.encode(), (KEY_DATA / "rsa512.pem").read_bytes(), canonicalize=(b"relaxed", b"relaxed"))
    data = await _deliver(gw, sink, "mx", expired + short + raw, f"vanphong@{REMOTE}", LOCAL_RCPT)
    (results,) = _header_fields(data, "Authentication-Results")
    # (Parentheses cannot nest in an RFC 8601 comment here: they become "?".)
    assert "dkim=permerror (signature expired ?x=?) header.d=hanoi.gov.vn header.s=ed" in results
    assert "dkim=policy (512-bit key; RSA key too short ?512 bits, 1024 needed?) header.d=hanoi.gov.vn header.s=short" in results
    assert (records[0]["dkim"]["status"], records[0]["dkim"]["aligned_pass"]) == ("fail", False)


async def test_the_stage_also_works_when_called_on_a_running_loop(make_gateway, tmp_path):
    # The edge runs the pipeline in a worker thread; a caller that runs it on
    # its own event loop's thread (a script, a future tool) must work too.
    from mailgw.message.model import Envelope, Message, new_id
    from mailgw.stages import dkim_verify

    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(REMOTE, "ed")))
    raw = _inbound()
    msg = Message(new_id(), Envelope(f"vanphong@{REMOTE}", [LOCAL_RCPT], "mx", "mx", "127.0.0.1"), sign(raw, [_signing_key("ed", REMOTE)]) + raw)
    msg.facts.author = f"vanphong@{REMOTE}"
    dkim_verify.run(msg, gw.context())
    assert msg.facts.dkim is not None and msg.facts.dkim.aligned_pass
    assert (msg.facts.authentication_results or "").startswith("mailgw.test;\r\n\tdkim=pass")


# --- partner pinning ------------------------------------------------------------


@pytest.mark.parametrize(("selector", "pinned"), [("mail", True), ("other", False), (None, False)], ids=["pinned", "other-selector", "unsigned"])
async def test_partner_mail_without_its_pinned_signature_is_tagged(make_gateway, sink, tmp_path, selector, pinned):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(PARTNER, "mail", "ed"), _zone_line(PARTNER, "other", "ed")))
    records = keep_records(gw)
    raw = _inbound(sender=f"vanphong@{PARTNER}")
    if selector:
        raw = sign(raw, [SigningKey.from_file(PARTNER, selector, KEY_DATA / "ed25519.pem")]) + raw
    await _deliver(gw, sink, "mx", raw, f"vanphong@{PARTNER}", LOCAL_RCPT)
    (record,) = records
    assert record["dkim"]["pinned"] is pinned
    assert ("dkim-missing-partner" in record["decision"]["tags"]) is (not pinned)
    if selector:
        assert record["dkim"]["aligned_pass"]  # aligned, yet not the partner's pinned key


async def test_partner_pin_unknown_on_dns_timeout_is_not_tagged(make_gateway, sink, tmp_path):
    # A refusal for a missing pinned signature must not follow from a DNS hiccup.
    gw = await make_gateway(dns=_answers(tmp_path, f"mail._domainkey.{PARTNER}. TIMEOUT"))
    records = keep_records(gw)
    raw = _inbound(sender=f"vanphong@{PARTNER}")
    raw = sign(raw, [SigningKey.from_file(PARTNER, "mail", KEY_DATA / "ed25519.pem")]) + raw
    await _deliver(gw, sink, "mx", raw, f"vanphong@{PARTNER}", LOCAL_RCPT)
    (record,) = records
    assert record["dkim"]["pinned"] is None and record["dkim"]["status"] == "temperror"
    assert "dkim-missing-partner" not in record["decision"]["tags"]


# --- mailgw check ------------------------------------------------------------------


def _check(tmp_path: Path, ca: Any, password_hash: str, **overrides: Any) -> tuple[int, list[str]]:
    import contextlib
    import io

    from mailgw.cli import main
    from tests.conftest import write_config

    path = write_config(tmp_path, 2526, ca, password_hash, **overrides)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["check", "--config", str(path)])
    return status, err.getvalue().splitlines()


def test_check_is_quiet_about_good_published_keys(tmp_path, ca, password_hash):
    status, lines = _check(tmp_path, ca, password_hash, dkim=_dkim_settings(tmp_path, "rsa", "ed"),
                           dns=_answers(tmp_path, _zone_line(LOCAL, "rsa"), _zone_line(LOCAL, "ed")))
    assert (status, lines) == (0, [])


def test_check_warns_about_key_files_and_dns_records(tmp_path, ca, password_hash):
    dkim = _dkim_settings(tmp_path, "rsa", "ed") + [
        {"domain": "stttt.binhthuan.gov.vn", "selector": "ed", "key": _keyfile(tmp_path, "ed")},
        {"domain": "lamdong.gov.vn", "selector": "ed", "key": _keyfile(tmp_path, "ed")},
    ]
    os.chmod(tmp_path / "keys" / "rsa.pem", 0o644)
    dns = _answers(tmp_path, _zone_line(LOCAL, "rsa", "ed"),  # the Ed25519 key published at the RSA selector
                   f"ed._domainkey.{LOCAL}. TIMEOUT")  # and no answer for the other; stttt: no record
    status, lines = _check(tmp_path, ca, password_hash, dkim=dkim, dns=dns)
    assert status == 0, lines
    config = str(tmp_path / "gateway.yaml")
    assert all(line.startswith(config + ":") and ": warning: " in line for line in lines), lines
    text = "\n".join(lines)
    # The warning names the line where the entry starts ("- domain: ...", just above "key: keys/rsa.pem").
    settings_lines = (tmp_path / "gateway.yaml").read_text().splitlines()
    entry_line = settings_lines.index("  key: keys/rsa.pem")  # 0-based index of the key line = 1-based line of the entry
    assert f"{config}:{entry_line}: warning: DKIM key {tmp_path / 'keys' / 'rsa.pem'} is accessible to group or others (mode 0644)" in text
    assert f"the DNS TXT record at rsa._domainkey.{LOCAL} does not publish this key" in text
    assert f"could not check the DNS record of DKIM key ed._domainkey.{LOCAL}" in text
    assert "no DNS TXT record at ed._domainkey.stttt.binhthuan.gov.vn" in text
    assert "lamdong.gov.vn is not a local domain of the directory: this key never signs" in text


def test_check_names_the_line_of_a_bad_key(tmp_path, ca, password_hash):
    dkim = _dkim_settings(tmp_path, "ed") + [{"domain": LOCAL, "selector": "broken", "key": "keys/missing.pem"},
                                             {"domain": LOCAL, "selector": "ed", "key": _keyfile(tmp_path, "ed")},
                                             {"domain": LOCAL, "selector": "short", "key": _keyfile(tmp_path, "short")},
                                             {"domain": LOCAL, "selector": "rsa", "key": _keyfile(tmp_path, "ed"), "algorithm": "rsa"}]
    status, lines = _check(tmp_path, ca, password_hash, dkim=dkim)
    assert status == 1
    config = str(tmp_path / "gateway.yaml")
    text = "\n".join(lines)
    assert f"DKIM key for {LOCAL} (selector broken): cannot read DKIM key" in text
    assert "DKIM selector ed of binhthuan.gov.vn is already given at line" in text
    assert "receivers reject keys under 1024 bits" in text
    assert "is ed25519-sha256, not rsa as this entry says" in text
    errors = [line for line in lines if ": warning: " not in line]
    assert len(errors) == 4 and all(line.split(":")[0] == config and int(line.split(":")[1]) > 0 for line in errors)


def test_starting_with_a_bad_key_fails_with_file_and_line(tmp_path, ca, password_hash):
    from mailgw.app import Gateway
    from mailgw.config.yamlfile import ConfigError
    from tests.conftest import write_config

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "bad.pem").write_text("not a key at all\n")
    os.chmod(tmp_path / "keys" / "bad.pem", 0o600)
    path = write_config(tmp_path, 2526, ca, password_hash, dkim=[{"domain": LOCAL, "selector": "bad", "key": "keys/bad.pem"}])
    with pytest.raises(ConfigError) as failed:
        Gateway(str(path))
    (problem,) = failed.value.problems
    assert problem.file == str(path) and problem.line > 0 and "neither a PEM private key nor a base64 Ed25519 seed" in problem.message
    assert stat.S_IMODE((tmp_path / "keys" / "bad.pem").stat().st_mode) == 0o600


async def test_our_domain_signed_but_its_key_lookup_times_out_is_deferred_not_refused(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, f"ed._domainkey.{LOCAL}. TIMEOUT"))
    records = keep_records(gw)
    raw = message(sender=SENDER, to=LOCAL_RCPT)
    signed = sign(raw, [_signing_key("ed", LOCAL)]) + raw
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, "mx", signed, SENDER, [LOCAL_RCPT])
    assert (err.value.code, err.value.message[:5]) == (451, "4.4.3")
    assert records[0]["decision"]["rule"] == "spoof-local-domain-temperror"


async def test_our_domain_properly_signed_passes_on_mx(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, _zone_line(LOCAL, "ed")))
    raw = message(sender=SENDER, to=LOCAL_RCPT)
    data = await _deliver(gw, sink, "mx", sign(raw, [_signing_key("ed", LOCAL)]) + raw, SENDER, LOCAL_RCPT)
    assert _header_fields(data, "Authentication-Results")[0].startswith(f"mailgw.test; dkim=pass header.d={LOCAL}")
