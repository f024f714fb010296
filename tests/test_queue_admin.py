"""Queue tools at postsuper/postqueue/postcat level on the real gateway: the CLI in a subprocess, the
gateway delivering meanwhile, every admin action found in the exchange log and `audit verify` green."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import pwd
import subprocess
import sys
import time
from typing import Any, Callable

from mailgw.app import Gateway
from tests.conftest import REPO, message, send, until

SENDER = "vanthu.sotttt@binhthuan.gov.vn"
OTHER = "vanthu.snv@binhthuan.gov.vn"
LOCAL = "vanthu.snv@binhthuan.gov.vn"
MIC = "vanthu@mic.gov.vn"
ME = pwd.getpwuid(os.geteuid()).pw_name


def _config(gw: Gateway) -> str:
    return gw.settings_path


async def mailgw(gw: Gateway, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m mailgw ARGS --config` the gateway's own settings, in a thread: the gateway keeps running."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailgw", *args, "--config", _config(gw)], input=stdin,
                              capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=60)
    return await asyncio.to_thread(run)


def _queued_id(reply: Any) -> str:
    return str(reply[1].rsplit(" ", 1)[1])


async def history(gw: Gateway, msg_id: str) -> list[dict[str, Any]]:
    show = await mailgw(gw, "audit", "show", msg_id, "--json")
    assert show.returncode == 0, show.stderr
    return list(json.loads(show.stdout)["deliveries"])


async def history_until(gw: Gateway, msg_id: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The history once ``done`` holds: the gateway's own events come through its log writer, a moment later."""
    deadline = time.monotonic() + 15
    events = await history(gw, msg_id)
    while not done(events):
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.05)
        events = await history(gw, msg_id)
    return events


async def test_the_spool_file_the_gateway_writes_is_plain_json_read_alike_by_the_json_module(make_gateway) -> None:
    """The metadata line (msgspec writes it) is the JSON the json module reads, Vietnamese in UTF-8; so is the state file."""
    import os

    gw = await make_gateway()
    lookalike = "thongbao@binhthuan-gov.vn"
    msg_id = _queued_id(await send(gw, "mx", message(subject="Thông báo khẩn", sender=lookalike, to=LOCAL),
                                   lookalike, [LOCAL]))
    path = os.path.join(gw.spool.path, "hold", msg_id)
    with open(path, "rb") as f:
        first = f.readline()
        head = f.readline()
    assert first == b"MAILGW1 %d\n" % (len(head) - 1)  # the metadata's length, then the metadata line
    meta = json.loads(head)
    entry, data = gw.spool.read(msg_id)
    assert entry.meta == meta and meta["envelope"]["rcpts"] == [LOCAL]
    assert meta["record"]["id"] == msg_id and "Thông báo khẩn".encode() in head  # UTF-8, not \u escapes
    assert data.endswith(message(subject="Thông báo khẩn", sender=lookalike, to=LOCAL).split(b"\r\n\r\n", 1)[1])
    gw.spool.save_state(msg_id, {"attempts": 2, "rcpts": {LOCAL: "deferred"}, "note": "Đợi"})
    with open(os.path.join(gw.spool.path, "state", msg_id + ".json"), "rb") as f:
        assert json.loads(f.read()) == gw.spool.load_state(msg_id) == {"attempts": 2, "rcpts": {LOCAL: "deferred"},
                                                                      "note": "Đợi"}


def attempts(gw: Gateway, msg_id: str) -> int:
    return int(gw.spool.load_state(msg_id).get("attempts", 0))


