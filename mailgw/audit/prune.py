"""Removing old exchanges from the log while keeping every chain verifiable.

Only a prefix of a chain can go: the records before the first one that is not
older than the cut-off date (a record logged late with an old time stays, as
does everything after it). Where it cuts, a ``prune`` checkpoint keeps the
hash of the last removed record, which is the hash of the whole removed
prefix; verify starts the chain from there. Nothing is removed from a chain
that does not verify: that would erase the evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Connection, Engine, delete, func, insert, select

from mailgw.audit.log import lock_head
from mailgw.audit.schema import ACCESS_CHAIN, AgencyHit, Checkpoint, Delivery, DmarcSource, Exchange, Recipient, RuleHit
from mailgw.audit.store import IMMEDIATE
from mailgw.audit.verify import Problem, verify_engine


@dataclasses.dataclass(frozen=True)
class Pruned:
    """What prune did to one chain: records removed, and the checkpoint left (seq, hash)."""

    chain: str
    removed: int
    seq: int
    hash: str


def prune(engine: Engine, before: dt.datetime) -> tuple[list[Problem], list[Pruned]]:
    """Remove each chain's records older than ``before`` (naive UTC); refuse if any chain is broken."""
    problems, heads = verify_engine(engine)
    if problems:
        return problems, []
    done = []
    for state in heads:
        if state.chain == ACCESS_CHAIN:
            continue  # who looked at the log is kept for as long as the database lives
        with engine.connect().execution_options(**IMMEDIATE) as conn:
            with conn.begin():
                result = _prune_chain(conn, state.chain, before)
        if result:
            done.append(result)
    # The DMARC counts of those days go with them (they are not chained: counts, no record).
    with engine.connect().execution_options(**IMMEDIATE) as conn:
        with conn.begin():
            conn.execute(delete(DmarcSource).where(DmarcSource.day < before.date()))
    return [], done


def _prune_chain(conn: Connection, name: str, before: dt.datetime) -> Pruned | None:
    head_seq, _ = lock_head(conn, name)
    start = conn.execute(select(func.max(Checkpoint.seq)).where(
        Checkpoint.chain == name, Checkpoint.kind == "prune")).scalar() or 0
    firsts = [conn.execute(select(func.min(t.seq)).where(t.node == name, t.seq > start, t.time >= before)).scalar()
              for t in (Exchange, Delivery)]
    keep_from = min([s for s in firsts if s is not None], default=head_seq + 1)
    cut = keep_from - 1
    if cut <= start:
        return None
    last_hash = None
    for t in (Exchange, Delivery):
        row = conn.execute(select(t.hash).where(t.node == name, t.seq == cut)).first()
        if row:
            last_hash = str(row.hash)
    if last_hash is None:
        raise RuntimeError(f"chain {name}: no record at seq {cut} although it verified")
    gone = select(Exchange.id).where(Exchange.node == name, Exchange.seq <= cut)
    conn.execute(delete(Recipient).where(Recipient.exchange_id.in_(gone)))
    conn.execute(delete(RuleHit).where(RuleHit.exchange_id.in_(gone)))
    conn.execute(delete(AgencyHit).where(AgencyHit.exchange_id.in_(gone)))
    removed = conn.execute(delete(Exchange).where(Exchange.node == name, Exchange.seq <= cut)).rowcount
    removed += conn.execute(delete(Delivery).where(Delivery.node == name, Delivery.seq <= cut)).rowcount
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    conn.execute(insert(Checkpoint).values(chain=name, seq=cut, hash=last_hash, kind="prune", time=now,
                                           pruned=removed))
    return Pruned(name, removed, cut, last_hash)
