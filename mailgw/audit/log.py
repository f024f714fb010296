"""Writing the exchange log: the gateway hands every decided exchange and delivery outcome here.

The gateway calls :class:`AuditLog` from a worker thread. ``append`` returns
only once the records are committed durably, so the gateway can answer the
SMTP client after it. A replay after a crash (same exchange ids) adds nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailgw.audit import chain as ch
from mailgw.audit.schema import ACCESS_CHAIN, GENESIS, AgencyHit, Checkpoint, Delivery, Exchange, Head, Recipient, RuleHit
from mailgw.audit.store import IMMEDIATE, open_engine

log = logging.getLogger(__name__)

DELIVERY_STATUSES = ("sent", "deferred", "bounced", "expired")
CHECKPOINT_EVERY = 1000
_ID_CHUNK = 500  # bound on bound parameters per IN (...) query


@dataclasses.dataclass(frozen=True)
class DeliveryEvent:
    """The outcome of one delivery attempt to one recipient of exchange ``exchange_id``."""

    exchange_id: str
    recipient: str
    time: dt.datetime | str
    status: str  # sent | deferred | bounced | expired
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
    return _Prepared(rid, text, ch.sha256_text(text), body, derived)


def lock_head(conn: Connection, chain: str) -> tuple[int, str]:
    """The chain's head (seq, hash), locked until the transaction ends; created at (0, genesis)."""
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


