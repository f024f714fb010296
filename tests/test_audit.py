"""The exchange log on SQLite and PostgreSQL: writing, idempotence, chains, verify, search, export, prune."""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from mailgw.audit import chain as ch
from mailgw.audit import commands
from mailgw.audit import log as audit_log
from mailgw.audit.log import AuditLog, DeliveryEvent
from mailgw.audit.query import Filters
from mailgw.audit.query import search as query_search
from mailgw.audit.schema import Access, Checkpoint, Delivery, Exchange, Head, Recipient
from mailgw.audit.verify import verify
from mailgw.audit.writer import AuditWriter
from tests.conftest import until
from tests.made_records import like


@pytest.fixture
def url(audit_url: str) -> str:
    """The exchange log under test: SQLite, then PostgreSQL (tests/conftest.py audit_url)."""
    return audit_url


@pytest.fixture
def log(url: str):  # type: ignore[no-untyped-def]
    a = AuditLog.open(url, "gw1", checkpoint_every=5)
    yield a
    a.close()


def _rec(i: int, kind: str = "letter", **beside):  # type: ignore[no-untyped-def]
    """Exchange X000i: a gateway-made record of ``kind`` (tests/made_records.py stock)."""
    return like(kind, f"X{i:04d}", f"2025-03-{1 + i % 28:02d}T0{i % 10}:00:00.000001Z", **beside)


def _count(a: AuditLog, table) -> int:  # type: ignore[no-untyped-def]
    with a.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _run(fn, *args, **kw):  # type: ignore[no-untyped-def]
    out = io.StringIO()
    err = io.StringIO()
    params = inspect.signature(fn).parameters
    streams = {k: v for k, v in (("out", out), ("err", err)) if k in params}
    status = fn(*args, **streams, **kw)
    return status, out.getvalue(), err.getvalue()


# -- writing ---------------------------------------------------------------------------------------

def test_every_decision_kind_is_logged_and_shown(log: AuditLog, url: str) -> None:
    kinds = {"accept": ("letter", "default"), "reject": ("rejected", "official-to-unofficial"),
             "quarantine": ("quarantined", "lookalike-domain"), "defer": ("deferred", "error")}
    log.append([_rec(i, kind) for i, (kind, _) in enumerate(kinds.values())])
    for i, (d, (_, r)) in enumerate(kinds.items()):
        status, out, _ = _run(commands.show, url, f"X{i:04d}", False)
        assert status == 0
        assert f"Decision:             {d} by rule {r}" in out
        status, out, _ = _run(commands.search, url, {"decision": d}, True)
        assert [json.loads(line)["id"] for line in out.splitlines()] == [f"X{i:04d}"]
    assert verify(url) == []


def test_append_twice_is_idempotent(log: AuditLog, url: str) -> None:
    batch = [_rec(1), _rec(2), _rec(1)]  # a duplicate inside one batch too
    log.append(batch)
    log.append(batch)  # a replay after a crash
    log.append([_rec(2), _rec(3)])  # partly old, partly new
    assert _count(log, Exchange) == 3
    assert _count(log, Recipient) == 3
    with log.engine.connect() as conn:
        assert conn.execute(select(Head.seq).where(Head.chain == "gw1")).scalar_one() == 3
    ev = DeliveryEvent("X0001", "VanThu@sotc.binhthuan.gov.vn", "2025-03-02T01:00:00Z", "deferred", "451 4.4.1", 1)
    log.delivery([ev, ev])
    log.delivery([ev])
    assert _count(log, Delivery) == 1
    assert verify(url) == []


def test_append_rejects_a_record_without_id(log: AuditLog) -> None:
    with pytest.raises(ValueError):
        log.append([like("letter", "")])
    with pytest.raises(ValueError):
        log.delivery([DeliveryEvent("X1", "a@b", "2025-03-01T00:00:00Z", "lost", None, 1)])
    assert _count(log, Exchange) == 0


