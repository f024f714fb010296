"""Writing the exchange log: the gateway hands every decided exchange and delivery outcome here.

The gateway calls :class:`AuditLog` from a worker thread. ``append`` returns
only once the records are committed durably, so the gateway can answer the
SMTP client after it. A replay after a crash (same exchange ids) adds nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import logging
import os
import threading
import time
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Dialect, Engine, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import PoolProxiedConnection

from mailgw.audit import chain as ch
from mailgw.audit import dmarc as dmarc_rows
from mailgw.audit.schema import (
    ACCESS_CHAIN,
    GENESIS,
    AgencyHit,
    Checkpoint,
    Delivery,
    DmarcSource,
    Exchange,
    Head,
    Recipient,
    RuleHit,
)
from mailgw.audit.store import open_engine

log = logging.getLogger(__name__)

DELIVERY_STATUSES = ("sent", "deferred", "bounced", "expired",
                     # admin actions (mailgw.queue.admin): the attempt numbers the actions on the message
                     "held", "released", "deleted", "requeued", "bounced-by-admin",
                     # the milter's MTA closed the connection before mailgw's "continue" (mailgw.milter.server)
                     "abandoned")
CHECKPOINT_EVERY = 1000
WAL_CHECKPOINT_SECONDS = 1.0
"""SQLite: how often a writer that checkpoints copies the write-ahead log into the database."""
WAL_SAFETY_PAGES = 10000
"""SQLite: the write-ahead log's size (pages) at which any writer's commit checkpoints, as SQLite
does at 1,000 by default: only reached when no writer that checkpoints has written for a while."""
_ID_CHUNK = 500  # bound on bound parameters per IN (...) query


@dataclasses.dataclass(frozen=True)
class DeliveryEvent:
    """The outcome of one delivery attempt to one recipient of exchange ``exchange_id``."""

    exchange_id: str
    recipient: str
    time: dt.datetime | str
    status: str  # sent | deferred | bounced | expired, or an admin action: held | released | deleted | ...
    reply: str | None
    attempt: int


@dataclasses.dataclass(frozen=True)
class Derived:
    """The searchable columns and child rows of one record, derived from the record alone."""

    columns: dict[str, Any]
    recipients: list[dict[str, Any]]
    rules: list[str]
    agencies: list[str]


def utc(value: dt.datetime | str) -> dt.datetime:
    """A naive UTC datetime from an ISO 8601 string or a datetime (naive means UTC)."""
    t = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def doc_key(doc_number: str | None) -> str | None:
    """The search key of a number/symbol: NFC, case-folded, without spaces (``07/gm-sttt``)."""
    if not doc_number:
        return None
    return "".join(unicodedata.normalize("NFC", doc_number).casefold().split())[:255]


def _cut(value: Any, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def secrecy_blocked(record: Mapping[str, Any]) -> bool:
    """True when the record is a secrecy block: then no body may be stored anywhere."""
    cls = record.get("classification") or {}
    decision = record.get("decision") or {}
    strong_secret = cls.get("secrecy") not in (None, "none") and cls.get("secrecy_strength") == "strong"
    return strong_secret or decision.get("rule") == "secrecy-block"


def derive(record: Mapping[str, Any]) -> Derived:
    """Searchable columns, recipients and rule hits of a stored record (the writer and verify share it)."""
    sender = record.get("sender") or {}
    cls = record.get("classification") or {}
    decision = record.get("decision") or {}
    header = record.get("header") or {}
    time = utc(record["time"])
    address = sender.get("address") or record.get("mail_from")
    columns = {
        "time": time,
        "direction": _cut(record.get("direction"), 16),
        "sender": _cut(address.lower(), 320) if address else None,
        "sender_agency": _cut(sender.get("agency"), 255),
        "sender_unit": _cut(sender.get("unit"), 255),
        "category": _cut(cls.get("category"), 40),
        "doc_number": _cut(cls.get("doc_number"), 255),
        "doc_key": doc_key(cls.get("doc_number")),
        "decision": _cut(decision.get("decision"), 16),
        "rule": _cut(decision.get("rule"), 128),
        "message_id": _cut(header.get("message_id"), 998),
    }
    recipients: dict[str, dict[str, Any]] = {}
    for r in record.get("recipients") or []:
        addr = (r.get("address") or "").lower()[:320]
        if addr and addr not in recipients:
            recipients[addr] = {
                "address": addr, "agency": _cut(r.get("agency"), 255), "unit": _cut(r.get("unit"), 255),
                "official": r.get("official"), "local": r.get("local"), "time": time,
            }
    for a in record.get("rcpts") or []:
        addr = (a or "").lower()[:320]
        if addr and addr not in recipients:
            recipients[addr] = {"address": addr, "agency": None, "unit": None, "official": None,
                                "local": None, "time": time}
    rules = {r for r in decision.get("matched") or [] if r}
    if decision.get("rule"):
        rules.add(decision["rule"])
    agencies = {r["agency"] for r in recipients.values() if r["agency"]}
    if columns["sender_agency"]:
        agencies.add(columns["sender_agency"])
    return Derived(columns, list(recipients.values()), sorted({_cut(r, 128) for r in rules}),  # type: ignore[misc]
                   sorted(agencies))


@dataclasses.dataclass
class _Prepared:
    id: str
    text: str
    content_hash: str
    body: str | None
    derived: Derived
    dmarc: dict[str, Any] | None  # the dmarc_source row it counts into (mailgw.audit.dmarc)


def _prepare(record: Mapping[str, Any]) -> _Prepared:
    rid = record.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 64:
        raise ValueError(f"exchange record without a usable id: {rid!r}")
    stored = dict(record)
    body = stored.pop("body", None)
    if body is not None and secrecy_blocked(record):
        # The law forbids keeping a secret document's content; only metadata and hashes stay.
        log.warning("exchange %s: body of a secrecy-blocked message dropped, not logged", rid)
        body = None
    if body is not None:
        if not isinstance(body, str):
            raise ValueError(f"exchange {rid}: body must be text, not {type(body).__name__}")
        stored["body_sha256"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
    try:
        text = ch.canonical(stored)
        derived = derive(stored)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"exchange {rid}: record cannot be logged: {e}") from e
    try:
        dmarc = dmarc_rows.source_row(stored, derived.columns["time"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # never a reason to lose the record itself
        log.error("exchange %s: DMARC result not counted: %s", rid, e)
        dmarc = None
    return _Prepared(rid, text, ch.sha256_text(text), body, derived, dmarc)


class _WritersLock:
    """The gateway's writers of one SQLite file take turns on a lock file (``DB-writers.lock``) before ``BEGIN IMMEDIATE``.

    With ``workers:`` several processes write one SQLite file. SQLite makes a
    writer that finds it locked sleep and try again, in steps of 1, 2, 5, 10 ...
    100 ms: under load a record waited whole steps for a commit that took one
    millisecond. ``flock`` wakes the next writer when the lock is let go. It only
    orders the gateway's own writers (the file locks of SQLite still guard the
    data; commands that write, such as ``audit`` access records, wait on SQLite as
    before), and the kernel lets it go when a process dies.
    """

    def __init__(self, path: str | None):
        self._fd: int | None = None
        self.path = path  # the database's, None for a lock that does nothing
        if path is not None:
            try:
                # Empty, holds nothing: readable by all, so that a command run as root that makes it
                # first does not shut the service's user out (flock needs only an open descriptor).
                self._fd = os.open(path + "-writers.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                if os.geteuid() == 0 and os.path.exists(path):
                    st = os.stat(path)
                    os.fchown(self._fd, st.st_uid, st.st_gid)  # the database's owner owns its lock
            except OSError as e:  # a read-only directory: SQLite's own waiting still works
                log.warning("exchange log: no writers' lock file next to %s (%s); writers wait on SQLite alone", path, e)

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _writers_lock(engine: Engine) -> _WritersLock:
    """The writers' lock of a SQLite file database; a lock that does nothing for other databases."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return _WritersLock(None)
    return _WritersLock(os.path.abspath(database))


