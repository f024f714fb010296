"""The milter and policy listeners, in process, driven by a small real milter client (tests/milter_client.py).

The client speaks the protocol as Postfix 3 does (version 6, every option
offered); the gateway is the real one with a milter listener, so every
verdict, reply and exchange record here is the pipeline's. The same paths
through a real Postfix are in tests/test_milter_postfix.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailgw.config.resolver import FileResolver
from mailgw.config.settings import load
from mailgw.config.yamlfile import ConfigError
from mailgw.dkim import verify
from mailgw.message import replies
from mailgw.smtp import wire
from tests.conftest import LOGIN, PASSWORD, message, port
from tests.milter_client import ChangeHeader, InsertHeader, MilterClient, Quarantine, apply, split
from tests.test_dkim_pipeline import _dkim_settings, _zone_line

BT = "binhthuan.gov.vn"
CLERK = f"vanthu.sotttt@{BT}"
OTHER = f"vanthu.snv@{BT}"
LEADER = f"giamdoc.skhdt@{BT}"
OUTSIDE = "203.0.113.7"  # an Internet client of the MTA: role mx


def _listeners(**milter: Any) -> list[dict[str, Any]]:
    return [
        {"name": "milter", "role": "milter", "listen": "127.0.0.1:0", "trusted_networks": ["127.0.0.0/8"],
         "daemons": {"submission": "submission", "mx-in": "mx"}, **milter},
        {"name": "policy", "role": "policy", "listen": "127.0.0.1:0", "trusted_networks": ["127.0.0.0/8"],
         "daemons": {"submission": "submission"}},
    ]


@pytest.fixture
async def gw(make_gateway, tmp_path):
    g = await make_gateway(listeners=_listeners(), dkim=_dkim_settings(tmp_path, "rsa"))
    g.records = []

    async def keep(rec: dict[str, Any]) -> None:
        g.records.append(rec)

    g.edge.recorder = g.edge.spooled_recorder = keep
    return g


@pytest.fixture
async def client(gw):
    c = MilterClient()
    await c.open(*gw.addresses["milter"])
    yield c
    await c.close()


def _spooled(gw: Any) -> list[Any]:
    return list(gw.spool.entries())


async def test_negotiation_asks_for_what_it_needs(client):
    n = client.negotiated
    from kilter.protocol.messages import ActionFlags, ProtocolFlags

    assert ActionFlags.ADD_HEADERS in n.action_flags and ActionFlags.QUARANTINE in n.action_flags
    assert ProtocolFlags.HEADER_LEADING_SPACE in n.protocol_flags and ProtocolFlags.NO_DATA in n.protocol_flags
    assert any("{auth_authen}" in names for names in n.macros.values())


async def test_outbound_is_signed_through_header_actions_and_nothing_is_spooled(gw, client, tmp_path):
    raw = message(subject="Kế hoạch số 45/KH-STTTT", to="vanphong@hanoi.gov.vn")
    out = await client.transaction(CLERK, ["vanphong@hanoi.gov.vn"], raw)
    assert out.answer == "Continue", out
    inserted = [a.name.lower() for a in out.of(InsertHeader)]
    assert "dkim-signature" in inserted and "received" in inserted
    queued = apply(raw, out.actions)
    report = await verify(queued, FileResolver.from_text(_zone_line(BT, "rsa")))
    assert [(s.result, s.d) for s in report.signatures] == [("pass", BT)]
    rec = gw.records[-1]
    assert (rec["listener"], rec["role"], rec["decision"]["decision"]) == ("milter", "relay", "accept")
    assert rec["decision"]["reply"].startswith("250 ")
    assert _spooled(gw) == []  # the MTA's queue holds the message


async def test_official_document_to_gmail_is_refused_with_the_bilingual_text_and_id(gw, client):
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=LEADER, to="canhan@gmail.com")
    out = await client.transaction(LEADER, ["canhan@gmail.com"], raw)
    assert out.answer == "ReplyCode"
    lines = out.reply.split("\r\n")
    assert all(re.match(r"550[- ]5\.7\.1 ", line) and len(line) + 2 <= 512 for line in lines), lines
    assert out.reply.isascii() and "canhan@gmail.com" in out.reply
    rec = gw.records[-1]
    assert lines[-1].endswith(f"[{rec['id']}]")
    assert rec["decision"]["rule"] == "official-to-unofficial" and rec["decision"]["reply"].startswith("550")
    assert _spooled(gw) == []


async def test_replies_are_utf8_when_the_client_asked_for_smtputf8_and_ascii_otherwise(gw, client):
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=LEADER, to="canhan@gmail.com")
    for args, utf8 in (((), False), (("BODY=8BITMIME", "SMTPUTF8"), True), (("BODY=8BITMIME",), False)):
        out = await client.transaction(LEADER, ["canhan@gmail.com"], raw, esmtp_args=args, connect=not gw.records)
        assert (out.stage, out.answer) == ("EndOfMessage", "ReplyCode")
        reply = gw.records[-1]["decision"]["reply"]
        assert out.reply.split("\r\n") == wire.reply_lines(reply, utf8=utf8)  # as the edge would answer
        assert out.reply.isascii() is not utf8 and ("Văn bản hành chính" in out.reply) is utf8, out.reply
    # The envelope's refusals too: a sender the login does not own, at MAIL FROM.
    for args, utf8 in (((), False), (("SMTPUTF8",), True)):
        out = await client.transaction(CLERK, [OTHER], message(), connect=False, macros={"{auth_authen}": LEADER},
                                       esmtp_args=args)
        assert (out.stage, out.answer) == ("EnvelopeFrom", "ReplyCode")
        assert out.reply == wire.reply_lines(str(replies.SENDER_NOT_OWNED), utf8=utf8)[0]
        assert out.reply.isascii() is not utf8


async def test_secret_document_is_refused_with_nothing_kept(gw, client):
    raw = message(subject="[MẬT] Báo cáo tình hình an ninh trật tự", body="Nội dung mật.\r\n")
    out = await client.transaction(CLERK, [OTHER], raw)
    assert out.answer == "ReplyCode" and out.reply.startswith("550 5.7.1 ")
    rec = gw.records[-1]
    assert rec["decision"]["rule"] == "secrecy-block" and rec["decision"]["redact"] is True
    assert _spooled(gw) == []


async def test_lookalike_is_quarantined_by_the_mta(gw, client):
    raw = message(subject="Cập nhật mật khẩu hộp thư", sender="thongbao@binhthuan-gov.vn")
    out = await client.transaction("thongbao@binhthuan-gov.vn", [OTHER], raw, client=OUTSIDE)
    assert out.answer == "Continue"
    [q] = out.of(Quarantine)
    rec = gw.records[-1]
    assert q.reason == f"mailgw: lookalike-domain [{rec['id']}]"
    assert (rec["role"], rec["decision"]["decision"]) == ("mx", "quarantine")
    assert _spooled(gw) == []


async def test_mx_refuses_a_foreign_recipient_at_rcpt(gw, client):
    out = await client.transaction("someone@example.com", ["victim@gmail.com"], message(), client=OUTSIDE)
    assert (out.stage, out.answer) == ("EnvelopeRecipient", "ReplyCode")
    assert out.reply.startswith("550 5.7.1 ") and "Relaying denied" in out.reply


async def test_daemon_name_makes_submission_which_binds_the_sender_to_the_login(gw, client):
    out = await client.transaction(CLERK, [OTHER], message(), macros={"{daemon_name}": "submission"})
    assert (out.stage, out.answer) == ("EnvelopeFrom", "ReplyCode") and out.reply.startswith("553 5.7.1 ")
    out = await client.transaction(CLERK, [OTHER], message(), connect=False,
                                   macros={"{auth_authen}": LEADER})
    assert (out.stage, out.answer) == ("EnvelopeFrom", "ReplyCode")  # the login does not own this sender
    out = await client.transaction(CLERK, [OTHER], message(), connect=False, macros={"{auth_authen}": CLERK})
    assert out.answer == "Continue"
    rec = gw.records[-1]
    assert (rec["role"], rec["auth_user"]) == ("submission", CLERK)


async def test_forged_authentication_results_are_deleted_in_the_mta(gw, client):
    raw = message(sender="vanphong@hanoi.gov.vn", extra_headers="Authentication-Results: mailgw.test; dkim=pass\r\n")
    out = await client.transaction("vanphong@hanoi.gov.vn", [OTHER], raw, client=OUTSIDE)
    assert out.answer == "Continue"
    assert [(a.name, a.index, bytes(a.value)) for a in out.actions if type(a) is ChangeHeader] == \
        [("Authentication-Results", 1, b"")]
    queued = apply(raw, out.actions)
    fields = [f for f in split(queued.split(b"\r\n\r\n")[0]) if f.lower().startswith(b"authentication-results")]
    assert len(fields) == 1 and b"dkim=none" in fields[0] and b"dkim=pass" not in fields[0]


async def test_no_record_no_continue(gw, client):
    async def broken(rec: dict[str, Any]) -> None:
        raise OSError("database and journal both gone")

    gw.edge.recorder = broken
    out = await client.transaction(CLERK, [OTHER], message())
    assert out.answer == "ReplyCode" and out.reply.startswith("451 4.3.0 ")


async def test_several_transactions_on_one_connection(gw, client):
    for i in range(3):
        out = await client.transaction(CLERK, [OTHER], message(subject=f"Trao đổi {i}"), connect=i == 0)
        assert out.answer == "Continue"
    assert len({r["id"] for r in gw.records}) == 3


async def test_unix_socket_listener(make_gateway, tmp_path):
    sock = tmp_path / "run" / "milter.sock"
    g = await make_gateway(listeners=[{"name": "milter", "role": "milter", "listen": f"unix:{sock}"}])
    assert sock.is_socket() and oct(sock.stat().st_mode & 0o777) == "0o660"
    c = MilterClient()
    await c.open_unix(str(sock))
    out = await c.transaction("someone@example.com", [OTHER], message(sender="someone@example.com"), client=OUTSIDE)
    await c.close()
    assert out.answer == "Continue"
    assert g.addresses["milter"] == (str(sock), 0)


# --- the policy service -----------------------------------------------------------


async def _ask(gw: Any, **attrs: str) -> str:
    reader, writer = await asyncio.open_connection(*gw.addresses["policy"])
    request = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
               "client_address": "127.0.0.1", "helo_name": "mail.example", "queue_id": "", "recipient_count": "0",
               **attrs}
    writer.write("".join(f"{k}={v}\n" for k, v in request.items()).encode() + b"\n")
    answer = await reader.readuntil(b"\n\n")
    writer.close()
    return answer.decode().strip()


def _list_every_mailbox(gw: Any, tmp_path: Path) -> None:
    """The directory lists every mailbox of binhthuan.gov.vn: a recipient not listed is unknown."""
    directory = tmp_path / "directory.yaml"
    directory.write_text(directory.read_text(encoding="utf-8").replace(
        "official_suffixes:", "authoritative: [binhthuan.gov.vn]\nofficial_suffixes:", 1), encoding="utf-8")
    assert gw.reload()


async def test_policy_service_answers_with_the_edge_checks(gw, tmp_path):
    _list_every_mailbox(gw, tmp_path)
    assert await _ask(gw, sender=CLERK, recipient="canhan@gmail.com") == "action=DUNNO"  # relay: any recipient
    outside = await _ask(gw, client_address=OUTSIDE, sender="x@example.com", recipient="canhan@gmail.com")
    assert outside.startswith("action=550 5.7.1 ") and "Relaying denied" in outside
    assert (await _ask(gw, client_address=OUTSIDE, sender="x@example.com", recipient=f"nobody-here@{BT}")).startswith(
        "action=550 5.1.1 ")
    owned = await _ask(gw, sasl_username=LEADER, sender=CLERK, recipient=OTHER)
    assert owned.startswith("action=553 5.7.1 ")
    assert await _ask(gw, policy_context="submission", sasl_username=CLERK, sender=CLERK, recipient="a@gmail.com") == \
        "action=DUNNO"
    assert (await _ask(gw, request="junk")).startswith("action=DEFER_IF_PERMIT")


# One truth for the envelope: the SMTP edge, the milter and the policy service, same envelopes, same answers.
# (what, role, login, MAIL FROM, RCPT TO): the edge takes the role from its listener (mx, or submission
# after AUTH), the milter and the policy service from the MTA (an Internet client, or an authenticated one).
ENVELOPES = [
    ("relay denied", "mx", None, "someone@example.com", "canhan@gmail.com"),
    ("sender not bound to the login", "submission", LOGIN, LEADER, OTHER),
    ("unknown local recipient", "mx", None, "someone@example.com", f"nobody-here@{BT}"),
    ("allowed", "mx", None, "someone@example.com", OTHER),
    ("allowed, submission", "submission", LOGIN, LOGIN, "canhan@gmail.com"),
]


async def _edge_answer(gw: Any, client_tls: Any, role: str, login: str | None, sender: str, rcpt: str) -> str | None:
    """The edge's refusal of MAIL or RCPT as ``CODE TEXT``, or None when RCPT is accepted."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(gw, role), start_tls=role == "submission",
                           tls_context=client_tls)
    await smtp.connect()
    try:
        if login:
            await smtp.login(login, PASSWORD)
        for command, arg in ((smtp.mail, sender), (smtp.rcpt, rcpt)):
            try:
                await command(arg)
            except aiosmtplib.SMTPResponseException as e:
                return f"{e.code} {e.message}"
        return None
    finally:
        smtp.close()


