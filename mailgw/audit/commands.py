"""The auditors' commands (`mailgw audit ...`, `mailgw report`): plain arguments in, exit status out.

Each command records itself in the auditor access log before it reads
anything, so an interrupted or failed look at the log is still on record.
Exit status as CONTRACT section 1: 0 success, 1 a check failed or nothing was
found, 2 a usage error (a filter or period that cannot be understood).
"""

from __future__ import annotations

import csv
import json as jsonlib
import os
import sys
import tempfile
from typing import Any, Iterator, Mapping, TextIO

from sqlalchemy import func, select
from tqdm import tqdm

from mailgw.audit import query
from mailgw.audit.access import log_access
from mailgw.audit.prune import prune as prune_log
from mailgw.audit.query import FilterError, Filters
from mailgw.audit.schema import Exchange
from mailgw.audit.store import open_engine
from mailgw.audit.verify import verify_engine

CSV_COLUMNS = (
    "id", "time", "node", "seq", "direction", "role", "listener", "client_ip", "helo", "tls", "auth_user",
    "mail_from", "rcpts", "sender", "sender_agency", "sender_unit", "sender_official", "sender_exception",
    "recipients", "recipient_agencies", "header_from", "subject", "message_id", "in_reply_to", "category",
    "doc_type", "doc_number", "secrecy", "secrecy_strength", "urgency", "confidence", "decision", "rule",
    "mode", "matched", "tags", "reply", "dkim_signed", "dkim_aligned_pass", "attachments",
    "signed_attachments", "size", "sha256", "policy_version", "directory_version", "deliveries", "hash",
)


def search(url: str, filters: Mapping[str, Any], json: bool, out: TextIO, err: TextIO = sys.stderr,
           auditor: str | None = None) -> int:
    """`mailgw audit search`: matching exchanges, newest first, one per line (JSON objects with ``json``)."""
    try:
        f = Filters.parse(filters, default_limit=query.DEFAULT_LIMIT)
    except FilterError as e:
        print(f"mailgw audit search: {e}", file=err)
        return 2
    engine = open_engine(url)
    try:
        log_access(engine, "audit search", _who(f.as_args(), auditor))
        with engine.connect() as conn:
            rows = query.search(conn, f)
        for x in rows:
            if json:
                out.write(jsonlib.dumps(query.full_record(x), ensure_ascii=False, sort_keys=True) + "\n")
            else:
                out.write(_line(x) + "\n")
        if not json:
            print(f"{len(rows)} exchange(s)" + (" (limit reached)" if f.limit and len(rows) >= f.limit else ""),
                  file=err)
        return 0
    finally:
        engine.dispose()


def show(url: str, id: str, json: bool, out: TextIO, err: TextIO = sys.stderr, auditor: str | None = None) -> int:
    """`mailgw audit show ID`: one exchange's whole decision record and its delivery history."""
    engine = open_engine(url)
    try:
        log_access(engine, "audit show", _who({"id": id}, auditor))
        with engine.connect() as conn:
            x = conn.execute(select(Exchange).where(Exchange.id == id)).first()
            if x is None:
                print(f"mailgw audit show: no exchange {id!r} in the log", file=err)
                return 1
            rec = query.full_record(x, query.deliveries(conn, [x.id]).get(x.id, []))
        if json:
            out.write(jsonlib.dumps(rec, ensure_ascii=False, sort_keys=True, indent=2) + "\n")
        else:
            out.write(_describe(rec))
        return 0
    finally:
        engine.dispose()


def export(url: str, fmt: str, filters: Mapping[str, Any], out_path: str, progress: bool,
           err: TextIO = sys.stderr, auditor: str | None = None) -> int:
    """`mailgw audit export`: every matching exchange to CSV or JSON Lines, streamed, file replaced at the end."""
    if fmt not in ("csv", "jsonl"):
        print(f"mailgw audit export: --format must be csv or jsonl, not {fmt!r}", file=err)
        return 2
    try:
        f = Filters.parse(filters)
    except FilterError as e:
        print(f"mailgw audit export: {e}", file=err)
        return 2
    engine = open_engine(url)
    try:
        log_access(engine, "audit export",
                   _who({**f.as_args(), "format": fmt, "out": os.path.abspath(out_path)}, auditor))
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(
                query.statement(f, Exchange.id).order_by(None).subquery())).scalar_one()
            records = query.iter_export(conn, f)
            bar = tqdm(total=total, unit="rec", disable=not progress, file=err, desc="export")
            try:
                count = _write_atomically(out_path, fmt, records, bar)
            finally:
                bar.close()
        print(f"{count} exchange(s) written to {out_path}", file=err)
        return 0
    finally:
        engine.dispose()


def verify(url: str, out: TextIO, auditor: str | None = None) -> int:
    """`mailgw audit verify`: recompute every chain; exit 1 naming the first bad record of each broken one."""
    engine = open_engine(url)
    try:
        log_access(engine, "audit verify", _who({}, auditor))
        problems, heads = verify_engine(engine)
        for h in heads:
            out.write(f"ok: chain {h.chain}: head seq {h.seq} hash {h.hash}\n")
        for p in problems:
            out.write(f"BROKEN: {p}\n")
        if problems:
            out.write(f"{len(problems)} chain(s) broken; the log cannot be trusted from the records named above\n")
            return 1
        out.write(f"all {len(heads)} chain(s) verified\n")
        return 0
    finally:
        engine.dispose()


