"""The SMTP edge over real sockets: relay protection, limits, bad input, clear replies."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from mailgw import pipeline
from tests.conftest import message, port, send
from tests.dialog import Dialog

LOCAL = "vanthu.snv@binhthuan.gov.vn"


# --- mx never relays ----------------------------------------------------------

RELAY_PROBES = [
    "victim@example.com",
    "victim%example.com@binhthuan.gov.vn",  # percent hack
    "example.com!victim@binhthuan.gov.vn",  # bang path
    "@binhthuan.gov.vn:victim@example.com",  # source route: aiosmtpd drops the route
    '"victim@example.com"@binhthuan.gov.vn',  # quoted @
    "victim@[127.0.0.1]",  # IP literal
    "victim@binhthuan.gov.vn.",  # trailing dot
    "victim@binhthuan.gov.vn.example.com",  # our domain inside another
    "victim@binhthuan-gov.vn",
    "victim@example.com@binhthuan.gov.vn",
]


@pytest.mark.parametrize("rcpt", RELAY_PROBES)
async def test_mx_refuses_every_relay_trick(gateway, sink, rcpt):
    d = await Dialog.open(port(gateway, "mx"))
    assert (await d.reply())[0] == 220
    await d.cmd("EHLO probe.example.com")
    assert (await d.cmd("MAIL FROM:<spammer@example.com>"))[0] == 250
    code, text = await d.cmd(f"RCPT TO:<{rcpt}>")
    assert code in (550, 553), text
    if code == 550:
        assert text.startswith("5.7.1")
    assert (await d.cmd("DATA"))[0] == 503  # no recipient was accepted
    await d.close()


async def test_mx_accepts_local_recipient_and_delivers(gateway, sink):
    await send(gateway, "mx", message(sender="someone@example.com"), "someone@example.com", [LOCAL])
    await sink.wait_for(lambda: sink.to(LOCAL))
    got = sink.to(LOCAL)[0]
    assert got.mail_from == "someone@example.com"
    first = got.data.split(b"\r\n")[0]
    assert first.startswith(b"Received: from ") and b"by mailgw.test (mailgw) with ESMTP id " in got.data


async def test_relay_serves_only_trusted_networks(make_gateway, sink):
    gw = await make_gateway(listeners=[{"name": "relay", "role": "relay", "listen": "127.0.0.1:0", "trusted_networks": ["127.0.0.2/32"]}])
    d = await Dialog.open(port(gw, "relay"), local_addr=("127.0.0.1", 0))
    assert (await d.reply())[0] == 220
    await d.cmd("EHLO outsider")
    code, text = await d.cmd("MAIL FROM:<a@example.com>")
    assert (code, text[:5]) == (554, "5.7.1")
    await d.close()
    trusted = await Dialog.open(port(gw, "relay"), local_addr=("127.0.0.2", 0))
    await trusted.envelope("vanthu.sotttt@binhthuan.gov.vn", ["friend@example.com"])
    await trusted.close()


# --- bad input: smuggling, authorship, loops ----------------------------------

SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\n",
    b"\r",
]


@pytest.mark.parametrize("fake_end", SMUGGLING)
async def test_bare_line_endings_are_rejected_and_nothing_is_smuggled(gateway, sink, fake_end):
    d = await Dialog.open(port(gateway, "relay"))
    await d.envelope("vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    smuggled = b"MAIL FROM:<ceo@binhthuan.gov.vn>\r\nRCPT TO:<smuggled@binhthuan.gov.vn>\r\nDATA\r\nFrom: ceo@binhthuan.gov.vn\r\n\r\nsmuggled\r\n"
    d.send(message() + b"line" + fake_end + smuggled + b".\r\n")
    code, text = await d.reply()
    assert (code, text[:5]) == (550, "5.5.2"), text
    assert "[" in text and text.endswith("]")  # the exchange id a clerk can quote
    await d.cmd("QUIT")
    await d.close()
    await asyncio.sleep(0.3)
    assert not sink.to("smuggled@binhthuan.gov.vn")
    assert not sink.messages


@pytest.mark.parametrize(
    "headers",
    [
        "From: a@binhthuan.gov.vn\r\nFrom: b@example.com\r\n",  # two From headers
        "From: a@binhthuan.gov.vn, b@example.com\r\n",  # two addresses
        "From: undisclosed-recipients:;\r\n",  # a group, no address
        "Sender: a@binhthuan.gov.vn\r\n",  # no From at all
        "From: not an address\r\n",
        "From: <a@binhthuan.gov.vn\r\n",
    ],
)
async def test_ambiguous_author_is_rejected_at_data(gateway, sink, headers):
    raw = f"{headers}To: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, "a@binhthuan.gov.vn", [LOCAL])
    assert err.value.code == 550 and err.value.message.startswith("5.7.1")
    assert not sink.messages


@pytest.mark.parametrize("spaced", ["From :", "From\t:", "FROM  :"])
async def test_a_from_field_with_space_before_its_colon_is_a_from_field(gateway, sink, spaced):
    # RFC 5322's obsolete syntax, read as From by mail clients; Python's parser drops it as an
    # mbox line. On mx, with another From: two authors, refused (espoofer server_a10).
    spoof = (f"From: <evil@attacker.example>\r\n{spaced} <hanh.vp@binhthuan.gov.vn>\r\nTo: {LOCAL}\r\n"
             "Subject: Khẩn\r\n\r\nChuyển khoản gấp.\r\n").encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "mx", spoof, "bounce@attacker.example", [LOCAL])
    assert err.value.code == 550 and err.value.message.startswith("5.7.1")
    # Alone, it is the author, and the next hop gets it written the ordinary way.
    alone = f"{spaced} vanthu.sotttt@binhthuan.gov.vn\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    await send(gateway, "relay", alone, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    await sink.wait_for(lambda: sink.to(LOCAL))
    delivered = sink.to(LOCAL)[0].data
    assert b"\r\nFrom: vanthu.sotttt@binhthuan.gov.vn\r\n" in delivered.replace(b"FROM:", b"From:")
    assert spaced.encode() not in delivered and len(sink.messages) == 1


async def _submit(gateway, client_tls, *raws: bytes) -> list[aiosmtplib.SMTPResponseException | None]:
    """Log in on submission and send each message to friend@mic.gov.vn; each one's refusal, or None."""
    from tests.conftest import LOGIN, PASSWORD

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gateway, "submission"), start_tls=True,
                             tls_context=client_tls)
    await client.connect()
    outcomes: list[aiosmtplib.SMTPResponseException | None] = []
    try:
        await client.login(LOGIN, PASSWORD)
        for raw in raws:
            try:
                await client.sendmail(LOGIN, ["friend@mic.gov.vn"], raw)
                outcomes.append(None)
            except aiosmtplib.SMTPResponseException as e:
                outcomes.append(e)
    finally:
        await client.quit()
    return outcomes


