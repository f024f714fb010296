"""The exchange log's hand-built SQL against SQLAlchemy Core: the same writes must leave the same rows.

mailgw/audit/log.py writes through SQL texts of its own, run on the driver's
cursor (``_Statements``: multi-row INSERTs, ``$1`` placeholders on PostgreSQL,
chunks past the parameter limit). Here every write it does to log A is done
again to log B by a reference writer in this file that uses only SQLAlchemy
Core ``insert()``/``select()``/``update()`` on the schema's tables, with
log.py's pure functions for the values (``_prepare``, ``derive``, the chain
hashing) and in the same transactions. Then every table of A and B must hold
the same rows, column by column, exactly as the driver returns them (type
included), and both logs must verify.

What is written is what a real gateway handed its log. The gateway takes a
mix of mail over SMTP: messages of the classifier's corpus (tests/data/classify:
real PDF and DOCX attachments, RFC 2047/2231 names, cp1258, a secret report,
an .exe, a document forwarded to Gmail), DKIM-signed inbound mail (the test
keys of tests/data/dkim), raw UTF-8 headers under SMTPUTF8 (the DKIM signing
corpus), a submission over TLS with AUTH, a look-alike domain (quarantined), a
bounce (and its DSN), a deferral, a message to every mailbox of the directory.
It delivers them and is restarted (the held message's record is logged again
from the spool). Every ``AuditLog.write`` call it makes is captured, with its
arguments, in order (the capture stands in for the gateway's own log, so what
the gateway hands over does not depend on the code under test), and replayed
batch by batch into A and B.

Then a bulk through the same gateway's edge (``Edge.accept``, what the SMTP
session calls at end of data; the SMTP dialogue alone is skipped, to stay
fast): 505 messages and one to 4,400 recipients, delivered to a Maildir. The
gateway's writer never commits more than 500 records at once, so its bulk
records and delivery events are written to A and B in one transaction each,
as ``AuditLog.append``/``delivery`` allow, to pass log.py's sizes: 500 ids per
``IN (...)`` and 30,000 parameters per PostgreSQL statement (above it one
INSERT per table and chunk). The checkpoint interval is 7, so periodic
checkpoints fall inside every kind of batch.

Added to what the gateway wrote: the text of two messages as the ``body``
beside their record (the archive input ``AuditLog.append`` takes; the gateway
path does not archive yet): the held message's, from its spool file, which
both logs must store, and the secret report's, which both must drop.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import email.parser
import email.policy
import email.utils
import os
import shutil
import ssl
import tempfile
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import aiosmtplib
import pytest
import trustme
from sqlalchemy import Engine, func, insert, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailgw.app import Gateway
from mailgw.audit import chain as ch
from mailgw.audit import dmarc as dmarc_rows
from mailgw.audit import log as audit_log
from mailgw.audit.log import AuditLog, _prepare, _Prepared
from mailgw.audit.schema import (
    GENESIS,
    AgencyHit,
    Base,
    Checkpoint,
    Delivery,
    DmarcSource,
    Exchange,
    Head,
    Recipient,
    RuleHit,
)
from mailgw.audit.store import IMMEDIATE, open_engine
from mailgw.audit.testing import pg_schema_url
from mailgw.audit.verify import verify
from mailgw.dkim import SigningKey, load_key, sign, txt_record
from mailgw.message.model import Envelope, Message, new_id
from mailgw.queue.spool import HELD
from tests.conftest import LOGIN, PASSWORD, message, send, write_config
from tests.sink import Sink

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "classify"
DKIM_DATA = REPO / "tests" / "data" / "dkim"
NODE = "mailgw.test"  # write_config's hostname; the node name defaults to it
EVERY = 7  # checkpoint interval of logs A and B
CLERK = "vanthu.sotttt@binhthuan.gov.vn"
OTHER = "vanthu.snv@binhthuan.gov.vn"
GONE = "tdkt.snv@binhthuan.gov.vn"  # the next hop says 550: bounced, then a DSN to the clerk
BUSY = "vp.snv@binhthuan.gov.vn"  # the next hop says 452 once: deferred, then sent at attempt 2
PARTNER = "danang.gov.vn"  # signs its mail with the test keys (answers file below)
FINAL = ("sent", "bounced", "expired")

# Corpus messages sent as they are: From gives MAIL FROM, To and Cc the recipients; local senders
# use the relay listener, others the MX.
CORPUS_FILES = (
    "001-e01-giay-moi-giao-ban.eml",  # PDF attachment
    "006-e06-cong-van-456.eml",
    "007-e07-quyet-dinh-123.eml",  # inbound from a partner, unsigned
    "008-e08-mat-bao-cao-antt.eml",  # secret: refused, record redacted
    "012-e12-fwd-quyet-dinh-25.eml",  # a decision forwarded to Gmail: refused
    "014-e14-rfc2047-nfd.eml",
    "019-e19-gmail-giay-moi.eml",
    "021-e21-bao-cao-exe.eml",  # an executable attached
    "118-sec-declassified-pdf.eml",
    "148-enc-body-cp1258.eml",
    "154-enc-name-rfc2231.eml",
    "174-att-docx-number.eml",  # DOCX attachment
    "183-cal-request.eml",
)
SECRET_FILE = "008-e08-mat-bao-cao-antt.eml"


Batch = tuple[list[dict[str, Any]], list[dict[str, Any]]]


@dataclasses.dataclass
class Traffic:
    """What the gateway handed its exchange log, call by call."""

    batches: list[Batch]  # the variety, then the restart, in the order the gateway wrote them
    restart: int  # where the restart's batches begin
    bulk: list[Batch]  # the bulk, likewise (written to A and B as two big transactions)
    held: str  # the quarantined exchange: its text goes beside its record, and must be stored
    secret: str  # the secrecy-blocked exchange: its text goes beside its record, and must be dropped
    bodies: dict[str, str]  # exchange id -> message text given beside its record (see the module's doc)


# --- the gateway's traffic --------------------------------------------------------------------


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _envelope_of(raw: bytes) -> tuple[str, list[str]]:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    (_, sender), = email.utils.getaddresses(headers.get_all("from", []))
    rcpts = [a for _, a in email.utils.getaddresses(headers.get_all("to", []) + headers.get_all("cc", [])) if a]
    return sender, rcpts


class _Capture:
    """Stands in for the gateway's ``AuditLog.write``: keeps each call's arguments, in order, and wakes waiters.

    The gateway's own log is not written, so what the gateway hands over never depends on the
    code under test: a fault in log.py shows as a difference between A and B, not as a gateway
    that journals its records and stops.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.target: list[Batch] = []
        self.changed = asyncio.Event()

    def install(self, mp: pytest.MonkeyPatch) -> None:
        capture = self

        def write(log: AuditLog, records: Sequence[Mapping[str, Any]], events: Sequence[Any], *,
                  durable: bool = True) -> None:
            capture.target.append((copy.deepcopy([dict(r) for r in records]), copy.deepcopy([dict(e) for e in events])))
            capture.loop.call_soon_threadsafe(capture.changed.set)

        mp.setattr(AuditLog, "write", write)

    async def until(self, done: Callable[[list[Batch]], bool], timeout: float = 30.0) -> None:
        deadline = self.loop.time() + timeout
        while True:
            self.changed.clear()
            if done(self.target):
                return
            remaining = deadline - self.loop.time()
            assert remaining > 0, "the gateway did not log everything in time"
            await asyncio.wait_for(self.changed.wait(), remaining)


