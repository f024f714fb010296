"""The running gateway feeds the exchange log: every decision before its reply, every delivery outcome.

Real gateway, real sockets, real databases (SQLite and PostgreSQL). The log is
read straight from the database right after each reply: a record that is
written later than the reply would be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiosmtplib
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from mailgw import pipeline
from mailgw.app import Gateway
from mailgw.audit.log import AuditLog
from mailgw.audit.schema import Delivery, Exchange
from mailgw.audit.store import open_engine
from mailgw.audit.testing import PG_BASE_URLS, REQUIRE_PG
from mailgw.audit.verify import verify
from mailgw.classify.vn.text import fold
from mailgw.message import replies
from tests.conftest import message, port, send
from tests.dialog import Dialog

SENDER = "vanthu.sotttt@binhthuan.gov.vn"
LOCAL = "vanthu.snv@binhthuan.gov.vn"


class Book:
    """The exchange log as an auditor's database client sees it."""

    def __init__(self, url: str):
        self.engine = open_engine(url)

    def records(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {i: json.loads(r) for i, r in conn.execute(select(Exchange.id, Exchange.record))}

    def record(self, xid: str) -> dict[str, Any]:
        return self.records()[xid]

    def deliveries(self, xid: str) -> list[tuple[str, str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Delivery.recipient, Delivery.status, Delivery.attempt)
                                .where(Delivery.exchange_id == xid).order_by(Delivery.seq))
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def book(audit_url: str) -> Iterator[Book]:
    b = Book(audit_url)
    yield b
    b.close()


def _id(reply_text: str) -> str:
    m = re.search(r"(?:queued as |\[)([0-9A-F]{16,})\]?$", reply_text)
    assert m, reply_text
    return m.group(1)


async def _bare_lf(gw: Gateway) -> tuple[int, str]:
    d = await Dialog.open(port(gw, "relay"))
    await d.envelope(SENDER, [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(message() + b"a bare\nline feed\r\n.\r\n")
    reply = await d.reply()
    await d.close()
    return reply


async def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- every decision path -----------------------------------------------------------------------------


async def test_every_decision_is_in_the_log_before_its_reply(make_gateway, sink, audit_url, book, monkeypatch):
    def decide(msg, ctx):  # faults injected by an extra stage, keyed on the subject
        subject = str(msg.headers.get("subject", ""))
        if "tam-hoan" in subject:
            raise replies.Defer(replies.DEFAULT_DEFER)
        elif "loi-noi-bo" in subject:
            raise RuntimeError("a bug in a stage")

    monkeypatch.setattr(pipeline, "STAGES", pipeline.STAGES + (decide,))
    gw = await make_gateway(database=audit_url)

    # Accepted: logged before the 250.
    sink.data_reply = lambda rcpts: "451 4.3.0 later"  # keep it queued: the log must not depend on delivery
    _, text_ = await send(gw, "relay", message(subject="Kế hoạch số 112/KH-STTTT"), SENDER, [LOCAL])
    rec = book.record(_id(text_))
    assert rec["decision"]["decision"] == "accept" and rec["decision"]["reply"] == "250 " + text_
    assert rec["classification"]["doc_number"] == "112/KH-STTTT" and rec["node"] == "mailgw.test"

    # Rejected by a protocol check (bare LF): logged before the 550.
    code, text_ = await _bare_lf(gw)
    assert code == 550
    rec = book.record(_id(text_))
    assert (rec["decision"]["decision"], rec["decision"]["rule"]) == ("reject", "smtp")
    # The log keeps the reply with its diacritics; the client, without SMTPUTF8, got it folded to ASCII.
    assert fold(rec["decision"]["reply"]) == f"550 {text_}" and text_.isascii()

    # Rejected by a policy rule: logged before the 550.
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, "relay", message(subject="Quyết định số 25/QĐ-UBND"), SENDER, ["nvan.canhan@gmail.com"])
    assert err.value.code == 550
    rec = book.record(_id(err.value.message))
    assert (rec["decision"]["decision"], rec["decision"]["rule"]) == ("reject", "official-to-unofficial")

    # Quarantined by a policy rule (a look-alike of our domain on mx): held in the spool, logged before the 250.
    lookalike = "thongbao@binhthuan-gov.vn"
    _, text_ = await send(gw, "mx", message(subject="Thông báo", sender=lookalike), lookalike, [LOCAL])
    xid = _id(text_)
    assert gw.spool.locate(xid) == "hold"
    rec = book.record(xid)
    assert (rec["decision"]["decision"], rec["decision"]["rule"]) == ("quarantine", "lookalike-domain")

    # Deferred by a stage, and deferred because of our own bug: both logged before the 451.
    for subject, rule in (("tam-hoan", "smtp"), ("loi-noi-bo", "error")):
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await send(gw, "relay", message(subject=subject), SENDER, [LOCAL])
        assert err.value.code == 451
        rec = book.record(_id(err.value.message))
        assert (rec["decision"]["decision"], rec["decision"]["rule"]) == ("defer", rule)
        assert "RuntimeError" not in rec["decision"]["reply"]

    assert sorted(r["decision"]["decision"] for r in book.records().values()) == [
        "accept", "defer", "defer", "quarantine", "reject", "reject"]
    assert verify(audit_url) == []


async def test_delivery_outcomes_and_the_dsn_are_logged(make_gateway, sink, audit_url, book):
    gw = await make_gateway(database=audit_url)
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 no such user" if rcpt.startswith("bad") else None
    _, text_ = await send(gw, "relay", message(subject="Số liệu tháng 3"), SENDER, ["good@example.com", "bad@example.com"])
    first = _id(text_)
    sink.data_reply = lambda rcpts: "451 4.3.0 later" if "later@example.com" in rcpts else None
    _, text_ = await send(gw, "relay", message(subject="Hẹn gặp trao đổi"), SENDER, ["later@example.com"])
    second = _id(text_)
    await _wait(lambda: ("later@example.com", "deferred", 1) in book.deliveries(second))
    sink.data_reply = lambda rcpts: None
    await _wait(lambda: len(book.deliveries(second)) == 2)  # the retry comes after retry_min
    await gw.deliverer.run_until_empty()

    assert sorted(book.deliveries(first)) == [("bad@example.com", "bounced", 1), ("good@example.com", "sent", 1)]
    assert book.deliveries(second) == [("later@example.com", "deferred", 1), ("later@example.com", "sent", 2)]
    dsns = [r for r in book.records().values() if r.get("dsn_for")]
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn["dsn_for"] == first and dsn["mail_from"] == "" and dsn["rcpts"] == [SENDER]
    assert (dsn["decision"]["rule"], dsn["role"]) == ("dsn", "dsn")
    assert book.deliveries(dsn["id"]) == [(SENDER, "sent", 1)]
    assert verify(audit_url) == []


async def test_no_message_body_reaches_the_log_or_the_journal(make_gateway, sink, audit_url, book, tmp_path):
    marker = "BODY-MARKER-7f3a91 nội dung thư không được lưu"
    gw = await make_gateway(database=audit_url)
    await send(gw, "relay", message(body=f"Kính gửi,\r\n{marker}\r\n"), SENDER, [LOCAL])
    await _bare_lf(gw)
    await gw.deliverer.run_until_empty()
    await gw.drain()
    with book.engine.connect() as conn:
        rows = conn.execute(select(Exchange.record, Exchange.body)).all()
    assert len(rows) == 2 and all(body is None for _, body in rows)
    assert not any("BODY-MARKER" in record for record, _ in rows)
    if audit_url.startswith("sqlite"):
        path = audit_url.removeprefix("sqlite:///")
        for f in (path, path + "-wal"):
            if os.path.exists(f):
                assert b"BODY-MARKER" not in Path(f).read_bytes()
    journal = tmp_path / "spool" / "journal"
    assert not any(b"BODY-MARKER" in f.read_bytes() for f in journal.rglob("*") if f.is_file())


# -- when the database is down or slow ---------------------------------------------------------------


@contextlib.contextmanager
def _database_later(kind: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A log URL whose database does not exist yet, and the function that makes it appear."""
    if kind == "sqlite":
        where = tmp_path / "not-yet"
        yield f"sqlite:///{where}/mailgw.db", lambda: where.mkdir()
        return
    for base in PG_BASE_URLS:
        admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with admin.connect():
                pass
        except OperationalError:
            admin.dispose()
            continue
        name = f"mailgw_t_{uuid.uuid4().hex[:12]}"

        def create() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))

        try:
            yield base.rsplit("/", 1)[0] + "/" + name, create
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        return
    if os.environ.get(REQUIRE_PG) == "1":
        pytest.fail(f"PostgreSQL not reachable at 127.0.0.1:5432 and {REQUIRE_PG}=1")
    pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (database test, trust auth)")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_database_down_the_journal_keeps_records_until_it_is_back(make_gateway, sink, tmp_path, kind):
    with _database_later(kind, tmp_path) as (url, create):
        gw = await make_gateway(database=url, audit={"retry": "200ms"})
        assert not gw.audit.healthy
        _, text_ = await send(gw, "relay", message(), SENDER, [LOCAL])  # mail keeps flowing
        accepted = _id(text_)
        code, text_ = await _bare_lf(gw)
        assert code == 550
        rejected = _id(text_)
        await sink.wait_for(lambda: sink.to(LOCAL))
        journal = tmp_path / "spool" / "journal"
        await _wait(lambda: len(list(journal.glob("*.json"))) == 3)  # two records, one delivery outcome
        await gw.deliverer.run_until_empty()
        assert gw.spool.ids() == []  # delivered and gone from the spool: the journal is the only copy

        create()
        await _wait(lambda: gw.audit.healthy and not list(journal.glob("*.json")))
        book = Book(url)
        try:
            assert set(book.records()) == {accepted, rejected}
            assert book.deliveries(accepted) == [(LOCAL, "sent", 1)]
        finally:
            book.close()
        assert verify(url) == []
        await gw.drain()


@contextlib.contextmanager
def _locked(url: str) -> Iterator[None]:
    """Another client holding the log's write lock: the database answers nothing to our writer."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


async def test_a_hung_database_does_not_hold_replies(make_gateway, sink, audit_url, book, tmp_path):
    gw = await make_gateway(database=audit_url, audit={"timeout": "300ms", "retry": "200ms"})
    await send(gw, "relay", message(subject="trước"), SENDER, [LOCAL])  # the chain head exists
    journal = tmp_path / "spool" / "journal"
    with _locked(audit_url):
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, text_ = await send(gw, "relay", message(subject="trong lúc khóa"), SENDER, [LOCAL])
        code, text2 = await _bare_lf(gw)
        assert loop.time() - started < 5 and code == 550
        assert not gw.audit.healthy
        assert {f.name for f in journal.glob("R-*.json")} >= {f"R-{_id(text_)}.json", f"R-{_id(text2)}.json"}
    await _wait(lambda: gw.audit.healthy and not list(journal.glob("*.json")))
    records = book.records()
    assert {_id(text_), _id(text2)} <= set(records) and len(records) == 3
    await gw.deliverer.run_until_empty()
    assert verify(audit_url) == []


def _noted_commits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int, bool]]:
    """Every exchange-log write from now on, as (record ids, number of outcomes, durable); the writes are real."""
    commits: list[tuple[list[str], int, bool]] = []
    write = AuditLog.write

    def spy(self, records, events, *, durable=True):  # noqa: ANN001
        commits.append(([r["id"] for r in records], len(events), durable))
        return write(self, records, events, durable=durable)

    monkeypatch.setattr(AuditLog, "write", spy)
    return commits


async def test_an_accepted_messages_record_waits_on_its_spool_file_not_on_a_flush(make_gateway, sink, audit_url, book,
                                                                                 monkeypatch):
    """Its spool file holds it durably: the commit is not flushed; refusals and outcomes are."""
    commits = _noted_commits(monkeypatch)
    gw = await make_gateway(database=audit_url)
    sink.data_reply = lambda rcpts: "451 4.3.0 later"  # no outcome yet: the record's commit is alone
    _, text_ = await send(gw, "relay", message(subject="Giấy mời họp"), SENDER, [LOCAL])
    accepted = _id(text_)
    assert accepted in book.records()  # in the log before the 250, for every reader
    await _wait(lambda: any(n for _, n, _ in commits))
    code, text_ = await _bare_lf(gw)
    assert code == 550
    rejected = _id(text_)
    assert ([accepted], 0, False) in commits
    assert ([rejected], 0, True) in commits
    assert all(durable for _, n, durable in commits if n)  # every delivery outcome: flushed
    await gw.drain()


async def test_outcomes_wait_for_company_but_a_record_never_waits(make_gateway, sink, audit_url, book, monkeypatch):
    """Delivery outcomes (no reply waits on them) linger for others, so the log's disk is flushed
    and its writers' lock taken less often; a record that comes meanwhile is committed at once
    and takes them along."""
    commits = _noted_commits(monkeypatch)
    gw = await make_gateway(database=audit_url)
    gw.audit.linger = 30.0  # an outcome alone would wait half a minute
    reported = asyncio.Event()
    keep = gw.deliverer.on_event

    async def noted(event: dict[str, Any]) -> None:
        reported.set()
        await keep(event)  # hands the outcome to the writer before it waits

    gw.deliverer.on_event = noted
    _, first = await send(gw, "relay", message(subject="Công văn thứ nhất"), SENDER, [LOCAL])
    await asyncio.wait_for(reported.wait(), 10)  # delivered: its outcome is with the writer
    _, second = await asyncio.wait_for(send(gw, "relay", message(subject="Công văn thứ hai"), SENDER, [LOCAL]), 10)
    x1, x2 = _id(first), _id(second)
    assert ([x2], 1, True) in commits  # the record took the first outcome along, and flushed it
    assert not any(n and not ids for ids, n, _ in commits)  # no outcome committed on its own
    assert book.deliveries(x1) == [(LOCAL, "sent", 1)]
    gw.audit.linger = 0.0
    await send(gw, "relay", message(subject="Công văn thứ ba"), SENDER, [LOCAL])  # wakes the second's outcome
    await gw.drain()
    assert verify(audit_url) == []


async def test_an_outcome_the_log_cannot_take_is_journaled_with_its_messages_record(make_gateway, sink, audit_url,
                                                                                    book, tmp_path):
    """The spool file that kept the record is removed after delivery: the journal keeps both instead."""
    gw = await make_gateway(database=audit_url, audit={"timeout": "300ms", "retry": "200ms"})
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    _, text_ = await send(gw, "relay", message(subject="Báo cáo quý"), SENDER, [LOCAL])
    xid = _id(text_)
    await _wait(lambda: book.deliveries(xid) == [(LOCAL, "deferred", 1)])
    journal = tmp_path / "spool" / "journal"
    sink.data_reply = lambda rcpts: None
    with _locked(audit_url):
        gw.deliverer.notify(xid)
        await _wait(lambda: gw.spool.locate(xid) is None)  # delivered and removed from the spool
        names = {f.name for f in journal.glob("*.json")}
        assert f"R-{xid}.json" in names and any(n.startswith("S-") for n in names)
    await _wait(lambda: gw.audit.healthy and not list(journal.glob("*.json")))
    assert xid in book.records() and book.deliveries(xid) == [(LOCAL, "deferred", 1), (LOCAL, "sent", 2)]
    assert verify(audit_url) == []
    await gw.drain()


async def test_no_record_no_reply_but_451(make_gateway, sink, tmp_path):
    gw = await make_gateway(database=f"sqlite:///{tmp_path}/missing/mailgw.db")
    journal = tmp_path / "spool" / "journal"
    shutil.rmtree(journal)
    journal.write_text("a file where the journal directory should be")  # the journal cannot be written
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, "relay", message(), SENDER, [LOCAL])
    assert err.value.code == 451 and err.value.message.startswith("4.3.0")
    assert gw.spool.ids() == [] and gw.spool.ids("hold") == []  # taken back: it will come again
    code, text_ = await _bare_lf(gw)  # a rejection without a record becomes temporary too
    assert (code, text_[:5]) == (451, "4.3.0")
    await asyncio.sleep(0.3)
    assert not sink.messages