async def test_a_logged_in_user_cannot_add_an_author_with_a_spaced_colon(gateway, sink, client_tls):
    from tests.conftest import LOGIN

    raw = (f"From: {LOGIN}\r\nFrom : giamdoc.skhdt@binhthuan.gov.vn\r\nTo: friend@mic.gov.vn\r\n"
           "Subject: x\r\n\r\nbody\r\n").encode()
    (err,) = await _submit(gateway, client_tls, raw)
    assert err is not None and err.code == 550 and err.message.startswith("5.7.1")
    assert not sink.messages


@pytest.mark.parametrize("folded", [
    "Subject: x\r\n" + " y\r\n" * 6000,  # more lines than limits.header_lines, 24 KB
    "Subject: x\r\n" + (" " + "y" * 900 + "\r\n") * 300,  # 270 KB: over limits.header_size
])
async def test_an_oversized_header_section_is_refused_552(gateway, sink, folded):
    raw = f"From: vanthu.sotttt@binhthuan.gov.vn\r\nTo: {LOCAL}\r\n{folded}\r\nbody\r\n".encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (552, "5.3.4")
    assert "header section too large" in err.value.message and not sink.messages


@pytest.mark.parametrize("field", ["Sender", "Resent-From", "Resent-Sender"])
async def test_our_domain_in_sender_or_resent_from_on_mx_is_a_forgery_without_dkim(gateway, sink, field):
    raw = (f"From: Tin tức <news@example.org>\r\n{field}: hanh.vp@binhthuan.gov.vn\r\nTo: {LOCAL}\r\n"
           "Subject: Thông báo\r\n\r\nbody\r\n").encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "mx", raw, "news@example.org", [LOCAL])
    assert (err.value.code, err.value.message[:6]) == (550, "5.7.26")
    # A list's own Sender is no claim on our domain: delivered.
    listed = raw.replace(b"hanh.vp@binhthuan.gov.vn", b"list-owner@lists.example.org")
    await send(gateway, "mx", listed, "news@example.org", [LOCAL])
    await sink.wait_for(lambda: sink.to(LOCAL))