def lock_head(conn: Connection, chain: str) -> tuple[int, str]:
    """The chain's head (seq, hash), locked until the transaction ends; created at (0, genesis).

    For the rare writers (auditor access, prune); the gateway's writes use :class:`_Statements`.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    conn.execute(dialect_insert(Head).values(chain=chain, seq=0, hash=GENESIS).on_conflict_do_nothing())
    row = conn.execute(select(Head.seq, Head.hash).where(Head.chain == chain).with_for_update()).one()
    return int(row.seq), str(row.hash)


def set_head(conn: Connection, chain: str, seq: int, hash_: str) -> None:
    conn.execute(update(Head).where(Head.chain == chain).values(seq=seq, hash=hash_))


def _chunks(items: Sequence[Any], size: int = _ID_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# Derived columns (Derived.columns, Derived.recipients) in the order of the rows _write_tx builds.
_SEARCH = ("direction", "sender", "sender_agency", "sender_unit", "category", "doc_number", "doc_key", "decision",
           "rule", "message_id")
_RECIPIENT = ("address", "agency", "unit", "official", "local")
_PG_PARAMETERS = 30000  # bound parameters per PostgreSQL statement (its limit is 65535)

Events = dict[tuple[str, str, int, str], tuple[DeliveryEvent, dt.datetime]]


class _Table:
    """A table the write path inserts into: its ``INSERT`` and the conversions SQLAlchemy would apply.

    The conversions are the column types' bind processors for the dialect (on
    SQLite: datetimes to SQLAlchemy's text format, booleans checked and made
    integers), so the rows stored are exactly those ``insert(Table)`` stores.
    """

    def __init__(self, dialect: Dialect, table: Any, columns: Sequence[str]):
        # Except for the time: one record's goes into four tables, the caller converts it once (bind_time).
        q = dialect.identifier_preparer.quote
        self.name = table.name
        self.into = f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in columns)}) VALUES "
        self.width = len(columns)
        self.one_row = ""  # the INSERT of one row (set by _Statements, which knows the placeholders)
        self._convert = [(i, proc) for i, c in enumerate(columns) if c != "time"
                         and (proc := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None]

    def convert(self, rows: list[list[Any]]) -> None:
        for i, proc in self._convert:
            for row in rows:
                row[i] = proc(row[i])


class _Statements:
    """The SQL of the gateway's write transaction for one engine, as the driver's own text.

    The gateway writes a batch every few milliseconds; building, caching and
    executing SQLAlchemy Core statements for it cost more CPU than the rest of
    the write, so the write path runs these texts on the driver's cursor.
    """

    def __init__(self, dialect: Dialect):
        if dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the exchange log runs on SQLite or PostgreSQL, not {dialect.name}")
        dbapi = dialect.loaded_dbapi
        self.dialect = dialect
        self.dbapi_error: type[Exception] = dbapi.Error
        self.postgresql = dialect.name == "postgresql"
        # psycopg 3's RawCursor takes PostgreSQL's own placeholders ($1, $2, ...) and sends the text
        # as it is; its ordinary cursor parses every text it has not cached for %s, and a multi-row
        # INSERT is too long for its cache.
        self._raw_cursor = getattr(dbapi, "RawCursor", None) if self.postgresql else None
        marks = {"qmark": "?", "format": "%s", "pyformat": "%s"}
        if self._raw_cursor is None and dialect.paramstyle not in marks:
            raise ValueError(f"database driver {dialect.driver}: parameter style {dialect.paramstyle} not supported")
        self._mark = None if self._raw_cursor is not None else marks[dialect.paramstyle]
        # SQLite: the transaction starts with BEGIN IMMEDIATE (as mailgw.audit.store's IMMEDIATE),
        # which takes the database's write lock, so a plain read of the head is already serialised
        # with every other writer. PostgreSQL: the head row is locked.
        self.begin = None if self.postgresql else "BEGIN IMMEDIATE"
        # SQLite in WAL mode: FULL flushes the write-ahead log at every commit, NORMAL only at checkpoints.
        self.synchronous = {True: "PRAGMA synchronous=FULL", False: "PRAGMA synchronous=NORMAL"}
        lock = " FOR UPDATE" if self.postgresql else ""
        self.head = f"SELECT seq, hash FROM audit_head WHERE chain = {self.marks(1)}{lock}"
        self.new_head = f"INSERT INTO audit_head (chain, seq, hash) VALUES ({self.marks(3)}) ON CONFLICT DO NOTHING"
        self.set_head = self._set_head_text(1)
        self.exchange = _Table(dialect, Exchange.__table__, ("id", "node", "seq", "time", *_SEARCH, "record", "body",
                                                              "content_hash", "prev_hash", "hash"))
        self.recipient = _Table(dialect, Recipient.__table__, ("exchange_id", *_RECIPIENT, "time"))
        self.rule = _Table(dialect, RuleHit.__table__, ("exchange_id", "rule", "time"))
        self.agency = _Table(dialect, AgencyHit.__table__, ("exchange_id", "agency", "time"))
        self.delivery = _Table(dialect, Delivery.__table__, ("node", "seq", "exchange_id", "recipient", "time",
                                                              "status", "reply", "attempt", "content_hash",
                                                              "prev_hash", "hash"))
        self.checkpoint = _Table(dialect, Checkpoint.__table__, ("chain", "seq", "hash", "kind", "time", "pruned"))
        # DMARC counts (mailgw.audit.dmarc): an upsert, since every node counts into the same rows.
        self.dmarc = _Table(dialect, DmarcSource.__table__, dmarc_rows.COLUMNS)
        q = dialect.identifier_preparer.quote
        low, high = ("LEAST", "GREATEST") if self.postgresql else ("min", "max")
        name = q(self.dmarc.name)
        self.dmarc_upsert = (
            self.dmarc.into + f"({self.marks(self.dmarc.width)}) ON CONFLICT ({q('day')}, {q('key')}) DO UPDATE SET "
            f"{q('count')} = {name}.{q('count')} + excluded.{q('count')}, "
            f"first_seen = {low}({name}.first_seen, excluded.first_seen), "
            f"last_seen = {high}({name}.last_seen, excluded.last_seen)")
        # Every time column is a DateTime(timezone=False), as Exchange.time.
        self.bind_time: Any = (Exchange.__table__.c.time.type.dialect_impl(dialect).bind_processor(dialect)
                               or (lambda t: t))
        for t in (self.exchange, self.recipient, self.rule, self.agency, self.delivery, self.checkpoint):
            t.one_row = t.into + f"({self.marks(t.width)})"
        self._texts: dict[tuple[tuple[str, int], ...], str] = {}

    def marks(self, n: int, first: int = 1) -> str:
        """``n`` placeholders, numbered from ``first`` where the driver numbers them."""
        if self._mark is None:
            return ", ".join(f"${i}" for i in range(first, first + n))
        return ", ".join([self._mark] * n)

    def _set_head_text(self, first: int) -> str:
        """The head's UPDATE, its parameters (seq, hash, chain) numbered from ``first``."""
        return "UPDATE audit_head SET seq = {}, hash = {} WHERE chain = {}".format(*self.marks(3, first).split(", "))

    def lock_head(self, cur: Any, chain: str) -> tuple[int, str]:
        """As :func:`lock_head`, on the driver's cursor; the row is inserted only when missing."""
        cur.execute(self.head, (chain,))
        row = cur.fetchone()
        if row is None:  # the chain's first entry
            cur.execute(self.new_head, (chain, 0, GENESIS))
            cur.execute(self.head, (chain,))
            row = cur.fetchone()
        return int(row[0]), str(row[1])

    def where_in(self, select_from_where: str, values: Sequence[Any]) -> str:
        return f"{select_from_where} IN ({self.marks(len(values))})"

    def cursor(self, raw: PoolProxiedConnection) -> Any:
        return self._raw_cursor(raw.dbapi_connection) if self._raw_cursor is not None else raw.cursor()

    def _values(self, table: _Table, rows: int, first: int) -> str:
        w = table.width
        return table.into + ", ".join(f"({self.marks(w, first + r * w)})" for r in range(rows))

    def write(self, cur: Any, parts: list[tuple[_Table, list[list[Any]]]], node: str, seq: int, hash_: str) -> None:
        """Insert every table's rows and move the chain's head to ``seq``, ``hash_``.

        SQLite: a statement per table, the driver looping over the rows in C. PostgreSQL: one
        statement for it all (the inserts as WITH clauses of the head's UPDATE), so one set of
        parameters for the driver to send instead of one per statement or row.
        """
        parts = [(t, rows) for t, rows in parts if rows]
        for t, rows in parts:
            t.convert(rows)
        if not self.postgresql:
            for t, rows in parts:
                cur.executemany(t.one_row, rows)  # the driver's loop, in C
            cur.execute(self.set_head, (seq, hash_, node))
            return
        params = [v for _, rows in parts for row in rows for v in row]
        if len(params) + 3 > _PG_PARAMETERS:  # a very large batch: one statement per table and chunk
            for t, rows in parts:
                per = _PG_PARAMETERS // t.width
                for i in range(0, len(rows), per):
                    chunk = rows[i:i + per]
                    cur.execute(self._values(t, len(chunk), 1), [v for row in chunk for v in row])
            cur.execute(self.set_head, (seq, hash_, node))
            return
        key = tuple((t.name, len(rows)) for t, rows in parts)
        text = self._texts.get(key)
        if text is None:
            n, clauses = 1, []
            for i, (t, rows) in enumerate(parts):
                clauses.append(f"w{i} AS ({self._values(t, len(rows), n)})")
                n += len(rows) * t.width
            text = f"WITH {', '.join(clauses)} " + self._set_head_text(n)
            if len(self._texts) >= 256:
                self._texts.clear()
            self._texts[key] = text
        cur.execute(text, [*params, seq, hash_, node])


