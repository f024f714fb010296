"""Queue and delivery: retries after 4xx, exactly one DSN after 5xx, never a bounce of a bounce."""

from __future__ import annotations

import email
import email.policy

from tests.conftest import message, port, send
from tests.dialog import Dialog

SENDER = "vanthu.sotttt@binhthuan.gov.vn"


async def test_250_only_after_the_message_is_on_disk_and_queue_empties(gateway, sink):
    response = await send(gateway, "relay", message(), SENDER, ["a@example.com", "b@binhthuan.gov.vn"])
    reply = response[1]
    assert reply.startswith("2.0.0 OK: queued as ")
    await sink.wait_for(lambda: len(sink.messages) >= 1)
    await gateway.deliverer.run_until_empty()
    assert gateway.spool.ids() == []
    rcpts = sorted(r for m in sink.messages for r in m.rcpts)
    assert rcpts == ["a@example.com", "b@binhthuan.gov.vn"]


async def test_temporary_failures_are_retried_until_the_next_hop_recovers(gateway, sink):
    sink.data_reply = lambda rcpts: "451 4.3.0 try later"
    for i in range(5):
        await send(gateway, "relay", message(subject=f"thư {i}"), SENDER, [f"r{i}@binhthuan.gov.vn"])
    # Let a couple of attempts fail, then recover.
    import asyncio

    await asyncio.sleep(0.6)
    assert not sink.messages
    states = [gateway.spool.load_state(i) for i in gateway.spool.ids()]
    assert len(states) == 5 and all(s["attempts"] >= 1 for s in states)
    assert all("451" in s["rcpts"][next(iter(s["rcpts"]))]["reply"] for s in states)
    sink.data_reply = lambda rcpts: None
    await sink.wait_for(lambda: len(sink.messages) == 5, timeout=15)
    await gateway.deliverer.run_until_empty()
    assert gateway.spool.ids() == []
    assert not [m for m in sink.messages if m.mail_from == ""]  # no DSN for a temporary failure


