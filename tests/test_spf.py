"""SPF (RFC 7208): the evaluator's edge cases over a zone-style answers file, and the gateway's mx listener over real sockets.

The records follow the examples of RFC 7208 (appendix A) and the shapes real domains
publish (include chains, ``redirect=``, ``mx``, ``a/24``, ``exists`` with macros).
"""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest

from mailgw.config.resolver import FileResolver
from mailgw.senderauth.spf import check_host
from tests.conftest import keep_records, message, send

LOCAL_RCPT = "vanthu.snv@binhthuan.gov.vn"
REMOTE = "hanoi.gov.vn"


async def _check(zone: str, ip: str, domain: str = "example.com", sender: str = "", helo: str = "mail.example.com") -> tuple[str, str | None]:
    found = await check_host(ip, domain, sender or f"user@{domain}", FileResolver.from_text(zone), helo=helo)
    return found.result, found.mechanism


EXAMPLE = """
example.com.          IN TXT "v=spf1 +mx a:colo.example.com/28 -all"
example.com.          IN MX 10 mx.example.com.
example.com.          IN MX 20 mx2.example.com.
mx.example.com.       IN A 192.0.2.129
mx2.example.com.      IN A 192.0.2.130
mx2.example.com.      IN AAAA 2001:db8::130
colo.example.com.     IN A 192.0.2.4
"""


@pytest.mark.parametrize(("ip", "expected"), [
    ("192.0.2.129", ("pass", "+mx")),
    ("192.0.2.130", ("pass", "+mx")),
    ("2001:db8::130", ("pass", "+mx")),
    ("::ffff:192.0.2.130", ("pass", "+mx")),  # an IPv4 client seen on a dual-stack socket
    ("192.0.2.10", ("pass", "a:colo.example.com/28")),  # within colo's /28
    ("192.0.2.20", ("fail", "-all")),
    ("2001:db8::1", ("fail", "-all")),
])
async def test_rfc_7208_appendix_a_example(ip, expected):
    assert await _check(EXAMPLE, ip) == expected


async def test_no_record_none_and_other_txt_records_ignored():
    zone = 'example.com. IN TXT "google-site-verification=abc"\nexample.com. IN TXT "v=spf10 -all"'
    assert (await _check(zone, "192.0.2.1"))[0] == "none"
    assert (await _check("", "192.0.2.1"))[0] == "none"  # the name does not exist


@pytest.mark.parametrize("domain", ["localhost", "a..example.com", "-bad.example.com", "x" * 64 + ".example.com"])
async def test_a_domain_that_is_not_a_valid_name_is_none(domain):
    assert (await _check("", "192.0.2.1", domain=domain))[0] == "none"


async def test_two_spf_records_are_permerror():
    zone = 'example.com. IN TXT "v=spf1 -all"\nexample.com. IN TXT "v=spf1 +all"'
    assert (await _check(zone, "192.0.2.1"))[0] == "permerror"


@pytest.mark.parametrize("record", [
    "v=spf1 ip4:192.0.2.1 foo:bar -all",  # unknown mechanism, after the one that matches
    "v=spf1 ip4:192.0.2.1 ip4:192.0.2.300 -all",
    "v=spf1 ip4:192.0.2.1 ip4:192.0.2.0/ -all",
    "v=spf1 ip4:192.0.2.1 a:example -all",  # not a domain (no top label)
    "v=spf1 ip4:192.0.2.1 redirect=a.example.com redirect=b.example.com",
    "v=spf1 ip4:192.0.2.1 include -all",
    "v=spf1 ip4:192.0.2.1 exists:%{x}.example.com -all",  # unknown macro letter
    "v=spf1 ip4:192.0.2.1 a:%.example.com -all",
    "v=spf1 ip4:192.0.2.1 mx/33 -all",
    "v=spf1 ip4:192.0.2.1 all:x",
])
async def test_a_syntax_error_anywhere_is_permerror_even_after_a_match(record):
    assert (await _check(f'example.com. IN TXT "{record}"', "192.0.2.1"))[0] == "permerror"


async def test_unknown_modifiers_are_ignored_and_qualifiers_give_their_results():
    zone = 'example.com. IN TXT "v=spf1 moo=cow ~ip4:192.0.2.1 ?ip4:192.0.2.2 -ip4:192.0.2.3 exp=explain.example.com"'
    assert await _check(zone, "192.0.2.1") == ("softfail", "~ip4:192.0.2.1")
    assert await _check(zone, "192.0.2.2") == ("neutral", "?ip4:192.0.2.2")
    assert await _check(zone, "192.0.2.3") == ("fail", "-ip4:192.0.2.3")
    assert await _check(zone, "192.0.2.4") == ("neutral", None)  # nothing matched, no redirect


