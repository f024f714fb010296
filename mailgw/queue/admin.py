"""Admin actions on the spool (`mailgw queue hold|release|delete|requeue|bounce|flush`), each on the record.

Which messages: ids, ``ALL``, or ``-`` for ids on standard input (one or more a
line, or the JSON lines of ``queue list --json``), narrowed by filters
(sender, recipient, state, age). Every hold, release, delete, requeue and
bounce is an event in the message's delivery history in the exchange log
(``audit show ID``), for each recipient still pending: its status names the
action (:data:`ADMIN_STATUSES`), its reply says which OS user did it, on which
host, and why when a reason is given. The event's ``attempt`` numbers the admin
actions on that message (1, 2, ...), so repeating an action is a new event.

The action comes first, then its record: an action that did not happen is
never recorded. When the exchange log's database does not answer, the events
go to the journal under the spool (``spool/journal/``), which the running
gateway replays into the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import time
from typing import Any, Iterable, Sequence

from mailgw.queue.spool import HELD, PENDING, QUEUED, STATE_NAMES, Entry, Spool, SpoolError

ACTIONS = {  # action -> (the delivery-history status it records, or None; where a message must be; past tense)
    "hold": ("held", (QUEUED,), "held"),
    "release": ("released", (HELD,), "released"),
    "delete": ("deleted", (QUEUED, HELD), "deleted"),
    "requeue": ("requeued", (QUEUED,), "requeued"),
    "bounce": ("bounced-by-admin", (QUEUED, HELD), "marked to be returned to its sender"),
    "flush": (None, (QUEUED,), "due now"),
}
ADMIN_STATUSES = tuple(status for status, _, _ in ACTIONS.values() if status)
STATES = ("queued", "deferred", "held")


@dataclasses.dataclass(frozen=True)
class Filters:
    """What ``queue list`` and ``ALL`` select; every given filter must match."""

    sender: str | None = None
    recipient: str | None = None
    state: str | None = None  # queued (waiting, not tried or due), deferred (tried, waiting to retry), held
    older_than: float | None = None  # seconds since the message was received
    newer_than: float | None = None

    def match(self, e: Entry, now: float) -> bool:
        env = e.meta.get("envelope", {})
        if self.sender is not None and str(env.get("mail_from", "")).lower() != self.sender.lower():
            return False
        if self.recipient is not None and self.recipient.lower() not in (str(r).lower() for r in env.get("rcpts", [])):
            return False
        if self.state is not None and state_of(e) != self.state and not (self.state == "queued" and state_of(e) == "deferred"):
            return False
        age = now - float(env.get("received_at", now))
        if self.older_than is not None and age < self.older_than:
            return False
        return self.newer_than is None or age < self.newer_than


def state_of(e: Entry) -> str:
    """``held``, ``deferred`` (queued after a failed attempt, waiting for its next try) or ``queued``."""
    if e.where == HELD:
        return "held"
    return "deferred" if e.state.get("attempts", 0) else STATE_NAMES[e.where]


def pending(e: Entry) -> list[str]:
    """Recipients not yet settled (all of them before the first attempt)."""
    rcpts = e.state.get("rcpts")
    if not rcpts:
        return list(e.meta.get("envelope", {}).get("rcpts", []))
    return [r for r, s in rcpts.items() if s.get("status") == PENDING]


def read_ids(tokens: Sequence[str], stdin: Iterable[str]) -> list[str]:
    """Ids from the command line; ``-`` reads more from ``stdin`` (words, or ``queue list --json`` lines)."""
    ids: list[str] = []
    for token in tokens:
        if token != "-":
            ids.append(token)
            continue
        for line in stdin:
            line = line.strip()
            if line.startswith("{"):
                try:
                    ids.append(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"not a line of `queue list --json`: {line[:80]!r}") from None
            else:
                ids += line.split()
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def select(spool: Spool, action: str, ids: Sequence[str], filters: Filters,
           now: float | None = None) -> tuple[list[Entry], list[str]]:
    """The messages ``action`` applies to, and a problem for each named id it cannot apply to.

    ``ALL`` (alone) means every message in a place the action applies to that matches ``filters``.
    """
    now = time.time() if now is None else now
    _, places, _ = ACTIONS[action]
    if list(ids) == ["ALL"]:
        return [e for where in places for e in spool.entries(where) if filters.match(e, now)], []
    chosen: list[Entry] = []
    problems: list[str] = []
    for msg_id in ids:
        try:
            entry, _ = spool.read(msg_id, with_data=False)
        except ValueError:
            problems.append(f"{msg_id!r} is not a message id")
            continue
        except FileNotFoundError:
            problems.append(f"{msg_id}: no such message")
            continue
        except SpoolError as e:
            problems.append(str(e))
            continue
        if entry.where not in places:
            problems.append(f"{msg_id}: {STATE_NAMES[entry.where]}, not " + " or ".join(STATE_NAMES[p] for p in places))
        elif filters.match(entry, now):
            chosen.append(entry)
    return chosen, problems


def perform(spool: Spool, action: str, entry: Entry, who: str) -> bool:
    """Do ``action`` to one message; False when it is no longer where it was (delivered or moved meanwhile)."""
    if action == "hold":
        return spool.hold(entry.id)
    if action == "release":
        return spool.release(entry.id, {"by": who, "time": time.time()})
    if action == "delete":
        return spool.delete(entry.id)
    if action == "requeue":
        return spool.requeue(entry.id)
    if action == "bounce":
        return spool.request_bounce(entry.id)
    raise ValueError(f"not a one-message action: {action}")  # flush: Spool.flush, all ids at once


def who() -> str:
    from mailgw.audit.access import os_user

    return f"{os_user()} on {socket.gethostname()}"


def events(action: str, entries: Sequence[Entry], by: str, reason: str | None, numbers: dict[str, int],
           when: dt.datetime) -> list[dict[str, Any]]:
    """The delivery-history events of ``action`` done to ``entries`` at ``when``; ``numbers``: admin actions
    so far per id."""
    status = ACTIONS[action][0]
    if status is None:
        return []
    reply = f"mailgw queue {action} by {by}" + (f": {reason}" if reason else "")
    out = []
    for e in entries:
        for rcpt in pending(e) or e.meta.get("envelope", {}).get("rcpts", []):
            out.append({"exchange_id": e.id, "recipient": rcpt, "time": when.isoformat(), "status": status, "reply": reply,
                        "attempt": numbers.get(e.id, 0) + 1})
    return out


def record(url: str, node: str, journal_dir: str, action: str, entries: Sequence[Entry], by: str,
           reason: str | None, when: dt.datetime) -> str:
    """Put the events of ``action`` in the exchange log (else its journal); returns where they went.

    ``when`` is the time taken just before the action: a released message's delivery, which may come
    before this record is written, comes after its release in the history.
    """
    if ACTIONS[action][0] is None or not entries:
        return ""
    from sqlalchemy import func
    from sqlalchemy import select as sql_select

    from mailgw.audit.log import AuditLog
    from mailgw.audit.schema import Delivery
    from mailgw.audit.writer import Journal

    ids = [e.id for e in entries]
    try:
        log = AuditLog.open(url, node)
        try:
            numbers: dict[str, int] = {}
            with log.engine.connect() as conn:
                for i in range(0, len(ids), 500):
                    rows = conn.execute(sql_select(Delivery.exchange_id, func.max(Delivery.attempt))
                                        .where(Delivery.exchange_id.in_(ids[i:i + 500]),
                                               Delivery.status.in_(ADMIN_STATUSES))
                                        .group_by(Delivery.exchange_id))
                    numbers.update({str(x): int(n) for x, n in rows})
            log.delivery(events(action, entries, by, reason, numbers, when))
            return "the exchange log"
        finally:
            log.close()
    except Exception:  # the database is down or refuses: the journal keeps the events for the gateway
        # Without the log the count of earlier actions is unknown: the clock numbers them instead.
        stamp = int(time.time())
        Journal(journal_dir).write([("delivery", ev) for ev in events(action, entries, by, reason,
                                                                       {i: stamp for i in ids}, when)])
        return f"the journal {journal_dir} (the exchange log is unavailable; the gateway replays it)"


def keep_records(journal_dir: str, entries: Sequence[Entry]) -> None:
    """Journal the decision records of messages about to be deleted, before their spool files go.

    The record of a message just accepted may be committed without a flush of its own, its
    spool file being its durable copy until its outcomes are committed durably
    (mailgw.audit.writer.record_spooled); a delete removes that copy. The gateway's replay
    skips records the log already has, so this costs one small file per deleted message.
    Raises OSError when the journal cannot be written: then nothing may be deleted.
    """
    from mailgw.audit.writer import Journal

    records = [("record", e.meta["record"]) for e in entries if isinstance(e.meta.get("record"), dict)]
    if records:
        Journal(journal_dir).write(records)


def journal_dir(spool_path: str) -> str:
    from mailgw.audit.writer import JOURNAL

    return os.path.join(spool_path, JOURNAL)
