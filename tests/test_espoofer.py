"""espoofer's spoofing cases against an agency domain that publishes DMARC p=reject, over real sockets.

The cases are the shapes of espoofer's test cases (github.com/chenjj/espoofer,
testcases.py: server_a1 to server_a19 and client_a1 to client_a3; Chen et al.,
"Composition Kills", USENIX Security 2020), with espoofer's names mapped onto this
rig: ``legitimate.com`` (the spoofed sender) is ``hanoi.gov.vn``, which publishes
``p=reject`` and allows only its own servers in SPF; ``attack.com`` is
``evil.example``, whose SPF allows the test client, so every check that is not
aligned with the From domain passes for the attacker; the victim is a mailbox of
ours. Each message is sent byte for byte as espoofer's case builds it (a raw SMTP
dialogue: MAIL FROM and header shapes that real clients refuse to write), plus the
cases the README names: display-name spoofs, comments and quoted local parts,
the null sender with the victim's HELO, subdomains, and the attacker's DKIM
signature. One gateway serves every case; the table of outcomes is the assertion.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest

from tests.conftest import LOGIN, PASSWORD, port
from tests.dialog import Dialog
from tests.test_dkim_pipeline import KEY_DATA, _zone_line

VICTIM = "vanthu.snv@binhthuan.gov.vn"  # espoofer's victim@victim.com: a mailbox of ours
LEGIT = "hanoi.gov.vn"  # espoofer's legitimate.com: another agency, p=reject
ATTACK = "evil.example"  # espoofer's attack.com
RSA_PEM = (KEY_DATA / "rsa2048.pem").read_bytes()

ZONE = (
    f'_dmarc.{LEGIT}. IN TXT "v=DMARC1; p=reject"',
    f'{LEGIT}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    f'{ATTACK}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    f'helo.{ATTACK}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    f'33.{ATTACK}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    f'any.{ATTACK}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    _zone_line(ATTACK, "rsa"),  # the attacker's own DKIM key: its signatures verify
)


def _headers(from_header: str, subject: str, other: str = "") -> bytes:
    return (f"{from_header}To: <{VICTIM}>\r\nSubject: {subject}\r\nDate: Mon, 07 Dec 2026 09:00:00 +0700\r\n{other}"
            "Content-Type: text/plain; charset=\"UTF-8\"\r\nMIME-Version: 1.0\r\n"
            f"Message-ID: <1538085644648.espoofer@message-ids.{ATTACK}>\r\n\r\n"
            "Hi, this is a test message! Best wishes.\r\n").encode()


def _signed(d: bytes, s: bytes, data: bytes) -> bytes:
    """A DKIM signature made with the attacker's key, espoofer's dkim_para (d=, s=) as given."""
    return dkim.sign(data, s, d, RSA_PEM, include_headers=[b"from", b"to", b"subject", b"date"]) + data


SENDER_SPOOF = f"Sender: <s@sender.{LEGIT}>\r\n"

# case id -> (HELO, MAIL FROM as sent, message)
CASES: dict[str, tuple[str, str, bytes]] = {
    "server_a1": (f"helo.{ATTACK}", f"<any@mailfrom.notexist.{LEGIT}>", _headers(f"From: <admin@{LEGIT}>\r\n", "A1")),
    "server_a2": (ATTACK, f"<(any@{LEGIT}>", _headers(f"From: <admin@{LEGIT}>\r\n", "A2")),
    "server_a3": (f"33.{ATTACK}", f"<any@33.{ATTACK}>",
                  _signed(LEGIT.encode(), f"selector._domainkey.{ATTACK}.\x00.any".encode(),
                          _headers(f"From: <admin@{LEGIT}>\r\n", "A3"))),
    "server_a4": (ATTACK, f"<any@{ATTACK}>",
                  _signed(f"{LEGIT}'a.{ATTACK}".encode(), b"rsa", _headers(f"From: <admin@{LEGIT}>\r\n", "A4"))),
    "server_a5": (ATTACK, f"<any@{LEGIT}(a.{ATTACK}>", _headers(f"From: <admin@{LEGIT}>\r\n", "A5")),
    "server_a6": (ATTACK, f"<any@{LEGIT}'@any.{ATTACK}>", _headers(f"From: <admin@{LEGIT}>\r\n", "A6")),
    "server_a7": (ATTACK, f"<@{LEGIT},@any.com:'any@{ATTACK}>", _headers(f"From: <admin@{LEGIT}>\r\n", "A7")),
    "server_a8": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <first@{ATTACK}>\r\nFrom: <admin@{LEGIT}>\r\n", "A8")),
    "server_a9": (ATTACK, f"<any@{ATTACK}>", _headers(f" From: <first@{ATTACK}>\r\nFrom: <admin@{LEGIT}>\r\n", "A9")),
    "server_a10": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <first@{ATTACK}>\r\nFrom : <admin@{LEGIT}>\r\n", "A10")),
    "server_a11": (ATTACK, f"<any@{ATTACK}>", _headers(f"From\r\n : <first@{ATTACK}>\r\nFrom: <admin@{LEGIT}>\r\n", "A11")),
    "server_a12": (ATTACK, f"<any@{ATTACK}>", _headers(f"From\r\n : <first@{ATTACK}>\r\nn", "A12", f"Sender: <admin@{LEGIT}>\r\n")),
    "server_a13": (ATTACK, f"<any@{ATTACK}>", _headers(f"From\r\n : <first@{ATTACK}>\r\nn", "A13", f"Resent-From: <admin@{LEGIT}>\r\n")),
    "server_a14": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <first@{ATTACK}>, <admin@{LEGIT}>\r\n", "A14", SENDER_SPOOF)),
    "server_a15": (ATTACK, f"<any@{ATTACK}>",
                   _headers("From:=?utf-8?B?" + base64.b64encode(f"<admin@{LEGIT}>".encode()).decode() + f"?=,<second@{ATTACK}>\r\n",
                            "A15", SENDER_SPOOF)),
    "server_a16": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <@{ATTACK},@any.com:admin@{LEGIT}>\r\n", "A16", SENDER_SPOOF)),
    "server_a17": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <admin@{LEGIT}>\\,<second@{ATTACK}>\r\n", "A17", SENDER_SPOOF)),
    "server_a18": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: admin@{LEGIT},<second@{ATTACK}>\r\n", "A18", SENDER_SPOOF)),
    "server_a19": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <any@{ATTACK}>admin@{LEGIT}\r\n", "A19", SENDER_SPOOF)),
    # The shapes the README names beside espoofer's own.
    "null-sender-victim-helo": (LEGIT, "<>", _headers(f"From: <admin@{LEGIT}>\r\n", "HELO of the victim")),
    "subdomain": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: <chutich@vp.{LEGIT}>\r\n", "a subdomain of the victim")),
    "dkim-attacker": (ATTACK, f"<any@{ATTACK}>", _signed(ATTACK.encode(), b"rsa", _headers(f"From: <admin@{LEGIT}>\r\n", "signed by the attacker"))),
    "comment": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: admin@{LEGIT} (Chủ tịch UBND)\r\n", "a comment")),
    "quoted-local-part": (ATTACK, f"<any@{ATTACK}>", _headers(f'From: "chu tich"@{LEGIT}\r\n', "a quoted local part")),
    "quoted-address-local-part": (ATTACK, f"<any@{ATTACK}>", _headers(f'From: "admin@{LEGIT}"@{ATTACK}\r\n', "an address quoted")),
    "display-name-address": (ATTACK, f"<any@{ATTACK}>", _headers(f'From: "admin@{LEGIT}" <admin@{ATTACK}>\r\n', "display name")),
    "display-name-comment": (ATTACK, f"<any@{ATTACK}>", _headers(f"From: (admin@{LEGIT}) <admin@{ATTACK}>\r\n", "comment name")),
}

_DMARC = ("message", 550, "5.7.1", "dmarc-reject")  # the From domain's p=reject: nothing aligned with it passed
_AUTHOR = ("message", 550, "5.7.1", "smtp")  # not exactly one From with one readable address (stage author)
_HEADER = ("message", 550, "5.6.0", "smtp")  # a header section that cannot be read as one (stage parse), or a NUL
_ENVELOPE = ("mail", 553, "5.1.3", None)  # a MAIL FROM address that cannot be an address

# case id -> (where it stopped, reply code, enhanced code, deciding rule)
EXPECTED: dict[str, tuple[str, int, str, str | None]] = {
    "server_a1": _DMARC,  # SPF none for the non-existent subdomain: nothing passes aligned
    "server_a2": _ENVELOPE,
    "server_a3": _HEADER,  # the NUL in the signature's s= (espoofer's NUL ambiguity) is a NUL in the message
    "server_a4": _DMARC,  # d= with a quote is no domain: the signature is a permerror, not the victim's
    "server_a5": _DMARC,  # SPF is checked for the whole MAIL FROM domain, which is not the victim's
    "server_a6": _ENVELOPE,
    "server_a7": _DMARC,  # the source route is dropped (RFC 5321 4.1.1.3): the attacker's domain passes, not aligned
    "server_a8": _AUTHOR,
    "server_a9": _HEADER,  # a header section that starts with a continuation line
    "server_a10": _AUTHOR,  # "From :" is a From field: two of them
    "server_a11": _HEADER,
    "server_a12": _HEADER,
    "server_a13": _HEADER,
    "server_a14": _AUTHOR,
    "server_a15": _AUTHOR,
    "server_a16": _AUTHOR,
    "server_a17": _AUTHOR,
    "server_a18": _AUTHOR,
    "server_a19": _AUTHOR,
    "null-sender-victim-helo": _DMARC,  # SPF of the HELO name (the victim's) fails from the attacker's address
    "subdomain": _DMARC,  # the organisational domain's p=reject covers its subdomains (no sp=)
    "dkim-attacker": _DMARC,  # a valid signature, by the attacker's d=: not aligned with From
    "comment": _DMARC,
    "quoted-local-part": _DMARC,
    "quoted-address-local-part": _AUTHOR,  # "admin@hanoi.gov.vn"@evil.example: an address no reader agrees on
    # The real address is the attacker's own, which publishes no DMARC: delivered, with the warning (README).
    "display-name-address": ("accepted", 250, "2.0.0", "default"),
    "display-name-comment": ("accepted", 250, "2.0.0", "default"),
}


@pytest.fixture
async def gw(make_gateway: Any, tmp_path: Path) -> Any:
    (tmp_path / "answers.zone").write_text("\n".join(ZONE) + "\n")
    g = await make_gateway(dns={"answers": "answers.zone"})
    g.records = []

    async def keep(record: dict[str, Any]) -> None:
        g.records.append(record)

    g.edge.recorder = g.edge.spooled_recorder = keep
    return g


async def _attempt(gw: Any, helo: str, mail_from: str, data: bytes) -> tuple[str, int, str, str | None]:
    """One espoofer case over a raw dialogue: where it stopped, the code, the enhanced code, the deciding rule."""
    d = await Dialog.open(port(gw, "mx"))
    try:
        assert (await d.reply())[0] == 220
        assert (await d.cmd(f"EHLO {helo}"))[0] == 250
        before = len(gw.records)
        for stage, line in (("mail", f"MAIL FROM:{mail_from}"), ("rcpt", f"RCPT TO:<{VICTIM}>"), ("data", "DATA")):
            code, text = await d.cmd(line)
            if code >= 400:
                return stage, code, text.split()[0], None
        d.send(data + b".\r\n")
        code, text = await d.reply()
        rule = gw.records[before]["decision"]["rule"] if len(gw.records) > before else None
        return ("accepted" if code == 250 else "message"), code, text.split()[0], rule
    finally:
        await d.close()



async def test_espoofer_spoofs_of_a_p_reject_agency_are_refused(gw, sink):
    outcomes = {case: await _attempt(gw, helo, mail_from, data) for case, (helo, mail_from, data) in CASES.items()}
    assert outcomes == EXPECTED
    # Only the display-name cases reached the mailbox, each tagged and with the warning a mail client shows.
    await sink.wait_for(lambda: len(sink.to(VICTIM)) == 2)
    delivered = {m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]: m.data for m in sink.to(VICTIM)}
    assert set(delivered) == {b"display name", b"comment name"}
    assert all(b"X-Mailgw-Warning:" in data for data in delivered.values())
    tagged = [r for r in gw.records if r["decision"]["decision"] == "accept"]
    assert [("display-name-spoof" in r["decision"]["tags"]) for r in tagged] == [True, True]


async def test_an_injection_in_mail_from_cannot_put_a_pass_on_the_victims_domain(gw, sink):
    # espoofer A5 with the attacker's own From, so that it is delivered. The edge reads the
    # MAIL FROM once, as RFC 5322 reads "(": a comment, so the address is any@hanoi.gov.vn;
    # SPF checks that very domain (and it fails from the attacker's address), and our
    # Authentication-Results names what was checked: no reader can see a pass for the victim.
    import authres

    data = _headers(f"From: <admin@{ATTACK}>\r\n", "A5 delivered")
    assert (await _attempt(gw, ATTACK, f"<any@{LEGIT}(a.{ATTACK}>", data))[0] == "accepted"
    await sink.wait_for(lambda: len(sink.to(VICTIM)) == 1)
    head = sink.to(VICTIM)[0].data.split(b"\r\n\r\n", 1)[0].decode()
    field = next(f for f in head.replace("\r\n\t", " ").split("\r\n") if f.startswith("Authentication-Results: mailgw.test;"))
    (spf,) = [r for r in authres.AuthenticationResultsHeader.parse(field).results if r.method == "spf"]
    assert (spf.result, [(p.name, p.value) for p in spf.properties]) == ("fail", [("mailfrom", f"any@{LEGIT}")])
    record = gw.records[0]
    assert (record["mail_from"], record["spf"]["domain"], record["spf"]["result"]) == (f"any@{LEGIT}", LEGIT, "fail")


@pytest.mark.parametrize(("case", "from_header"), [
    ("client_a1", f"From: <{LOGIN}>\r\nFrom: <admin@{LEGIT}>\r\n"),  # multiple From through our own service
    ("client_a2", f"From: <{LOGIN}>, <admin@{LEGIT}>\r\n"),  # multiple addresses
    ("client_a3", f"From: <admin@{LEGIT}>\r\n"),  # the login's account, another author
])
async def test_espoofer_client_cases_through_our_submission_service_are_refused(gw, sink, client_tls, case, from_header):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gw, "submission"), start_tls=True, tls_context=client_tls)
    async with client:
        await client.login(LOGIN, PASSWORD)
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await client.sendmail(LOGIN, [VICTIM], _headers(from_header, case))
    assert (refused.value.code, refused.value.message[:6]) == (550, "5.7.1 ")
    assert sink.messages == []