def test_show_has_delivery_history(log: AuditLog, url: str) -> None:
    log.append([_rec(1)])
    log.delivery([DeliveryEvent("X0001", "vanthu@sotc.binhthuan.gov.vn", "2025-03-02T01:00:00Z", "deferred",
                                "451 4.4.1 timeout", 1)])
    log.delivery([{"exchange_id": "X0001", "recipient": "vanthu@sotc.binhthuan.gov.vn",
                   "time": "2025-03-02T01:05:00Z", "status": "sent", "reply": "250 2.0.0 queued as 7", "attempt": 2}])
    status, out, _ = _run(commands.show, url, "X0001", True)
    rec = json.loads(out)
    assert [(d["status"], d["attempt"]) for d in rec["deliveries"]] == [("deferred", 1), ("sent", 2)]
    assert rec["classification"]["doc_number"] == "07/GM-STTTT"
    status, out, _ = _run(commands.show, url, "X0001", False)
    assert "451 4.4.1 timeout" in out and "250 2.0.0 queued as 7" in out
    status, _, err = _run(commands.show, url, "NOPE", False)
    assert status == 1 and "NOPE" in err


def test_records_and_events_written_together_are_chained_in_order(log: AuditLog, url: str, caplog) -> None:  # type: ignore[no-untyped-def]
    ev = DeliveryEvent("X0001", "vanthu@sotc.binhthuan.gov.vn", "2025-03-02T01:00:00Z", "sent", "250", 1)
    log.write([_rec(1), _rec(2)], [ev])
    log.write([_rec(1), _rec(2)], [ev])  # a replay: nothing new
    with log.engine.connect() as conn:
        assert dict(conn.execute(select(Exchange.id, Exchange.seq)).all()) == {"X0001": 1, "X0002": 2}
        assert conn.execute(select(Delivery.seq)).scalar_one() == 3
        assert conn.execute(select(Head.seq).where(Head.chain == "gw1")).scalar_one() == 3
    log.write([_rec(2, "citizen"), _rec(3)], [])  # X0002 again, with other content
    assert "exchange X0002 logged again with different content" in caplog.text
    with log.engine.connect() as conn:
        assert conn.execute(select(Exchange.rule).where(Exchange.id == "X0002")).scalar_one() == "default"
    assert _count(log, Exchange) == 3
    assert verify(url) == []


