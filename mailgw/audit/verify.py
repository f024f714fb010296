"""Checking the exchange log's hash chains: what an auditor runs to trust what the log says.

Each chain (one per gateway node, plus the auditor access chain) is read in
``seq`` order from its start, or from the last prune checkpoint, which carries
the hash of the pruned prefix. Per entry: its content must hash to
``content_hash``, its searchable columns and child rows must match its
record, its ``prev_hash`` must be the previous entry's hash and its ``hash``
must be the hash of all that. The first entry that fails is named, with what
most likely happened (altered, deleted, reordered); then the next chain.
The head row and the periodic checkpoints catch records removed at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, select

from mailgw.audit import chain as ch
from mailgw.audit.log import derive
from mailgw.audit.schema import (
    ACCESS_CHAIN,
    GENESIS,
    Access,
    AgencyHit,
    Checkpoint,
    Delivery,
    Exchange,
    Head,
    Recipient,
    RuleHit,
)
from mailgw.audit.store import open_engine

_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Problem:
    """The first bad entry of one chain: where (chain, seq, record id), what happened, and detail."""

    chain: str
    seq: int
    record: str
    kind: str  # altered | deleted | reordered | truncated | duplicate
    message: str

    def __str__(self) -> str:
        return f"chain {self.chain} seq {self.seq} ({self.record}): {self.kind}: {self.message}"


@dataclasses.dataclass
class _Entry:
    seq: int
    kind: str
    ref: str
    content_ok: str | None  # None when the content matches its hash, else why not
    prev_hash: str
    hash: str
    content_hash: str


@dataclasses.dataclass(frozen=True)
class ChainState:
    """A chain's verified end: seq and hash of its last entry (printed so it can be kept elsewhere)."""

    chain: str
    seq: int
    hash: str


def verify(url: str) -> list[Problem]:
    """Recompute every chain in the log at ``url``; an empty list means the log is intact."""
    engine = open_engine(url)
    try:
        return verify_engine(engine)[0]
    finally:
        engine.dispose()


def verify_engine(engine: Engine, chains: list[str] | None = None) -> tuple[list[Problem], list[ChainState]]:
    """Problems found and the verified heads, for all chains or the ones named."""
    problems: list[Problem] = []
    heads: list[ChainState] = []
    with engine.connect() as conn:
        names = chains if chains is not None else _chain_names(conn)
        for name in names:
            problem, state = _verify_chain(conn, name)
            if problem:
                problems.append(problem)
            elif state:
                heads.append(state)
    return problems, heads


def _chain_names(conn: Connection) -> list[str]:
    names: set[str] = set(conn.execute(select(Head.chain)).scalars())
    names.update(conn.execute(select(Exchange.node).distinct()).scalars())
    names.update(conn.execute(select(Delivery.node).distinct()).scalars())
    names.update(conn.execute(select(Checkpoint.chain).distinct()).scalars())
    if conn.execute(select(Access.seq).limit(1)).first():
        names.add(ACCESS_CHAIN)
    return sorted(names)


def _anchor(conn: Connection, name: str) -> tuple[int, str]:
    row = conn.execute(select(Checkpoint.seq, Checkpoint.hash).where(
        Checkpoint.chain == name, Checkpoint.kind == "prune").order_by(Checkpoint.seq.desc()).limit(1)).first()
    return (int(row.seq), str(row.hash)) if row else (0, GENESIS)