def _delivered(batches: list[Batch], dsns: int = 0) -> bool:
    """Every recipient of every accepted exchange has its final delivery event; ``dsns`` DSN records made."""
    records = [r for rs, _ in batches for r in rs]
    final = {(e["exchange_id"], e["recipient"].lower()) for _, es in batches for e in es if e["status"] in FINAL}
    return sum(1 for r in records if r.get("dsn_for")) >= dsns and all(
        (r["id"], a.lower()) in final for r in records if r["decision"]["decision"] == "accept" for a in r["rcpts"])


async def _variety(gw: Gateway, ca: trustme.CA) -> list[str]:
    """Mail of every kind over SMTP; returns the ids of refused exchanges (their records are logged anyway)."""
    ids: list[str] = []

    async def smtp(listener: str, raw: bytes, sender: str, rcpts: list[str], **kw: Any) -> None:
        try:
            await send(gw, listener, raw, sender, rcpts, **kw)
        except aiosmtplib.SMTPResponseException as e:  # a refusal at DATA: the id is in brackets
            ids.append(e.message.rsplit("[", 1)[-1].rstrip("]"))

    for name in CORPUS_FILES:
        raw = _crlf((CORPUS / name).read_bytes())
        sender, rcpts = _envelope_of(raw)
        await smtp("relay" if sender.lower().endswith("@binhthuan.gov.vn") else "mx", raw, sender, rcpts)
    # Signed by a partner, two signatures (RSA and Ed25519): DKIM facts with results.
    raw = _crlf((CORPUS / "010-e10-hoa-toc-cong-dien.eml").read_bytes())
    sender, rcpts = _envelope_of(raw)
    assert sender.endswith("@" + PARTNER)
    raw = sign(raw, [SigningKey.from_file(PARTNER, s, DKIM_DATA / "keys" / f) for s, f in _KEYS]) + raw
    await smtp("mx", raw, sender, rcpts)
    # Raw UTF-8 header fields, SMTPUTF8.
    raw = _crlf((DKIM_DATA / "messages" / "utf8-headers.eml").read_bytes())
    await smtp("mx", raw, "vanthu@stp.example.gov.vn", [OTHER], mail_options=["SMTPUTF8"])
    # Submission: STARTTLS and AUTH (the record has tls and auth_user).
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    await smtp("submission", message(subject="Báo cáo số 12/BC-STTTT tuần 47", sender=LOGIN, to=OTHER), LOGIN,
               [OTHER, "vanthu@mic.gov.vn"], start_tls=True, tls_context=tls, username=LOGIN, password=PASSWORD)
    # Every mailbox of the directory and a few partners: recipient and agency rows of many agencies.
    everyone = [m.address for m in gw.context().directory.mailboxes if m.address not in (GONE, BUSY)]
    everyone += [f"canbo{i}@{d}" for i, d in enumerate(("mic.gov.vn", "danang.gov.vn", "moha.gov.vn") * 4)]
    await smtp("relay", message(subject="Thông báo số 99/TB-STTTT về lịch nghỉ Tết Nguyên đán", sender=CLERK,
                                to=everyone[0]), CLERK, everyone)
    await smtp("relay", message(subject="Giấy mời họp giao ban", sender=CLERK, to=GONE), CLERK, [GONE])
    await smtp("relay", message(subject="Kế hoạch số 45/KH-STTTT", sender=CLERK, to=BUSY), CLERK, [BUSY, OTHER])
    await smtp("mx", message(subject="Cập nhật mật khẩu hộp thư", sender="thongbao@binhthuan-gov.vn"),
               "thongbao@binhthuan-gov.vn", [OTHER])  # a look-alike domain: held
    return ids