async def test_an_unreadable_sender_field_is_refused(gateway, sink):
    raw = f"From: a@example.org\r\nSender: <<hanh.vp@binhthuan.gov.vn\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nb\r\n".encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "mx", raw, "a@example.org", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.0")


@pytest.mark.parametrize("field", ["Sender", "Resent-From"])
async def test_a_logged_in_user_must_own_sender_and_resent_from(gateway, sink, client_tls, field):
    from tests.conftest import LOGIN

    raw = (f"From: {LOGIN}\r\n{field}: giamdoc.skhdt@binhthuan.gov.vn\r\nTo: friend@mic.gov.vn\r\n"
           "Subject: x\r\n\r\nbody\r\n").encode()
    # naming someone else is refused; naming themselves is fine
    err, ok = await _submit(gateway, client_tls, raw, raw.replace(b"giamdoc.skhdt@", b"vanthu.sotttt@"))
    assert err is not None and (err.code, err.message[:5]) == (550, "5.7.1") and ok is None
    await sink.wait_for(lambda: sink.to("friend@mic.gov.vn"))
    assert len(sink.messages) == 1


def _nested_mime(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n" + body
                + b"\r\n--" + b + b"--\r\n")
    return f"From: vanthu.sotttt@binhthuan.gov.vn\r\nTo: {LOCAL}\r\nSubject: x\r\nMIME-Version: 1.0\r\n".encode() + body


@pytest.mark.parametrize("raw", [
    _nested_mime(1000),  # the email package recurses once per level
    f"From: {'(' * 900}a@binhthuan.gov.vn\r\nTo: {LOCAL}\r\nSubject: x\r\n\r\nb\r\n".encode(),  # and per comment
], ids=["mime-1000-deep", "from-900-comments"])
async def test_a_structure_too_deep_to_parse_is_the_messages_fault_not_ours(gateway, sink, raw):
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.0")  # was 451 4.3.0: retried for days
    assert "RecursionError" not in err.value.message and not sink.messages


async def test_a_nul_byte_is_refused(gateway, sink):
    raw = message().replace(b"\r\n\r\n", b"\r\n\r\nnul\x00here\r\n", 1)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.0") and not sink.messages


async def test_a_utf8_address_needs_the_smtputf8_parameter(gateway):
    d = await Dialog.open(port(gateway, "relay"))
    await d.reply()
    assert (await d.cmd("EHLO client.test"))[0] == 250
    assert (await d.cmd("MAIL FROM:<văn.thư@binhthuan.gov.vn>".encode() + b"\r\n"))[:1] == (553,)
    assert (await d.cmd("MAIL FROM:<vanthu.sotttt@binhthuan.gov.vn>"))[0] == 250
    code, text = await d.cmd("RCPT TO:<người.nhận@binhthuan.gov.vn>".encode() + b"\r\n")
    assert (code, text[:5]) == (553, "5.6.7")
    assert (await d.cmd("RSET"))[0] == 250
    assert (await d.cmd("MAIL FROM:<vanthu.sotttt@binhthuan.gov.vn> SMTPUTF8"))[0] == 250
    assert (await d.cmd("RCPT TO:<người.nhận@binhthuan.gov.vn>".encode() + b"\r\n"))[0] == 250
    await d.cmd("QUIT")
    await d.close()


async def test_submitted_mail_gets_date_and_message_id_when_it_has_none(gateway, sink, client_tls):
    from tests.conftest import LOGIN

    raw = f"From: {LOGIN}\r\nTo: friend@mic.gov.vn\r\nSubject: x\r\n\r\nbody\r\n".encode()
    dated = b"Date: Mon, 7 Dec 2026 09:00:00 +0700\r\nMessage-ID: <own@client>\r\n" + raw
    assert await _submit(gateway, client_tls, raw, dated) == [None, None]
    await sink.wait_for(lambda: len(sink.to("friend@mic.gov.vn")) == 2)
    for m in sink.to("friend@mic.gov.vn"):
        head = m.data.split(b"\r\n\r\n", 1)[0]
        assert head.count(b"\r\nDate: ") == 1 and head.count(b"\r\nMessage-ID: <") == 1
    assert any(b"Message-ID: <own@client>" in m.data for m in sink.messages)