async def test_a_quarantined_message_released_is_delivered_with_a_warning_and_the_release_is_logged(make_gateway, sink):
    gw = await make_gateway()
    lookalike = "thongbao@binhthuan-gov.vn"
    msg_id = _queued_id(await send(gw, "mx", message(subject="Thông báo", sender=lookalike, to=LOCAL), lookalike, [LOCAL]))
    assert gw.spool.locate(msg_id) == "hold"

    listed = await mailgw(gw, "queue", "list", "--json", "--state", "held")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [msg_id]
    shown = await mailgw(gw, "queue", "show", msg_id)
    assert shown.returncode == 0 and json.loads(shown.stdout.split("\n\n", 1)[0])["state"] == "held"

    released = await mailgw(gw, "queue", "release", msg_id, "--reason", "người nhận xác nhận")
    assert released.returncode == 0, released.stderr
    assert f"{msg_id}: release done" in released.stdout and "recorded in the exchange log" in released.stderr
    await sink.wait_for(lambda: sink.to(LOCAL))
    delivered = email.message_from_bytes(sink.to(LOCAL)[0].data, policy=email.policy.default)
    warning = str(delivered["X-Mailgw-Warning"])
    assert warning.startswith("Thư này đã bị cổng thư cách ly (quy tắc lookalike-domain)")
    assert "This message was quarantined by the mail gateway (rule lookalike-domain)" in warning and ME in warning
    assert sink.to(LOCAL)[0].data.split(b"\r\n\r\n")[0].isascii()  # the header travels as RFC 2047

    await until(lambda: gw.spool.locate(msg_id) is None)
    events = await history_until(gw, msg_id, lambda ev: len(ev) >= 2)
    assert [(e["recipient"], e["status"]) for e in events] == [(LOCAL, "released"), (LOCAL, "sent")]
    assert f"mailgw queue release by {ME}" in events[0]["reply"] and "người nhận xác nhận" in events[0]["reply"]
    text = await mailgw(gw, "audit", "show", msg_id)
    assert f"{LOCAL}  released  attempt 1  mailgw queue release by {ME}" in text.stdout
    verify = await mailgw(gw, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_hold_release_requeue_bounce_delete_on_several_ids_all_and_stdin(make_gateway, sink):
    gw = await make_gateway(queue={"retry_min": "1h", "retry_max": "2h"})
    sink.data_reply = lambda rcpts: None if rcpts == [SENDER] else "451 4.3.0 later"  # DSNs to SENDER arrive
    a = _queued_id(await send(gw, "relay", message(subject="một"), SENDER, ["a@example.com"]))
    b = _queued_id(await send(gw, "relay", message(subject="hai"), SENDER, ["b@example.com", "b2@example.com"]))
    c = _queued_id(await send(gw, "relay", message(subject="ba", sender=OTHER), OTHER, ["c@example.com"]))
    await until(lambda: all(attempts(gw, m) == 1 for m in (a, b, c)))

    listing = await mailgw(gw, "queue", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:6] == ["ID", "STATE", "SIZE", "AGE", "TRIES", "NEXT"]
    row = next(line for line in lines if line.startswith(b))
    assert " deferred " in row and "<b@example.com>" not in row and "b@example.com, b2@example.com" in row
    assert time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3600)) in row  # the next try, an hour on
    sizes = sum(json.loads(x)["size"] for x in (await mailgw(gw, "queue", "list", "--json")).stdout.splitlines())
    assert lines[-1] == f"-- {(sizes + 1023) // 1024} Kbytes in 3 Requests. (3 queued, 0 held)"
    assert (await mailgw(gw, "queue", "list", "--sender", OTHER, "--json")).stdout.count('"id"') == 1
    assert (await mailgw(gw, "queue", "list", "--recipient", "B2@example.com", "--json")).stdout.count('"id"') == 1
    assert (await mailgw(gw, "queue", "list", "--older-than", "1h", "--json")).stdout == ""
    bad_age = await mailgw(gw, "queue", "list", "--older-than", "lâu")
    assert bad_age.returncode == 2 and "not an age" in bad_age.stderr

    # postqueue -j | postsuper -h -: the JSON lines of one listing are the ids of the next command.
    from_sender = (await mailgw(gw, "queue", "list", "--json", "--sender", SENDER)).stdout
    held = await mailgw(gw, "queue", "hold", "-", stdin=from_sender)
    assert held.returncode == 0, held.stderr
    assert {gw.spool.locate(m) for m in (a, b)} == {"hold"} and gw.spool.locate(c) == "queue"
    assert "2 message(s) held" in held.stderr
    again = await mailgw(gw, "queue", "hold", a, c)  # a is held already: said, c is still held
    assert again.returncode == 1 and f"{a}: held, not queued" in again.stderr and gw.spool.locate(c) == "hold"
    released = await mailgw(gw, "queue", "release", "ALL", "--recipient", "c@example.com")
    assert released.returncode == 0 and gw.spool.locate(c) == "queue" and gw.spool.locate(a) == "hold"
    await until(lambda: attempts(gw, c) == 2)  # released: due at once, not in an hour

    requeued = await mailgw(gw, "queue", "requeue", c)
    assert requeued.returncode == 0, requeued.stderr
    await until(lambda: gw.spool.load_state(c).get("rcpts", {}).get("c@example.com", {}).get("attempts") == 3)
    assert attempts(gw, c) == 1  # its backoff started afresh: the next try is retry_min away again

    # postsuper -e: returned to the sender, with a DSN saying an admin did it; never sent.
    bounced = await mailgw(gw, "queue", "bounce", "ALL", "--state", "held", "--reason", "sai địa chỉ")
    assert bounced.returncode == 0, bounced.stderr
    await sink.wait_for(lambda: len(sink.to(SENDER)) == 2)
    dsn = sink.to(SENDER)[0].data.decode("utf-8", "replace")
    assert "quản trị viên cổng thư đã trả lại thư" in dsn and "the gateway's administrator returned it" in dsn
    await until(lambda: gw.spool.locate(a) is None and gw.spool.locate(b) is None)
    assert not sink.to("a@example.com") and not sink.to("b@example.com")

    deleted = await mailgw(gw, "queue", "delete", c)
    assert deleted.returncode == 0 and gw.spool.locate(c) is None
    missing = await mailgw(gw, "queue", "delete", c, "../etc")
    assert missing.returncode == 1 and "no such message" in missing.stderr and "not a message id" in missing.stderr

    def admin(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        return [(e["recipient"], e["status"], e["attempt"]) for e in events if e["status"] not in ("deferred",)]

    hist_b = await history_until(gw, b, lambda ev: sum(e["status"] == "expired" for e in ev) == 2)
    assert sorted(admin(hist_b)) == sorted([
        ("b@example.com", "held", 1), ("b2@example.com", "held", 1),
        ("b@example.com", "bounced-by-admin", 2), ("b2@example.com", "bounced-by-admin", 2),
        ("b@example.com", "expired", 2), ("b2@example.com", "expired", 2)])
    hist_c = await history(gw, c)
    assert [(s, n) for _, s, n in admin(hist_c)] == [("held", 1), ("released", 2), ("requeued", 3), ("deleted", 4)]
    assert all(f"by {ME}" in e["reply"] for e in hist_c if e["status"] in ("held", "released", "requeued", "deleted"))
    verify = await mailgw(gw, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_delete_journals_the_messages_record_before_its_spool_file_goes(make_gateway, sink, tmp_path):
    """The spool file may be the only copy of a just-accepted record on the disk (committed without a
    flush): `queue delete` journals the record first; the gateway's replay skips it (the log has it)."""
    gw = await make_gateway(audit={"retry": "1h"})  # no replay while the test looks at the journal
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    msg_id = _queued_id(await send(gw, "relay", message(subject="xóa ngay"), SENDER, ["x@example.com"]))
    record = gw.spool.read(msg_id, with_data=False)[0].meta["record"]
    journal = tmp_path / "spool" / "journal"
    deleted = await mailgw(gw, "queue", "delete", msg_id)
    assert deleted.returncode == 0, deleted.stderr
    assert gw.spool.locate(msg_id) is None
    assert json.loads((journal / f"R-{msg_id}.json").read_text(encoding="utf-8")) == {"record": record}

    blocked = _queued_id(await send(gw, "relay", message(subject="không xóa được"), SENDER, ["y@example.com"]))
    journal.rename(tmp_path / "journal.away")
    journal.write_text("a file where the journal directory should be")  # it cannot take the record
    try:
        refused = await mailgw(gw, "queue", "delete", blocked)
    finally:
        journal.unlink()
        (tmp_path / "journal.away").rename(journal)
    assert refused.returncode == 1 and "nothing deleted" in refused.stderr, refused.stderr
    assert gw.spool.locate(blocked) == "queue"
    await gw.drain()
    gw2 = await make_gateway(audit={"retry": "1h"})  # the start replays the journal: already logged, skipped
    assert not list(journal.glob("*.json"))
    assert [e["status"] for e in await history(gw2, msg_id)][-1] == "deleted"
    verify = await mailgw(gw2, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def _normal_and_urgent(gw: Gateway) -> tuple[list[str], str]:
    """Three ordinary letters, then a HỎA TỐC one, all to an official address behind the sink."""
    normal = [_queued_id(await send(gw, "relay", message(subject=f"Công văn số {n}/STTTT-VP về việc báo cáo", to=MIC),
                                    SENDER, [MIC])) for n in (11, 12, 13)]
    urgent = _queued_id(await send(gw, "relay", message(subject="HỎA TỐC - Công văn số 14/STTTT-VP về việc báo cáo",
                                                        to=MIC), SENDER, [MIC]))
    entry, _ = gw.spool.read(urgent, with_data=False)
    assert entry.meta["record"]["classification"]["urgency"] == "hoa_toc"
    return normal, urgent


async def test_urgent_messages_retry_sooner(make_gateway, sink):
    gw = await make_gateway(queue={"retry_min": "1h", "retry_max": "2h",
                                   "urgent_retry_min": "200ms", "urgent_retry_max": "400ms"})
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    normal, urgent = await _normal_and_urgent(gw)
    # Retried on urgent_retry_*: tries again and again while the others wait their hour.
    await until(lambda: attempts(gw, urgent) >= 3 and all(attempts(gw, m) == 1 for m in normal))
    assert all(gw.spool.load_state(m)["next_try"] > time.time() + 1800 for m in normal)
    listed = {r["id"]: r for r in map(json.loads, (await mailgw(gw, "queue", "list", "--json")).stdout.splitlines())}
    assert listed[urgent]["urgency"] == "hoa_toc" and listed[normal[0]]["urgency"] == "none"
    assert "[hoa_toc]" in next(line for line in (await mailgw(gw, "queue", "list")).stdout.splitlines()
                               if line.startswith(urgent))


async def test_urgent_messages_go_first(make_gateway, sink):
    gw = await make_gateway(queue={"concurrency": 1, "retry_min": "1h", "retry_max": "2h",
                                   "urgent_retry_min": "1h", "urgent_retry_max": "2h"})
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    normal, urgent = await _normal_and_urgent(gw)
    await until(lambda: all(attempts(gw, m) == 1 for m in (*normal, urgent)))
    # Everything due at once (`queue deliver ALL`, flushed by the running gateway), one delivery slot:
    # the urgent message goes first, though it came last.
    sink.data_reply = lambda rcpts: None
    flushed = await mailgw(gw, "queue", "deliver", "ALL")
    assert flushed.returncode == 0, flushed.stderr
    assert "4 message(s) due now" in flushed.stderr
    await sink.wait_for(lambda: len(sink.messages) == 4)
    subjects = [str(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]) for m in sink.messages]
    assert subjects[0].startswith("HỎA TỐC") and "14/STTTT-VP" in subjects[0]
    assert sorted(s.split("số ")[1].split()[0] for s in subjects[1:]) == ["11/STTTT-VP", "12/STTTT-VP", "13/STTTT-VP"]


async def test_a_large_backlog_is_scheduled_without_sorting_it(make_gateway, monkeypatch):
    """After an outage the queue may hold 100,000 messages, all due. Each wake-up of the scheduler (one
    per message queued or delivered) used to sort all of them, and with more due than free slots read
    each one's urgency from its spool file: delivery slowed as the backlog grew. Now the next due
    message comes off a heap (urgent ones first), and an urgency the edge told is not read again."""
    gw = await make_gateway(queue={"concurrency": 3, "scan_interval": "1h"})
    deliverer = type(gw.deliverer)(gw.spool, gw.context)  # a second one, not running: driven by hand
    started: list[str] = []

    async def attempt(msg_id: str) -> None:  # a delivery that succeeds at once
        started.append(msg_id)
        deliverer._due.pop(msg_id, None)

    monkeypatch.setattr(deliverer, "_attempt", attempt)
    reads: list[Any] = []
    monkeypatch.setattr(gw.spool, "read", lambda *a, **kw: reads.append(a))
    backlog = 50_000
    for n in range(backlog):  # as the edge and the workers' pipe tell it; every tenth thousand urgent
        deliverer._set_due(f"B{n:06d}", 1000.0 + n, urgent=n % 10_000 == 9_999)
    deliverer._last_scan = time.time()
    deliverer._schedule()
    assert sorted(deliverer._active) == ["B009999", "B019999", "B029999"]
    # Only what was started left the heaps: the rest was not looked at.
    assert sum(len(h) for h in deliverer._heaps) == backlog - 3
    await asyncio.gather(*deliverer._active.values())
    deliverer._schedule()
    await asyncio.gather(*deliverer._active.values())
    assert started == ["B009999", "B019999", "B029999", "B039999", "B049999", "B000000"]
    assert deliverer._next_due() == 1001.0 and reads == []  # the longest waiting next; no spool file read


async def test_flush_of_one_id_makes_only_that_one_due(make_gateway, sink):
    gw = await make_gateway(queue={"retry_min": "1h", "retry_max": "2h"})
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    first = _queued_id(await send(gw, "relay", message(subject="một"), SENDER, ["x@example.com"]))
    second = _queued_id(await send(gw, "relay", message(subject="hai"), SENDER, ["y@example.com"]))
    await until(lambda: attempts(gw, first) == 1 and attempts(gw, second) == 1)
    sink.data_reply = lambda rcpts: None
    flushed = await mailgw(gw, "queue", "flush", second)
    assert flushed.returncode == 0 and f"{second}: flush done" in flushed.stdout, flushed.stderr
    await sink.wait_for(lambda: sink.to("y@example.com"))
    assert not sink.to("x@example.com") and gw.spool.locate(first) == "queue"


def test_free_space_is_asked_of_the_kernel_at_most_every_ttl_and_counts_what_was_spooled(tmp_path, monkeypatch):
    import shutil

    from mailgw.queue import spool as spool_mod

    asked = []
    real = shutil.disk_usage
    monkeypatch.setattr(spool_mod.shutil, "disk_usage", lambda p: asked.append(p) or real(p))
    s = spool_mod.Spool(str(tmp_path / "spool"))
    before = s.free_bytes()
    s.put_sync("0000000000000ABC", {"envelope": {}, "record": {}}, b"x" * 1_000_000)
    assert s.free_bytes() == before - 1_000_000  # not asked again, but this process's write counted
    assert len(asked) == 1
    time.sleep(spool_mod.FREE_SPACE_TTL)
    s.free_bytes()
    assert len(asked) == 2