_KEYS = (("rsa", "rsa2048.pem"), ("ed", "ed25519.pem"))


async def _bulk(gw: Gateway) -> None:
    """505 messages of one recipient, then one of 4,400, through the edge as the SMTP session hands them over."""
    ctx = gw.context()

    async def accept(i: int, rcpts: list[str]) -> None:
        raw = _crlf(message(subject=f"Công văn số {i}/STTTT-VP về việc triển khai chuyển đổi số", sender=CLERK,
                            to=rcpts[0]))
        env = Envelope(CLERK, rcpts, "relay", "relay", "127.0.0.1", helo="mail.stttt.binhthuan.gov.vn")
        reply = await gw.edge.accept(Message(new_id(), env, raw), ctx)
        assert reply.startswith("250 "), reply

    domains = ("mic.gov.vn", "danang.gov.vn", "moha.gov.vn")
    await asyncio.gather(*(accept(i, [f"vanthu{i % 7}@{domains[i % 3]}"]) for i in range(505)))
    await accept(505, [f"canbo{j:04d}@{domains[j % 3]}" for j in range(4400)])


async def _traffic(tmp: Path, ca: trustme.CA, password_hash: str) -> Traffic:
    sink = Sink()
    await sink.start()
    busy_once: list[str] = []

    def rcpt_reply(rcpt: str) -> str | None:
        if rcpt == GONE:
            return "550 5.1.1 Mailbox does not exist"
        if rcpt == BUSY and not busy_once:
            busy_once.append(rcpt)
            return "452 4.2.2 Mailbox full, try again later"
        return None

    sink.rcpt_reply = rcpt_reply
    (tmp / "answers.zone").write_text(
        "".join(txt_record(PARTNER, s, load_key(DKIM_DATA / "keys" / f)) + "\n" for s, f in _KEYS)
        # The partner publishes DMARC (p=none: nothing is decided from it): its mail is counted in dmarc_source.
        + f'_dmarc.{PARTNER}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@{PARTNER}"\n')
    config = write_config(tmp, sink.port, ca, password_hash, dns={"answers": "answers.zone"},
                          routes={"remote": "maildir:maildir"}, limits={"recipients": 5000})
    capture = _Capture(asyncio.get_running_loop())
    bodies: dict[str, str] = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            capture.install(mp)
            variety: list[Batch] = []
            capture.target = variety
            gw = Gateway(str(config))
            await gw.start()
            try:
                refused = await _variety(gw, ca)
                await capture.until(lambda b: _delivered(b, dsns=1) and
                                    set(refused) <= {r["id"] for rs, _ in b for r in rs})
                bulk: list[Batch] = []
                capture.target = bulk
                await _bulk(gw)
                await capture.until(_delivered)
            finally:
                await gw.drain()
            # A restart: the held message's record is logged again from the spool (and skipped).
            capture.target = variety
            restart = len(variety)
            gw = Gateway(str(config))
            await gw.start()
            await gw.drain()
            (held,) = gw.spool.ids(HELD)
            bodies[held] = gw.spool.read(held)[1].decode("utf-8")
            (secret,) = [r["id"] for rs, _ in variety for r in rs if r["decision"]["rule"] == "secrecy-block"]
            bodies[secret] = (CORPUS / SECRET_FILE).read_text(encoding="utf-8")
    finally:
        await sink.stop()
    return Traffic(variety, restart, bulk, held, secret, bodies)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, password_hash: str) -> Iterator[Traffic]:
    # The gateway's files go on tmpfs when there is one: its spool, its own log and 4,900 Maildir
    # files, each fsync-ed, take tens of seconds on a busy disk, and durability is not checked here.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        work = Path(tempfile.mkdtemp(prefix="mailgw-test-audit-sql-", dir=shm))
    else:
        work = tmp_path_factory.mktemp("gateway")
    try:
        yield asyncio.run(_traffic(work, ca, password_hash))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the reference writer: SQLAlchemy Core only -------------------------------------------------