async def test_an_authoritative_directory_refuses_unknown_local_mailboxes_at_rcpt(make_gateway, sink, tmp_path):
    # Without it, any mailbox of a local domain got 250 and a later refusal bounced to a
    # sender who may be forged (backscatter).
    gw = await make_gateway()
    directory = tmp_path / "directory.yaml"
    directory.write_text(directory.read_text(encoding="utf-8").replace(
        "official_suffixes:", "authoritative: [binhthuan.gov.vn]\nofficial_suffixes:", 1), encoding="utf-8")
    assert gw.reload()  # as SIGHUP does
    d = await Dialog.open(port(gw, "mx"))
    await d.reply()
    assert (await d.cmd("EHLO client.test"))[0] == 250
    assert (await d.cmd("MAIL FROM:<someone@example.org>"))[0] == 250
    code, text = await d.cmd("RCPT TO:<nosuchuser@binhthuan.gov.vn>")
    assert (code, text[:5]) == (550, "5.1.1")
    code, text = await d.cmd("RCPT TO:<x@deep.sub.binhthuan.gov.vn>")  # an undeclared subdomain is not ours
    assert (code, text[:5]) == (550, "5.7.1")
    assert (await d.cmd(f"RCPT TO:<{LOCAL}>"))[0] == 250
    await d.cmd("QUIT")
    await d.close()


async def test_mail_loop_is_refused(gateway, sink):
    hops = "".join(f"Received: from h{i} by h{i + 1}; Sat, 21 Nov 2026 09:00:00 +0700\r\n" for i in range(50))
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", message(extra_headers=hops), "a@binhthuan.gov.vn", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (554, "5.4.6")


# --- limits ------------------------------------------------------------------

