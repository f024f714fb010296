"""DKIM signing and verification: RFC vectors, round trips, attacks, DNS failures, alignment, reporting."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import dkim as dkimpy
import pytest

from mailgw.config.resolver import FileResolver
from mailgw.dkim import (
    OVERSIGNED,
    DkimSigningError,
    SigningKey,
    authentication_results,
    load_key,
    pinned_ok,
    sign,
    strip_forged_authentication_results,
    txt_record,
    verify,
)

DATA = Path(__file__).parent / "data" / "dkim"
VECTORS = DATA / "vectors"
MESSAGES = sorted((DATA / "messages").glob("*.eml"))
DOMAIN = "example.gov.vn"
KEY_FILES = {"rsa": DATA / "keys" / "rsa2048.pem", "ed": DATA / "keys" / "ed25519.pem", "short": DATA / "keys" / "rsa512.pem"}
LETTER = (DATA / "messages" / "official-letter.eml").read_bytes()  # From: vanthu@stttt.example.gov.vn
HOST = "mailgw.example.gov.vn"


def _key(selector: str, domain: str = DOMAIN) -> SigningKey:
    return SigningKey.from_file(domain, selector, KEY_FILES[selector])


def _zone(*extra: str, domain: str = DOMAIN) -> FileResolver:
    """Our three test keys published under ``domain``, plus ``extra`` zone lines."""
    lines = [txt_record(domain, sel, load_key(path)) for sel, path in KEY_FILES.items()]
    return FileResolver.from_text("\n".join(lines + list(extra)))


def _rfc_vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes().replace(b"\n", b"\r\n")


def _rfc_zone() -> FileResolver:
    rsa = (VECTORS / "test.txt").read_text().strip()
    return FileResolver.from_text(
        'brisbane._domainkey.football.example.com. TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
        f'test._domainkey.football.example.com. TXT "{rsa}"\n'
    )


def _dkimpy_sign(message: bytes, selector: str, **options) -> bytes:
    """A signature made by dkimpy (pure Python RSA), for cases our signer refuses to make."""
    pem = KEY_FILES[selector].read_bytes()
    return dkimpy.sign(message, selector.encode(), DOMAIN.encode(), pem,
                       canonicalize=(b"relaxed", b"relaxed"), **options)


def _verdicts(report) -> list[tuple[str, str, str]]:
    return [(s.s, s.result, s.reason) for s in report.signatures]


# --- independent vectors --------------------------------------------------


async def test_rfc8463_example_signatures_pass():
    report = await verify(_rfc_vector("rfc6376.signed.msg"), _rfc_zone(), now=1_700_000_000)
    assert _verdicts(report) == [("brisbane", "pass", ""), ("test", "pass", "")]
    assert [s.a for s in report.signatures] == ["ed25519-sha256", "rsa-sha256"]
    assert [s.key_bits for s in report.signatures] == [256, 1024]
    assert report.from_domain == "football.example.com"
    assert report.aligned_pass and report.status == "pass"


async def test_rfc8463_example_signatures_fail_when_the_body_changes():
    message = _rfc_vector("rfc6376.signed.msg").replace(b"We lost the game", b"We won the game")
    report = await verify(message, _rfc_zone(), now=1_700_000_000)
    assert _verdicts(report) == [("brisbane", "fail", "body hash mismatch"), ("test", "fail", "body hash mismatch")]
    assert not report.aligned_pass and report.status == "fail"


async def test_rfc6376_rsa_vector_fails_with_a_changed_signed_header():
    message = _rfc_vector("rfc6376.signed.rsa.msg").replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
    report = await verify(message, _rfc_zone(), now=1_700_000_000)
    assert _verdicts(report) == [("test", "fail", "signature did not verify")]


# --- our signatures -----------------------------------------------------


@pytest.mark.parametrize("selectors", [("rsa",), ("ed",), ("rsa", "ed")], ids="+".join)
@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.stem)
async def test_our_signatures_verify(path, selectors):
    message = path.read_bytes()
    report = await verify(sign(message, [_key(s) for s in selectors]) + message, _zone())
    assert _verdicts(report) == [(s, "pass", "") for s in selectors]
    assert all(s.covers_body and s.d == DOMAIN for s in report.signatures)
    assert report.aligned_pass  # every From in the corpus is under example.gov.vn


def test_signature_fields_have_the_promised_shape():
    headers = sign(LETTER, [_key("rsa"), _key("ed")], now=1_762_000_000, expire_after=86400)
    assert headers.endswith(b"\r\n") and b"\n" not in headers.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in headers.split(b"\r\n"))
    fields = re.split(rb"\r\n(?=DKIM-Signature:)", headers.rstrip(b"\r\n"))
    assert len(fields) == 2
    for field, algorithm in zip(fields, (b"rsa-sha256", b"ed25519-sha256")):
        tags = dkimpy.util.parse_tag_value(field.split(b":", 1)[1].replace(b"\r\n", b""))
        assert tags[b"a"] == algorithm and tags[b"c"] == b"relaxed/relaxed"
        assert tags[b"d"] == DOMAIN.encode() and b"l" not in tags
        assert (tags[b"t"], tags[b"x"]) == (b"1762000000", b"1762086400")
        signed = [h.strip() for h in tags[b"h"].split(b":")]
        present = [line.split(b":")[0].lower() for line in LETTER.split(b"\r\n\r\n")[0].split(b"\r\n") if line[:1] not in b" \t"]
        for name in OVERSIGNED:
            assert signed.count(name) == present.count(name) + 1, name
        assert signed.count(b"from") == 2 and signed.count(b"sender") == 1


def test_signing_refuses_what_it_cannot_sign_properly():
    with pytest.raises(DkimSigningError, match="no From"):
        sign(b"To: a@example.net\r\nSubject: x\r\n\r\nbody\r\n", [_key("rsa")])
    with pytest.raises(DkimSigningError, match="no DKIM key"):
        sign(LETTER, [])
    with pytest.raises(DkimSigningError, match="cannot be parsed"):
        sign(b"From: a@example.gov.vn\r\nthis is not a header\r\n\r\nbody\r\n", [_key("rsa")])


async def test_changed_body_fails():
    signed = sign(LETTER, [_key("rsa"), _key("ed")]) + LETTER
    tampered = signed.replace(b"10/11/2025", b"11/11/2025")
    assert _verdicts(await verify(tampered, _zone())) == [
        ("rsa", "fail", "body hash mismatch"), ("ed", "fail", "body hash mismatch")]


async def test_changed_signed_header_fails():
    signed = sign(LETTER, [_key("rsa"), _key("ed")]) + LETTER
    tampered = signed.replace(b"Date: Mon, 03 Nov 2025", b"Date: Tue, 04 Nov 2025")
    report = await verify(tampered, _zone())
    assert _verdicts(report) == [("rsa", "fail", "signature did not verify"), ("ed", "fail", "signature did not verify")]
    assert report.status == "fail"


async def test_added_trace_header_and_refolded_header_still_pass():
    # Relays add Received and may refold: relaxed canonicalization is there for that.
    signed = sign(LETTER, [_key("rsa")]) + LETTER
    relayed = b"Received: from relay.example.net by mx.example.net; Mon, 3 Nov 2025 08:16:00 +0700\r\n" + signed
    relayed = relayed.replace(b"To: Phong Van thu <vanthu@ubnd.example.gov.vn>,\r\n\t", b"To:  Phong Van thu <vanthu@ubnd.example.gov.vn>,\r\n    ")
    assert _verdicts(await verify(relayed, _zone())) == [("rsa", "pass", "")]


@pytest.mark.parametrize("selector", ["rsa", "ed"])
async def test_second_from_above_our_signed_one_fails(selector):
    signed = sign(LETTER, [_key(selector)]) + LETTER
    forged = signed.replace(b"From: =?utf-8?b?", b"From: Giam doc <giamdoc@example.gov.vn>\r\nFrom: =?utf-8?b?", 1)
    report = await verify(forged, _zone())
    assert [s.result for s in report.signatures] == ["fail"]
    assert report.from_domain is None and not report.aligned_pass


async def test_second_from_above_a_once_signed_from_fails():
    # A signer that does not oversign (h=from once): the signature still
    # verifies over the headers it names, so only counting the From fields
    # catches the added one (dkimpy does the same).
    message = b"From: Van thu <vanthu@example.gov.vn>\r\nTo: x@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    signed = _dkimpy_sign(message, "rsa", include_headers=[b"from", b"to", b"subject"]) + message
    assert _verdicts(await verify(signed, _zone())) == [("rsa", "pass", "")]
    forged = signed.replace(b"From: Van thu", b"From: Attacker <boss@example.gov.vn>\r\nFrom: Van thu")
    assert _verdicts(await verify(forged, _zone())) == [("rsa", "fail", "unsigned From header added")]
    below = signed.replace(b"To: x@", b"From: Attacker <boss@example.gov.vn>\r\nTo: x@")
    assert [s.result for s in (await verify(below, _zone())).signatures] == ["fail"]


async def test_l_tag_signature_never_counts_even_when_it_passes():
    message = b"From: Van thu <vanthu@example.gov.vn>\r\nTo: x@example.net\r\nSubject: hi\r\n\r\nSigned text.\r\n"
    signed = _dkimpy_sign(message, "rsa", length=True) + message
    appended = signed + b"\r\nUNSIGNED: click http://evil.example/ to confirm your account\r\n"
    report = await verify(appended, _zone())
    (sig,) = report.signatures
    assert (sig.result, sig.covers_body, sig.aligned) == ("pass", False, True)
    assert "l=" in sig.reason
    assert not report.aligned_pass and report.status == "fail"
    assert not pinned_ok(report, [(DOMAIN, "rsa")])


async def test_l_tag_longer_than_the_body_fails():
    message = b"From: Van thu <vanthu@example.gov.vn>\r\nTo: x@example.net\r\nSubject: hi\r\n\r\nSigned text.\r\nMore.\r\n"
    signed = _dkimpy_sign(message, "rsa", length=True) + message
    truncated = signed.replace(b"More.\r\n", b"")
    assert _verdicts(await verify(truncated, _zone())) == [("rsa", "fail", "l= is longer than the body")]


async def test_expired_signature():
    signed_at = time.time() - 7200
    signed = sign(LETTER, [_key("ed")], now=signed_at, expire_after=3600) + LETTER
    assert _verdicts(await verify(signed, _zone())) == [("ed", "permerror", "signature expired (x=)")]
    assert _verdicts(await verify(signed, _zone(), now=signed_at + 60)) == [("ed", "pass", "")]


async def test_signature_from_the_future():
    signed = sign(LETTER, [_key("ed")], now=time.time() + 86400) + LETTER
    assert _verdicts(await verify(signed, _zone())) == [("ed", "permerror", "signature timestamp t= is in the future")]


async def test_key_too_short_is_rejected():
    message = b"From: vanthu@example.gov.vn\r\nTo: x@example.net\r\nSubject: short key\r\n\r\nbody\r\n"
    signed = _dkimpy_sign(message, "short") + message
    report = await verify(signed, _zone())
    (sig,) = report.signatures
    assert (sig.result, sig.key_bits) == ("policy", 512)
    assert "too short" in sig.reason and not report.aligned_pass
    # Nothing else is wrong with it: a verifier that allowed 512 bits would pass it.
    assert _verdicts(await verify(signed, _zone(), min_rsa_bits=512)) == [("short", "pass", "")]


async def test_rsa_sha1_is_not_accepted():
    message = b"From: vanthu@example.gov.vn\r\nTo: x@example.net\r\nSubject: sha1\r\n\r\nbody\r\n"
    signed = _dkimpy_sign(message, "rsa", signature_algorithm=b"rsa-sha1") + message
    assert _verdicts(await verify(signed, _zone())) == [("rsa", "permerror", "rsa-sha1 is not accepted (RFC 8301)")]


# --- keys in DNS ----------------------------------------------------------


@pytest.mark.parametrize("failure", ["TIMEOUT", "SERVFAIL"])
async def test_dns_failure_is_temperror_not_fail(failure):
    signed = sign(LETTER, [_key("rsa"), _key("ed")]) + LETTER
    resolver = _zone(f"ed._domainkey.{DOMAIN}. {failure}")
    report = await verify(signed, resolver)
    assert [(s.s, s.result) for s in report.signatures] == [("rsa", "pass"), ("ed", "temperror")]
    assert report.aligned_pass  # the RSA signature alone is enough
    # With only the unreachable key, the verdict is "ask again later".
    only_ed = sign(LETTER, [_key("ed")]) + LETTER
    report = await verify(only_ed, resolver)
    assert [s.result for s in report.signatures] == ["temperror"]
    assert failure.lower() in report.signatures[0].reason.lower() and report.status == "temperror"


async def test_missing_key_record_is_permerror():
    signed = sign(LETTER, [_key("rsa", domain="other.gov.vn")]) + LETTER
    report = await verify(signed, _zone())  # keys published under example.gov.vn only
    assert _verdicts(report) == [("rsa", "permerror", "no key published at rsa._domainkey.other.gov.vn.")]
    assert report.status == "fail"


@pytest.mark.parametrize(("record", "reason"), [
    ('"v=DKIM1; k=rsa; p="', "key revoked (empty p=)"),
    ('"v=DKIM1; k=rsa; p=bm90IGEga2V5"', "key p= cannot be parsed"),
    ('"v=DKIM2; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="', "key record is not v=DKIM1"),
    ('"v=DKIM1; k=ed25519; h=sha1; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="', "key does not allow sha256"),
    ('"v=DKIM1; k=rsa; p=MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="', "k=rsa but p= is not an RSA key"),
])
async def test_bad_key_records_are_permerror(record, reason):
    signed = sign(LETTER, [_key("ed")]) + LETTER
    resolver = FileResolver.from_text(f"ed._domainkey.{DOMAIN}. TXT {record}")
    assert _verdicts(await verify(signed, resolver)) == [("ed", "permerror", reason)]


async def test_key_of_the_wrong_type_is_permerror():
    signed = sign(LETTER, [_key("ed")]) + LETTER
    rsa_public = re.search(r'IN TXT (.*)$', txt_record(DOMAIN, "x", load_key(KEY_FILES["rsa"]))).group(1)
    resolver = FileResolver.from_text(f"ed._domainkey.{DOMAIN}. TXT {rsa_public}")
    assert _verdicts(await verify(signed, resolver)) == [("ed", "permerror", "key type does not match a=")]


async def test_signatures_over_the_limit_are_not_checked():
    signatures = b"".join(sign(LETTER, [_key("ed")], now=1_762_000_000 + i) for i in range(7))
    report = await verify(signatures + LETTER, _zone(), now=1_762_000_100, max_signatures=5)
    assert [s.result for s in report.signatures] == ["pass"] * 5 + ["neutral"] * 2
    assert report.signatures[-1].reason == "not checked: more than 5 signatures"
    assert report.signatures[-1].d == DOMAIN


async def test_malformed_signature_is_permerror_and_the_others_still_count():
    bad = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.gov.vn; s=rsa; h=to; bh=AAAA; b=AAAA\r\n"
    report = await verify(bad + sign(LETTER, [_key("ed")]) + LETTER, _zone())
    assert _verdicts(report) == [("rsa", "permerror", "From is not signed"), ("ed", "pass", "")]
    assert report.aligned_pass


async def test_oversized_header_list_is_refused_before_any_work():
    names = b":".join([b"from"] + [b"x-filler-%d" % i for i in range(150)])
    bad = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.gov.vn; s=nokey; h=" + names + b"; bh=AAAA; b=AAAA\r\n"
    report = await verify(bad + LETTER, FileResolver.from_text("nokey._domainkey.example.gov.vn. TIMEOUT"))
    assert _verdicts(report) == [("nokey", "permerror", "h= lists more than 100 header fields")]


async def test_unsigned_and_unparsable_messages():
    report = await verify(LETTER, _zone())
    assert report.signatures == () and report.status == "none" and not report.aligned_pass
    broken = await verify(b"From: a@example.gov.vn\r\nnot a header line\r\n\r\nbody\r\n", _zone())
    assert broken.error and broken.status == "fail"
    assert "dkim=permerror" in authentication_results(HOST, broken)


# --- alignment --------------------------------------------------------------


@pytest.mark.parametrize(("author", "signer", "aligned"), [
    ("vanthu@stttt.example.gov.vn", "example.gov.vn", True),      # subdomain author, organisation signs
    ("vanthu@example.gov.vn", "mail.example.gov.vn", True),       # organisation author, subdomain signs
    ("vanthu@example.gov.vn", "other.gov.vn", False),             # another agency under the gov.vn suffix
    ("vanthu@example.gov.vn", "gov.vn", False),                   # the public suffix itself vouches for nobody
    ("vanthu@example.gov.vn", "example.com.vn", False),
])
async def test_alignment_by_organisational_domain(author, signer, aligned):
    message = f"From: Van thu <{author}>\r\nTo: x@example.net\r\nSubject: align\r\n\r\nbody\r\n".encode()
    signed = sign(message, [_key("ed", domain=signer)]) + message
    report = await verify(signed, _zone(domain=signer))
    (sig,) = report.signatures
    assert (sig.result, sig.aligned, report.aligned_pass) == ("pass", aligned, aligned)


async def test_no_single_author_means_no_alignment():
    message = b"From: a@example.gov.vn, b@example.gov.vn\r\nTo: x@example.net\r\nSubject: two\r\n\r\nbody\r\n"
    report = await verify(sign(message, [_key("ed")]) + message, _zone())
    assert [s.result for s in report.signatures] == ["pass"]
    assert report.from_domain is None and not report.aligned_pass


# --- reporting ---------------------------------------------------------------


async def test_authentication_results_value():
    signed = sign(LETTER, [_key("rsa"), _key("ed")]) + LETTER
    report = await verify(signed, _zone(f"ed._domainkey.{DOMAIN}. TIMEOUT"))
    value = authentication_results(HOST, report, extra=["spf=pass smtp.mailfrom=example.gov.vn"])
    lines = value.split(";\r\n\t")
    assert lines[0] == HOST
    rsa_b = report.signatures[0].b_prefix
    assert re.fullmatch(
        r"dkim=pass \(2048-bit key\) header\.d=example\.gov\.vn header\.s=rsa header\.a=rsa-sha256 header\.b=(\S+)", lines[1])
    assert rsa_b in lines[1] and len(rsa_b) == 8
    assert re.fullmatch(
        r"dkim=temperror \(key lookup failed: timeout looking up ed\._domainkey\.example\.gov\.vn\. \?simulated\?\) "
        r"header\.d=example\.gov\.vn header\.s=ed header\.a=ed25519-sha256 header\.b=\S+", lines[2])
    assert lines[3] == "spf=pass smtp.mailfrom=example.gov.vn"
    assert authentication_results(HOST, await verify(LETTER, _zone())) == f"{HOST};\r\n\tdkim=none"


async def test_report_to_json():
    report = await verify(sign(LETTER, [_key("ed")]) + LETTER, _zone())
    data = json.loads(json.dumps(report.to_json()))
    assert data["status"] == "pass" and data["aligned_pass"] is True
    assert data["from_domain"] == "stttt.example.gov.vn"
    assert data["signatures"][0] | {"b_prefix": ""} == {
        "d": DOMAIN, "s": "ed", "a": "ed25519-sha256", "result": "pass", "reason": "",
        "covers_body": True, "aligned": True, "key_bits": 256, "b_prefix": ""}


async def test_pinned_ok():
    report = await verify(sign(LETTER, [_key("rsa"), _key("ed")]) + LETTER, _zone())
    assert pinned_ok(report, [("EXAMPLE.gov.vn.", "ED")])
    assert pinned_ok(report, [("other.gov.vn", "ed"), (DOMAIN, "rsa")])
    assert not pinned_ok(report, [(DOMAIN, "mailgw")])
    assert not pinned_ok(report, [])
    # A pinned pair whose signature fails does not count.
    tampered = await verify((sign(LETTER, [_key("ed")]) + LETTER).replace(b"10/11", b"12/11"), _zone())
    assert not pinned_ok(tampered, [(DOMAIN, "ed")])


FORGED = (
    b"Authentication-Results: mailgw.example.gov.vn; dkim=pass header.d=example.gov.vn\r\n"
    b"Received: from relay.example.net\r\n"
    b"authentication-results :\r\n MAILGW.Example.gov.vn.;\r\n\tdkim=pass\r\n"
    b"Authentication-Results: (we checked) mailgw.example.gov.vn 1; spf=pass\r\n"
    b'Authentication-Results: "mailgw.example.gov.vn"; dmarc=pass\r\n'
    b"Authentication-Results: mx.example.net; dkim=fail\r\n"
    b"Authentication-Results: mailgw.example.gov.vn.evil.example; dkim=pass\r\n"
    b"From: vanthu@example.gov.vn\r\n"
    b"\r\n"
    b"Authentication-Results: mailgw.example.gov.vn; this line is body text\r\n"
)


def test_forged_authentication_results_are_stripped():
    assert strip_forged_authentication_results(FORGED, HOST) == (
        b"Received: from relay.example.net\r\n"
        b"Authentication-Results: mx.example.net; dkim=fail\r\n"
        b"Authentication-Results: mailgw.example.gov.vn.evil.example; dkim=pass\r\n"
        b"From: vanthu@example.gov.vn\r\n"
        b"\r\n"
        b"Authentication-Results: mailgw.example.gov.vn; this line is body text\r\n"
    )
    assert strip_forged_authentication_results(LETTER, HOST) is LETTER  # none to strip: not even copied
    # A field name in any case is one (RFC 5322): found by the quick look too.
    only = b"AUTHENTICATION-RESULTS: mailgw.example.gov.vn; dkim=pass\r\nFrom: vanthu@example.gov.vn\r\n\r\nx\r\n"
    assert strip_forged_authentication_results(only, HOST) == b"From: vanthu@example.gov.vn\r\n\r\nx\r\n"


async def test_stripping_keeps_signatures_valid():
    signed = sign(LETTER, [_key("ed")]) + LETTER
    with_forgery = b"Authentication-Results: mailgw.example.gov.vn; dkim=pass\r\n" + signed
    stripped = strip_forged_authentication_results(with_forgery, HOST)
    assert stripped == signed
    assert _verdicts(await verify(stripped, _zone())) == [("ed", "pass", "")]