def reference_write(engine: Engine, node: str, records: Sequence[Mapping[str, Any]], events: Sequence[Any],
                    now: dt.datetime, every: int = EVERY) -> None:
    """What ``AuditLog.write`` must do, with Core statements: one transaction, records chained before events."""
    prepared: dict[str, _Prepared] = {}
    for r in records:
        p = _prepare(r)
        prepared.setdefault(p.id, p)
    clean = AuditLog._clean_events(events)
    if not prepared and not clean:
        return
    with engine.connect().execution_options(**IMMEDIATE) as conn, conn.begin():
        logged = set()
        if prepared:
            logged = set(conn.scalars(select(Exchange.id).where(Exchange.id.in_(list(prepared)))))
        seen = set()
        if clean:
            seen = {tuple(r) for r in conn.execute(
                select(Delivery.exchange_id, Delivery.recipient, Delivery.attempt, Delivery.status)
                .where(Delivery.exchange_id.in_(sorted({k[0] for k in clean}))))}
        new = [p for p in prepared.values() if p.id not in logged]
        todo = [v for k, v in clean.items() if k not in seen]
        if not new and not todo:
            return
        head = conn.execute(select(Head.seq, Head.hash).where(Head.chain == node).with_for_update()).one_or_none()
        if head is None:
            conn.execute(insert(Head).values(chain=node, seq=0, hash=GENESIS))
            seq, prev = 0, GENESIS
        else:
            seq, prev = head.seq, head.hash
        exchanges: list[dict[str, Any]] = []
        recipients: list[dict[str, Any]] = []
        rules: list[dict[str, Any]] = []
        agencies: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        for p in new:
            seq += 1
            h = ch.entry_hash(node, seq, ch.KIND_EXCHANGE, prev, p.content_hash)
            d = p.derived
            exchanges.append({**d.columns, "id": p.id, "node": node, "seq": seq, "record": p.text, "body": p.body,
                              "content_hash": p.content_hash, "prev_hash": prev, "hash": h})
            recipients += [{**r, "exchange_id": p.id} for r in d.recipients]
            rules += [{"exchange_id": p.id, "rule": r, "time": d.columns["time"]} for r in d.rules]
            agencies += [{"exchange_id": p.id, "agency": a, "time": d.columns["time"]} for a in d.agencies]
            if seq % every == 0:
                checkpoints.append({"chain": node, "seq": seq, "hash": h, "kind": "periodic", "time": now, "pruned": 0})
            prev = h
        for ev, t in todo:
            seq += 1
            content = ch.sha256_text(ch.delivery_content(ev.exchange_id, ev.recipient, t, ev.status, ev.reply,
                                                         ev.attempt))
            h = ch.entry_hash(node, seq, ch.KIND_DELIVERY, prev, content)
            deliveries.append({"node": node, "seq": seq, "exchange_id": ev.exchange_id, "recipient": ev.recipient,
                               "time": t, "status": ev.status, "reply": ev.reply, "attempt": ev.attempt,
                               "content_hash": content, "prev_hash": prev, "hash": h})
            if seq % every == 0:
                checkpoints.append({"chain": node, "seq": seq, "hash": h, "kind": "periodic", "time": now, "pruned": 0})
            prev = h
        for table, rows in ((Exchange, exchanges), (Recipient, recipients), (RuleHit, rules), (AgencyHit, agencies),
                            (Delivery, deliveries), (Checkpoint, checkpoints)):
            if rows:
                conn.execute(insert(table), rows)
        conn.execute(update(Head).where(Head.chain == node).values(seq=seq, hash=prev))
        # The DMARC counts of the new exchanges: Core's upsert of each dialect.
        postgres = engine.dialect.name == "postgresql"
        upsert = postgresql.insert if postgres else sqlite.insert
        low, high = (func.least, func.greatest) if postgres else (func.min, func.max)
        for row in dmarc_rows.merge([p.dmarc for p in new if p.dmarc is not None]):
            stmt = upsert(DmarcSource).values(**row)
            conn.execute(stmt.on_conflict_do_update(index_elements=["day", "key"], set_={
                "count": DmarcSource.count + stmt.excluded.count,
                "first_seen": low(DmarcSource.first_seen, stmt.excluded.first_seen),
                "last_seen": high(DmarcSource.last_seen, stmt.excluded.last_seen)}))