def prune(url: str, before_date: str, out: TextIO, auditor: str | None = None) -> int:
    """`mailgw audit prune`: remove records older than ``before_date`` while keeping the chains verifiable."""
    try:
        before = query.parse_when(before_date, end=False)
    except FilterError as e:
        out.write(f"mailgw audit prune: {e}\n")
        return 2
    engine = open_engine(url)
    try:
        log_access(engine, "audit prune", _who({"before": before.isoformat()}, auditor))
        problems, done = prune_log(engine, before)
        if problems:
            for p in problems:
                out.write(f"BROKEN: {p}\n")
            out.write("nothing pruned: a broken chain must be investigated before its records are removed\n")
            return 1
        for d in done:
            out.write(f"chain {d.chain}: {d.removed} record(s) removed; checkpoint at seq {d.seq} hash {d.hash}\n")
        if not done:
            out.write(f"nothing older than {before.isoformat()}Z to remove\n")
        return 0
    finally:
        engine.dispose()


def report(url: str, period: str, out_path: str, err: TextIO = sys.stderr, auditor: str | None = None) -> int:
    """`mailgw report --period YYYY-MM --out FILE.html`: the monthly compliance report."""
    from mailgw.audit import report as reports  # matplotlib is heavy; only this command needs it

    try:
        start, end = reports.period_bounds(period)
    except ValueError as e:
        print(f"mailgw report: {e}", file=err)
        return 2
    engine = open_engine(url)
    try:
        log_access(engine, "report", _who({"period": period, "out": os.path.abspath(out_path)}, auditor))
        data = reports.compute(engine, period)
        html = reports.render(data)
        _replace(out_path, lambda fh: fh.write(html))
        print(f"report for {period} written to {out_path}", file=err)
        return 0
    finally:
        engine.dispose()


def _who(args: dict[str, Any], auditor: str | None) -> dict[str, Any]:
    # The name an auditor gives is their word, kept beside the OS user the access log records anyway.
    return {**args, "auditor": " ".join(auditor.split())[:200]} if auditor and auditor.strip() else args