async def test_records_of_spooled_messages_are_logged_at_start(make_gateway, sink, audit_url, tmp_path):
    sink.data_reply = lambda rcpts: "451 4.3.0 later"
    gw = await make_gateway(database=f"sqlite:///{tmp_path}/first.db")
    _, text_ = await send(gw, "relay", message(), SENDER, [LOCAL])
    xid = _id(text_)
    await gw.drain()
    assert gw.spool.locate(xid) == "queue"
    # The log lost (or never got) the record: a new, empty log is filled from the spool at start.
    gw2 = await make_gateway(database=audit_url)
    book = Book(audit_url)
    try:
        assert list(book.records()) == [xid]
        assert book.record(xid)["decision"]["reply"] == "250 " + text_
    finally:
        book.close()
    await gw2.drain()


# -- the schema -------------------------------------------------------------------------------------


def test_the_migrations_make_the_schema_the_code_expects(audit_url):
    # The gateway creates the log with the Alembic migrations (mailgw/audit/migrations); they must
    # build exactly the tables and indexes of mailgw/audit/schema.py.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailgw.audit.schema import Base

    engine = open_engine(audit_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == "mailgw_audit_version")] == []


async def test_a_message_spooled_after_its_client_left_is_logged_and_delivered(make_gateway, sink, audit_url, book,
                                                                                monkeypatch):
    """The client hangs up after its end of data, while the pipeline runs: no 250 reaches it, but the
    message is spooled all the same, so it must also get its record now (not at the next start, by
    which time it may be delivered and gone) and be delivered; the client will likely send it again,
    a duplicate RFC 5321 6.1 allows."""
    def slow(msg, ctx):
        if "cham" in str(msg.headers.get("subject", "")):
            time.sleep(0.5)  # the pipeline runs in a thread: the client is gone before it ends

    monkeypatch.setattr(pipeline, "STAGES", pipeline.STAGES + (slow,))
    gw = await make_gateway(database=audit_url)
    d = await Dialog.open(port(gw, "relay"))
    await d.envelope(SENDER, [LOCAL])
    assert (await d.cmd("DATA"))[0] == 354
    d.send(message(subject="cham") + b".\r\n")
    await d.close()
    await sink.wait_for(lambda: len(sink.to(LOCAL)) == 1)
    await _wait(lambda: len(book.records()) == 1)
    (xid, rec), = book.records().items()
    assert rec["decision"]["decision"] == "accept"
    await _wait(lambda: book.deliveries(xid) == [(LOCAL, "sent", 1)])
    assert verify(audit_url) == []