class AuditLog:
    """The exchange log as the gateway sees it: append records, append delivery events. Thread-safe."""

    def __init__(self, engine: Engine, node: str, checkpoint_every: int = CHECKPOINT_EVERY, *,
                 checkpoints: bool = True):
        if not node or node == ACCESS_CHAIN:
            raise ValueError(f"bad node name {node!r}")
        self._engine = engine
        self._node = node
        self._every = checkpoint_every
        self._sql = _Statements(engine.dialect)
        # One writer per process at a time: the database would serialise them anyway
        # (head row lock), and on SQLite this avoids busy waits between our own threads.
        self._lock = threading.Lock()
        self._file_lock = _writers_lock(engine)
        # SQLite file database: who copies the write-ahead log into the database (_checkpoint).
        self._checkpoints = checkpoints and self._file_lock.path is not None
        self._checkpointed = time.monotonic()
        # The pooled connection the writes use, kept between them (under _lock).
        self._raw: PoolProxiedConnection | None = None

    @classmethod
    def open(cls, url: str, node: str, checkpoint_every: int = CHECKPOINT_EVERY, *, checkpoints: bool = True) -> AuditLog:
        """Open (creating or migrating the schema if needed) the log at ``url`` for writer ``node``.

        ``checkpoints``: on SQLite, this writer copies the write-ahead log into the database
        (see ``_checkpoint``); a gateway's serving processes leave it to their supervisor.
        """
        return cls(open_engine(url), node, checkpoint_every, checkpoints=checkpoints)

    @property
    def engine(self) -> Engine:
        return self._engine

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Log exchanges in one durable transaction; ids already logged are skipped (idempotent)."""
        self.write(records, ())

    def delivery(self, events: Sequence[DeliveryEvent | Mapping[str, Any]]) -> None:
        """Log delivery outcomes in one durable transaction; an event already logged is skipped."""
        self.write((), events)

    @staticmethod
    def _clean_events(events: Sequence[DeliveryEvent | Mapping[str, Any]]) -> Events:
        clean: Events = {}
        for e in events:
            ev = e if isinstance(e, DeliveryEvent) else DeliveryEvent(**e)
            if ev.status not in DELIVERY_STATUSES:
                raise ValueError(f"delivery event for {ev.exchange_id}: unknown status {ev.status!r}")
            ev = dataclasses.replace(ev, recipient=ev.recipient.lower()[:320], attempt=int(ev.attempt))
            clean.setdefault((ev.exchange_id, ev.recipient, ev.attempt, ev.status), (ev, utc(ev.time)))
        return clean

    def write(self, records: Sequence[Mapping[str, Any]],
              events: Sequence[DeliveryEvent | Mapping[str, Any]], *, durable: bool = True) -> None:
        """``append`` and ``delivery`` in one durable transaction (one commit for a writer's whole batch).

        Returns once the transaction is committed. Records are chained before events.
        ``durable=False`` commits without waiting for the disk (SQLite's ``synchronous=NORMAL``
        in WAL mode, PostgreSQL's ``synchronous_commit=off``): the commit is seen by every
        reader at once but a power cut may undo it, until the next durable commit of any
        writer, which flushes the log's one write-ahead log with everything before it. Only
        for what is kept durably elsewhere until then (mailgw.audit.writer: records of
        spooled messages).
        """
        prepared: dict[str, _Prepared] = {}
        for r in records:
            p = _prepare(r)
            prepared.setdefault(p.id, p)
        clean = self._clean_events(events)
        if not prepared and not clean:
            return
        with self._lock:
            with self._file_lock:
                for attempt in range(3):
                    try:
                        self._transaction(prepared, clean, durable)
                        break
                    except IntegrityError:
                        # Another node logged the same exchange id at the same moment; the
                        # retry sees it and skips it.
                        if attempt == 2:
                            raise
            self._checkpoint_if_due()

    def checkpoint_if_due(self) -> None:
        """``_checkpoint`` if this writer checkpoints and WAL_CHECKPOINT_SECONDS have passed (an idle writer's turn)."""
        with self._lock:
            self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        if self._checkpoints and time.monotonic() - self._checkpointed >= WAL_CHECKPOINT_SECONDS:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy SQLite's write-ahead log into the database, mostly outside the writers' lock.

        SQLite does it in the commit that takes the log past 1,000 pages, and our writers'
        lock then holds every other writer for the whole copy and its two flushes (20-30 ms
        under load, in the tail of every reply waiting on a record). Here the writers'
        connections leave it (``wal_autocheckpoint`` at WAL_SAFETY_PAGES), and the
        supervisor's writer copies once a second, after its writes or while it is idle:
        first without the lock (PASSIVE: the others go on writing), then what they wrote
        meanwhile with the lock, so the copy is complete and the next writer starts the log
        over from its beginning, as before.
        """
        self._checkpointed = time.monotonic()
        try:
            cur = self._sql.cursor(self._connection())
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            with self._file_lock:
                cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except self._sql.dbapi_error as e:  # the next write finds a broken connection and says so
            log.warning("exchange log: checkpoint failed: %s", e)

    def close(self) -> None:
        with self._lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None
            self._file_lock.close()
        self._engine.dispose()

    def _transaction(self, prepared: dict[str, _Prepared], clean: Events, durable: bool = True) -> None:
        """One write transaction on the driver's cursor, committed before it returns.

        Driver errors come out as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...), as
        from ``Connection.execute``. The connection is kept for the next write; if the database
        dropped it meanwhile, the write is tried once more on a new one (from the pool, which checks
        it first on PostgreSQL). That is safe whatever the first try did: a write is idempotent.
        """
        sql = self._sql
        for retry_dropped in (True, False):
            kept = self._raw is not None
            raw = self._connection()
            try:
                self._write_tx(raw, prepared, clean, durable)
                raw.commit()
                return
            except sql.dbapi_error as e:
                dropped = sql.dialect.is_disconnect(e, raw.dbapi_connection, None)  # type: ignore[arg-type]  # the driver's DB-API error
                if dropped:
                    raw.invalidate(e)
                    self._forget()
                    if kept and retry_dropped:
                        continue
                else:
                    self._rollback()
                raise DBAPIError.instance(None, None, e, sql.dbapi_error, connection_invalidated=dropped,
                                          dialect=sql.dialect) from e
            except BaseException:
                self._rollback()
                raise

    def _connection(self) -> PoolProxiedConnection:
        """The connection the writes use (under _lock), opened when there is none."""
        if self._raw is None:
            self._raw = self._engine.raw_connection()
            if self._file_lock.path is not None:
                # SQLite file: copies of the write-ahead log are _checkpoint's, outside the commits.
                self._sql.cursor(self._raw).execute(f"PRAGMA wal_autocheckpoint={WAL_SAFETY_PAGES}")
        return self._raw

    def _rollback(self) -> None:
        assert self._raw is not None
        try:
            self._raw.rollback()
        except self._sql.dbapi_error as e:  # a connection that cannot even roll back is not kept
            self._raw.invalidate(e)
            self._forget()

    def _forget(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _write_tx(self, raw: PoolProxiedConnection, prepared: dict[str, _Prepared], clean: Events,
                  durable: bool = True) -> None:
        sql, node = self._sql, self._node
        cur = sql.cursor(raw)
        if sql.begin:
            cur.execute(sql.synchronous[durable])  # SQLite: per connection, outside a transaction
            cur.execute(sql.begin)
        elif not durable:
            cur.execute("SET LOCAL synchronous_commit TO OFF")  # PostgreSQL: this transaction only
        # What is already logged (a replay after a crash, the spool's records at start-up) is skipped.
        existing: dict[str, str] = {}
        for ids in _chunks(list(prepared)):
            cur.execute(sql.where_in("SELECT id, content_hash FROM audit_exchange WHERE id", ids), ids)
            existing.update(cur.fetchall())
        new = []
        for p in prepared.values():
            if p.id not in existing:
                new.append(p)
            elif existing[p.id] != p.content_hash:
                log.warning("exchange %s logged again with different content; the first record is kept", p.id)
        seen: set[tuple[str, str, int, str]] = set()
        for ids in _chunks(sorted({k[0] for k in clean})):
            cur.execute(sql.where_in("SELECT exchange_id, recipient, attempt, status FROM audit_delivery "
                                     "WHERE exchange_id", ids), ids)
            seen.update(tuple(r) for r in cur.fetchall())
        events = [v for k, v in clean.items() if k not in seen]
        if not new and not events:
            return
        seq, prev = sql.lock_head(cur, node)

        rows: list[list[Any]] = []
        recipients: list[list[Any]] = []
        rules: list[list[Any]] = []
        agencies: list[list[Any]] = []
        deliveries: list[list[Any]] = []
        checkpoints: list[list[Any]] = []
        bind_time = sql.bind_time
        now = bind_time(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
        for p in new:
            seq += 1
            h = ch.entry_hash(node, seq, ch.KIND_EXCHANGE, prev, p.content_hash)
            d = p.derived
            columns = d.columns
            time = bind_time(columns["time"])  # the recipients' time too: derive gives them the record's
            rows.append([p.id, node, seq, time, *[columns[c] for c in _SEARCH], p.text, p.body, p.content_hash,
                         prev, h])
            recipients += [[p.id, *[r[c] for c in _RECIPIENT], time] for r in d.recipients]
            rules += [[p.id, r, time] for r in d.rules]
            agencies += [[p.id, a, time] for a in d.agencies]
            if seq % self._every == 0:
                checkpoints.append([node, seq, h, "periodic", now, 0])
            prev = h
        for ev, t in events:
            seq += 1
            content = ch.sha256_text(ch.delivery_content(ev.exchange_id, ev.recipient, t, ev.status,
                                                         ev.reply, ev.attempt))
            h = ch.entry_hash(node, seq, ch.KIND_DELIVERY, prev, content)
            deliveries.append([node, seq, ev.exchange_id, ev.recipient, bind_time(t), ev.status, ev.reply,
                               ev.attempt, content, prev, h])
            if seq % self._every == 0:
                checkpoints.append([node, seq, h, "periodic", now, 0])
            prev = h
        sql.write(cur, [(sql.exchange, rows), (sql.recipient, recipients), (sql.rule, rules),
                        (sql.agency, agencies), (sql.delivery, deliveries), (sql.checkpoint, checkpoints)],
                  node, seq, prev)
        # DMARC counts of the new exchanges only, in the same transaction: a replayed record
        # (skipped above) is never counted twice, and no counted exchange is missing from the log.
        counted = dmarc_rows.merge([p.dmarc for p in new if p.dmarc is not None])
        if counted:
            upserts = [[r[c] for c in dmarc_rows.COLUMNS] for r in counted]
            sql.dmarc.convert(upserts)
            cur.executemany(sql.dmarc_upsert, upserts)


__all__ = ["AuditLog", "DeliveryEvent", "Derived", "derive", "doc_key", "secrecy_blocked", "utc"]
