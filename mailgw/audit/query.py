"""Reading the exchange log: the filters auditors search and export by, and one exchange's history.

Dates: a bare date (``2025-03-01``) is a day in Vietnam time (UTC+7, the
time auditors work in); ``--until`` with a bare date includes that whole day.
A date and time without a zone is UTC. ``7d``, ``12h``, ``30m``, ``2w`` count
back from now. Stored times and printed times are UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Iterator, Mapping, Sequence

import msgspec
from sqlalchemy import Connection, Row, Select, and_, exists, or_, select

from mailgw.audit import chain as ch
from mailgw.audit import record
from mailgw.audit.log import doc_key, utc
from mailgw.audit.record import ExchangeRecord
from mailgw.audit.schema import AgencyHit, Delivery, Exchange, Recipient, RuleHit

VN_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")
DEFAULT_LIMIT = 100
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FILTER_NAMES = ("since", "until", "sender", "recipient", "agency", "category", "decision", "rule",
                "doc_number", "subject", "message_id", "client_ip", "delivery", "tag", "limit")
_POST_BATCH = 500  # rows read per round when a filter is checked on the decoded record


class FilterError(ValueError):
    """A filter value that cannot be understood (a usage error, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Filters:
    """The filters of `mailgw audit search` and `export`, parsed; ``None`` means "not filtered"."""

    since: dt.datetime | None = None  # naive UTC, inclusive
    until: dt.datetime | None = None  # naive UTC, exclusive
    sender: str | None = None
    recipient: str | None = None
    agency: str | None = None
    category: str | None = None
    decision: str | None = None
    rule: str | None = None
    doc_number: str | None = None
    subject: str | None = None  # text the Subject contains (case-insensitive; never matches a redacted record)
    message_id: str | None = None  # with or without the angle brackets
    client_ip: str | None = None
    delivery: str | None = None  # a delivery-history status the exchange has (sent, bounced, held, released, ...)
    tag: str | None = None  # a tag the rules added
    limit: int | None = None
    # Not a search filter but a bound on it: an auditor's agencies ("snv") and units ("snv/vp");
    # only exchanges with a party (sender or recipient) in one of them. None: every exchange.
    scope: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, now: dt.datetime | None = None,
              default_limit: int | None = None) -> Filters:
        """Filters from plain values as the command line gives them (strings, ``--limit`` an int)."""
        values = {k: v for k, v in (values or {}).items() if v is not None and v != ""}
        unknown = set(values) - set(FILTER_NAMES)
        if unknown:
            raise FilterError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        limit = values.get("limit", default_limit)
        if limit is not None:
            try:
                limit = int(limit)
            except (TypeError, ValueError):
                raise FilterError(f"--limit: not a number: {limit!r}") from None
            if limit <= 0:
                raise FilterError("--limit must be positive")
        def low(k: str) -> str | None:
            return str(values[k]).strip().lower() if k in values else None
        def keep(k: str) -> str | None:
            return str(values[k]).strip() if k in values else None
        return cls(
            since=parse_when(values["since"], end=False, now=now) if "since" in values else None,
            until=parse_when(values["until"], end=True, now=now) if "until" in values else None,
            sender=low("sender"), recipient=low("recipient"), agency=keep("agency"),
            category=keep("category"), decision=low("decision"), rule=keep("rule"),
            doc_number=keep("doc_number"), subject=keep("subject"), message_id=keep("message_id"),
            client_ip=keep("client_ip"), delivery=low("delivery"), tag=keep("tag"), limit=limit,
        )

    def as_args(self) -> dict[str, Any]:
        """The filters as plain values, for the access log."""
        return {k: (v.isoformat() if isinstance(v, dt.datetime) else ",".join(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if v is not None}

    def checked_on_record(self) -> bool:
        """Whether a filter is confirmed on the decoded record (the database only narrows by the JSON text)."""
        return bool(self.subject or self.client_ip or self.tag)

    def record_matches(self, rec: ExchangeRecord) -> bool:
        """The record-level filters (subject text, client IP, tag) on a decoded record."""
        if self.subject and (rec.redacted or self.subject.casefold() not in (rec.header.subject or "").casefold()):
            return False
        if self.client_ip and rec.client_ip != self.client_ip:
            return False
        return not (self.tag and self.tag not in rec.decision.tags)


def parse_when(value: str | dt.datetime, end: bool, now: dt.datetime | None = None) -> dt.datetime:
    """A filter time as naive UTC: ISO date (Vietnam day), ISO date-time (UTC unless zoned), or ``7d``."""
    if isinstance(value, dt.datetime):
        return utc(value)
    text = str(value).strip()
    m = _RELATIVE.match(text)
    if m:
        base = utc(now) if now else dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return base - dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise FilterError(f"not a date: {text!r}") from None
        if end:
            day += dt.timedelta(days=1)
        return utc(dt.datetime.combine(day, dt.time(), VN_TZ))
    try:
        return utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise FilterError(f"not a date, a date-time or a span like 7d: {text!r}") from None


def statement(f: Filters, columns: Any = None, after: tuple[dt.datetime, str] | None = None) -> Select[Any]:
    """The SELECT for the filters, newest first, continuing after ``after`` (time, id) when given.

    Each filter has an index whose second column is the time, so the database
    can walk one index newest first and stop at the limit. When a filter lives
    in a child table (recipient, agency, rule), the query is driven from that
    table's index, unless a sender or a number/symbol is given: those are
    selective enough that walking the exchange table is cheaper.
    """
    children: list[tuple[Any, Any, Any]] = [(Recipient, Recipient.address, f.recipient),
                                            (AgencyHit, AgencyHit.agency, f.agency), (RuleHit, RuleHit.rule, f.rule)]
    children = [c for c in children if c[2] is not None]
    drive = children[0] if children and not (f.sender or f.doc_number) else None
    stmt = select(*(columns if isinstance(columns, tuple) else (columns if columns is not None else Exchange,)))
    if drive:
        table, column, value = drive
        time_col, id_col = table.time, table.exchange_id
        stmt = stmt.select_from(table).join(Exchange, Exchange.id == table.exchange_id)
        cond = [column == value]
    else:
        time_col, id_col = Exchange.time, Exchange.id
        cond = []
    if f.since:
        cond.append(time_col >= f.since)
    if f.until:
        cond.append(time_col < f.until)
    if after is not None:
        # Keyset paging: stable and cheap on any backend, unlike OFFSET.
        cond.append(or_(time_col < after[0], and_(time_col == after[0], id_col < after[1])))
    for col, v in ((Exchange.sender, f.sender), (Exchange.category, f.category),
                   (Exchange.decision, f.decision)):
        if v is not None:
            cond.append(col == v)
    if f.doc_number:
        cond.append(Exchange.doc_key == doc_key(f.doc_number))
    if f.message_id:
        bare = f.message_id.strip().strip("<>")
        cond.append(Exchange.message_id.in_([bare, f"<{bare}>"]))
    # Kept only in the record: the database narrows by the record's canonical JSON text, then
    # record_matches() confirms on the decoded record (a subject in another case, a tag's name in a subject).
    if f.client_ip:
        cond.append(Exchange.record.contains(_json_pair("client_ip", f.client_ip), autoescape=True))
    if f.tag:
        cond.append(Exchange.record.contains(_json_text(f.tag), autoescape=True))
    if f.subject and f.subject.lower() == f.subject.upper():  # no letters with case: the text itself narrows
        cond.append(Exchange.record.contains(_json_text(f.subject)[1:-1], autoescape=True))
    if f.delivery:
        cond.append(exists().where(Delivery.exchange_id == Exchange.id, Delivery.status == f.delivery))
    if f.scope is not None:
        cond.append(_in_scope(f.scope))
    for table, column, value in children:
        if drive is None or table is not drive[0]:
            cond.append(exists().where(table.exchange_id == Exchange.id, column == value))
    if cond:
        stmt = stmt.where(and_(*cond))
    stmt = stmt.order_by(time_col.desc(), id_col.desc())
    if f.limit:
        stmt = stmt.limit(f.limit)
    return stmt


def _json_text(value: str) -> str:
    return ch.canonical(value)


def _json_pair(key: str, value: str) -> str:
    return ch.canonical({key: value})[1:-1]


def _in_scope(scope: tuple[str, ...]) -> Any:
    """An exchange with a party in one of the agencies (``snv``) or units (``snv/vp``) of ``scope``."""
    parts: list[Any] = []
    agencies = [s for s in scope if "/" not in s]
    if agencies:
        parts.append(exists().where(AgencyHit.exchange_id == Exchange.id, AgencyHit.agency.in_(agencies)))
    for unit in (s for s in scope if "/" in s):
        agency, _, code = unit.partition("/")
        parts.append(and_(Exchange.sender_agency == agency, Exchange.sender_unit == code))
        parts.append(exists().where(Recipient.exchange_id == Exchange.id, Recipient.agency == agency,
                                    Recipient.unit == code))
    return or_(*parts) if parts else Exchange.id.is_(None)  # an empty scope sees nothing


def search(conn: Connection, f: Filters) -> Sequence[Row[Any]]:
    """The exchanges matching ``f``, newest first, at most ``f.limit``."""
    if not f.checked_on_record():
        return conn.execute(statement(f)).all()
    return list(_confirmed(conn, f))


def _confirmed(conn: Connection, f: Filters) -> Iterator[Row[Any]]:
    """Rows whose decoded record passes the record-level filters, newest first, up to ``f.limit``."""
    last: tuple[dt.datetime, str] | None = None
    found = 0
    while True:
        rows = conn.execute(statement(dataclasses.replace(f, limit=_POST_BATCH), after=last)).all()
        for r in rows:
            try:
                keep = f.record_matches(record.decode(r.record))
            except record.RecordError:
                keep = True  # an unreadable record is shown, and said to be unreadable, never hidden
            if keep:
                yield r
                found += 1
                if f.limit and found >= f.limit:
                    return
        if len(rows) < _POST_BATCH:
            return
        last = (rows[-1].time, rows[-1].id)


def record_in_scope(rec: ExchangeRecord, scope: tuple[str, ...]) -> bool:
    """The scope's rule (:func:`_in_scope`) on a decoded record: a party in one of its agencies or units."""
    parties = ([rec.sender] if rec.sender else []) + list(rec.recipients)
    for s in scope:
        agency, _, unit = s.partition("/")
        if any(p.agency == agency and (not unit or p.unit == unit) for p in parties):
            return True
    return False


def in_scope(conn: Connection, exchange_id: str, scope: tuple[str, ...] | None) -> bool:
    """Whether the exchange is one an auditor of ``scope`` may see (None: every exchange)."""
    if scope is None:
        return True
    stmt = select(Exchange.id).where(Exchange.id == exchange_id, _in_scope(scope))
    return conn.execute(stmt).first() is not None


class LogPosition(msgspec.Struct, kw_only=True, frozen=True):
    """Where a record sits in the exchange log."""

    node: str
    seq: int
    hash: str
    body_archived: bool = False


class DeliveryEvent(msgspec.Struct, kw_only=True, frozen=True):
    recipient: str
    time: str
    status: str
    reply: str | None = None
    attempt: int = 0
    node: str | None = None
    seq: int | None = None


class LoggedExchange(msgspec.Struct, kw_only=True, frozen=True):
    """An exchange as an auditor reads it: the record, its place in the log, and what happened to it."""

    record: ExchangeRecord
    audit: LogPosition
    deliveries: list[DeliveryEvent] | None = None
    body: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record's JSON with ``audit`` (and ``deliveries``, ``body`` when read) beside its fields."""
        out = self.record.to_json()
        out["audit"] = msgspec.to_builtins(self.audit)
        if self.deliveries is not None:
            out["deliveries"] = msgspec.to_builtins(self.deliveries)
        if self.body is not None:
            out["body"] = self.body
        return out


def deliveries(conn: Connection, exchange_ids: list[str]) -> dict[str, list[DeliveryEvent]]:
    """Delivery history per exchange id, oldest first."""
    out: dict[str, list[DeliveryEvent]] = {}
    for i in range(0, len(exchange_ids), 500):
        rows = conn.execute(select(Delivery).where(Delivery.exchange_id.in_(exchange_ids[i:i + 500]))
                            .order_by(Delivery.time, Delivery.attempt, Delivery.seq))
        for d in rows:
            out.setdefault(d.exchange_id, []).append(DeliveryEvent(
                recipient=d.recipient, time=_z(d.time), status=d.status, reply=d.reply,
                attempt=d.attempt, node=d.node, seq=d.seq))
    return out


def full_record(x: Row[Any], history: list[DeliveryEvent] | None = None,
                with_body: bool = False) -> LoggedExchange:
    """The decision record as logged, with where it sits in its chain and (optionally) its deliveries."""
    try:
        rec = record.decode(x.record)
    except record.RecordError as e:
        raise record.RecordError(f"exchange {x.id}: {e}") from e
    return LoggedExchange(
        record=rec,
        audit=LogPosition(node=x.node, seq=x.seq, hash=x.hash, body_archived=x.body is not None),
        deliveries=history,
        body=x.body if with_body else None,
    )


def iter_export(conn: Connection, f: Filters, batch: int = 1000) -> Iterator[LoggedExchange]:
    """Every matching record with its deliveries, newest first, read in batches (constant memory)."""
    if f.checked_on_record():
        found: list[Row[Any]] = []
        for r in _confirmed(conn, f):
            found.append(r)
            if len(found) >= batch:
                yield from _with_history(conn, found)
                found = []
        yield from _with_history(conn, found)
        return
    last: tuple[dt.datetime, str] | None = None
    remaining = f.limit
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        stmt = statement(dataclasses.replace(f, limit=size), after=last)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        history = deliveries(conn, [r.id for r in rows])
        for r in rows:
            yield full_record(r, history.get(r.id, []))
        last = (rows[-1].time, rows[-1].id)
        if remaining is not None:
            remaining -= len(rows)


def _with_history(conn: Connection, rows: list[Row[Any]]) -> Iterator[LoggedExchange]:
    history = deliveries(conn, [r.id for r in rows]) if rows else {}
    for r in rows:
        yield full_record(r, history.get(r.id, []))
def iter_records(conn: Connection, f: Filters, batch: int = 5000) -> Iterator[ExchangeRecord]:
    """Every matching record alone, newest first, in batches: what a replay reads.

    Only the record's column is fetched (no delivery history, no archived body, no
    row objects), and each record is decoded once, straight into the model.
    """
    last: tuple[dt.datetime, str] | None = None
    remaining = f.limit
    while remaining is None or remaining > 0:
        size = batch if remaining is None else min(batch, remaining)
        stmt = statement(dataclasses.replace(f, limit=size), (Exchange.time, Exchange.id, Exchange.record), after=last)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        for _, xid, stored in rows:
            try:
                yield record.decode(stored)
            except record.RecordError as e:
                raise record.RecordError(f"exchange {xid}: {e}") from e
        last = (rows[-1][0], rows[-1][1])
        if remaining is not None:
            remaining -= len(rows)


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