def test_a_batch_larger_than_one_statement_takes(log: AuditLog, url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL writes a batch in one statement unless it has too many parameters for one.
    import mailgw.audit.log as log_module

    monkeypatch.setattr(log_module, "_PG_PARAMETERS", 60)
    log.write([_rec(i, "rejected") for i in range(1, 9)],  # two recipients each
              [DeliveryEvent("X0001", f"a{i}@x.vn", "2025-03-02T01:00:00Z", "sent", "250", i) for i in range(1, 9)])
    assert _count(log, Exchange) == 8 and _count(log, Recipient) == 16 and _count(log, Delivery) == 8
    assert verify(url) == []


def test_another_node_logging_the_same_id_meanwhile_is_retried(log: AuditLog, url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Between our check for logged ids and our insert, another node commits the same exchange id:
    # our insert fails on the unique id, the retry sees it logged and skips it. (On SQLite the
    # check and the insert are in one BEGIN IMMEDIATE transaction, so another writer cannot get
    # in between: only PostgreSQL can meet this.)
    if not url.startswith("postgresql"):
        pytest.skip("SQLite serialises whole write transactions")
    import mailgw.audit.log as log_module

    other = AuditLog.open(url, "gw2")
    lock_head = log_module._Statements.lock_head
    calls = []

    def meanwhile(self, cur, chain):  # type: ignore[no-untyped-def]
        calls.append(chain)
        if calls == ["gw1"]:
            other.append([_rec(1)])
        return lock_head(self, cur, chain)

    monkeypatch.setattr(log_module._Statements, "lock_head", meanwhile)
    try:
        log.append([_rec(1), _rec(2)])
    finally:
        other.close()
    assert calls == ["gw1", "gw2", "gw1"]
    with log.engine.connect() as conn:
        assert dict(conn.execute(select(Exchange.id, Exchange.node)).all()) == {"X0001": "gw2", "X0002": "gw1"}
    assert verify(url) == []


def test_a_connection_the_server_dropped_is_replaced(log: AuditLog, url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("a server that drops connections: PostgreSQL")
    from sqlalchemy import text

    log.append([_rec(1)])
    writing = log._raw.dbapi_connection.info.backend_pid  # type: ignore[union-attr]  # the connection it keeps
    with log.engine.connect() as conn:  # the server ends that session (a restart, an idle timeout)
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": writing}).scalar_one()
    log.append([_rec(2)])
    assert log._raw.dbapi_connection.info.backend_pid != writing  # type: ignore[union-attr]
    assert _count(log, Exchange) == 2
    assert verify(url) == []


def test_secrecy_blocked_records_never_store_a_body(log: AuditLog, url: str) -> None:
    log.append([
        _rec(1, "secret", body="MẬT nội dung"),  # a strong mark: blocked by rule secrecy-block
        _rec(2, "secret", body="also secret"),
        _rec(3, "weak", body="weak evidence: archived"),  # a weak mark: accepted, tagged
    ])
    with log.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Exchange))}
    assert rows["X0001"].body is None and rows["X0002"].body is None
    assert "MẬT nội dung" not in rows["X0001"].record and "body" not in json.loads(rows["X0001"].record)
    assert rows["X0003"].body == "weak evidence: archived"
    assert "body_sha256" in json.loads(rows["X0003"].record)
    assert verify(url) == []
    _, out, _ = _run(commands.search, url, {}, True)
    assert "weak evidence" not in out  # search never prints bodies


# -- tamper evidence ----------------------------------------------------------------------------------

def _tamper(a: AuditLog, stmt) -> None:  # type: ignore[no-untyped-def]
    with a.engine.begin() as conn:
        conn.execute(stmt)


def _fill(a: AuditLog, n: int = 8) -> None:
    a.append([_rec(i) for i in range(1, n + 1)])


def test_verify_finds_an_edited_record(log: AuditLog, url: str) -> None:
    _fill(log)
    with log.engine.connect() as conn:
        record = conn.execute(select(Exchange.record).where(Exchange.id == "X0004")).scalar_one()
    _tamper(log, update(Exchange).where(Exchange.id == "X0004").values(
        record=record.replace('"reject"', '"accept"').replace("07/GM-STTTT", "08/GM-STTTT")))
    problems = verify(url)
    assert [(p.chain, p.seq, p.record, p.kind) for p in problems] == [("gw1", 4, "exchange X0004", "altered")]
    out = io.StringIO()
    assert commands.verify(url, out) == 1
    assert "exchange X0004" in out.getvalue()


def test_verify_finds_an_edited_search_column(log: AuditLog, url: str) -> None:
    _fill(log)
    _tamper(log, update(Exchange).where(Exchange.id == "X0006").values(decision="reject"))
    [p] = verify(url)
    assert (p.seq, p.kind) == (6, "altered") and "decision" in p.message
    _tamper(log, update(Exchange).where(Exchange.id == "X0006").values(decision="accept"))
    _tamper(log, delete(Recipient).where(Recipient.exchange_id == "X0002"))
    [p] = verify(url)
    assert (p.record, p.kind) == ("exchange X0002", "altered") and "recipient" in p.message


def test_verify_finds_a_deleted_record(log: AuditLog, url: str) -> None:
    _fill(log)
    _tamper(log, delete(Exchange).where(Exchange.id == "X0003"))
    [p] = verify(url)
    assert (p.seq, p.record, p.kind) == (4, "exchange X0004", "deleted")
    assert "seq 3" in p.message