async def test_permanent_failure_sends_exactly_one_dsn(gateway, sink):
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 no such user" if rcpt.startswith("bad") else None
    await send(gateway, "relay", message(subject="Trao đổi số liệu"), SENDER, ["bad1@example.com", "bad2@example.com", "good@example.com"])
    await sink.wait_for(lambda: any(m.mail_from == "" for m in sink.messages))
    await gateway.deliverer.run_until_empty()
    dsns = [m for m in sink.messages if m.mail_from == ""]
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn.rcpts == [SENDER]
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    status = next(p for p in parsed.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; bad1@example.com" in text and "Final-Recipient: rfc822; bad2@example.com" in text
    assert "Status: 5.1.1" in text and "good@example.com" not in text
    notice = next(p for p in parsed.walk() if p.get_content_type() == "text/plain").get_content()
    assert notice.index("KHÔNG gửi được") < notice.index("could NOT be delivered")  # Vietnamese first
    assert b"Xin m\xe1\xbb\x9di d\xe1\xbb\xb1 h\xe1\xbb\x8dp" not in dsn.data  # the body is not returned
    assert [m.rcpts for m in sink.messages if m.mail_from == SENDER] == [["good@example.com"]]


async def test_a_bounce_is_never_bounced(gateway, sink):
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 no such user"
    d = await Dialog.open(port(gateway, "mx"))
    await d.envelope("", ["gone@binhthuan.gov.vn"])
    assert (await d.cmd("DATA"))[0] == 354
    code, _ = await d.cmd(message(sender="MAILER-DAEMON@example.com") + b".\r\n")
    assert code == 250
    await d.close()
    import asyncio

    await asyncio.sleep(0.3)
    await gateway.deliverer.run_until_empty()
    assert sink.messages == []
    assert gateway.spool.ids() == []


async def test_queue_lifetime_expiry_sends_one_dsn(make_gateway, sink):
    gw = await make_gateway(queue={"lifetime": "1s"})
    sink.data_reply = lambda rcpts: None if rcpts == [SENDER] else "421 4.4.2 busy"
    await send(gw, "relay", message(), SENDER, ["slow@example.com"])
    await sink.wait_for(lambda: any(m.mail_from == "" for m in sink.messages), timeout=15)
    await gw.deliverer.run_until_empty()
    dsns = [m for m in sink.messages if m.mail_from == ""]
    assert len(dsns) == 1 and b"Status: 4.4.7" in dsns[0].data
    assert gw.spool.ids() == []


async def test_quarantined_messages_wait_until_released(gateway, sink):
    response = await send(gateway, "relay", message(), SENDER, ["held@example.com"])
    msg_id = response[1].rsplit(" ", 1)[1]
    # A delivery may already have happened; hold a second one immediately via the spool.
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    response = await send(gateway, "relay", message(subject="hai"), SENDER, ["held2@example.com"])
    second = response[1].rsplit(" ", 1)[1]
    assert msg_id != second
    import asyncio

    await asyncio.sleep(0.3)
    assert gateway.spool.hold(second)
    # A delivery attempt already under way when the hold came ends (with 451, like
    # `postsuper -h` on Postfix's active queue); only then may the next hop accept.
    await asyncio.sleep(0.3)
    sink.data_reply = lambda rcpts: None
    await asyncio.sleep(0.6)
    assert not sink.to("held2@example.com")
    assert gateway.spool.locate(second) == "hold"
    assert gateway.spool.release(second)
    await sink.wait_for(lambda: sink.to("held2@example.com"))


async def test_the_decision_record_carries_the_classification(gateway, sink):
    sink.data_reply = lambda rcpts: "451 4.3.0 later"  # keep it in the spool to read its record
    response = await send(gateway, "relay", message(subject="Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số"), SENDER, ["vanthu.snv@binhthuan.gov.vn"])
    msg_id = response[1].rsplit(" ", 1)[1]
    entry, _ = gateway.spool.read(msg_id)
    record = entry.meta["record"]
    assert record["classification"]["category"] == "plan"
    assert record["classification"]["doc_number"] == "112/KH-STTTT"
    assert record["direction"] == "internal" and record["decision"]["decision"] == "accept"
    assert record["sender"]["agency"] == "sotttt" and record["directory_version"]


async def test_maildir_route_delivers_one_file_per_recipient(make_gateway, sink, tmp_path):
    gw = await make_gateway(routes={"local": "maildir:mail/local", "remote": "maildir:mail/remote"})
    await send(gw, "relay", message(), SENDER, ["vanthu.snv@binhthuan.gov.vn", "friend@mic.gov.vn"])
    await gw.deliverer.run_until_empty()
    local = list((tmp_path / "mail" / "local" / "vanthu.snv@binhthuan.gov.vn" / "new").iterdir())
    remote = list((tmp_path / "mail" / "remote" / "friend@mic.gov.vn" / "new").iterdir())
    assert len(local) == 1 and len(remote) == 1
    data = local[0].read_bytes()
    assert data.startswith(b"Received: from ") and b"\r\n" not in data  # local line endings in Maildir
    assert not sink.messages and gw.spool.ids() == []


def _utf8_message(to: str) -> bytes:
    return (f"From: Văn thư <{SENDER}>\r\nTo: {to}\r\nSubject: Trao đổi công việc\r\n"
            "Message-ID: <utf8@test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nXin chào.\r\n").encode("utf-8")


async def test_utf8_headers_travel_with_smtputf8(gateway, sink):
    await send(gateway, "relay", _utf8_message("ban@example.com"), SENDER, ["ban@example.com"], mail_options=["SMTPUTF8"])
    await sink.wait_for(lambda: sink.to("ban@example.com"))
    got = sink.to("ban@example.com")[0]
    assert "SMTPUTF8" in got.mail_options and "Subject: Trao đổi công việc".encode() in got.data


async def test_a_next_hop_without_smtputf8_gets_nothing_and_the_sender_one_dsn(make_gateway, sink):
    from tests.sink import Sink

    plain = Sink()
    plain.smtputf8 = False
    await plain.start()
    try:
        gw = await make_gateway(routes={"local": f"smtp://127.0.0.1:{sink.port}", "remote": f"smtp://127.0.0.1:{plain.port}"})
        await send(gw, "relay", _utf8_message("ban@example.com"), SENDER, ["ban@example.com"], mail_options=["SMTPUTF8"])
        await sink.wait_for(lambda: sink.to(SENDER))
        await gw.deliverer.run_until_empty()
        assert plain.messages == []
        (dsn,) = sink.to(SENDER)
        assert dsn.mail_from == "" and b"Status: 5.6.7" in dsn.data
    finally:
        await plain.stop()


async def test_a_utf8_sender_gets_an_internationalised_dsn(gateway, sink):
    # dsn.py wrote the header section as ASCII: a UTF-8 sender's DSN raised, and the message
    # was retried for ever and never bounced.
    sender = "văn.thư@binhthuan.gov.vn"
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 no such user\x07 (hộp thư không tồn tại)" if rcpt.startswith("bad") else None
    raw = message(subject="Trao đổi", sender=SENDER, to="bad@example.com")  # the envelope sender is UTF-8
    await send(gateway, "relay", raw, sender, ["bad@example.com"], mail_options=["SMTPUTF8"])
    await sink.wait_for(lambda: sink.to(sender))
    await gateway.deliverer.run_until_empty()
    (dsn,) = sink.to(sender)
    assert dsn.mail_from == "" and gateway.spool.ids() == []
    parsed = email.message_from_string(dsn.data.decode("utf-8"), policy=email.policy.default)  # UTF-8 headers
    assert parsed["To"].addresses[0].addr_spec == sender
    status = next(p for p in parsed.walk() if p.get_content_type() == "message/global-delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; bad@example.com" in text and "Status: 5.1.1" in text
    diagnostic = next(line for line in text.splitlines() if line.startswith("Diagnostic-Code:"))
    assert diagnostic.isascii() and "\x07" not in diagnostic  # the next hop's reply, checked
    assert any(p.get_content_type() == "message/global-headers" for p in parsed.walk())


async def test_small_and_large_messages_are_delivered_once_whichever_way_the_spool_is_read(gateway, sink, tmp_path):
    """Small spool files are read on the event loop (Spool.read_if_small), larger ones in a thread."""
    from mailgw.message.model import new_id
    from mailgw.queue.spool import SMALL, Spool

    small, large = message(subject="nhỏ"), message(subject="lớn", body="Nội dung dài.\r\n" * (SMALL // 10))
    assert len(small) < SMALL < len(large)
    for raw, rcpt in ((small, "small@binhthuan.gov.vn"), (large, "large@binhthuan.gov.vn")):
        await send(gateway, "relay", raw, SENDER, [rcpt])
    await sink.wait_for(lambda: len(sink.messages) >= 2)
    await gateway.deliverer.run_until_empty()
    assert sorted(r for m in sink.messages for r in m.rcpts) == ["large@binhthuan.gov.vn", "small@binhthuan.gov.vn"]
    assert gateway.spool.ids() == []
    # What each way reads is the same entry and bytes; past the limit, read_if_small leaves it to read.
    spool = Spool(str(tmp_path / "spool"))
    big_id, small_id = new_id(), new_id()
    spool.put_sync(big_id, {"envelope": {"rcpts": ["a@b.vn"]}}, large)
    spool.put_sync(small_id, {"envelope": {"rcpts": ["a@b.vn"]}}, small)
    assert spool.read_if_small(big_id) is None
    assert spool.read_if_small(big_id, limit=len(large) * 2) == spool.read(big_id)
    assert spool.read_if_small(small_id) == spool.read(small_id)


async def test_a_next_hop_reply_that_is_not_utf8_is_kept_and_each_recipient_gets_one_copy(gateway, sink):
    """A 4xx for one recipient in a legacy 8-bit charset (TCVN3, Windows-1258): the state is still saved.

    aiosmtplib decodes replies with surrogate escapes; JSON in UTF-8 cannot hold those, and
    the state was never written: the recipient the hop accepted got a copy at every retry.
    """
    import asyncio

    sink.rcpt_reply = lambda rcpt: b"450 4.2.0 H\xd8p th\xad \xf0\xe3y" if rcpt.startswith("full") else None
    await send(gateway, "relay", message(), SENDER, ["ok@binhthuan.gov.vn", "full@binhthuan.gov.vn"])
    await sink.wait_for(lambda: len(sink.messages) >= 1)
    await asyncio.sleep(1.0)  # several retries at 200 ms
    assert [r for m in sink.messages for r in m.rcpts] == ["ok@binhthuan.gov.vn"]  # once, not at every retry
    (msg_id,) = gateway.spool.ids()
    state = gateway.spool.load_state(msg_id)
    assert state["rcpts"]["ok@binhthuan.gov.vn"]["status"] == "sent"
    reply = state["rcpts"]["full@binhthuan.gov.vn"]["reply"]
    assert "450 4.2.0 H\ufffdp th\ufffd" in reply  # the 8-bit bytes replaced, the rest as the hop said it


async def test_a_spool_file_a_crash_cut_short_is_set_aside_never_sent(make_gateway, sink, tmp_path, caplog):
    """Spool files are renamed into place before their fsync (mailgw.durable.creating): one a crash
    cut short had no 250; its length gives it away, and it goes to corrupt/, not to the next hop.
    A file written before the length was kept (no ``bytes``) is still delivered."""
    import json

    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    gw = await make_gateway()
    ids = []
    for subject in ("cắt ngắn", "kiểu cũ"):
        _, text = await send(gw, "relay", message(subject=subject), SENDER, ["a@example.com"])
        ids.append(text.rsplit(" ", 1)[-1])
    await gw.drain()
    short, old = (tmp_path / "spool" / "queue" / i for i in ids)
    raw = short.read_bytes()
    short.write_bytes(raw[:-100])  # the last page never reached the disk
    first, rest = old.read_bytes().split(b"\n", 1)
    n = int(first.split()[1])
    meta = json.loads(rest[:n])
    assert meta.pop("bytes") == len(rest) - n - 1
    head = json.dumps(meta).encode()
    old.write_bytes(b"MAILGW1 %d\n" % len(head) + head + rest[n:])

    sink.data_reply = lambda rcpts: None
    gw2 = await make_gateway()
    await sink.wait_for(lambda: len(sink.messages) == 1)
    await gw2.deliverer.run_until_empty()
    assert (tmp_path / "spool" / "corrupt" / ids[0]).exists() and gw2.spool.ids() == []
    assert [m.data.endswith(message(subject="kiểu cũ")) for m in sink.messages] == [True]
    assert any("cut short by a crash" in r.getMessage() for r in caplog.records)
