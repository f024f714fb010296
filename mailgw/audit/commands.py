"""The auditors' commands (`mailgw audit ...`, `mailgw report`): plain arguments in, exit status out.

Each command records itself in the auditor access log before it reads
anything, so an interrupted or failed look at the log is still on record.
Exit status: 0 success, 1 a check failed or nothing was
found, 2 a usage error (a filter or period that cannot be understood).
"""

from __future__ import annotations

import csv
import io
import json as jsonlib
import os
import sys
from typing import Any, Iterable, Iterator, Mapping, TextIO

from sqlalchemy import Row, func, select
from tqdm import tqdm

from mailgw.audit import query, record
from mailgw.audit.access import log_access
from mailgw.audit.prune import prune as prune_log
from mailgw.audit.query import FilterError, Filters, LoggedExchange
from mailgw.audit.record import RecordError
from mailgw.audit.schema import Exchange
from mailgw.audit.store import open_engine
from mailgw.audit.verify import verify_engine
from mailgw.durable import replacing

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
        unreadable = 0
        for x in rows:
            if json:
                try:
                    out.write(jsonlib.dumps(query.full_record(x).to_json(), ensure_ascii=False, sort_keys=True) + "\n")
                except RecordError as e:
                    unreadable += 1
                    print(f"mailgw audit search: {e}", file=err)
            else:
                out.write(_line(x) + "\n")
        if unreadable:
            return 1
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
            try:
                rec = query.full_record(x, query.deliveries(conn, [x.id]).get(x.id, []))
            except RecordError as e:
                print(f"mailgw audit show: {e}", file=err)
                return 1
        if json:
            out.write(jsonlib.dumps(rec.to_json(), ensure_ascii=False, sort_keys=True, indent=2) + "\n")
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
            except RecordError as e:
                print(f"mailgw audit export: {e}; nothing written", file=err)
                return 1
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


def report(url: str, period: str, out_path: str, err: TextIO = sys.stderr, auditor: str | None = None,
           names: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """`mailgw report --period YYYY-MM --out FILE.html`: the monthly compliance report.

    ``names``: the directory's names of agencies and units (report.names_of), for the tables and charts.
    """
    from mailgw.audit import report as reports  # matplotlib is heavy; only this command needs it

    try:
        start, end = reports.period_bounds(period)
    except ValueError as e:
        print(f"mailgw report: {e}", file=err)
        return 2
    engine = open_engine(url)
    try:
        log_access(engine, "report", _who({"period": period, "out": os.path.abspath(out_path)}, auditor))
        try:
            data = reports.compute(engine, period)
        except RecordError as e:
            print(f"mailgw report: {e}; no report written", file=err)
            return 1
        html = reports.render(data, names)
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
    with replacing(os.path.abspath(path)) as f:  # 0600: an export is as confidential as the log
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()


def _write_atomically(path: str, fmt: str, records: Iterator[LoggedExchange], bar: Any) -> int:
    count = 0

    def counted() -> Iterator[LoggedExchange]:
        nonlocal count
        for rec in records:
            yield rec
            count += 1
            bar.update(1)

    def write(fh: TextIO) -> None:
        for chunk in export_lines(fmt, counted()):
            fh.write(chunk)

    _replace(path, write)
    return count


def export_lines(fmt: str, records: Iterable[LoggedExchange]) -> Iterator[str]:
    """An export's text line by line: CSV (header first, formula-safe cells) or JSON Lines.

    `audit export` writes it to a file; the console streams it to the browser.
    """
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)

        def line(row: Any) -> str:
            buf.seek(0)
            buf.truncate()
            writer.writerow(row)
            return buf.getvalue()

        yield line(CSV_COLUMNS)
        for rec in records:
            yield line(_csv_row(rec))
    else:
        for rec in records:
            yield jsonlib.dumps(rec.to_json(), ensure_ascii=False, sort_keys=True) + "\n"


def _join(values: Any) -> str:
    return ";".join(str(v) for v in values or [] if v is not None)


def _csv_row(x: LoggedExchange) -> list[Any]:
    rec = x.record
    sender = rec.sender
    header = rec.header
    cls = rec.classification
    decision = rec.decision
    dkim = rec.dkim
    values = {
        "id": rec.id, "time": rec.time, "node": x.audit.node, "seq": x.audit.seq,
        "direction": rec.direction, "role": rec.role, "listener": rec.listener,
        "client_ip": rec.client_ip, "helo": rec.helo, "tls": rec.tls,
        "auth_user": rec.auth_user, "mail_from": rec.mail_from, "rcpts": _join(rec.rcpts),
        "sender": sender and sender.address, "sender_agency": sender and sender.agency,
        "sender_unit": sender and sender.unit, "sender_official": sender and sender.official,
        "sender_exception": sender and sender.exception,
        "recipients": _join(r.address for r in rec.recipients),
        "recipient_agencies": _join(sorted({r.agency for r in rec.recipients if r.agency})),
        "header_from": header.from_, "subject": header.subject,
        "message_id": header.message_id, "in_reply_to": header.in_reply_to,
        **{key: getattr(cls, key) if cls else None for key in (
            "category", "doc_type", "doc_number", "secrecy", "secrecy_strength", "urgency", "confidence")},
        "decision": decision.decision, "rule": decision.rule, "mode": decision.mode,
        "matched": _join(decision.matched), "tags": _join(decision.tags),
        "reply": decision.reply, "dkim_signed": dkim and dkim.signed,
        "dkim_aligned_pass": dkim and dkim.aligned_pass, "attachments": rec.attachments.count,
        "signed_attachments": sum(1 for a in rec.attachments.files if a.signed), "size": rec.size,
        "sha256": rec.sha256, "policy_version": rec.policy_version,
        "directory_version": rec.directory_version,
        "deliveries": _join(f"{d.recipient}={d.status}#{d.attempt}" for d in x.deliveries or []),
        "hash": x.audit.hash,
    }
    return [_cell(values[c]) for c in CSV_COLUMNS]


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with = + - @ as a formula; subjects come from strangers.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _line(x: Row[Any]) -> str:
    try:
        rec = record.decode(x.record)
    except record.RecordError as e:
        return f"{query._z(x.time)}  {x.id}  (record unreadable: {e})"
    rcpts = [r.address for r in rec.recipients] or list(rec.rcpts)
    to = ", ".join(rcpts[:2]) + (f" (+{len(rcpts) - 2})" if len(rcpts) > 2 else "")
    subject = " ".join(str(rec.header.subject or "").split())
    if len(subject) > 60:
        subject = subject[:59] + "…"
    return (f"{query._z(x.time)}  {x.id}  {x.decision or '-':<10} {x.rule or '-':<22} {x.category or '-':<20} "
            f"{x.doc_number or '-'}  {x.sender or '<>'} -> {to}  {subject}")