async def _milter_answer(gw: Any, login: str | None, sender: str, rcpt: str) -> str | None:
    c = MilterClient()
    await c.open(*gw.addresses["milter"])
    try:
        out = await c.transaction(sender, [rcpt], message(sender=sender, to=rcpt), client=OUTSIDE,
                                  macros={"{auth_authen}": login} if login else None)
    finally:
        await c.close()
    return out.reply if out.stage != "EndOfMessage" else None


async def test_edge_milter_and_policy_service_give_the_same_answer_to_the_same_envelope(make_gateway, tmp_path, client_tls):
    listeners = [{"name": "mx", "role": "mx", "listen": "127.0.0.1:0"},
                 {"name": "submission", "role": "submission", "listen": "127.0.0.1:0"}] + _listeners()
    gw = await make_gateway(listeners=listeners)
    _list_every_mailbox(gw, tmp_path)
    table = []
    for what, role, login, sender, rcpt in ENVELOPES:
        edge = await _edge_answer(gw, client_tls, role, login, sender, rcpt)
        milter = await _milter_answer(gw, login, sender, rcpt)
        policy = (await _ask(gw, client_address=OUTSIDE, sasl_username=login or "", sender=sender,
                             recipient=rcpt)).removeprefix("action=")
        table.append((what, edge, milter, None if policy == "DUNNO" else policy))
    assert [(what, edge, edge) for what, edge, _, _ in table] == [(what, m, p) for what, _, m, p in table]
    assert [edge[:9] if edge else None for _, edge, _, _ in table] == \
        ["550 5.7.1", "553 5.7.1", "550 5.1.1", None, None]


