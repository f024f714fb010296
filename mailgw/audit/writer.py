"""The gateway's side of the exchange log: every decision and delivery outcome is kept before the reply.

The SMTP edge awaits :meth:`AuditWriter.record` before it answers DATA, so a
client never gets a 250 or a 5xx for an exchange whose record is not kept.
One writer thread owns the database: concurrent records are committed
together (group commit), so the cost of a commit is shared by everyone
waiting for it.

"Kept" means one of two durable places:

1. the exchange log (the ``database:`` setting), committed; or
2. the **journal**, when the database fails or does not answer within
   :attr:`AuditWriter.timeout`: one small JSON file per record under
   ``SPOOL/journal/`` (written in a temporary file, fsync-ed, renamed, the
   directory fsync-ed: the spool's own recipe). The writer replays the
   journal into the log every :attr:`AuditWriter.retry` seconds, and at
   start-up; a replay adds nothing that is already logged (same exchange id,
   same delivery event), so replaying twice is harmless.

If neither takes a record (database down *and* the journal cannot be
written), :class:`RecordNotKept` is raised and the edge answers 451: the
client tries again later, and nothing was decided without a record.

Accepted and quarantined mail has a third copy: the record is in the spool
file, fsync-ed before the log is even asked. At start-up
:meth:`AuditWriter.start` logs the records of every spooled message, so a
crash between the spool write and the log commit (the client never got its
250, but the message will be delivered) still leaves the record.

That copy is also why such a record (:meth:`AuditWriter.record_spooled`) is
committed without a flush of its own: the commit is in the log, for every
reader, before the 250, and the disk keeps it through the spool file until
the message's delivery outcomes are committed, durably, which flushes the
log's write-ahead log with everything before them; only then is the spool
file removed. A batch with anything else in it (a refusal, a delivery
outcome) is committed durably as before. When an outcome goes to the journal
instead, the message's record goes with it (``on_delivery``'s ``record``),
since its spool file is about to be removed. On this machine the flush cost
the reply to DATA 0.4 ms at one session (README, Performance).

Bodies never come here: a decision record carries metadata and hashes only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
from typing import Any, Iterable, Mapping

from mailgw.audit.log import WAL_CHECKPOINT_SECONDS, AuditLog
from mailgw.durable import fsync_dir, replacing, unlink_if_present

log = logging.getLogger(__name__)

JOURNAL = "journal"
"""The journal's directory name under the spool directory."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHUNK = 500


class RecordNotKept(Exception):
    """Neither the exchange log nor the journal took the record: the exchange must get a 4xx."""


@dataclasses.dataclass
class _Job:
    kind: str  # record | delivery
    payload: dict[str, Any]
    done: asyncio.Future[None] | None = None  # the waiting caller's (none for a journal replay)
    spooled: bool = False  # a record also held by an fsync-ed spool file: no flush of its own
    companion: dict[str, Any] | None = None  # a delivery outcome's record, journaled with it


class _Late(Exception):
    """The database did not answer within ``AuditWriter.timeout``."""


_STOP = object()