class AuditLog:
    """The exchange log as the gateway sees it: append records, append delivery events. Thread-safe."""

    def __init__(self, engine: Engine, node: str, checkpoint_every: int = CHECKPOINT_EVERY):
        if not node or node == ACCESS_CHAIN:
            raise ValueError(f"bad node name {node!r}")
        self._engine = engine
        self._node = node
        self._every = checkpoint_every
        # One writer per process at a time: the database would serialise them anyway
        # (head row lock), and on SQLite this avoids busy waits between our own threads.
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, node: str, checkpoint_every: int = CHECKPOINT_EVERY) -> AuditLog:
        """Open (creating or migrating the schema if needed) the log at ``url`` for writer ``node``."""
        return cls(open_engine(url), node, checkpoint_every)

    @property
    def engine(self) -> Engine:
        return self._engine

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Log exchanges in one durable transaction; ids already logged are skipped (idempotent)."""
        prepared: dict[str, _Prepared] = {}
        for r in records:
            p = _prepare(r)
            prepared.setdefault(p.id, p)
        if prepared:
            self._write(lambda conn: self._append_tx(conn, list(prepared.values())))

    def delivery(self, events: Sequence[DeliveryEvent | Mapping[str, Any]]) -> None:
        """Log delivery outcomes in one durable transaction; an event already logged is skipped."""
        clean = self._clean_events(events)
        if clean:
            self._write(lambda conn: self._delivery_tx(conn, clean))

    @staticmethod
    def _clean_events(events: Sequence[DeliveryEvent | Mapping[str, Any]]
                      ) -> dict[tuple[str, str, int, str], tuple[DeliveryEvent, dt.datetime]]:
        clean: dict[tuple[str, str, int, str], tuple[DeliveryEvent, dt.datetime]] = {}
        for e in events:
            ev = e if isinstance(e, DeliveryEvent) else DeliveryEvent(**e)
            if ev.status not in DELIVERY_STATUSES:
                raise ValueError(f"delivery event for {ev.exchange_id}: unknown status {ev.status!r}")
            ev = dataclasses.replace(ev, recipient=ev.recipient.lower()[:320], attempt=int(ev.attempt))
            clean.setdefault((ev.exchange_id, ev.recipient, ev.attempt, ev.status), (ev, utc(ev.time)))
        return clean

    def write(self, records: Sequence[Mapping[str, Any]],
              events: Sequence[DeliveryEvent | Mapping[str, Any]]) -> None:
        """``append`` and ``delivery`` in one durable transaction (one commit for a writer's whole batch)."""
        prepared: dict[str, _Prepared] = {}
        for r in records:
            p = _prepare(r)
            prepared.setdefault(p.id, p)
        clean = self._clean_events(events)

        def body(conn: Connection) -> None:
            if prepared:
                self._append_tx(conn, list(prepared.values()))
            if clean:
                self._delivery_tx(conn, clean)

        if prepared or clean:
            self._write(body)

    def close(self) -> None:
        self._engine.dispose()

    def _write(self, body: Any) -> None:
        with self._lock:
            for attempt in range(3):
                try:
                    with self._engine.connect().execution_options(**IMMEDIATE) as conn:
                        with conn.begin():
                            body(conn)
                    return
                except IntegrityError:
                    # Another node logged the same exchange id at the same moment; the
                    # retry sees it and skips it.
                    if attempt == 2:
                        raise

    def _append_tx(self, conn: Connection, prepared: list[_Prepared]) -> None:
        existing: dict[str, str] = {}
        for ids in _chunks([p.id for p in prepared]):
            existing.update(conn.execute(
                select(Exchange.id, Exchange.content_hash).where(Exchange.id.in_(ids))).all())
        new = []
        for p in prepared:
            if p.id not in existing:
                new.append(p)
            elif existing[p.id] != p.content_hash:
                log.warning("exchange %s logged again with different content; the first record is kept", p.id)
        if not new:
            return
        seq, prev = lock_head(conn, self._node)
        rows, recipients, rules, agencies, checkpoints = [], [], [], [], []
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for p in new:
            seq += 1
            h = ch.entry_hash(self._node, seq, ch.KIND_EXCHANGE, prev, p.content_hash)
            rows.append({**p.derived.columns, "id": p.id, "node": self._node, "seq": seq, "record": p.text,
                         "body": p.body, "content_hash": p.content_hash, "prev_hash": prev, "hash": h})
            recipients += [{**r, "exchange_id": p.id} for r in p.derived.recipients]
            rules += [{"exchange_id": p.id, "rule": r, "time": p.derived.columns["time"]} for r in p.derived.rules]
            agencies += [{"exchange_id": p.id, "agency": a, "time": p.derived.columns["time"]}
                         for a in p.derived.agencies]
            if seq % self._every == 0:
                checkpoints.append({"chain": self._node, "seq": seq, "hash": h, "kind": "periodic",
                                    "time": now, "pruned": 0})
            prev = h
        conn.execute(insert(Exchange), rows)
        if recipients:
            conn.execute(insert(Recipient), recipients)
        if rules:
            conn.execute(insert(RuleHit), rules)
        if agencies:
            conn.execute(insert(AgencyHit), agencies)
        if checkpoints:
            conn.execute(insert(Checkpoint), checkpoints)
        set_head(conn, self._node, seq, prev)

    def _delivery_tx(self, conn: Connection,
                     clean: dict[tuple[str, str, int, str], tuple[DeliveryEvent, dt.datetime]]) -> None:
        keys = list(clean)
        seen: set[tuple[str, str, int, str]] = set()
        for ids in _chunks(sorted({k[0] for k in keys})):
            q = select(Delivery.exchange_id, Delivery.recipient, Delivery.attempt, Delivery.status).where(
                Delivery.exchange_id.in_(ids))
            seen.update(tuple(r) for r in conn.execute(q))  # type: ignore[misc]
        new = [clean[k] for k in keys if k not in seen]
        if not new:
            return
        seq, prev = lock_head(conn, self._node)
        rows, checkpoints = [], []
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for ev, t in new:
            seq += 1
            content = ch.sha256_text(ch.delivery_content(ev.exchange_id, ev.recipient, t, ev.status,
                                                         ev.reply, ev.attempt))
            h = ch.entry_hash(self._node, seq, ch.KIND_DELIVERY, prev, content)
            rows.append({"node": self._node, "seq": seq, "exchange_id": ev.exchange_id,
                         "recipient": ev.recipient, "time": t, "status": ev.status, "reply": ev.reply,
                         "attempt": ev.attempt, "content_hash": content, "prev_hash": prev, "hash": h})
            if seq % self._every == 0:
                checkpoints.append({"chain": self._node, "seq": seq, "hash": h, "kind": "periodic",
                                    "time": now, "pruned": 0})
            prev = h
        conn.execute(insert(Delivery), rows)
        if checkpoints:
            conn.execute(insert(Checkpoint), checkpoints)
        set_head(conn, self._node, seq, prev)


__all__ = ["AuditLog", "DeliveryEvent", "Derived", "derive", "doc_key", "secrecy_blocked", "utc"]