# --- comparing the two logs -------------------------------------------------------------------


# The chains first, then what hangs off them; chains in seq order, other tables by primary key.
_FIRST = ("audit_exchange", "audit_delivery", "audit_recipient", "audit_rule_hit", "audit_agency", "audit_checkpoint",
          "audit_head")
_ORDER = {"audit_exchange": "node, seq", "audit_delivery": "node, seq", "audit_checkpoint": "id"}


def _tables(engine: Engine) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table: its columns and its rows as the driver returns them (no SQLAlchemy type processing),
    each value with its Python type."""
    out = {}
    inspector = inspect(engine)
    with engine.connect() as conn:
        for name in inspector.get_table_names():
            order = _ORDER.get(name) or ", ".join(inspector.get_pk_constraint(name)["constrained_columns"]) or "1"
            cur = conn.exec_driver_sql(f'SELECT * FROM "{name}" ORDER BY {order}')
            columns = list(cur.keys())
            out[name] = (columns, [tuple((type(v).__name__, v) for v in row) for row in cur])
    return out


def _assert_same(a: Engine, b: Engine) -> dict[str, int]:
    """Every table of A has the rows of the same table of B; returns the row counts."""
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    assert {t.name for t in Base.metadata.sorted_tables} <= set(ta)
    problems = []
    for name in sorted(ta, key=lambda n: (_FIRST + (n,)).index(n)):
        (cols_a, rows_a), (cols_b, rows_b) = ta[name], tb[name]
        assert cols_a == cols_b, name
        if rows_a == rows_b:
            continue
        problem = f"{name}: {len(rows_a)} rows in A, {len(rows_b)} in B"
        i = next((i for i, (ra, rb) in enumerate(zip(rows_a, rows_b)) if ra != rb), None)
        if i is not None:
            problem += f"; first difference at row {i}:\n" + "\n".join(
                f"    {c}: A={va!r} B={vb!r}" for c, va, vb in zip(cols_a, rows_a[i], rows_b[i]) if va != vb)
        problems.append(problem)
    assert not problems, "A (AuditLog) and B (SQLAlchemy Core) differ:\n" + "\n".join(problems)
    return {name: len(rows) for name, (_, rows) in ta.items()}


class _Clock:
    """The clock of log.py's periodic checkpoints (their ``time``), set by the test for each write."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 2, 0, 0, 123456)

    def tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1, microseconds=1)
        return self.now

    def module(self) -> types.SimpleNamespace:
        # log.py calls dt.datetime.now(dt.timezone.utc) and dt.datetime.fromisoformat only.
        clock = self
        return types.SimpleNamespace(
            timezone=dt.timezone,
            datetime=types.SimpleNamespace(fromisoformat=dt.datetime.fromisoformat,
                                           now=lambda tz=None: clock.now.replace(tzinfo=dt.timezone.utc).astimezone(tz)),
        )