def test_verify_finds_a_deletion_hidden_by_renumbering(log: AuditLog, url: str) -> None:
    _fill(log)
    _tamper(log, delete(Exchange).where(Exchange.id == "X0003"))
    for s in range(4, 9):
        _tamper(log, update(Exchange).where(Exchange.node == "gw1", Exchange.seq == s).values(seq=s - 1))
    [p] = verify(url)
    assert (p.seq, p.record, p.kind) == (3, "exchange X0004", "deleted")


def test_verify_finds_reordered_records(log: AuditLog, url: str) -> None:
    _fill(log)
    _tamper(log, update(Exchange).where(Exchange.id == "X0005").values(seq=-5))
    _tamper(log, update(Exchange).where(Exchange.id == "X0006").values(seq=5))
    _tamper(log, update(Exchange).where(Exchange.id == "X0005").values(seq=6))
    [p] = verify(url)
    assert (p.seq, p.record, p.kind) == (5, "exchange X0006", "reordered")


def test_verify_finds_records_removed_at_the_end(log: AuditLog, url: str) -> None:
    _fill(log, 12)
    _tamper(log, delete(Exchange).where(Exchange.seq > 10))
    [p] = verify(url)
    assert (p.seq, p.kind) == (11, "truncated")
    # Even with the head row moved back, the checkpoint at seq 10 ... and here at 5 still stands;
    # removing past a checkpoint is caught by the checkpoint.
    _tamper(log, delete(Exchange).where(Exchange.seq > 3))
    _tamper(log, update(Head).where(Head.chain == "gw1").values(
        seq=3, hash=select(Exchange.hash).where(Exchange.seq == 3).scalar_subquery()))
    [p] = verify(url)
    assert p.kind == "truncated" and "4..10" in p.message


def test_verify_catches_a_recomputed_chain_by_its_checkpoint(log: AuditLog, url: str) -> None:
    _fill(log, 8)  # checkpoint_every=5: a checkpoint holds the hash at seq 5
    with log.engine.begin() as conn:
        rows = conn.execute(select(Exchange).order_by(Exchange.seq)).all()
        prev = rows[1].hash
        for r in rows[2:]:  # rewrite X0003 and re-hash everything after it, as a careful forger would
            record = r.record.replace("07/GM-STTTT", "99/GM-STTTT") if r.id == "X0003" else r.record
            content = ch.sha256_text(record)
            h = ch.entry_hash("gw1", r.seq, ch.KIND_EXCHANGE, prev, content)
            conn.execute(update(Exchange).where(Exchange.id == r.id).values(
                record=record, doc_number=json.loads(record)["classification"]["doc_number"],
                doc_key=json.loads(record)["classification"]["doc_number"].lower(),
                content_hash=content, prev_hash=prev, hash=h))
            prev = h
        conn.execute(update(Head).values(hash=prev))
    [p] = verify(url)
    assert (p.seq, p.kind) == (5, "altered") and "checkpoint" in p.message


def test_verify_covers_delivery_events(log: AuditLog, url: str) -> None:
    _fill(log, 3)
    log.delivery([DeliveryEvent("X0001", "vanthu@sotc.binhthuan.gov.vn", f"2025-03-02T0{i}:00:00Z",
                                "deferred", "451", i) for i in range(1, 4)])
    assert verify(url) == []
    _tamper(log, update(Delivery).where(Delivery.attempt == 2).values(status="sent"))
    [p] = verify(url)
    assert (p.seq, p.kind) == (5, "altered") and p.record.startswith("delivery X0001")


# -- search, show, export ----------------------------------------------------------------------------

def _dataset(a: AuditLog) -> None:
    """A: sotttt's invitation to the ministry; B: a citizen's question to stc; C: sotttt's letter to ubnd
    and a webmail address, refused; D: stc's unsigned plan to snv. All made by the gateway."""
    a.append([
        like("letter", "A", "2025-03-01T01:00:00Z"),
        like("citizen", "B", "2025-03-05T01:00:00Z"),
        like("rejected", "C", "2025-03-10T01:00:00Z"),
        like("unsigned", "D", "2025-03-20T01:00:00Z"),
    ])