# --- settings ------------------------------------------------------------------


def test_settings_name_bad_milter_keys_at_their_line(tmp_path: Path):
    (tmp_path / "directory.yaml").write_text("agencies: []\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "hostname: mailgw.test\nlisteners:\n"
        "  - name: milter\n    role: milter\n    listen: unix:run/milter.sock\n"
        "    daemons: {submission: staff}\n"
        "  - name: mx\n    role: mx\n    listen: 127.0.0.1:25\n    daemons: {a: mx}\n"
    )
    with pytest.raises(ConfigError) as e:
        load(str(path))
    text = str(e.value)
    assert f"{path}:6: daemon 'submission': role must be one of mx, relay, submission, not 'staff'" in text
    assert f"{path}:10: 'daemons' applies to milter and policy listeners only" in text


async def test_policy_test_on_a_milter_listener_takes_the_role_it_would_have(gw):
    from mailgw import trace

    raw = message(subject="Cập nhật mật khẩu hộp thư", sender="thongbao@binhthuan-gov.vn")
    out = await asyncio.to_thread(trace.run, gw.context(), raw, listener="milter", client_ip=OUTSIDE)
    assert (out["envelope"]["role"], out["decision"], out["rule"]) == ("mx", "quarantine", "lookalike-domain")
    out = await asyncio.to_thread(trace.run, gw.context(), message(), listener="milter", client_ip="127.0.0.1")
    assert (out["envelope"]["role"], out["decision"]) == ("relay", "accept")


async def test_a_broken_packet_closes_that_connection_only(gw, client):
    reader, writer = await asyncio.open_connection(*gw.addresses["milter"])
    writer.write(b"\x00\x00\x00\x00")  # a packet of no length: not the milter protocol
    assert await reader.read() == b""  # closed: the MTA would apply milter_default_action
    writer.close()
    out = await client.transaction(CLERK, [OTHER], message())
    assert out.answer == "Continue"


async def test_a_message_over_the_size_limit_is_refused_at_its_end(make_gateway):
    g = await make_gateway(listeners=_listeners(), limits={"message_size": "4K"})
    c = MilterClient()
    await c.open(*g.addresses["milter"])
    out = await c.transaction(CLERK, [OTHER], message(body="Nội dung dài.\r\n" * 400))
    await c.close()
    assert out.answer == "ReplyCode" and out.reply.startswith("552 5.3.4 ")