@pytest.fixture
def reference_url(audit_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty log on the same backend as ``audit_url``."""
    if audit_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/reference.db"
        return
    with pg_schema_url() as url:
        assert url is not None
        yield url


# --- the tests ---------------------------------------------------------------------------------


def test_the_gateway_traffic_reaches_every_write_path(traffic: Traffic) -> None:
    records = [r for rs, _ in traffic.batches for r in rs]
    events = [e for _, es in traffic.batches for e in es]
    decisions = {(r["decision"]["decision"], r["decision"]["rule"]) for r in records}
    assert {"accept", "reject", "quarantine"} <= {d for d, _ in decisions}
    assert {("reject", "secrecy-block"), ("reject", "official-to-unofficial"),
            ("quarantine", "lookalike-domain")} <= decisions
    assert any(r.get("redacted") and r["header"]["subject"].startswith("sha256:") for r in records)
    assert any(r.get("dsn_for") for r in records)
    assert any((r.get("dkim") or {}).get("status") == "pass" and len(r["dkim"]["signatures"]) == 2 for r in records)
    assert any(r["auth_user"] == LOGIN and r["tls"] for r in records)
    assert any((r.get("dmarc") or {}).get("result") == "pass" for r in records)  # counted in dmarc_source
    assert any(f.get("pdf") for r in records for f in r["attachments"]["files"])
    assert any("Sở Tư pháp" in (r["header"]["from"] or "") for r in records)  # raw UTF-8 header, SMTPUTF8
    assert any("Giấy mời" in (r["header"]["subject"] or "") for r in records)  # RFC 2047, decoded
    assert max(len(r["rcpts"]) for r in records) > 20
    assert {"sent", "bounced", "deferred"} <= {e["status"] for e in events}
    restart = traffic.batches[traffic.restart:]
    assert [[r["decision"]["decision"] for r in rs] for rs, _ in restart] == [["quarantine"]]  # logged again

    # The bulk, written as two transactions, passes log.py's sizes.
    bulk_records = [r for rs, _ in traffic.bulk for r in rs]
    bulk_events = [e for _, es in traffic.bulk for e in es]
    assert len({r["id"] for r in bulk_records}) > audit_log._ID_CHUNK
    assert len({e["exchange_id"] for e in bulk_events}) > audit_log._ID_CHUNK
    recipient_rows = sum(len(r["rcpts"]) for r in bulk_records)
    assert recipient_rows > audit_log._PG_PARAMETERS // 7  # more than one INSERT of recipients (7 columns)
    assert len(bulk_events) > audit_log._PG_PARAMETERS // 11  # more than one INSERT of deliveries (11 columns)


def test_the_hand_built_sql_leaves_the_rows_sqlalchemy_core_does(traffic: Traffic, audit_url: str,
                                                                 reference_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(audit_log, "dt", clock.module())
    a = AuditLog.open(audit_url, NODE, checkpoint_every=EVERY)
    b = open_engine(reference_url)
    try:
        def write(records: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
            now = clock.tick()
            records = [{**r, "body": traffic.bodies[r["id"]]} if r["id"] in traffic.bodies else r for r in records]
            a.write(records, events)
            reference_write(b, NODE, records, events, now)

        for records, events in traffic.batches[:traffic.restart]:  # as the gateway grouped them
            write(records, events)
        write([r for rs, _ in traffic.bulk for r in rs], [])  # the bulk: one transaction of records,
        write([], [e for _, es in traffic.bulk for e in es])  # one of delivery events
        for records, events in traffic.batches[traffic.restart:]:  # the restart: nothing new
            write(records, events)
        everything = traffic.batches + traffic.bulk
        write([r for rs, _ in everything for r in rs], [e for _, es in everything for e in es])  # a full replay

        rows = _assert_same(a.engine, b)
        with a.engine.connect() as conn:
            head = conn.execute(select(Head.seq)).scalar_one()
        assert head == rows["audit_exchange"] + rows["audit_delivery"]
        assert rows["audit_checkpoint"] == head // EVERY
        assert rows["audit_recipient"] > audit_log._PG_PARAMETERS // 7
        with a.engine.connect() as conn:
            stored = dict(conn.execute(select(Exchange.id, Exchange.body).where(Exchange.id.in_(traffic.bodies))).all())
        assert stored == {traffic.held: traffic.bodies[traffic.held], traffic.secret: None}
        assert verify(audit_url) == []
        assert verify(reference_url) == []
    finally:
        a.close()
        b.dispose()