@pytest.mark.parametrize("filters, expected", [
    ({}, ["D", "C", "B", "A"]),
    ({"since": "2025-03-05"}, ["D", "C", "B"]),
    ({"until": "2025-03-05"}, ["B", "A"]),  # a bare date includes that whole (Vietnam) day
    ({"since": "2025-03-05T01:00:01", "until": "2025-03-20T01:00:00"}, ["C"]),
    ({"sender": "DAN@gmail.com"}, ["B"]),
    ({"recipient": "VP@binhthuan.gov.vn"}, ["C"]),
    ({"agency": "ubnd"}, ["C"]),  # as a recipient's agency
    ({"agency": "sotttt"}, ["C", "A"]),  # as the sender's agency
    ({"agency": "stc"}, ["D", "B"]),  # D's sender, B's recipient
    ({"category": "general"}, ["B"]),
    ({"decision": "reject"}, ["C"]),
    ({"rule": "official-to-unofficial"}, ["C"]),
    ({"rule": "should-use-dms"}, ["D"]),  # a rule that only tagged counts too
    ({"rule": "unsigned-document"}, ["D"]),
    ({"doc_number": "456/sttt-vp"}, []),
    ({"doc_number": " 456/STTTT-vp"}, ["C"]),
    ({"agency": "stc", "category": "plan", "since": "2025-03-02"}, ["D"]),
    ({"limit": 2}, ["D", "C"]),
])
def test_search_filters(log: AuditLog, url: str, filters: dict, expected: list[str]) -> None:  # type: ignore[type-arg]
    _dataset(log)
    status, out, _ = _run(commands.search, url, filters, True)
    assert status == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == expected


def test_search_relative_time_and_text_output(log: AuditLog, url: str) -> None:
    _dataset(log)
    import datetime as dt
    now = dt.datetime(2025, 3, 21, tzinfo=dt.timezone.utc)
    with log.engine.connect() as conn:
        assert [x.id for x in query_search(conn, Filters.parse({"since": "7d"}, now=now))] == ["D"]
        assert [x.id for x in query_search(conn, Filters.parse({"since": "12d"}, now=now))] == ["D", "C"]
    status, out, err = _run(commands.search, url, {"decision": "reject"}, False)
    assert status == 0 and out.startswith("2025-03-10T01:00:00.000000Z  C  reject")
    assert "456/STTTT-VP" in out and "1 exchange(s)" in err
    status, _, err = _run(commands.search, url, {"since": "last tuesday"}, False)
    assert status == 2 and "last tuesday" in err


