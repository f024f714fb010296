"""The submission listener: AUTH only over TLS, argon2 passwords, sender bound to the login."""

from __future__ import annotations

import asyncio
import base64

import aiosmtplib
import pytest

from tests.conftest import LOGIN, PASSWORD, message, port
from tests.dialog import Dialog


async def _client(gw, client_tls) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gw, "submission"), start_tls=True, tls_context=client_tls)
    await client.connect()
    await client.ehlo()
    return client


async def test_no_auth_offered_or_accepted_in_plain_text(gateway):
    d = await Dialog.open(port(gateway, "submission"))
    assert (await d.reply())[0] == 220
    code, features = await d.cmd("EHLO c")
    assert "AUTH" not in features and "STARTTLS" in features
    code, text = await d.cmd("AUTH PLAIN AHZhbnRodS5zb3R0dHRAYmluaHRodWFuLmdvdi52bgB4")
    assert code == 538 or code >= 500  # encryption required
    code, text = await d.cmd("MAIL FROM:<vanthu.sotttt@binhthuan.gov.vn>")
    assert (code, text[:5]) == (530, "5.7.0")
    await d.close()


async def test_login_and_send_over_tls(gateway, sink, client_tls):
    client = await _client(gateway, client_tls)
    assert "PLAIN" in client.server_auth_methods or "plain" in [m.lower() for m in client.server_auth_methods]
    await client.login(LOGIN, PASSWORD)
    errors, reply = await client.sendmail(LOGIN, ["friend@mic.gov.vn"], message(sender=LOGIN))
    assert errors == {} and reply.startswith("2.0.0 OK: queued as")
    await client.quit()
    await sink.wait_for(lambda: sink.to("friend@mic.gov.vn"))
    data = sink.to("friend@mic.gov.vn")[0].data
    assert b"with ESMTPSA id" in data and b"(using TLSv1." in data


@pytest.mark.parametrize("password", ["wrong", "", PASSWORD.upper()])
async def test_wrong_password_is_refused(gateway, client_tls, password):
    client = await _client(gateway, client_tls)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await client.login(LOGIN, password)
    assert err.value.code == 535
    client.close()


async def test_unknown_login_is_refused(gateway, client_tls):
    client = await _client(gateway, client_tls)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await client.login("nobody@binhthuan.gov.vn", PASSWORD)
    client.close()


async def test_repeated_failures_close_the_session_with_421(gateway, client_tls):
    client = await _client(gateway, client_tls)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
            await client.auth_plain(LOGIN, "guess")
        assert err.value.code == 535
    response = await client.execute_command(b"AUTH", b"PLAIN", base64.b64encode(f"\0{LOGIN}\0guess".encode()))
    assert (response.code, response.message[:5]) == (421, "4.7.0")  # said before the close, not a bare hang-up
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    client.close()


async def test_failed_logins_slow_down_the_next_attempt_from_that_address(make_gateway, client_tls):
    gw = await make_gateway(limits={"auth_penalty": "400ms"})
    client = await _client(gw, client_tls)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.auth_plain(LOGIN, "guess")
    client.close()
    assert gw.edge.auth_penalty.delay("127.0.0.1", "someone.else@binhthuan.gov.vn") == pytest.approx(0.8)
    # A new connection gets no fresh allowance: even the right password waits out the penalty.
    client = await _client(gw, client_tls)
    started = asyncio.get_running_loop().time()
    await client.login(LOGIN, PASSWORD)
    assert asyncio.get_running_loop().time() - started >= 0.75
    await client.quit()
    assert gw.edge.auth_penalty.delay("127.0.0.1", LOGIN) == 0  # a success clears it


async def test_mail_from_must_belong_to_the_login(gateway, sink, client_tls):
    client = await _client(gateway, client_tls)
    await client.login(LOGIN, PASSWORD)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await client.mail("giamdoc@binhthuan.gov.vn")
    assert err.value.code == 553 and err.value.message.startswith("5.7.1")
    client.close()


async def test_from_header_must_belong_to_the_login(gateway, sink, client_tls):
    client = await _client(gateway, client_tls)
    await client.login(LOGIN, PASSWORD)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await client.sendmail(LOGIN, ["friend@mic.gov.vn"], message(sender="giamdoc@binhthuan.gov.vn"))
    assert err.value.code == 550 and err.value.message.startswith("5.7.1")
    client.close()
    assert not sink.messages


async def test_mx_and_relay_offer_no_auth(gateway, client_tls):
    for listener in ("mx", "relay"):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gateway, listener), start_tls=True, tls_context=client_tls)
        await client.connect()
        assert not client.supports_extension("auth")
        await client.quit()


async def test_starttls_injection_is_ignored(gateway, sink, client_tls):
    """CVE-2024-34083: commands pipelined with STARTTLS must not run inside TLS."""
    d = await Dialog.open(port(gateway, "relay"))
    assert (await d.reply())[0] == 220
    await d.cmd("EHLO c")
    d.send(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
    code, _ = await d.reply()
    assert code == 220
    await d.close()
    # Whatever happened after, no MAIL command was taken from the plaintext buffer.
    assert not [m for m in sink.messages if m.mail_from == "injected@example.com"]



async def test_tls_offers_no_cbc_suite(gateway, client_tls):
    # Mozilla "intermediate": a TLS 1.2 client that knows only CBC suites finds nothing in common.
    import ssl

    cbc_only = client_tls  # trusts the test CA; a fresh context per test
    cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc_only.set_ciphers("ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gateway, "submission"), start_tls=True,
                             tls_context=cbc_only)
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
        await client.connect()
    client.close()