async def test_include_passes_only_on_pass_and_needs_a_record():
    zone = """
    example.com.       IN TXT "v=spf1 include:_spf.example.net include:_spf.example.org -all"
    _spf.example.net.  IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
    _spf.example.org.  IN TXT "v=spf1 ip4:203.0.113.7 ~all"
    """
    assert await _check(zone, "198.51.100.9") == ("pass", "include:_spf.example.net")
    assert await _check(zone, "203.0.113.7") == ("pass", "include:_spf.example.org")
    assert await _check(zone, "192.0.2.1") == ("fail", "-all")  # the included -all and ~all do not end it
    missing = 'example.com. IN TXT "v=spf1 include:nothing.example.net -all"'
    assert (await _check(missing, "192.0.2.1"))[0] == "permerror"


async def test_redirect_to_a_domain_without_a_record_is_permerror_and_all_disables_redirect():
    zone = """
    example.com.   IN TXT "v=spf1 redirect=_spf.example.com"
    _spf.example.com. IN TXT "v=spf1 ip4:192.0.2.1 -all"
    other.example. IN TXT "v=spf1 redirect=none.example"
    both.example.  IN TXT "v=spf1 ?all redirect=_spf.example.com"
    """
    assert await _check(zone, "192.0.2.1") == ("pass", "ip4:192.0.2.1")
    assert await _check(zone, "192.0.2.2") == ("fail", "-all")
    assert (await _check(zone, "192.0.2.1", domain="other.example"))[0] == "permerror"
    assert (await _check(zone, "192.0.2.1", domain="both.example"))[0] == "neutral"


def _txt(name: str, record: str) -> str:
    """A zone line for a TXT record of any length: character-strings of at most 255 octets (RFC 7208 3.3)."""
    chunks = [record[i:i + 200] for i in range(0, len(record), 200)]
    return f"{name}. IN TXT " + " ".join(f'"{c}"' for c in chunks)


def _chain(count: int) -> str:
    """example.com includes i1 ... i<count>, each an SPF record matching nothing."""
    includes = " ".join(f"include:i{n}.example.com" for n in range(1, count + 1))
    lines = [_txt("example.com", f"v=spf1 {includes} ip4:192.0.2.1 -all")]
    lines += [f'i{n}.example.com. IN TXT "v=spf1 ip4:10.0.0.{n} -all"' for n in range(1, count + 1)]
    return "\n".join(lines)


async def test_ten_dns_querying_terms_are_allowed_the_eleventh_is_permerror():
    assert await _check(_chain(10), "192.0.2.1") == ("pass", "ip4:192.0.2.1")
    assert (await _check(_chain(11), "192.0.2.1"))[0] == "permerror"


async def test_an_include_loop_ends_in_permerror():
    zone = 'example.com. IN TXT "v=spf1 include:loop.example.com -all"\nloop.example.com. IN TXT "v=spf1 include:example.com -all"'
    found = await check_host("192.0.2.1", "example.com", "a@example.com", FileResolver.from_text(zone))
    assert found.result == "permerror" and "10 DNS-querying terms" in found.reason


async def test_the_third_void_lookup_is_permerror():
    two = 'example.com. IN TXT "v=spf1 a:n1.example.com a:n2.example.com ip4:192.0.2.1 -all"'
    three = 'example.com. IN TXT "v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com ip4:192.0.2.1 -all"'
    assert (await _check(two, "192.0.2.1"))[0] == "pass"
    found = await check_host("192.0.2.1", "example.com", "a@example.com", FileResolver.from_text(three))
    assert found.result == "permerror" and "void" in found.reason


async def test_more_than_ten_mx_names_is_permerror():
    lines = ['example.com. IN TXT "v=spf1 mx -all"'] + [f"example.com. IN MX {n} mx{n}.example.com." for n in range(11)]
    assert (await _check("\n".join(lines), "192.0.2.1"))[0] == "permerror"


async def test_dns_timeout_is_temperror_and_servfail_in_an_include_too():
    assert (await _check("example.com. TIMEOUT", "192.0.2.1"))[0] == "temperror"
    zone = 'example.com. IN TXT "v=spf1 include:broken.example.net -all"\nbroken.example.net. SERVFAIL'
    assert (await _check(zone, "192.0.2.1"))[0] == "temperror"
    zone = 'example.com. IN TXT "v=spf1 a:slow.example.net -all"\nslow.example.net. TIMEOUT'
    assert (await _check(zone, "192.0.2.1"))[0] == "temperror"