def test_export_csv_and_jsonl(log: AuditLog, url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _dataset(log)
    log.append([like("formula", "E", "2025-03-21T00:00:00Z")])  # its subject: =HYPERLINK("x")
    log.delivery([DeliveryEvent("C", "vp@binhthuan.gov.vn", "2025-03-10T01:01:00Z", "sent", "250", 1)])
    path = tmp_path / "out.csv"
    status, _, err = _run(commands.export, url, "csv", {"since": "2025-03-02"}, str(path), False)
    assert status == 0 and "4 exchange(s)" in err
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == ["E", "D", "C", "B"]
    assert rows[0]["subject"] == "'=HYPERLINK(\"x\")"
    assert rows[2]["deliveries"] == "vp@binhthuan.gov.vn=sent#1"
    assert rows[2]["matched"] == "official-to-unofficial"
    path = tmp_path / "out.jsonl"
    status, _, _ = _run(commands.export, url, "jsonl", {"rule": "official-to-unofficial"}, str(path), True)
    [rec] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rec["id"] == "C" and rec["deliveries"][0]["status"] == "sent" and rec["audit"]["seq"] == 3


def test_export_pages_through_many_records(log: AuditLog, url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Same timestamps on purpose: paging must not lose or repeat records that tie on time.
    log.append([like("letter", f"P{i:04d}", "2025-03-01T00:00:00Z") for i in range(2300)])
    path = tmp_path / "all.jsonl"
    assert _run(commands.export, url, "jsonl", {}, str(path), False)[0] == 0
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(ids) == 2300 and len(set(ids)) == 2300


def test_auditor_access_is_logged_and_chained(log: AuditLog, url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _dataset(log)
    _run(commands.search, url, {"sender": "dan@gmail.com", "since": "2025-03-01"}, False)
    _run(commands.show, url, "C", False)
    _run(commands.export, url, "csv", {}, str(tmp_path / "x.csv"), False)
    with log.engine.connect() as conn:
        rows = conn.execute(select(Access).order_by(Access.seq)).all()
    assert [r.command for r in rows] == ["audit search", "audit show", "audit export"]
    assert json.loads(rows[0].args)["sender"] == "dan@gmail.com"
    assert rows[0].os_user and rows[1].args == '{"id":"C"}'
    assert verify(url) == []
    _tamper(log, update(Access).where(Access.seq == 2).values(args='{"id":"B"}'))
    [p] = verify(url)
    assert (p.chain, p.seq, p.kind) == ("~access", 2, "altered")


# -- prune -----------------------------------------------------------------------------------------

def test_prune_keeps_verify_green(log: AuditLog, url: str) -> None:
    log.append([like("letter", f"J{i}", f"2025-01-{10 + i}T00:00:00Z") for i in range(5)])
    log.delivery([DeliveryEvent("J1", "vanthu@sotc.binhthuan.gov.vn", "2025-01-11T01:00:00Z", "sent", "250", 1)])
    log.append([like("letter", f"F{i}", f"2025-02-{10 + i}T00:00:00Z") for i in range(4)])
    out = io.StringIO()
    assert commands.prune(url, "2025-02-01", out) == 0
    assert "6 record(s) removed" in out.getvalue()
    with log.engine.connect() as conn:
        assert sorted(conn.execute(select(Exchange.id)).scalars()) == ["F0", "F1", "F2", "F3"]
        assert conn.execute(select(Checkpoint.seq).where(Checkpoint.kind == "prune")).scalar_one() == 6
    assert verify(url) == []
    log.append([like("letter", "M1", "2025-03-01T00:00:00Z")])
    assert commands.prune(url, "2025-02-12", io.StringIO()) == 0  # a second cut on top of the first
    assert verify(url) == []
    # The first remaining record's link to the pruned prefix is still checked.
    _tamper(log, update(Exchange).where(Exchange.id == "F2").values(prev_hash="0" * 64))
    [p] = verify(url)
    assert p.record == "exchange F2"


def test_prune_refuses_a_broken_chain(log: AuditLog, url: str) -> None:
    log.append([like("letter", f"J{i}", f"2025-01-{10 + i}T00:00:00Z") for i in range(3)])
    _tamper(log, update(Exchange).where(Exchange.id == "J1").values(sender="someone@else"))
    out = io.StringIO()
    assert commands.prune(url, "2026-01-01", out) == 1
    assert "nothing pruned" in out.getvalue()
    assert _count(log, Exchange) == 3


# -- concurrency -----------------------------------------------------------------------------------

def _writer(url: str, node: str, n: int, made: dict[str, Any]) -> None:
    # ``made``: a gateway-made record, made once by the parent (a spawned child would make its own again)
    a = AuditLog.open(url, node, checkpoint_every=7)
    for b in range(0, n, 10):
        a.append([{**made, "id": f"{node}-{i}", "time": f"2025-03-01T00:00:{i % 60:02d}Z"}
                  for i in range(b, b + 10)])
        a.delivery([DeliveryEvent(f"{node}-{b}", "vanthu@sotc.binhthuan.gov.vn", "2025-03-01T00:01:00Z",
                                  "sent", "250", 1)])
    a.close()


def _run_writers(url: str, target: Any, args: list[tuple[Any, ...]]) -> None:
    """Run ``target`` in one spawned process per ``args`` at once; each must succeed and the log stay valid."""
    AuditLog.open(url, "setup").close()  # a fresh database: the children find the schema in place
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert verify(url) == []


def test_two_writer_processes_keep_both_chains_valid(url: str) -> None:
    _run_writers(url, _writer, [(url, node, 60, like("letter", "")) for node in ("gwA", "gwB")])
    a = AuditLog.open(url, "check")
    with a.engine.connect() as conn:
        heads = dict(conn.execute(select(Head.chain, Head.seq)).all())
        assert conn.execute(select(func.count()).select_from(Exchange)).scalar_one() == 120
    a.close()
    assert heads == {"gwA": 66, "gwB": 66}


def _same_node_writer(url: str, worker: int, n: int, made: dict[str, Any]) -> None:
    a = AuditLog.open(url, "gw1", checkpoint_every=7)
    for b in range(0, n, 3):
        ids = [f"w{worker}-{i}" for i in range(b, b + 3)]
        a.write([{**made, "id": i} for i in ids],
                [DeliveryEvent(ids[0], "vanthu@sotc.binhthuan.gov.vn", "2025-03-01T00:01:00Z", "sent", "250", 1)])
    a.close()


def test_two_processes_of_one_node_share_its_chain(url: str) -> None:
    # The gateway's serving processes each have a writer on the node's one chain.
    _run_writers(url, _same_node_writer, [(url, w, 60, like("letter", "")) for w in (1, 2)])
    a = AuditLog.open(url, "check")
    with a.engine.connect() as conn:
        assert conn.execute(select(Head.seq).where(Head.chain == "gw1")).scalar_one() == 160
        assert conn.execute(select(func.count()).select_from(Exchange)).scalar_one() == 120
    a.close()


def test_two_processes_migrate_a_fresh_database(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, node, 10, like("letter", ""))) for node in ("gwA", "gwB")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert verify(url) == []


def test_sqlite_writers_take_turns_on_a_lock_file(log: AuditLog, url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Gateway processes writing one SQLite file queue on DB-writers.lock (flock) instead of SQLite's stepped sleeps."""
    import fcntl
    import os

    from sqlalchemy.engine import make_url

    if not url.startswith("sqlite"):
        pytest.skip("the writers' lock is for SQLite files; PostgreSQL has its own row locks")
    import mailgw.audit.log as audit_log

    calls: list[int] = []
    real = fcntl.flock
    monkeypatch.setattr(audit_log.fcntl, "flock", lambda fd, op: (calls.append(op), real(fd, op))[1])
    log.write([_rec(1)], [])
    assert calls == [fcntl.LOCK_EX, fcntl.LOCK_UN]  # around the transaction, which committed:
    assert _count(log, Exchange) == 1
    # Another process's writer (another open of the file) cannot take it meanwhile.
    fd = os.open(str(make_url(url).database) + "-writers.lock", os.O_RDWR)
    try:
        with log._file_lock:
            with pytest.raises(BlockingIOError):
                real(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        real(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once the writer lets go
    finally:
        os.close(fd)


def test_the_writers_lock_made_by_root_stays_open_to_the_service_user() -> None:
    """`mailgw queue release` run as root may make DB-writers.lock first: the service's user must still open it."""
    import os
    import stat
    import tempfile

    from mailgw.audit.log import _WritersLock

    if os.geteuid() != 0:
        pytest.skip("needs root to make a file for another user")
    home = tempfile.TemporaryDirectory()  # pytest's tmp_path is root's alone (0700): not a service's directory
    os.chmod(home.name, 0o755)
    db = Path(home.name) / "audit.db"
    db.write_bytes(b"")
    os.chown(db, 65534, 65534)  # the service's user owns its database
    lock = _WritersLock(str(db))
    try:
        made = os.stat(str(db) + "-writers.lock")
        assert (made.st_uid, made.st_gid) == (65534, 65534)
        assert stat.S_IMODE(made.st_mode) & 0o444 == 0o444  # holds nothing; flock needs only an open descriptor
        pid = os.fork()
        if pid == 0:  # the service's user opens and takes it
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                other = _WritersLock(str(db))
                with other:
                    code = 0 if other._fd is not None else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        lock.close()
        home.cleanup()


def test_sqlite_writers_leave_checkpoints_to_the_one_that_does_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite copies the write-ahead log into the database in the commit that takes it past
    1,000 pages, holding every writer of the gateway. A serving process's writer leaves that
    to its supervisor's (``checkpoints=False``), which copies after its own writes."""
    url = f"sqlite:///{tmp_path}/audit.db"
    db, wal = tmp_path / "audit.db", tmp_path / "audit.db-wal"
    worker = AuditLog.open(url, "gw1", checkpoints=False)
    supervisor = AuditLog.open(url, "gw1")
    monkeypatch.setattr(audit_log, "WAL_CHECKPOINT_SECONDS", 3600.0)
    try:
        empty = db.stat().st_size
        for i in range(0, 800, 25):
            worker.write([_rec(j) for j in range(i, i + 25)], [])
        assert wal.stat().st_size > 1000 * 4096  # past SQLite's own point
        assert db.stat().st_size == empty  # nothing copied by the worker's commits
        supervisor.write([_rec(800)], [])
        assert db.stat().st_size == empty  # nor by the supervisor's before its time
        monkeypatch.setattr(audit_log, "WAL_CHECKPOINT_SECONDS", 0.0)
        supervisor.write([_rec(801)], [])
        assert db.stat().st_size > empty + 800 * 1000  # copied, after the write
        worker.write([_rec(802)], [])  # the log starts over: the copy was whole
        with sqlite3.connect(db) as conn:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames < 100, frames
        assert _count(supervisor, Exchange) == 803 and verify(url) == []
    finally:
        worker.close()
        supervisor.close()


async def test_an_idle_supervisors_writer_still_checkpoints(tmp_path: Path) -> None:
    """Mail that is only refused or held leaves the supervisor nothing to write: its writer
    thread copies the serving processes' write-ahead log when it wakes, idle, once a second."""
    url = f"sqlite:///{tmp_path}/audit.db"
    db = tmp_path / "audit.db"
    supervisor = AuditWriter(url, "gw1", str(tmp_path / "journal"), checkpoints=True)
    supervisor.start()
    worker = AuditLog.open(url, "gw1", checkpoints=False)
    records = await asyncio.to_thread(lambda: [_rec(j) for j in range(400)])  # made by the pipeline (its own loop)
    try:
        empty = db.stat().st_size
        for i in range(0, 400, 25):
            worker.write(records[i:i + 25], [])
        assert db.stat().st_size == empty
        await until(lambda: db.stat().st_size > empty + 400 * 1000)  # copied by the idle writer
        assert _count(worker, Exchange) == 400 and verify(url) == []
    finally:
        worker.close()
        supervisor.close()


def test_a_write_for_what_is_kept_elsewhere_is_committed_without_a_flush(log: AuditLog, url: str) -> None:
    """``durable=False``: seen at once like any commit; on SQLite the writer's connection said NORMAL for it."""
    log.write([_rec(1)], [], durable=False)
    assert _count(log, Exchange) == 1  # committed: another connection reads it
    if url.startswith("sqlite"):
        assert log._raw is not None
        assert log._raw.cursor().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    log.write([_rec(2)], [])
    if url.startswith("sqlite"):
        assert log._raw.cursor().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    log.write([_rec(3)], [], durable=False)  # PostgreSQL: SET LOCAL, this transaction only
    assert _count(log, Exchange) == 3 and verify(url) == []