async def test_message_size_limit(make_gateway, sink):
    gw = await make_gateway(limits={"message_size": "20K"})
    d = await Dialog.open(port(gw, "relay"))
    await d.envelope("a@binhthuan.gov.vn", [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(message(body="x" * 900 + "\r\n") * 1 + (b"y" * 900 + b"\r\n") * 40 + b".\r\n")
    code, text = await d.reply()
    assert (code, text[:5]) == (552, "5.3.4")
    code, _ = await d.cmd("MAIL FROM:<a@binhthuan.gov.vn> SIZE=999999")
    assert code == 552
    await d.close()
    assert not sink.messages


async def test_line_too_long(gateway, sink):
    d = await Dialog.open(port(gateway, "relay"))
    await d.envelope("a@binhthuan.gov.vn", [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(message() + b"z" * 5000 + b"\r\n.\r\n")
    code, text = await d.reply()
    assert code == 500 and text.startswith("5.6.0")
    await d.close()


async def test_recipient_limit(make_gateway):
    gw = await make_gateway(limits={"recipients": 3})
    d = await Dialog.open(port(gw, "relay"))
    await d.envelope("a@binhthuan.gov.vn", [f"r{i}@binhthuan.gov.vn" for i in range(3)])
    code, text = await d.cmd("RCPT TO:<r4@binhthuan.gov.vn>")
    assert (code, text[:5]) == (452, "4.5.3")
    await d.close()


async def test_command_limit_closes_session(make_gateway):
    gw = await make_gateway(limits={"commands": 5})
    d = await Dialog.open(port(gw, "relay"))
    assert (await d.reply())[0] == 220
    for _ in range(5):
        assert (await d.cmd("NOOP"))[0] == 250
    code, text = await d.cmd("NOOP")
    assert (code, text[:5]) == (421, "4.7.0")
    assert await d.closed()
    await d.close()


async def test_idle_timeout(make_gateway):
    gw = await make_gateway(limits={"idle_timeout": "300ms"})
    d = await Dialog.open(port(gw, "relay"))
    assert (await d.reply())[0] == 220
    code, text = await d.reply(timeout=5)
    assert (code, text[:5]) == (421, "4.4.2")
    assert await d.closed()
    await d.close()


async def test_idle_timeout_counts_from_the_last_command(make_gateway):
    gw = await make_gateway(limits={"idle_timeout": "300ms"})
    d = await Dialog.open(port(gw, "relay"))
    assert (await d.reply())[0] == 220
    for _ in range(4):  # 800 ms in all, never 300 ms without a command
        await asyncio.sleep(0.2)
        assert (await d.cmd("NOOP"))[0] == 250
    last = asyncio.get_running_loop().time()
    code, text = await d.reply(timeout=5)
    waited = asyncio.get_running_loop().time() - last
    assert (code, text[:5]) == (421, "4.4.2")
    assert 0.25 < waited < 1.0
    assert await d.closed()
    await d.close()


async def test_a_slow_but_steady_data_stream_is_not_cut_but_has_a_deadline(make_gateway, sink):
    gw = await make_gateway(limits={"idle_timeout": "300ms", "data_deadline": "1500ms"})
    d = await Dialog.open(port(gw, "relay"))
    await d.envelope("vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(b"From: vanthu.sotttt@binhthuan.gov.vn\r\nTo: " + LOCAL.encode() + b"\r\nSubject: x\r\n\r\n")
    for _ in range(5):  # 1 s of DATA in all, never 300 ms without a byte: the idle timeout counts per read
        await asyncio.sleep(0.2)
        d.send(b"a line\r\n")
    code, text = await d.cmd(b".\r\n")
    assert code == 250, text
    # The whole stream has a deadline of its own: past it, 421 4.4.2 and the close.
    assert (await d.cmd("MAIL FROM:<vanthu.sotttt@binhthuan.gov.vn>"))[0] == 250
    assert (await d.cmd(f"RCPT TO:<{LOCAL}>"))[0] == 250
    assert (await d.cmd("DATA"))[0] == 354
    line = b""
    for _ in range(25):  # a line every 200 ms (never idle), until the gateway answers
        d.send(b"a line\r\n")
        try:
            line = await asyncio.wait_for(d.reader.readline(), 0.2)
            break
        except asyncio.TimeoutError:
            continue
    assert line.startswith(b"421 4.4.2 "), line
    assert await d.closed()
    await d.close()


async def test_connections_per_ip(make_gateway):
    gw = await make_gateway(limits={"connections_per_ip": 2})
    first = [await Dialog.open(port(gw, "mx")) for _ in range(2)]
    for d in first:
        assert (await d.reply())[0] == 220
    third = await Dialog.open(port(gw, "mx"))
    code, text = await third.reply()
    assert (code, text[:5]) == (421, "4.7.0")
    assert await third.closed()
    await third.close()
    await first[0].cmd("QUIT")
    await first[0].close()
    await asyncio.sleep(0.1)
    again = await Dialog.open(port(gw, "mx"))
    assert (await again.reply())[0] == 220  # the slot was given back
    for d in (first[1], again):
        await d.close()


async def test_disk_nearly_full_gives_452_before_any_250(make_gateway, sink):
    gw = await make_gateway(limits={"min_free_space": 10**18})
    d = await Dialog.open(port(gw, "relay"))
    assert (await d.reply())[0] == 220
    await d.cmd("EHLO c")
    code, text = await d.cmd("MAIL FROM:<a@binhthuan.gov.vn>")
    assert (code, text[:5]) == (452, "4.3.1")
    await d.close()


async def test_our_own_fault_is_451_without_internals(gateway, sink, monkeypatch):
    def broken(message, ctx):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(pipeline, "STAGES", pipeline.STAGES + (broken,))
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", message(), "a@binhthuan.gov.vn", [LOCAL])
    assert err.value.code == 451 and err.value.message.startswith("4.3.0")
    assert "RuntimeError" not in err.value.message and "secret" not in err.value.message
    assert not sink.messages


async def test_every_builtin_reply_has_an_enhanced_code(gateway):
    d = await Dialog.open(port(gateway, "relay"))
    assert (await d.reply())[0] == 220
    await d.cmd("EHLO c")
    code, text = await d.cmd("MAIL FROM:<" + "a" * 600 + "@binhthuan.gov.vn>")
    assert code == 500 and text[:5] in ("5.5.2", "5.5.6")
    await d.close()
    # aiosmtpd's own replies too, with the Vietnamese (folded: no SMTPUTF8) and aiosmtpd's detail.
    d = await Dialog.open(port(gateway, "relay"))
    await d.reply()
    expected = [
        ("MAIL FROM:<a@binhthuan.gov.vn>", 503, "5.5.1 Sai thu tu lenh / Bad sequence of commands: send HELO first"),
        ("HELO", 501, "5.5.4 Tham so cua lenh khong hop le / Syntax error in parameters: HELO hostname"),
        ("EHLO client.test", 250, None),
        ("RCPT TO:<a@binhthuan.gov.vn>", 503, "5.5.1 Sai thu tu lenh / Bad sequence of commands: need MAIL command"),
        ("FOO", 500, "5.5.2 Lenh khong hop le / Syntax error"),
        ("RSET", 250, "2.0.0 OK"),
        ("NOOP", 250, "2.0.0 OK"),
        ("QUIT", 221, "2.0.0 Bye"),
    ]
    for command, code, text in expected:
        got = await d.cmd(command)
        assert got[0] == code, (command, got)
        if text is not None:
            assert got[1].startswith(text), (command, got)
    await d.close()


async def test_a_line_that_is_not_a_header_in_the_header_section_is_refused(gateway, sink):
    # Python's parser would take "not a header" for the start of the body and
    # never see the Subject after it; a next hop might. Refuse the ambiguity.
    raw = message()
    head, body = raw.split(b"\r\n\r\n", 1)
    hidden = head.replace(b"\r\nTo:", b"\r\nnot a header\r\nTo:", 1) + b"\r\n\r\n" + body
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", hidden, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.0")
    assert sink.messages == []


async def test_an_overlong_mime_header_is_refused_before_anything_parses_it(gateway, sink):

    folded = ";\r\n ".join(";".join(['"a"'] * 20) for _ in range(1500))  # 30,000 parameters, lines under 100 octets
    raw = message(extra_headers="Content-Disposition: attachment;\r\n " + folded + "\r\n")
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gateway, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL])
    # 5.6.0 comes from the parse stage; had the header reached the MIME parsers, the
    # attachment stage would have judged the message ambiguous (5.7.1), seconds later.
    assert (err.value.code, err.value.message[:5]) == (550, "5.6.0")
    assert sink.messages == []


# --- where the pipeline runs ---------------------------------------------------


def _where_stages_run(monkeypatch) -> list[str]:
    """Each message's pipeline notes whether it ran on the event loop's thread ("loop") or a worker thread."""
    seen: list[str] = []

    def where(message, ctx):
        try:
            asyncio.get_running_loop()
            seen.append("loop")
        except RuntimeError:
            seen.append("thread")

    monkeypatch.setattr(pipeline, "STAGES", (where,) + pipeline.STAGES)
    return seen


async def test_small_plain_outbound_text_is_decided_on_the_loop_and_the_rest_in_a_thread(gateway, sink, monkeypatch):
    from tests import attachment_fixtures as fx

    seen = _where_stages_run(monkeypatch)
    outsider = "someone@example.com"
    cases = [
        ("relay", message(), "vanthu.sotttt@binhthuan.gov.vn", "loop"),
        ("relay", message(extra_headers="X-Note: none\r\n"), "vanthu.sotttt@binhthuan.gov.vn", "loop"),
        ("mx", message(sender=outsider), outsider, "thread"),  # DNS: SPF, DKIM, DMARC, ARC
        ("relay", fx.mail(fx.text_part("một tệp đính kèm")), "vanthu.sotttt@binhthuan.gov.vn", "thread"),
        ("relay", message(body="Kính gửi.\r\n" + ("x" * 78 + "\r\n") * 500), "vanthu.sotttt@binhthuan.gov.vn", "thread"),
        ("relay", message(extra_headers="Content-Disposition: attachment; filename=a.txt\r\n"),
         "vanthu.sotttt@binhthuan.gov.vn", "thread"),
    ]
    for listener, raw, sender, _ in cases:
        await send(gateway, listener, raw, sender, [LOCAL])
    assert seen == [where for *_, where in cases]
    await sink.wait_for(lambda: len(sink.to(LOCAL)) == len(cases))
    # Decided on the loop or not, each goes out once, stamped, with its own bytes after our fields.
    got = sorted(m.data for m in sink.to(LOCAL))
    assert all(m.startswith(b"Received: from ") for m in got)
    assert sorted(next(m for m in got if m.endswith(raw)) for _, raw, _, _ in cases) == got


def _text_plain_carrying(data: bytes, params: str = "") -> bytes:
    """A single-part message labelled text/plain (no Content-Disposition, no multipart) whose
    base64 body is ``data``: what decides_inline's look at the header section lets through."""
    from tests import attachment_fixtures as fx

    head = (f"From: vanthu.sotttt@binhthuan.gov.vn\r\nTo: {LOCAL}\r\nSubject: Gửi anh tài liệu\r\n"
            f"Date: Sat, 21 Nov 2026 09:00:00 +0700\r\nMessage-ID: <{len(data)}.{params!r:.8}@test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain{params}\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    return head.encode("utf-8") + fx.b64(data)


async def _loop_stalls(during):
    """The longest time the event loop did not run a 5 ms ticker while ``during`` ran, in seconds."""
    loop = asyncio.get_running_loop()
    longest, last, stop = 0.0, loop.time(), False

    async def tick():
        nonlocal longest, last
        while not stop:
            await asyncio.sleep(0.005)
            now = loop.time()
            longest, last = max(longest, now - last), now

    ticker = asyncio.ensure_future(tick())
    try:
        result = await during
    finally:
        stop = True
        await ticker
    return result, longest


async def test_a_text_plain_label_on_a_pdf_keeps_the_pdf_reader_and_pyhanko_off_the_loop(make_gateway, sink,
                                                                                          tmp_path, monkeypatch):
    """decides_inline reads the header section only: a single part labelled text/plain may carry a PDF
    (base64, with or without a ``name``). Classification then sends it to the PDF reader process
    (a ``name`` makes it an attachment) and inspection validates its signature in a pyHanko thread
    that it joins: waits that must never hold the event loop's thread (every session's replies)."""
    from mailgw.attachments import pdf as pdf_facts
    from mailgw.classify import pdfworker
    from mailgw.message.model import Envelope, Message
    from mailgw.smtp.edge import decides_inline
    from tests import attachment_fixtures as fx

    ca = fx.TestCA()
    (tmp_path / "roots.pem").write_bytes(ca.ca_pem())
    signed = await asyncio.to_thread(ca.sign_pdf, fx.pdf_plain("BAO CAO\nSo: 12/BC-STTTT"))  # pyHanko runs a loop
    named, unnamed = _text_plain_carrying(signed, '; name="bao_cao.pdf"'), _text_plain_carrying(signed)
    env = Envelope(mail_from="vanthu.sotttt@binhthuan.gov.vn", rcpts=[LOCAL], listener="relay", role="relay",
                   client_ip="127.0.0.1")
    assert all(len(raw) < 32 * 1024 for raw in (named, unnamed))  # small enough for the loop by size
    # Text that is text stays on the loop whatever its transfer encoding; the PDFs do not.
    text = "Kính gửi các đơn vị,\r\nXin mời dự họp.\r\n".encode()
    assert decides_inline(Message("x", env, _text_plain_carrying(text, "; charset=utf-8")))
    assert not decides_inline(Message("x", env, named)) and not decides_inline(Message("x", env, unnamed))

    waits: list[tuple[str, bool]] = []

    def on_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    read, trusted = pdfworker.Pool.read, pdf_facts._trusted

    def spy_read(self, *a, **kw):  # the real PDF reader, noting the thread that waits for it
        waits.append(("pdf reader", on_loop()))
        return read(self, *a, **kw)

    def spy_trusted(*a, **kw):  # the real validation, noting the thread that waits for it
        waits.append(("pyhanko", on_loop()))
        return trusted(*a, **kw)

    monkeypatch.setattr(pdfworker.Pool, "read", spy_read)
    monkeypatch.setattr(pdf_facts, "_trusted", spy_trusted)
    gw = await make_gateway(attachments={"trust_store": "roots.pem"})
    for raw in (named, unnamed):
        _, stall = await _loop_stalls(send(gw, "relay", raw, "vanthu.sotttt@binhthuan.gov.vn", [LOCAL]))
        print(f"longest event-loop stall while the message was decided: {stall * 1000:.0f} ms")
    assert {w for w, _ in waits} == {"pdf reader", "pyhanko"}, waits
    assert [w for w in waits if w[1]] == [], f"waited on the event loop's thread: {waits}"