def _describe(x: LoggedExchange) -> str:
    lines: list[str] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"{label + ':':<22}{value}")

    rec = x.record
    header = rec.header
    cls = rec.classification
    decision = rec.decision
    dkim = rec.dkim
    lines.append(f"Exchange {rec.id}")
    add("Time (UTC)", rec.time)
    add("Logged", f"node {x.audit.node}, seq {x.audit.seq}, hash {x.audit.hash}")
    add("Gateway", f"node {rec.node}, listener {rec.listener} ({rec.role}), {rec.direction}")
    add("Client", f"{rec.client_ip} helo {rec.helo}, TLS {rec.tls or 'none'}"
                  + (f", login {rec.auth_user}" if rec.auth_user else ""))
    add("Envelope", f"{rec.mail_from or '<>'} -> {', '.join(rec.rcpts)}")
    for label, value in (("From", header.from_), ("To", header.to), ("Cc", header.cc), ("Subject", header.subject),
                         ("Message-ID", header.message_id), ("In-Reply-To", header.in_reply_to),
                         ("References", header.references)):
        add(label, value)
    if rec.sender:
        s = rec.sender
        add("Sender", f"{s.address} agency {s.agency or '-'} unit {s.unit or '-'}"
                      f"{' official' if s.official else ''}{' TEMPORARY EXCEPTION' if s.exception else ''}")
    for r in rec.recipients:
        add("Recipient", f"{r.address} agency {r.agency or '-'} unit {r.unit or '-'}"
                         f"{' official' if r.official else ''}{' local' if r.local else ''}")
    if cls:
        add("Category", f"{cls.category} ({cls.doc_type or '-'}) {cls.doc_number or ''}".strip())
        add("Secrecy", f"{cls.secrecy} ({cls.secrecy_strength})" + (", declassified" if cls.declassified else ""))
        add("Urgency", cls.urgency)
        add("Confidence", cls.confidence)
        for ev in cls.evidence:
            add("Evidence", f"{ev.cue} in {ev.where}: {ev.text}")
    if dkim is None:
        add("DKIM", "not checked")
    elif dkim.status is not None:
        add("DKIM", f"verified: {dkim.status}, aligned pass {dkim.aligned_pass}"
                    + "".join(f"; d={s.d} s={s.s} {s.result}" for s in dkim.signatures))
    else:
        add("DKIM", ("signed by the gateway" if dkim.signed else "not signed")
                    + "".join(f"; d={s.d} s={s.s} a={s.a}" for s in dkim.signatures))
    att = rec.attachments
    if att.count:
        add("Attachments", f"{att.count} file(s), {att.total_size} bytes"
                           + (", signed" if att.signed_any else "")
                           + (f", too ambiguous to inspect: {att.ambiguous_reason}" if att.ambiguous else ""))
    for a in att.files:
        add("Attachment", f"{a.location} {a.name or '(no name)'} {a.size} bytes, {a.true_type} "
                          f"(declared {a.declared_type or '-'})"
                          + (f", signed by {', '.join(a.signers)}" if a.signers else ", signed" if a.signed else ", not signed")
                          + (f", DANGEROUS: {', '.join(a.dangerous)}" if a.dangerous else "")
                          + f", sha256 {a.sha256 or '-'}")
    add("Decision", f"{decision.decision} by rule {decision.rule} ({decision.mode} mode)")
    add("Matched rules", ", ".join(decision.matched))
    add("Tags", ", ".join(decision.tags))
    add("Reply", decision.reply)
    if rec.dsn_for:
        add("DSN for", rec.dsn_for)
    if rec.notice_for:
        add("Notice for", rec.notice_for)
    add("Versions", f"policy {rec.policy_version}, directory {rec.directory_version}")
    add("Message", f"{rec.size} bytes, sha256 {rec.sha256}"
                   + (", redacted (metadata and hashes only)" if rec.redacted else "")
                   + (", body archived" if x.audit.body_archived else ""))
    history = x.deliveries or []
    lines.append("Deliveries:" if history else "Deliveries: none logged")
    for d in history:
        lines.append(f"  {d.time}  {d.recipient}  {d.status}  attempt {d.attempt}  {d.reply or ''}")
    return "\n".join(lines) + "\n"