async def test_macros_in_exists_and_ptr_validation():
    zone = """
    example.com. IN TXT "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} ptr:trusted.example -all"
    1.2.0.192.alice._spf.example.com. IN A 127.0.0.2
    7.2.0.192.in-addr.arpa. IN PTR host.trusted.example.
    host.trusted.example. IN A 192.0.2.7
    8.2.0.192.in-addr.arpa. IN PTR liar.trusted.example.
    liar.trusted.example. IN A 192.0.2.99
    """
    # %{l1r+-} of "alice-bob": split at + and -, reversed, the rightmost one kept ("alice", as RFC 7208 7.4's "strong-bad").
    assert await _check(zone, "192.0.2.1", sender="alice-bob@example.com") == ("pass", "exists:%{ir}.%{l1r+-}._spf.%{d}")
    assert (await _check(zone, "192.0.2.1", sender="bob-alice@example.com"))[0] == "fail"
    assert await _check(zone, "192.0.2.7") == ("pass", "ptr:trusted.example")
    assert (await _check(zone, "192.0.2.8"))[0] == "fail"  # the PTR name does not resolve back to the client


async def test_ipv6_macro_is_dotted_nibbles():
    zone = """
    example.com. IN TXT "v=spf1 exists:%{ir}.%{v}.example.com -all"
    1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.example.com. IN A 127.0.0.2
    """
    assert (await _check(zone, "2001:db8::1"))[0] == "pass"
    assert (await _check(zone, "2001:db8::2"))[0] == "fail"


# --- over real sockets ----------------------------------------------------------------


def _answers(tmp_path: Path, *lines: str) -> dict[str, str]:
    (tmp_path / "answers.zone").write_text("\n".join(lines) + "\n")
    return {"answers": "answers.zone"}


def _auth_results(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = [f for f in head.replace("\r\n\t", " ").split("\r\n") if f.lower().startswith("authentication-results:")]
    assert len(fields) == 1, fields
    return fields[0]


# The test client connects from 127.0.0.1.
SPF_ZONE = (
    f'{REMOTE}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    f'soft.{REMOTE}. IN TXT "v=spf1 ip4:192.0.2.1 ~all"',
    f'hard.{REMOTE}. IN TXT "v=spf1 ip4:192.0.2.1 -all"',
    _txt(f"many.{REMOTE}", "v=spf1 " + " ".join(f"a:h{n}.{REMOTE}" for n in range(11)) + " -all"),
    *(f"h{n}.{REMOTE}. IN A 192.0.2.{n + 1}" for n in range(11)),
    f"slow.{REMOTE}. TIMEOUT",
    f'mail.{REMOTE}. IN TXT "v=spf1 a -all"',
    f"mail.{REMOTE}. IN A 127.0.0.1",
)


@pytest.mark.parametrize(("domain", "result", "comment"), [
    (REMOTE, "pass", "127.0.0.1 is allowed"),
    (f"hard.{REMOTE}", "fail", "127.0.0.1 is not allowed"),
    (f"soft.{REMOTE}", "softfail", "127.0.0.1 is probably not allowed"),
    (f"many.{REMOTE}", "permerror", "more than 10 DNS-querying terms"),
    (f"slow.{REMOTE}", "temperror", "timeout looking up slow.hanoi.gov.vn"),
    (f"none.{REMOTE}", "none", "no SPF record"),
])
async def test_mx_mail_from_is_checked_and_told_downstream(make_gateway, sink, tmp_path, domain, result, comment):
    gw = await make_gateway(dns=_answers(tmp_path, *SPF_ZONE))
    records = keep_records(gw)
    mail_from = f"vanphong@{domain}"
    await send(gw, "mx", message(sender=f"vanphong@{REMOTE}", to=LOCAL_RCPT), mail_from, [LOCAL_RCPT])
    await sink.wait_for(lambda: sink.to(LOCAL_RCPT))
    results = _auth_results(sink.to(LOCAL_RCPT)[0].data)
    assert f"; spf={result} ({comment}" in results and f" smtp.mailfrom={mail_from}" in results
    spf = records[0]["spf"]
    assert (spf["result"], spf["identity"], spf["domain"]) == (result, "mailfrom", domain)


async def test_null_sender_checks_the_helo_name(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, *SPF_ZONE))
    records = keep_records(gw)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.addresses["mx"][1], start_tls=False,
                               local_hostname=f"mail.{REMOTE}") as client:
        await client.sendmail("", [LOCAL_RCPT], message(sender=f"mailer-daemon@{REMOTE}", to=LOCAL_RCPT))
    await sink.wait_for(lambda: sink.to(LOCAL_RCPT))
    assert "spf=pass (127.0.0.1 is allowed) smtp.helo=mail.hanoi.gov.vn" in _auth_results(sink.to(LOCAL_RCPT)[0].data)
    assert (records[0]["spf"]["identity"], records[0]["spf"]["result"]) == ("helo", "pass")


async def test_relay_mail_is_not_checked(make_gateway, sink, tmp_path):
    gw = await make_gateway(dns=_answers(tmp_path, *SPF_ZONE))
    records = keep_records(gw)
    await send(gw, "relay", message(), "vanthu.sotttt@binhthuan.gov.vn", ["friend@example.com"])
    await sink.wait_for(lambda: sink.to("friend@example.com"))
    assert records[0]["spf"] is None and records[0]["dmarc"] is None


