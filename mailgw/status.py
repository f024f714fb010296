"""What the running gateway publishes about itself, and ``mailgw status``, which reads it.

The serving process that delivers (the only one, or the supervisor of
``workers:``) keeps ``SPOOL/status.json`` up to date: its pid, the policy and
directory versions in force, the outcome of the last reload, whether the
exchange log takes records in its database or in the local journal. The file
is replaced atomically (mailgw.durable), so a reader never sees half of it.
``mailgw status`` adds what the spool itself says: messages per queue state
and the journal's backlog.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any

from mailgw.durable import replacing

STATUS_FILE = "status.json"


def path(spool: str) -> str:
    return os.path.join(spool, STATUS_FILE)


def write(spool: str, data: dict[str, Any]) -> None:
    with replacing(path(spool)) as f:
        f.write(json.dumps({**data, "updated": _now()}, ensure_ascii=False, indent=1).encode())


def read(spool: str) -> dict[str, Any] | None:
    try:
        with open(path(spool), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def queue_counts(spool: str, now: float | None = None) -> dict[str, int]:
    """Messages per state: ``active`` (due now), ``deferred`` (waiting for a retry), ``hold``, ``corrupt``."""
    now = time.time() if now is None else now
    counts = {"active": 0, "deferred": 0, "hold": 0, "corrupt": 0}
    for name in _files(os.path.join(spool, "queue")):
        next_try = 0.0
        try:
            with open(os.path.join(spool, "state", name + ".json"), encoding="utf-8") as f:
                next_try = float(json.load(f).get("next_try", 0.0))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        counts["deferred" if next_try > now else "active"] += 1
    counts["hold"] = len(_files(os.path.join(spool, "hold")))
    counts["corrupt"] = len(_files(os.path.join(spool, "corrupt")))
    return counts


def journal_backlog(spool: str) -> dict[str, int]:
    """Entries of the exchange log's journal waiting for the database, and those set aside as bad."""
    from mailgw.audit.writer import JOURNAL

    base = os.path.join(spool, JOURNAL)
    return {"waiting": len([n for n in _files(base) if n.endswith(".json")]),
            "bad": len([n for n in _files(os.path.join(base, "bad")) if n.endswith(".json")])}


def gather(spool: str) -> dict[str, Any]:
    """Everything ``mailgw status`` shows, as one JSON-ready dict."""
    published = read(spool)
    running = published is not None and published.get("state") != "stopped" and alive(published.get("pid"))
    out: dict[str, Any] = {"running": running, "spool": spool}
    if published:
        out["gateway"] = published
    out["queue"] = queue_counts(spool)
    out["journal"] = journal_backlog(spool)
    return out


def render(info: dict[str, Any]) -> str:
    g = info.get("gateway") or {}
    lines = []
    if info["running"]:
        lines.append(f"mailgw {g.get('state', 'running')} (pid {g.get('pid')}, node {g.get('node')}, "
                     f"since {g.get('started')}, {g.get('workers', 1)} serving process(es))")
    elif g:
        lines.append(f"mailgw not running (last published by pid {g.get('pid')} at {g.get('updated')}, "
                     f"state {g.get('state')})")
    else:
        lines.append(f"mailgw not running (nothing published in {info['spool']})")
    if g:
        pol = g.get("policies") or {}
        lines.append(f"policies:     version {pol.get('version')} ({pol.get('rules')} rules from {pol.get('files')} files)")
        lines.append(f"directory:    version {(g.get('directory') or {}).get('version')}")
        r = g.get("reload")
        if r:
            lines.append(f"last reload:  {'ok' if r.get('ok') else 'FAILED, running the previous configuration'} "
                         f"at {r.get('time')}" + (f": {r.get('error')}" if r.get("error") else ""))
        where = g.get("exchange_log")
        lines.append("exchange log: " + ("writing to its database" if where == "database"
                                         else "DATABASE UNAVAILABLE: records go to the local journal"))
        if g.get("listeners"):
            lines.append("listeners:    " + ", ".join(f"{k} {v}" for k, v in g["listeners"].items()))
        if g.get("metrics"):
            lines.append(f"metrics:      http://{g['metrics']}/metrics")
    q = info["queue"]
    lines.append(f"queue:        {q['active']} active, {q['deferred']} deferred, {q['hold']} held, {q['corrupt']} corrupt")
    j = info["journal"]
    lines.append(f"journal:      {j['waiting']} record(s) waiting for the database" + (f", {j['bad']} set aside (bad/)" if j["bad"] else ""))
    return "\n".join(lines)


def _files(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return []


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