def _verify_chain(conn: Connection, name: str) -> tuple[Problem | None, ChainState | None]:
    start, prev = _anchor(conn, name)
    checkpoints = {int(s): str(h) for s, h in conn.execute(select(Checkpoint.seq, Checkpoint.hash).where(
        Checkpoint.chain == name, Checkpoint.kind == "periodic", Checkpoint.seq > start))}
    expected = start + 1
    last_ref = "start of chain"
    for e in _entries(conn, name, start):
        if e.seq < expected:
            return Problem(name, e.seq, e.ref, "duplicate", "two records share this position"), None
        if e.seq > expected:
            gap = f"{expected}" if e.seq == expected + 1 else f"{expected}..{e.seq - 1}"
            return Problem(name, e.seq, e.ref, "deleted",
                           f"record(s) at seq {gap} missing (between {last_ref} and this record)"), None
        if e.content_ok:
            return Problem(name, e.seq, e.ref, "altered", e.content_ok), None
        if e.prev_hash != prev:
            return _broken_link(conn, name, e, last_ref), None
        if ch.entry_hash(name, e.seq, e.kind, e.prev_hash, e.content_hash) != e.hash:
            return Problem(name, e.seq, e.ref, "altered", "its chain hash was changed"), None
        if e.seq in checkpoints and checkpoints[e.seq] != e.hash:
            return Problem(name, e.seq, e.ref, "altered",
                           "differs from the checkpoint written when it was logged (chain rewritten)"), None
        prev, expected, last_ref = e.hash, e.seq + 1, e.ref
    last = expected - 1
    head = conn.execute(select(Head.seq, Head.hash).where(Head.chain == name)).first()
    later = [s for s in checkpoints if s > last]
    if head is None and name != ACCESS_CHAIN and last > start:
        return Problem(name, last, last_ref, "altered", "the chain's head row is missing"), None
    if head is not None and int(head.seq) > last or later:
        end = max([int(head.seq) if head is not None else 0, *later])
        return Problem(name, last + 1, f"after {last_ref}", "truncated",
                       f"record(s) at seq {last + 1}..{end} missing at the end of the chain"), None
    if head is not None and (int(head.seq) != last or str(head.hash) != prev):
        return Problem(name, last, last_ref, "altered", "the chain's head row does not match its last record"), None
    return None, ChainState(name, last, prev)


def _broken_link(conn: Connection, name: str, e: _Entry, last_ref: str) -> Problem:
    """Say why ``e`` does not follow its predecessor, from where the hash it points to really is."""
    target = None
    for table in (Exchange, Delivery):
        row = conn.execute(select(table.seq).where(table.node == name, table.hash == e.prev_hash)).first()
        if row:
            target = int(row.seq)
    if name == ACCESS_CHAIN:
        row = conn.execute(select(Access.seq).where(Access.hash == e.prev_hash)).first()
        target = int(row.seq) if row else None
    if target is not None and target > e.seq:
        return Problem(name, e.seq, e.ref, "reordered",
                       f"it was logged after the record now at seq {target}, not after {last_ref}")
    if target is not None and target < e.seq - 1:
        return Problem(name, e.seq, e.ref, "deleted",
                       f"it was logged right after seq {target}: the records in between were deleted "
                       "and the rest renumbered")
    # Its own hash still says where it was logged: renumbering after a deletion shows here.
    for s in range(e.seq + 1, e.seq + 100_000):
        if ch.entry_hash(name, s, e.kind, e.prev_hash, e.content_hash) == e.hash:
            return Problem(name, e.seq, e.ref, "deleted",
                           f"it was logged at seq {s}: {s - e.seq} record(s) before it were deleted "
                           "and the rest renumbered")
    return Problem(name, e.seq, e.ref, "deleted",
                   f"the record it was logged after is no longer in the chain after {last_ref} "
                   "(deleted or replaced)")


def _entries(conn: Connection, name: str, start: int) -> Iterator[_Entry]:
    if name == ACCESS_CHAIN:
        return _access_entries(conn, start)
    return heapq.merge(_exchange_entries(conn, name, start), _delivery_entries(conn, name, start),
                       key=lambda e: e.seq)