class Journal:
    """Entries waiting for the exchange log: one fsync-ed JSON file each, named after what they hold."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(path, "bad"), mode=0o700, exist_ok=True)

    def write(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Store ``(kind, payload)`` entries durably; an entry already there is replaced by the same content."""
        for kind, payload in entries:
            name = _entry_name(kind, payload)
            text = json.dumps({kind: payload}, ensure_ascii=False, sort_keys=True, allow_nan=False)
            with replacing(os.path.join(self.path, name), sync_dir=False) as f:  # one directory fsync for all
                f.write(text.encode())
        fsync_dir(self.path)

    def names(self) -> list[str]:
        """The entries waiting, oldest first (by name: records, then delivery events)."""
        with os.scandir(self.path) as it:
            return sorted(e.name for e in it if e.is_file() and e.name.endswith(".json") and not e.name.startswith("."))

    def pending(self) -> bool:
        try:
            with os.scandir(self.path) as it:
                return any(e.name.endswith(".json") and not e.name.startswith(".") for e in it)
        except OSError:
            return False  # an unreadable journal holds nothing we could replay; writing to it reports the error

    def read(self, name: str) -> tuple[str, dict[str, Any]]:
        with open(os.path.join(self.path, name), encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError("not a journal entry")
        ((kind, payload),) = data.items()
        if kind not in ("record", "delivery") or not isinstance(payload, dict):
            raise ValueError(f"unknown journal entry kind {kind!r}")
        return kind, payload

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            unlink_if_present(os.path.join(self.path, name))
        fsync_dir(self.path)

    def set_aside(self, name: str) -> None:
        """Move an entry the log refuses into ``bad/``, for an admin: it would fail at every replay."""
        os.replace(os.path.join(self.path, name), os.path.join(self.path, "bad", name))


def _entry_name(kind: str, payload: Mapping[str, Any]) -> str:
    if kind == "record":
        rid = str(payload.get("id"))
        return f"R-{rid if _SAFE_NAME.fullmatch(rid) else _digest(rid)}.json"
    key = "|".join(str(payload.get(k)) for k in ("exchange_id", "recipient", "attempt", "status"))
    return f"S-{_digest(key)}.json"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class AuditWriter:
    """Feeds decision records and delivery events to the exchange log, or to the journal when it is down."""

    timeout = 10.0
    """Seconds a reply may wait for the database before the journal takes the record instead."""
    retry = 30.0
    """Seconds between attempts to reach the database again and replay the journal."""
    batch = 500
    """Most records committed in one transaction."""
    linger = 0.02
    """Seconds delivery outcomes wait for more before their commit. No reply waits on them, and
    each of their commits flushes the disk while it holds every writer of the log (on SQLite the
    writers' lock): fewer of them leave the lock to the records that replies wait on. A record
    that comes meanwhile is committed at once, and the outcomes with it."""

    def __init__(self, url: str, node: str, journal_dir: str, *, timeout: float | None = None,
                 retry: float | None = None, checkpoints: bool = True):
        self.url = url
        self.node = node
        self.checkpoints = checkpoints  # SQLite: this process's writer copies the write-ahead log (AuditLog._checkpoint)
        if timeout is not None:
            self.timeout = timeout
        if retry is not None:
            self.retry = retry
        self.journal = Journal(journal_dir)
        self._log: AuditLog | None = None
        self._healthy = False
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._next_replay = 0.0

    @property
    def healthy(self) -> bool:
        """Whether records go to the database (else to the journal until it answers again)."""
        return self._healthy

    # --- lifecycle (called from a worker thread at start-up and drain) ---------------------------

    def start(self, spooled: Iterable[Mapping[str, Any]] = ()) -> None:
        """Open the log, replay the journal and the records of ``spooled`` messages, start the writer thread.

        Called before the listeners open. A database that is down is not fatal:
        the gateway runs on the journal until it answers. Spooled messages'
        records may be missing from the log after a crash between the spool
        write and the commit (that client never got its 250, but the message
        will be delivered); records already logged are skipped. While the
        database is down they go to the journal, since their spool files may be
        delivered and removed before it comes back.
        """
        self._connect()
        items = [dict(r) for r in spooled if _complete(r)]
        for i in range(0, len(items), _CHUNK):
            chunk = items[i:i + _CHUNK]
            if self._healthy and self._log is not None:
                try:
                    self._append_checked(chunk)
                    continue
                except Exception as e:
                    self._unavailable(e)
            try:
                self.journal.write([("record", r) for r in chunk])
            except (OSError, ValueError, TypeError) as e:
                log.error("exchange log: %d spooled record(s) neither logged nor journaled (%s); they are "
                          "retried at the next start while their messages are spooled", len(items) - i, e)
                break
        if items:
            log.info("exchange log: records of %d spooled message(s) checked%s", len(items),
                     "" if self._healthy else " (journaled: the database is unavailable)")
        self._thread = threading.Thread(target=self._run, name="mailgw-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the thread and close the database."""
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("exchange log: the writer did not finish in %.0f s; queued records are in the journal "
                          "or the spool and will be replayed at the next start", timeout)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- the gateway's calls (on the event loop) ---------------------------------------------------

    async def record(self, rec: dict[str, Any]) -> None:
        """Keep one decision record; returns once it is committed or journaled, else raises RecordNotKept."""
        await self._keep("record", rec)

    async def record_spooled(self, rec: dict[str, Any]) -> None:
        """``record`` for a message whose spool file (fsync-ed, holding this record) stays until its
        delivery outcomes are kept: committed without a flush of its own (see the module's docstring)."""
        await self._keep("record", rec, spooled=True)

    async def on_delivery(self, event: Mapping[str, Any]) -> None:
        """Keep one delivery outcome as the delivery worker reports it (``id``, ``rcpt``, ``time``, ...).

        ``record``, when the event has it, is the message's decision record: journaled with
        the outcome if the log cannot take it, as the spool file that kept it is removed next.
        """
        companion = event.get("record")
        await self._keep("delivery", delivery_event(event), companion=companion if isinstance(companion, dict) else None)

    async def _keep(self, kind: str, payload: dict[str, Any], *, spooled: bool = False,
                    companion: dict[str, Any] | None = None) -> None:
        if self._healthy and self._thread is not None:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(self.timeout, _too_late, done)
            self._jobs.put(_Job(kind, payload, done, spooled, companion))
            try:
                await done
                return
            except _Late:
                # The thread still owns the job and will commit or journal it; so do we, now.
                if self._healthy:
                    log.error("exchange log: no answer from the database in %.1f s; records go to the journal "
                              "%s until it answers again", self.timeout, self.journal.path)
                self._healthy = False
            finally:
                timer.cancel()
        try:
            await asyncio.to_thread(self.journal.write, _entries([_Job(kind, payload, companion=companion)]))
        except (OSError, ValueError, TypeError) as e:
            raise RecordNotKept(f"{kind} for {payload.get('id') or payload.get('exchange_id')}: database "
                                f"unavailable and journal not writable: {e}") from e

    # --- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:  # never let the thread die: every waiting reply would stall until its timeout
                log.exception("exchange log writer: unexpected error")
                time.sleep(0.1)

    def _step(self) -> bool:
        """Commit one batch (or reconnect when idle); True when asked to stop."""
        try:
            job = self._jobs.get(timeout=self._wait())
        except queue.Empty:
            if time.monotonic() >= self._next_replay:
                self._connect()
            elif self._healthy and self._log is not None:
                self._log.checkpoint_if_due()  # the serving processes may be writing while this one is idle
            return False
        jobs = [job]
        while len(jobs) < self.batch and jobs[-1] is not _STOP:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        if self.linger > 0 and all(j is not _STOP and j.kind == "delivery" for j in jobs):
            until = time.monotonic() + self.linger
            while len(jobs) < self.batch and (left := until - time.monotonic()) > 0:
                try:
                    job = self._jobs.get(timeout=left)
                except queue.Empty:
                    break
                jobs.append(job)
                if job is _STOP or job.kind != "delivery":
                    break
        stop = jobs[-1] is _STOP
        work = [j for j in jobs if j is not _STOP]
        # Records and delivery outcomes waiting together share one transaction: their rows cost
        # the records' clients far less than a second commit (a second fsync on SQLite) would cost
        # the next batch.
        if work:
            self._commit(work)
        if stop:
            return True
        if time.monotonic() >= self._next_replay:
            if not self._healthy or self.journal.pending():
                self._connect()
            else:
                self._next_replay = time.monotonic() + self.retry
        return False

    def _wait(self) -> float:
        """Seconds until the journal is looked at again (every ``retry``: another process of the
        node may have written to it), or the database tried again when it is unavailable; for a
        writer that checkpoints, at most WAL_CHECKPOINT_SECONDS."""
        wait = self._next_replay - time.monotonic()
        if self.checkpoints:
            wait = min(wait, WAL_CHECKPOINT_SECONDS)
        return max(0.01, wait)

    def _commit(self, jobs: list[_Job]) -> None:
        if self._healthy and self._log is not None:
            try:
                self._write(jobs)
                _settle(jobs)
                return
            except (ValueError, TypeError):
                # A record the log cannot take (a bug): keep the others, refuse that one.
                for j in jobs:
                    try:
                        self._write([j])
                        _settle([j])
                    except (ValueError, TypeError) as e:
                        log.error("exchange log: %s refused: %s", j.kind, e)
                        _settle([j], RecordNotKept(str(e)))
                    except Exception as e:
                        self._unavailable(e)
                        self._to_journal([j])
                return
            except Exception as e:
                self._unavailable(e)
        self._to_journal(jobs)

    def _write(self, jobs: list[_Job]) -> None:
        assert self._log is not None
        self._log.write([j.payload for j in jobs if j.kind == "record"],
                        [j.payload for j in jobs if j.kind == "delivery"],
                        durable=not all(j.spooled for j in jobs))

    def _to_journal(self, jobs: list[_Job]) -> None:
        try:
            self.journal.write(_entries(jobs))
        except (OSError, ValueError, TypeError) as e:
            log.error("exchange log: journal %s not writable either: %s", self.journal.path, e)
            _settle(jobs, RecordNotKept(f"database unavailable and journal not writable: {e}"))
            return
        _settle(jobs)

    def _unavailable(self, error: BaseException) -> None:
        if self._healthy:
            log.error("exchange log unavailable (%s); records go to the journal %s until it is back",
                      _short(error), self.journal.path)
        self._healthy = False
        self._next_replay = time.monotonic() + self.retry

    def _connect(self) -> None:
        """(Re)open the log if needed and replay the journal; healthy again only if all of that worked."""
        self._next_replay = time.monotonic() + self.retry
        try:
            if self._log is None:
                self._log = AuditLog.open(self.url, self.node, checkpoints=self.checkpoints)
            replayed = self._replay_journal()
        except Exception as e:
            if self._healthy or self._log is None:
                log.warning("exchange log at %s not reachable: %s; retrying every %g s",
                            _redact(self.url), _short(e), self.retry)
            self._unavailable(e)
            return
        if not self._healthy:
            log.info("exchange log %s open, node %s%s", _redact(self.url), self.node,
                     f"; {replayed} journal entries replayed" if replayed else "")
        elif replayed:
            log.info("exchange log: %d journal entries replayed", replayed)
        self._healthy = True

    def _replay_journal(self) -> int:
        assert self._log is not None
        try:
            names = self.journal.names()
        except OSError as e:  # the journal's own trouble must not keep records from the database
            log.error("exchange log: journal %s unreadable: %s", self.journal.path, e)
            return 0
        done = 0
        for i in range(0, len(names), _CHUNK):
            chunk: list[tuple[str, str, dict[str, Any]]] = []
            for name in names[i:i + _CHUNK]:
                try:
                    kind, payload = self.journal.read(name)
                except FileNotFoundError:
                    continue
                except ValueError as e:
                    log.error("exchange log: journal entry %s unreadable (%s); moved to bad/", name, e)
                    self.journal.set_aside(name)
                    continue
                chunk.append((name, kind, payload))
            jobs = [_Job(kind, payload) for _, kind, payload in chunk]
            try:
                self._write(jobs)
            except (ValueError, TypeError):
                for (name, kind, payload), job in zip(chunk, jobs):
                    try:
                        self._write([job])
                    except (ValueError, TypeError) as e:
                        log.error("exchange log: journal entry %s refused (%s); moved to bad/", name, e)
                        self.journal.set_aside(name)
            self.journal.remove(name for name, _, _ in chunk)
            done += len(chunk)
        return done

    def _append_checked(self, records: list[dict[str, Any]]) -> None:
        """Append; a record the log refuses (a bug) is logged as an error and skipped, not retried forever."""
        assert self._log is not None
        try:
            self._log.append(records)
        except (ValueError, TypeError):
            for r in records:
                try:
                    self._log.append([r])
                except (ValueError, TypeError) as e:
                    log.error("exchange log: spooled record %s refused: %s", r.get("id"), e)


def delivery_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery worker's event as the log's delivery event (who answered goes into the reply text)."""
    reply = str(event.get("reply") or "")
    remote = str(event.get("remote") or "")
    when = dt.datetime.fromtimestamp(float(event["time"]), dt.timezone.utc)
    return {
        "exchange_id": str(event["id"]), "recipient": str(event["rcpt"]), "time": when.isoformat(),
        "status": str(event["status"]), "reply": f"{remote}: {reply}" if remote else reply,
        "attempt": int(event["attempt"]),
    }


def _entries(jobs: list[_Job]) -> list[tuple[str, dict[str, Any]]]:
    """The journal entries of ``jobs``: each job's, and a delivery outcome's record after it."""
    entries = []
    for j in jobs:
        entries.append((j.kind, j.payload))
        if j.companion is not None:
            entries.append(("record", j.companion))
    return entries


def _complete(rec: Mapping[str, Any]) -> bool:
    # Spool files written before DSNs had a full record carry only {"id", "dsn_for"}.
    return isinstance(rec, Mapping) and bool(rec.get("id")) and "time" in rec and "decision" in rec


def _settle(jobs: list[_Job], error: BaseException | None = None) -> None:
    """Wake the callers of ``jobs``: one call into each event loop for the whole batch, not one per job."""
    waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for j in jobs:
        if j.done is not None:
            waiting.setdefault(j.done.get_loop(), []).append(j.done)
    for loop, futures in waiting.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures, error)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for f in futures:
        if not f.done():  # not given up already (timed out, or its caller cancelled)
            if error is None:
                f.set_result(None)
            else:
                f.set_exception(error)


def _too_late(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(_Late())


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


__all__ = ["AuditWriter", "Journal", "JOURNAL", "RecordNotKept", "delivery_event"]