# Cases of the openspf RFC 7208 test suite (release 2014.04, shipped in pyspf's sdist as
# test/rfc7208-tests.yml), by their names there, with their zone data and expected results.


async def test_suite_a_colon_domain_and_cidr_only_at_the_end():
    zone = 'e11.example.com. IN TXT "v=spf1 a:foo:bar/baz.example.com"\nfoo:bar/baz.example.com. IN A 1.2.3.4'
    assert (await _check(zone, "1.2.3.4", domain="e11.example.com"))[0] == "pass"
    assert (await _check(zone, "::ffff:1.2.3.4", domain="e11.example.com"))[0] == "pass"


async def test_suite_macro_mania_in_domain():
    zone = ('e1a.example.com. IN TXT "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all"\n'
            'macro%percent\\032\\032space%20url-space.example.com. IN A 1.2.3.4')  # zone-file escapes: two spaces
    assert (await _check(zone, "1.2.3.4", domain="e1a.example.com"))[0] == "pass"


async def test_suite_detect_errors_anywhere_and_modifier_charset():
    zone = """
    t1.example.com. IN TXT "v=spf1 ip4:1.2.3.4 -all moo"
    t2.example.com. IN TXT "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all"
    t3.example.com. IN TXT "v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all"
    t8.example.com. IN TXT "v=spf1 ip4:1.2.3.4 redirect:t2.example.com"
    t9.example.com. IN TXT "v=spf1 a:foo-bar -all"
    """
    assert (await _check(zone, "1.2.3.4", domain="t1.example.com"))[0] == "permerror"
    assert (await _check(zone, "1.2.3.4", domain="t2.example.com"))[0] == "pass"
    assert (await _check(zone, "1.2.3.4", domain="t3.example.com"))[0] == "permerror"
    assert (await _check(zone, "1.2.3.4", domain="t8.example.com"))[0] == "permerror"
    assert (await _check(zone, "1.2.3.4", domain="t9.example.com"))[0] == "permerror"


async def test_suite_helo_not_fqdn_and_domain_literal_are_none():
    assert (await _check("", "1.2.3.5", domain="A2345678"))[0] == "none"
    assert (await _check("", "1.2.3.5", domain="[1.2.3.5]"))[0] == "none"


async def test_a_local_rule_can_test_the_spf_result(make_gateway, sink, tmp_path):
    import shutil

    from tests.conftest import REPO

    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (tmp_path / "policies" / "50-local.yaml").write_text(
        "rules:\n"
        "  - id: spf-not-pass\n"
        "    description: Tag inbound mail whose envelope sender's domain does not authorise the client.\n"
        "    basis: test\n"
        "    when:\n"
        "      direction: inbound\n"
        "      spf: {result: [fail, softfail], identity: mailfrom}\n"
        "    then:\n"
        "      tags: [spf-not-pass]\n")
    gw = await make_gateway(dns=_answers(tmp_path, *SPF_ZONE))
    records = keep_records(gw)
    for domain in (REMOTE, f"soft.{REMOTE}"):
        await send(gw, "mx", message(sender=f"vanphong@{REMOTE}", to=LOCAL_RCPT, subject=domain), f"vanphong@{domain}", [LOCAL_RCPT])
    assert [("spf-not-pass" in r["decision"]["tags"], r["spf"]["result"]) for r in records] == [(False, "pass"), (True, "softfail")]


async def test_a_name_that_cannot_be_asked_matches_nothing():
    # A macro can make a name DNS cannot carry: "a\\9" (a client's local part) is a bad zone-file
    # escape that dnspython refuses to read. No match, and no exception.
    zone = 'example.com. IN TXT "v=spf1 a:%{l}.example.com exists:%{l}x.example.com ip4:192.0.2.1 -all"'
    assert (await _check(zone, "192.0.2.1", sender="a\\9@example.com"))[0] == "pass"
    assert (await _check(zone, "192.0.2.2", sender="a\\9@example.com"))[0] == "fail"


async def test_a_record_that_repeats_macros_cannot_grow_without_bound():
    record = "v=spf1 exists:" + "%{s}" * 200 + ".example.com -all"
    zone = _txt("example.com", record)
    found = await check_host("192.0.2.1", "example.com", "x" * 60 + "@example.com", FileResolver.from_text(zone))
    assert found.result == "permerror" and "macro expansion over 4096" in found.reason
    # The RFC's own trimming still applies below the bound: 200 * 3 characters, cut to 253 from the left.
    assert (await _check(_txt("example.com", "v=spf1 exists:" + "%{l}." * 100 + "example.com -all"), "192.0.2.1", sender="ab@example.com"))[0] == "fail"