def _replace(path: str, write: Any) -> None:
    if path == "-":
        write(sys.stdout)
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mailgw-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_atomically(path: str, fmt: str, records: Iterator[dict[str, Any]], bar: Any) -> int:
    count = 0

    def write(fh: TextIO) -> None:
        nonlocal count
        writer = csv.writer(fh) if fmt == "csv" else None
        if writer:
            writer.writerow(CSV_COLUMNS)
        for rec in records:
            if writer:
                writer.writerow(_csv_row(rec))
            else:
                fh.write(jsonlib.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
            bar.update(1)

    _replace(path, write)
    return count


def _join(values: Any) -> str:
    return ";".join(str(v) for v in values or [] if v is not None)


def _csv_row(rec: dict[str, Any]) -> list[Any]:
    sender = rec.get("sender") or {}
    header = rec.get("header") or {}
    cls = rec.get("classification") or {}
    decision = rec.get("decision") or {}
    dkim = rec.get("dkim") or {}
    recipients = rec.get("recipients") or []
    attachments = rec.get("attachments") or []
    audit = rec.get("audit") or {}
    values = {
        "id": rec.get("id"), "time": rec.get("time"), "node": audit.get("node"), "seq": audit.get("seq"),
        "direction": rec.get("direction"), "role": rec.get("role"), "listener": rec.get("listener"),
        "client_ip": rec.get("client_ip"), "helo": rec.get("helo"), "tls": rec.get("tls"),
        "auth_user": rec.get("auth_user"), "mail_from": rec.get("mail_from"), "rcpts": _join(rec.get("rcpts")),
        "sender": sender.get("address"), "sender_agency": sender.get("agency"), "sender_unit": sender.get("unit"),
        "sender_official": sender.get("official"), "sender_exception": sender.get("exception"),
        "recipients": _join(r.get("address") for r in recipients),
        "recipient_agencies": _join(sorted({r.get("agency") for r in recipients if r.get("agency")})),
        "header_from": header.get("from"), "subject": header.get("subject"),
        "message_id": header.get("message_id"), "in_reply_to": header.get("in_reply_to"),
        "category": cls.get("category"), "doc_type": cls.get("doc_type"), "doc_number": cls.get("doc_number"),
        "secrecy": cls.get("secrecy"), "secrecy_strength": cls.get("secrecy_strength"),
        "urgency": cls.get("urgency"), "confidence": cls.get("confidence"),
        "decision": decision.get("decision"), "rule": decision.get("rule"), "mode": decision.get("mode"),
        "matched": _join(decision.get("matched")), "tags": _join(decision.get("tags")),
        "reply": decision.get("reply"), "dkim_signed": dkim.get("signed"),
        "dkim_aligned_pass": dkim.get("aligned_pass"), "attachments": len(attachments),
        "signed_attachments": sum(1 for a in attachments if a.get("signed")), "size": rec.get("size"),
        "sha256": rec.get("sha256"), "policy_version": rec.get("policy_version"),
        "directory_version": rec.get("directory_version"),
        "deliveries": _join(f"{d['recipient']}={d['status']}#{d['attempt']}" for d in rec.get("deliveries") or []),
        "hash": audit.get("hash"),
    }
    return [_cell(values[c]) for c in CSV_COLUMNS]


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with = + - @ as a formula; subjects come from strangers.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _line(x: Exchange) -> str:
    rec = jsonlib.loads(x.record)
    rcpts = [r.get("address") for r in rec.get("recipients") or []] or list(rec.get("rcpts") or [])
    to = ", ".join(rcpts[:2]) + (f" (+{len(rcpts) - 2})" if len(rcpts) > 2 else "")
    subject = " ".join(str((rec.get("header") or {}).get("subject") or "").split())
    if len(subject) > 60:
        subject = subject[:59] + "…"
    return (f"{query._z(x.time)}  {x.id}  {x.decision or '-':<10} {x.rule or '-':<22} {x.category or '-':<20} "
            f"{x.doc_number or '-'}  {x.sender or '<>'} -> {to}  {subject}")


def _describe(rec: dict[str, Any]) -> str:
    lines: list[str] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"{label + ':':<22}{value}")

    audit = rec.get("audit") or {}
    header = rec.get("header") or {}
    sender = rec.get("sender") or {}
    cls = rec.get("classification") or {}
    decision = rec.get("decision") or {}
    dkim = rec.get("dkim") or {}
    lines.append(f"Exchange {rec.get('id')}")
    add("Time (UTC)", rec.get("time"))
    add("Logged", f"node {audit.get('node')}, seq {audit.get('seq')}, hash {audit.get('hash')}")
    add("Gateway", f"node {rec.get('node')}, listener {rec.get('listener')} ({rec.get('role')}), "
                   f"{rec.get('direction')}")
    add("Client", f"{rec.get('client_ip')} helo {rec.get('helo')}, TLS {rec.get('tls') or 'none'}"
                  + (f", login {rec['auth_user']}" if rec.get("auth_user") else ""))
    add("Envelope", f"{rec.get('mail_from') or '<>'} -> {', '.join(rec.get('rcpts') or [])}")
    for key, label in (("from", "From"), ("to", "To"), ("cc", "Cc"), ("subject", "Subject"),
                       ("message_id", "Message-ID"), ("in_reply_to", "In-Reply-To"), ("references", "References")):
        add(label, header.get(key))
    add("Sender", f"{sender.get('address')} agency {sender.get('agency') or '-'} unit {sender.get('unit') or '-'}"
                  f"{' official' if sender.get('official') else ''}"
                  f"{' TEMPORARY EXCEPTION' if sender.get('exception') else ''}")
    for r in rec.get("recipients") or []:
        add("Recipient", f"{r.get('address')} agency {r.get('agency') or '-'} unit {r.get('unit') or '-'}"
                         f"{' official' if r.get('official') else ''}{' local' if r.get('local') else ''}")
    add("Category", f"{cls.get('category')} ({cls.get('doc_type') or '-'}) {cls.get('doc_number') or ''}".strip())
    add("Secrecy", f"{cls.get('secrecy')} ({cls.get('secrecy_strength')})"
                   + (", declassified" if cls.get("declassified") else ""))
    add("Urgency", cls.get("urgency"))
    add("Confidence", cls.get("confidence"))
    for ev in cls.get("evidence") or []:
        add("Evidence", f"{ev.get('cue')} in {ev.get('where')}: {ev.get('text')}")
    add("DKIM", f"signed {dkim.get('signed')}, aligned pass {dkim.get('aligned_pass')}" if dkim else "not checked")
    for a in rec.get("attachments") or []:
        add("Attachment", f"{a.get('name')} {a.get('size')} bytes, {a.get('true_type')} "
                          f"(declared {a.get('declared_type')})"
                          + (f", signed by {a.get('signer')}" if a.get("signed") else ", not signed")
                          + f", sha256 {a.get('sha256')}")
    add("Decision", f"{decision.get('decision')} by rule {decision.get('rule')} ({decision.get('mode')} mode)")
    add("Matched rules", ", ".join(decision.get("matched") or []))
    add("Tags", ", ".join(decision.get("tags") or []))
    add("Reply", decision.get("reply"))
    add("Versions", f"policy {rec.get('policy_version')}, directory {rec.get('directory_version')}")
    add("Message", f"{rec.get('size')} bytes, sha256 {rec.get('sha256')}"
                   + (", body archived" if audit.get("body_archived") else ""))
    history = rec.get("deliveries") or []
    lines.append("Deliveries:" if history else "Deliveries: none logged")
    for d in history:
        lines.append(f"  {d['time']}  {d['recipient']}  {d['status']}  attempt {d['attempt']}  {d.get('reply') or ''}")
    return "\n".join(lines) + "\n"