def _exchange_entries(conn: Connection, name: str, start: int) -> Iterator[_Entry]:
    last = start
    while True:
        rows = conn.execute(select(Exchange).where(Exchange.node == name, Exchange.seq > last)
                            .order_by(Exchange.seq).limit(_BATCH)).all()
        if not rows:
            return
        ids = [r.id for r in rows]
        recipients: dict[str, list[dict[str, Any]]] = {}
        for rcpt in conn.execute(select(Recipient).where(Recipient.exchange_id.in_(ids))):
            recipients.setdefault(rcpt.exchange_id, []).append(
                {"address": rcpt.address, "agency": rcpt.agency, "unit": rcpt.unit, "official": rcpt.official,
                 "local": rcpt.local, "time": rcpt.time})
        rules: dict[str, list[str]] = {}
        for x_id, rule in conn.execute(select(RuleHit.exchange_id, RuleHit.rule).where(
                RuleHit.exchange_id.in_(ids))):
            rules.setdefault(x_id, []).append(rule)
        agencies: dict[str, list[str]] = {}
        for x_id, agency in conn.execute(select(AgencyHit.exchange_id, AgencyHit.agency).where(
                AgencyHit.exchange_id.in_(ids))):
            agencies.setdefault(x_id, []).append(agency)
        for r in rows:
            yield _Entry(int(r.seq), ch.KIND_EXCHANGE, f"exchange {r.id}",
                         _check_exchange(r, recipients.get(r.id, []), sorted(rules.get(r.id, [])),
                                         sorted(agencies.get(r.id, []))),
                         r.prev_hash, r.hash, r.content_hash)
        last = int(rows[-1].seq)


def _check_exchange(r: Any, recipients: list[dict[str, Any]], rules: list[str], agencies: list[str]) -> str | None:
    if ch.sha256_text(r.record) != r.content_hash:
        return "its decision record was changed after it was logged"
    record = json.loads(r.record)
    if record.get("id") != r.id:
        return f"its id column says {r.id} but its record says {record.get('id')}"
    want_body = record.get("body_sha256")
    if r.body is not None and hashlib.sha256(r.body.encode("utf-8")).hexdigest() != want_body:
        return "its archived body was changed or added after it was logged"
    if r.body is None and want_body:
        return "its archived body was removed"
    d = derive(record)
    for col, value in d.columns.items():
        if getattr(r, col) != value:
            return f"its search column {col!r} no longer matches its record ({getattr(r, col)!r} != {value!r})"
    have = sorted((x["address"], x["agency"], x["unit"], x["official"], x["local"], x["time"]) for x in recipients)
    want = sorted((x["address"], x["agency"], x["unit"], x["official"], x["local"], x["time"]) for x in d.recipients)
    if have != want:
        return "its recipient rows no longer match its record"
    if rules != d.rules:
        return "its rule rows no longer match its record"
    if agencies != d.agencies:
        return "its agency rows no longer match its record"
    return None


def _delivery_entries(conn: Connection, name: str, start: int) -> Iterator[_Entry]:
    last = start
    while True:
        rows = conn.execute(select(Delivery).where(Delivery.node == name, Delivery.seq > last)
                            .order_by(Delivery.seq).limit(_BATCH)).all()
        if not rows:
            return
        for d in rows:
            content = ch.sha256_text(ch.delivery_content(d.exchange_id, d.recipient, d.time, d.status, d.reply,
                                                         d.attempt))
            bad = None if content == d.content_hash else "this delivery event was changed after it was logged"
            yield _Entry(int(d.seq), ch.KIND_DELIVERY, f"delivery {d.exchange_id} to {d.recipient} "
                         f"attempt {d.attempt}", bad, d.prev_hash, d.hash, d.content_hash)
        last = int(rows[-1].seq)


def _access_entries(conn: Connection, start: int) -> Iterator[_Entry]:
    last = start
    while True:
        rows = conn.execute(select(Access).where(Access.seq > last).order_by(Access.seq)
                            .limit(_BATCH)).all()
        if not rows:
            return
        for a in rows:
            content = ch.sha256_text(ch.access_content(a.time, a.os_user, a.host, a.command, a.args))
            bad = None if content == a.content_hash else "this access record was changed after it was logged"
            yield _Entry(int(a.seq), ch.KIND_ACCESS, f"access by {a.os_user}: {a.command}", bad,
                         a.prev_hash, a.hash, a.content_hash)
        last = int(rows[-1].seq)
