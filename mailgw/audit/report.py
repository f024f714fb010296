"""The monthly compliance report for auditors, computed from the exchange log alone.

``compute`` turns one month of the log into plain numbers (a JSON-able dict,
embedded in the HTML so anyone can re-check it); ``render`` makes one
self-contained, printable HTML page in Vietnamese with English labels and
inline SVG charts. Months are calendar months in Vietnam time (UTC+7).
Every definition the numbers rest on is printed in the report itself.
"""

from __future__ import annotations

import collections
import datetime as dt
import html
import io
import json
import re
import statistics
from typing import Any, Iterable, Mapping

from sqlalchemy import Engine, func, select

from mailgw.audit import record
from mailgw.audit.log import doc_key
from mailgw.audit.query import VN_TZ, record_in_scope
from mailgw.audit.record import ExchangeRecord, Party
from mailgw.audit.schema import ACCESS_CHAIN, DmarcSource, Exchange, Head

BENCHMARK = 0.60
UNKNOWN = "?"
FREE_MAIL = frozenset({"gmail.com", "yahoo.com", "yahoo.com.vn", "outlook.com", "hotmail.com", "icloud.com",
                       "live.com", "zing.vn", "ymail.com", "aol.com", "proton.me", "protonmail.com"})
TAGS = ("channel:dms", "unsigned-document", "secrecy-suspect")
_MSGID = re.compile(r"<[^<>\s]+>")
_UNANSWERED_SHOWN = 200


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """The month ``YYYY-MM`` in Vietnam time, as naive UTC [start, end)."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", period.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"--period must be YYYY-MM, not {period!r}")
    y, mo = int(m.group(1)), int(m.group(2))
    start = dt.datetime(y, mo, 1, tzinfo=VN_TZ)
    end = dt.datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=VN_TZ)
    return (start.astimezone(dt.timezone.utc).replace(tzinfo=None),
            end.astimezone(dt.timezone.utc).replace(tzinfo=None))


def _records(engine: Engine, start: dt.datetime, end: dt.datetime) -> Iterable[tuple[dt.datetime, ExchangeRecord]]:
    with engine.connect() as conn:
        last: tuple[dt.datetime, str] | None = None
        while True:
            stmt = select(Exchange.time, Exchange.id, Exchange.record).where(
                Exchange.time >= start, Exchange.time < end)
            if last:
                stmt = stmt.where((Exchange.time > last[0]) | ((Exchange.time == last[0]) & (Exchange.id > last[1])))
            rows = conn.execute(stmt.order_by(Exchange.time, Exchange.id).limit(5000)).all()
            if not rows:
                return
            for r in rows:
                try:
                    yield r.time, record.decode(r.record)
                except record.RecordError as e:
                    raise record.RecordError(f"exchange {r.id}: {e}") from e
            last = (rows[-1].time, rows[-1].id)


def _owners(rec: ExchangeRecord) -> list[tuple[str, str]]:
    """The local (agency, unit) parties of an exchange: the sender if it went out, local recipients if it came in."""
    out: list[tuple[str, str]] = []
    direction = rec.direction
    sender = rec.sender
    if direction in ("outbound", "internal"):
        out.append(((sender.agency if sender else None) or UNKNOWN, (sender.unit if sender else None) or UNKNOWN))
    if direction in ("inbound", "internal"):
        for r in rec.recipients:
            if r.local:
                out.append((r.agency or UNKNOWN, r.unit or UNKNOWN))
    return list(dict.fromkeys(out))


def _msgids(value: Any) -> list[str]:
    return [m.lower() for m in _MSGID.findall(str(value or ""))]


def _norm(text: Any) -> str:
    return "".join(str(text or "").casefold().split())


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _sender_class(rec: ExchangeRecord) -> str:
    if rec.sender and rec.sender.official:
        return "agency"
    address = _sender_address(rec)
    return "citizen" if address.rsplit("@", 1)[-1] in FREE_MAIL else "business"


def _sender_address(rec: ExchangeRecord) -> str:
    return ((rec.sender.address if rec.sender else "") or rec.mail_from or "").lower()


def _hours(a: dt.datetime, b: dt.datetime) -> float:
    return round((b - a).total_seconds() / 3600, 2)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median_h": None, "p90_h": None, "max_h": None}
    p90 = statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    return {"median_h": round(statistics.median(values), 2), "p90_h": round(p90, 2), "max_h": max(values)}


def compute(engine: Engine, period: str, as_of: dt.datetime | None = None,
            scope: tuple[str, ...] | None = None) -> dict[str, Any]:
    """All the report's numbers for month ``period``; replies are looked for up to ``as_of`` (default now).

    ``scope``: only the exchanges with a party in these agencies (``snv``) or units (``snv/vp``),
    as an auditor of them sees the log (the console); None: every exchange.
    """
    start, end = period_bounds(period)
    as_of = as_of or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.timezone.utc).replace(tzinfo=None)
    total = 0
    decisions: collections.Counter[str] = collections.Counter()
    directions: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    agency_dir: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    agency_cat: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    unit_dir: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    electronic: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    hits: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    by_rule: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    dkim: collections.Counter[str] = collections.Counter()
    tls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    exceptions: dict[str, dict[str, Any]] = {}
    awaiting: list[dict[str, Any]] = []

    dsns = 0
    own: set[str] = set()
    for t, rec in _records(engine, start, end):
        if scope is not None and not record_in_scope(rec, scope):
            continue
        if rec.role in ("dsn", "notice", "report"):
            # Made by the gateway itself (a bounce, a held-message notice to a sender, a DMARC report to another
            # domain), not an exchange of the agencies.
            dsns += 1
            continue
        for party in (rec.sender, *rec.recipients):
            if party is not None and party.local and "@" in party.address:
                own.add(party.address.rpartition("@")[2].lower())
        total += 1
        decision = rec.decision
        verdict = decision.decision or UNKNOWN
        rule = decision.rule or UNKNOWN
        tags = set(decision.tags)
        cls = rec.classification
        category = (cls.category if cls else None) or UNKNOWN
        doc_number = cls.doc_number if cls else None
        direction = rec.direction or UNKNOWN
        sender = rec.sender or Party(address="")
        decisions[verdict] += 1
        directions[direction] += 1
        categories[category] += 1
        owners = _owners(rec)
        for agency in dict.fromkeys(a for a, _ in owners):
            agency_dir[agency][direction] += 1
            agency_dir[agency]["total"] += 1
            agency_cat[agency][category] += 1
            h = hits[agency]
            h["exchanges"] += 1
            if verdict in ("reject", "quarantine", "defer"):
                h[verdict] += 1
            if rule == "secrecy-block":
                h["secrecy-block"] += 1
            for tag in TAGS:
                if tag in tags:
                    h[tag] += 1
        for unit in owners:
            unit_dir[unit][direction] += 1
            unit_dir[unit]["total"] += 1
        if verdict in ("reject", "quarantine", "defer"):
            by_rule[verdict][rule] += 1
        for tag in TAGS:
            if tag in tags:
                by_rule["tag"][tag] += 1
        # Directive 15's benchmark: see DEFINITIONS["electronic"].
        if (verdict == "accept" and direction in ("outbound", "internal") and category != "general"
                and doc_number and sender.official
                and any(r.official for r in rec.recipients)):
            e = electronic[sender.agency or UNKNOWN]
            e["documents"] += 1
            if rec.attachments.signed_any or any(a.signed for a in rec.attachments.files):
                e["signed"] += 1
        tls[direction]["total"] += 1
        if rec.tls:
            tls[direction]["tls"] += 1
        d = rec.dkim
        if verdict == "accept":
            if direction in ("outbound", "internal"):
                dkim["out_total"] += 1
                dkim["out_signed"] += bool(d and d.signed)
            elif direction == "inbound":
                dkim["in_total"] += 1
                dkim["in_signed"] += bool(d and d.signed)
                dkim["in_aligned"] += bool(d and d.aligned_pass)
        if sender.exception:
            addr = _sender_address(rec)
            x = exceptions.setdefault(addr, {"address": addr, "agency": sender.agency,
                                             "unit": sender.unit, "count": 0, "first": _z(t), "last": _z(t)})
            x["count"] += 1
            x["last"] = _z(t)
        header = rec.header
        if (direction == "inbound" and verdict == "accept" and rec.mail_from
                and (category != "general" or not sender.official)):
            local = [r for r in rec.recipients if r.local]
            awaiting.append({
                "id": rec.id, "time": t, "from": _sender_address(rec),
                "class": _sender_class(rec), "agency": (local[0].agency if local else None) or UNKNOWN,
                "to": ", ".join(r.address for r in local), "subject": header.subject,
                "doc_number": doc_number, "urgency": (cls.urgency if cls else None) or "none",
                "message_id": next(iter(_msgids(header.message_id)), None),
            })

    response = _response_times(engine, awaiting, start, as_of)
    senders = _own_domain_senders(engine, period, own)
    heads = {}
    with engine.connect() as conn:
        for chain, seq, head_hash in conn.execute(select(Head.chain, Head.seq, Head.hash)).all():
            heads["auditor access" if chain == ACCESS_CHAIN else chain] = {"seq": seq, "hash": head_hash}
    agencies = sorted(agency_dir, key=lambda a: (-agency_dir[a]["total"], a))
    return {
        "period": period, "start_utc": _z(start), "end_utc": _z(end), "as_of_utc": _z(as_of),
        **({"scope": list(scope)} if scope is not None else {}),
        "total": total, "dsns": dsns, "decisions": dict(decisions), "directions": dict(directions),
        "categories": dict(categories.most_common()),
        "agencies": [{"agency": a, **{k: agency_dir[a][k] for k in ("inbound", "outbound", "internal", "total")},
                      "categories": dict(agency_cat[a].most_common())} for a in agencies],
        "units": [{"agency": a, "unit": u, **{k: c[k] for k in ("inbound", "outbound", "internal", "total")}}
                  for (a, u), c in sorted(unit_dir.items(), key=lambda kv: (kv[0][0], -kv[1]["total"], kv[0][1]))],
        "electronic": {
            "benchmark": BENCHMARK,
            "total": _electronic_row("*", sum((electronic.values()), collections.Counter())),
            "agencies": [_electronic_row(a, c) for a, c in sorted(electronic.items())],
        },
        "rule_hits": {
            "rejections": dict(by_rule["reject"].most_common()),
            "quarantines": dict(by_rule["quarantine"].most_common()),
            "deferrals": dict(by_rule["defer"].most_common()),
            "tags": {tag: by_rule["tag"][tag] for tag in TAGS},
            "secrecy_blocks": by_rule["reject"]["secrecy-block"],
            "agencies": [{"agency": a, **{k: hits[a][k] for k in (
                "exchanges", "reject", "quarantine", "defer", "secrecy-block", *TAGS)}} for a in agencies],
        },
        "dkim": {"outbound_accepted": dkim["out_total"], "outbound_signed": dkim["out_signed"],
                 "outbound_signed_share": _share(dkim["out_signed"], dkim["out_total"]),
                 "inbound_accepted": dkim["in_total"], "inbound_signed": dkim["in_signed"],
                 "inbound_aligned_pass": dkim["in_aligned"],
                 "inbound_aligned_share": _share(dkim["in_aligned"], dkim["in_total"])},
        "tls": {d: {"total": c["total"], "tls": c["tls"], "share": _share(c["tls"], c["total"])}
                for d, c in sorted(tls.items())},
        "exceptions": sorted(exceptions.values(), key=lambda x: (-x["count"], x["address"])),
        "response": response,
        "own_domain_senders": senders,
        "chain_heads": heads,
    }


def _own_domain_senders(engine: Engine, period: str, own: set[str]) -> list[dict[str, Any]]:
    """Who sent mail with one of our domains in From, by domain and source address (DMARC results, UTC days).

    Our domains are those of the local parties of the month's exchanges (the log alone says so); the
    rows are the exchange log's DMARC counts (mailgw.audit.dmarc) of the month's calendar days.
    """
    if not own:
        return []
    first = dt.date.fromisoformat(period + "-01")
    after = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    c = DmarcSource
    stmt = (select(c.header_from, c.source_ip, c.result, c.dkim, c.spf, c.disposition, func.sum(c.count))
            .where(c.day >= first, c.day < after)
            .group_by(c.header_from, c.source_ip, c.result, c.dkim, c.spf, c.disposition))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    with engine.connect() as conn:
        for header_from, ip, result, dkim, spf, disposition, n in conn.execute(stmt):
            if not any(header_from == d or header_from.endswith("." + d) for d in own):
                continue
            r = rows.setdefault((header_from, ip), {"domain": header_from, "source_ip": ip, "messages": 0, "pass": 0,
                                                    "fail": 0, "dkim_aligned": 0, "spf_aligned": 0, "refused": 0})
            n = int(n)
            r["messages"] += n
            r["pass" if result == "pass" else "fail"] += n
            r["dkim_aligned"] += n if dkim == "pass" else 0
            r["spf_aligned"] += n if spf == "pass" else 0
            r["refused"] += n if disposition in ("reject", "quarantine") else 0
    return sorted(rows.values(), key=lambda r: (r["domain"], -r["messages"], r["source_ip"]))


def _electronic_row(agency: str, c: collections.Counter[str]) -> dict[str, Any]:
    share = _share(c["signed"], c["documents"])
    return {"agency": agency, "documents": c["documents"], "signed": c["signed"], "share": share,
            "meets_benchmark": None if share is None else share >= BENCHMARK}


# Response times by urgency: HỎA TỐC and THƯỢNG KHẨN apart (Decree 30/2020, art. 23: handled at once,
# ahead of everything else), then the rest (khẩn and ordinary mail).
URGENCY_GROUPS = ("hoa_toc", "thuong_khan", "other")
_URGENCY_LABEL = {"hoa_toc": "Hỏa tốc / Immediate (hỏa tốc)", "thuong_khan": "Thượng khẩn / Most urgent (thượng khẩn)",
                  "other": "Còn lại (khẩn, thường) / The rest (urgent, ordinary)"}


def _response_times(engine: Engine, awaiting: list[dict[str, Any]], start: dt.datetime,
                    as_of: dt.datetime) -> dict[str, Any]:
    by_msgid = {a["message_id"]: a for a in awaiting if a["message_id"]}
    by_sender: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for a in awaiting:
        if a["doc_number"]:
            by_sender[a["from"]].append(a)
    answered: dict[str, dt.datetime] = {}
    if awaiting:
        for t, rec in _records(engine, start, as_of):
            if rec.direction not in ("outbound", "internal") or rec.decision.decision != "accept":
                continue
            header = rec.header
            for m in _msgids(header.in_reply_to) + _msgids(header.references):
                asked = by_msgid.get(m)
                if asked and t > asked["time"] and (asked["id"] not in answered or t < answered[asked["id"]]):
                    answered[asked["id"]] = t
            if by_sender:
                subject = _norm(header.subject)
                for r in rec.recipients:
                    for a in by_sender.get(r.address.lower(), []):
                        key = doc_key(a["doc_number"]) or ""
                        if key and key in subject and t > a["time"] and (
                                a["id"] not in answered or t < answered[a["id"]]):
                            answered[a["id"]] = t
    groups: dict[str, list[float]] = collections.defaultdict(list)
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    unanswered = []
    for level in URGENCY_GROUPS:  # shown even when none came: "no HỎA TỐC mail" is an answer too
        counts[f"urgency:{level}"]["awaiting"] += 0
    for a in awaiting:
        urgency = a["urgency"] if a["urgency"] in URGENCY_GROUPS else "other"
        for g in (f"class:{a['class']}", f"agency:{a['agency']}", f"urgency:{urgency}"):
            counts[g]["awaiting"] += 1
            if a["id"] in answered:
                counts[g]["answered"] += 1
                groups[g].append(_hours(a["time"], answered[a["id"]]))
        if a["id"] not in answered:
            unanswered.append({k: a[k] for k in ("id", "from", "class", "agency", "to", "subject", "doc_number",
                                                 "urgency")} | {"time": _z(a["time"]),
                                                                "waiting_h": _hours(a["time"], as_of)})
    unanswered.sort(key=lambda u: (-u["waiting_h"], u["id"]))

    def rows(prefix: str) -> list[dict[str, Any]]:
        return [{"group": g[len(prefix):], "awaiting": c["awaiting"], "answered": c["answered"],
                 "unanswered": c["awaiting"] - c["answered"], **_stats(groups[g])}
                for g, c in sorted(counts.items()) if g.startswith(prefix)]

    by_urgency = {r["group"]: r for r in rows("urgency:")}
    return {"awaiting": len(awaiting), "answered": len(answered), "classes": rows("class:"),
            "agencies": rows("agency:"), "urgency": [by_urgency[level] for level in URGENCY_GROUPS],
            "unanswered_total": len(unanswered),
            "unanswered": unanswered[:_UNANSWERED_SHOWN]}


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rendering -------------------------------------------------------------------------------------

DEFINITIONS = {
    "own_domain_senders": (
        "Thư đến cổng (qua Internet) ghi tên miền của ta ở trường From, theo máy gửi: DMARC đạt khi chữ ký DKIM hoặc "
        "SPF khớp tên miền; thư không đạt từ một máy lạ là thư giả mạo, hoặc một dịch vụ gửi thay cần được cấu hình "
        "(khóa DKIM, bản ghi SPF). Đếm theo ngày UTC của các ngày trong tháng; chỉ các tên miền công bố bản ghi DMARC. "
        "/ Mail reaching the gateway from the Internet with one of our domains in From, by sending address: DMARC "
        "passes when a DKIM signature or SPF aligns with the domain; failures from an unknown address are forgeries, "
        "or a service sending for us that needs setting up (a DKIM key, the SPF record). Counted per UTC day over "
        "the month's days; only domains that publish a DMARC record."),
    "attribution": (
        "Mỗi trao đổi được tính cho các bên trong tỉnh: người gửi (thư đi, thư nội bộ) và các người nhận thuộc "
        "cơ quan do cổng phục vụ (thư đến, thư nội bộ); một trao đổi chỉ được tính một lần cho mỗi cơ quan, "
        "đơn vị. / Each exchange counts for its local parties: the sender (outbound, internal) and the local "
        "recipients (inbound, internal), once per agency and once per unit."),
    "electronic": (
        "Tỷ lệ văn bản điện tử = số văn bản có chữ ký số / số văn bản chính thức gửi đi. Văn bản chính thức: "
        "thư được chấp nhận, gửi từ địa chỉ công vụ của tỉnh tới ít nhất một địa chỉ công vụ, có số, ký hiệu và "
        "loại khác \"general\". Có chữ ký số: ít nhất một tệp đính kèm mang chữ ký số hợp lệ, nên không cần gửi "
        "kèm bản giấy (Chỉ thị 15/CT-TTg, Nghị định 30/2020). Chỉ tiêu: 60 %. / Electronic share = documents "
        "carrying a digital signature / official documents sent. An official document is an accepted message "
        "from a local official address to at least one official address, carrying a number/symbol, with a "
        "category other than \"general\". Signed = at least one attachment carries a valid digital signature, "
        "so no paper copy is needed (Directive 15/CT-TTg, Decree 30/2020). Benchmark: 60 %."),
    "response": (
        "Thư cần trả lời: thư đến được chấp nhận, không phải thư báo lỗi (người gửi phong bì khác rỗng), "
        "mang văn bản chính thức (loại khác \"general\") hoặc do người dân, doanh nghiệp gửi. Thư trả lời: thư đi "
        "được chấp nhận, sau thư đến, có In-Reply-To/References trỏ tới Message-ID của thư đến, hoặc gửi lại "
        "người gửi với tiêu đề nêu số, ký hiệu của văn bản đến. Người dân: hộp thư miễn phí (gmail.com ...); "
        "doanh nghiệp: tên miền khác không phải công vụ. / Awaiting a reply: accepted inbound mail, not a bounce "
        "(non-empty envelope sender), carrying an official document (category other than \"general\") or sent by "
        "a citizen or business. A reply: accepted outbound mail, later, whose In-Reply-To/References names the "
        "inbound Message-ID, or sent back to the inbound sender with the inbound document's number/symbol in its "
        "subject. Citizen: a free-mail domain (gmail.com ...); business: any other non-official domain."),
}
_CLASS_LABEL = {"citizen": "Người dân / Citizens", "business": "Doanh nghiệp / Businesses",
                "agency": "Cơ quan khác / Other agencies"}
_DIR_LABEL = {"inbound": "Đến / Inbound", "outbound": "Đi / Outbound", "internal": "Nội bộ / Internal"}

_CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;font-size:10pt;color:#111;max-width:1100px;margin:1em auto;padding:0 1em}
h1{font-size:16pt;margin-bottom:.2em}h2{font-size:13pt;border-bottom:1px solid #888;margin-top:1.4em}
h3{font-size:11pt}
table{border-collapse:collapse;margin:.5em 0;width:auto}th,td{border:1px solid #999;padding:2px 6px;vertical-align:top}
th{background:#eee;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.def{background:#f6f6f6;border-left:3px solid #555;padding:.4em .8em;font-size:9pt}
.bad{color:#a00;font-weight:bold}.ok{color:#060;font-weight:bold}.meta{color:#444;font-size:9pt}
svg{max-width:100%;height:auto}
@media print{body{max-width:none;margin:0}h2{page-break-after:avoid}table,figure{page-break-inside:avoid}
thead{display:table-header-group}a{color:inherit;text-decoration:none}}
@page{size:A4;margin:15mm}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f} %"


def _hrs(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} h"


def _table(head: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    out = ["<table><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="n">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{len(head)}">Không có / None</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def names_of(directory: Any) -> dict[str, dict[str, str]]:
    """The ``names`` render() takes, from a loaded directory (mailgw.directory.model.Directory)."""
    return {"agencies": {a.code: a.name for a in directory.agencies},
            "units": {f"{a.code}/{u.code}": u.name for a in directory.agencies for u in a.units}}


def _charts(data: dict[str, Any], names: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    import matplotlib

    # Figures made directly (no pyplot) draw with the Agg-based SVG backend and touch no global
    # figure state; the fixed salt gives stable ids, so the same log gives the same file.
    with matplotlib.rc_context({"svg.hashsalt": "mailgw-report", "font.family": "DejaVu Sans"}):
        return _draw(data, names)


def _draw(data: dict[str, Any], names_given: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    from matplotlib.figure import Figure

    from mailgw.classify.explain import CATEGORY_VI

    # With the directory's names, the charts name agencies and categories in Vietnamese, as the tables do.
    agency_names = (names_given or {}).get("agencies", {})
    category_names: Mapping[str, str] = CATEGORY_VI if names_given is not None else {}

    def agency(code: Any) -> str:
        return agency_names.get(code, str(code)) if isinstance(code, str) else str(code)

    charts: dict[str, str] = {}
    agencies = data["agencies"][:20]
    if agencies:
        fig = Figure(figsize=(8, 0.35 * len(agencies) + 1.2))
        ax = fig.subplots()
        names = [agency(a["agency"]) for a in agencies][::-1]
        left = [0] * len(names)
        for d, colour in (("inbound", "#4477aa"), ("outbound", "#ee7733"), ("internal", "#228833")):
            vals = [a[d] for a in agencies][::-1]
            ax.barh(names, vals, left=left, color=colour, label=_DIR_LABEL[d])
            left = [x + y for x, y in zip(left, vals)]
        ax.set_xlabel("Số trao đổi / Exchanges")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)  # above: never over a bar
        charts["volume"] = _svg(fig)
    rows = [r for r in data["electronic"]["agencies"] if r["documents"]]
    if rows:
        fig = Figure(figsize=(8, 0.35 * len(rows) + 1.2))
        ax = fig.subplots()
        names = [agency(r["agency"]) for r in rows][::-1]
        shares = [r["share"] * 100 for r in rows][::-1]
        ax.barh(names, shares, color=["#228833" if s >= BENCHMARK * 100 else "#cc3311" for s in shares])
        ax.axvline(BENCHMARK * 100, color="#111", linestyle="--", label="Chỉ tiêu 60 % / Benchmark 60 %")
        ax.set_xlim(0, 100)
        ax.set_xlabel("Tỷ lệ văn bản có chữ ký số (%) / Signed share (%)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)  # above: never over a bar
        charts["electronic"] = _svg(fig)
    cats = list(data["categories"].items())[:15]
    if cats:
        fig = Figure(figsize=(8, 0.3 * len(cats) + 1.2))
        ax = fig.subplots()
        ax.barh([category_names.get(c, c) for c, _ in cats][::-1], [n for _, n in cats][::-1], color="#4477aa")
        ax.set_xlabel("Số trao đổi / Exchanges")
        charts["categories"] = _svg(fig)
    return charts


def render(data: dict[str, Any], names: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The report as one self-contained HTML page (charts inline, no external files or scripts).

    ``names``: ``{"agencies": {code: name}, "units": {"agency/unit": name}}`` from the directory;
    given, the tables name agencies, units and categories (in Vietnamese) beside their codes.
    """
    charts = _charts(data, names)
    agency_names = (names or {}).get("agencies", {})
    unit_names = (names or {}).get("units", {})

    def ag(code: Any) -> str:
        name = agency_names.get(code) if isinstance(code, str) else None
        return f"{_e(name)} ({_e(code)})" if name else _e(code)

    def un(agency: Any, code: Any) -> str:
        name = unit_names.get(f"{agency}/{code}") if isinstance(code, str) else None
        return f"{_e(name)} ({_e(code)})" if name else _e(code)

    def cat(code: Any) -> str:
        from mailgw.classify.explain import CATEGORY_VI

        name = CATEGORY_VI.get(code) if names is not None and isinstance(code, str) else None
        return f"{_e(name)} ({_e(code)})" if name else _e(code)

    p: list[str] = []
    add = p.append
    add(f'<!DOCTYPE html><html lang="vi"><head><meta charset="utf-8"><title>Báo cáo sử dụng thư điện tử công vụ '
        f'{_e(data["period"])} / Official e-mail report</title><style>{_CSS}</style></head><body>')
    add(f'<h1>Báo cáo sử dụng thư điện tử công vụ tháng {_e(data["period"])}<br>'
        f'<small>Official e-mail use report, {_e(data["period"])}</small></h1>')
    add(f'<p class="meta">Kỳ báo cáo / Period: {_e(data["start_utc"])} – {_e(data["end_utc"])} (UTC; tháng theo giờ '
        f'Việt Nam / calendar month in Vietnam time, UTC+7). Lập lúc / Generated: {_e(data["as_of_utc"])}. '
        f'Nguồn: nhật ký trao đổi của cổng thư / Source: the gateway exchange log.</p>')
    if "scope" in data:
        add(f'<p class="meta" id="scope">Phạm vi: chỉ các trao đổi có một bên thuộc / Scope: only exchanges with a party '
            f'in: {_e(", ".join(data["scope"]))}</p>')

    add("<h2>1. Tóm tắt / Summary</h2>")
    e_total = data["electronic"]["total"]
    resp = data["response"]
    add(_table(["Chỉ số / Measure", "Giá trị / Value"], [
        ["Tổng số trao đổi / Exchanges", data["total"]],
        *[[f"Quyết định / Decision: {_e(k)}", v] for k, v in sorted(data["decisions"].items())],
        *[[f"Hướng / Direction: {_DIR_LABEL.get(k, _e(k))}", v] for k, v in sorted(data["directions"].items())],
        ["Tỷ lệ văn bản điện tử / Electronic share", _pct(e_total["share"]) + _verdict(e_total["meets_benchmark"])],
        ["Thư báo lỗi do cổng gửi (không tính ở trên) / DSNs sent by the gateway (not counted above)",
         data.get("dsns", 0)],
        ["Thư cần trả lời / Awaiting a reply", resp["awaiting"]],
        ["Đã trả lời / Answered", resp["answered"]],
    ]))

    add("<h2>2. Khối lượng theo cơ quan, đơn vị / Volume per agency and unit</h2>")
    add(f'<p class="def">{_e(DEFINITIONS["attribution"])}</p>')
    if "volume" in charts:
        add(f"<figure>{charts['volume']}</figure>")
    add(_table(["Cơ quan / Agency", "Đến / Inbound", "Đi / Outbound", "Nội bộ / Internal", "Tổng / Total"],
               [[ag(a["agency"]), a["inbound"], a["outbound"], a["internal"], a["total"]] for a in data["agencies"]]))
    add("<h3>Theo đơn vị / Per unit</h3>")
    add(_table(["Cơ quan / Agency", "Đơn vị / Unit", "Đến / Inbound", "Đi / Outbound", "Nội bộ / Internal",
                "Tổng / Total"],
               [[ag(u["agency"]), un(u["agency"], u["unit"]), u["inbound"], u["outbound"], u["internal"], u["total"]]
                for u in data["units"]], numeric_from=2))
    add("<h3>Theo loại văn bản / By category</h3>")
    if "categories" in charts:
        add(f"<figure>{charts['categories']}</figure>")
    # One row per category, one column per agency: there are twenty categories, so this way it fits a page.
    add(_table(["Loại / Category", *[ag(a["agency"]) for a in data["agencies"]]],
               [[cat(c), *[a["categories"].get(c, 0) for a in data["agencies"]]] for c in data["categories"]]))

    add("<h2>3. Tỷ lệ văn bản điện tử (Chỉ thị 15) / Electronic share of official documents (Directive 15)</h2>")
    add(f'<p class="def">{_e(DEFINITIONS["electronic"])}</p>')
    if "electronic" in charts:
        add(f"<figure>{charts['electronic']}</figure>")
    add(_table(["Cơ quan / Agency", "Văn bản / Documents", "Có chữ ký số / Signed", "Tỷ lệ / Share",
                "Đạt 60 % / Meets 60 %"],
               [[_e("Toàn tỉnh / All") if r["agency"] == "*" else ag(r["agency"]), r["documents"], r["signed"],
                 _pct(r["share"]), _verdict(r["meets_benchmark"], short=True)]
                for r in [*data["electronic"]["agencies"], e_total]]))

    rh = data["rule_hits"]
    add("<h2>4. Vi phạm và quy tắc / Rule hits</h2>")
    add(_table(["Quy tắc từ chối / Rejecting rule", "Số thư / Messages"],
               [[_e(k), v] for k, v in rh["rejections"].items()]))
    add(_table(["Quy tắc cách ly / Quarantining rule", "Số thư / Messages"],
               [[_e(k), v] for k, v in rh["quarantines"].items()]))
    add(_table(["Quy tắc hoãn / Deferring rule", "Số thư / Messages"],
               [[_e(k), v] for k, v in rh["deferrals"].items()]))
    add(_table(["Nhãn / Tag", "Số thư / Messages"],
               [["Chặn văn bản mật / secrecy-block", rh["secrecy_blocks"]],
                ["Nghi có dấu mật / secrecy-suspect", rh["tags"]["secrecy-suspect"]],
                ["Nên gửi qua hệ thống QLVB / channel:dms", rh["tags"]["channel:dms"]],
                ["Văn bản chưa ký số / unsigned-document", rh["tags"]["unsigned-document"]]]))
    add("<h3>Theo cơ quan / Per agency</h3>")
    add(_table(["Cơ quan / Agency", "Trao đổi / Exchanges", "Từ chối / Rejected", "Cách ly / Quarantined",
                "Hoãn / Deferred", "secrecy-block", "channel:dms", "unsigned-document", "secrecy-suspect"],
               [[ag(a["agency"]), a["exchanges"], a["reject"], a["quarantine"], a["defer"], a["secrecy-block"],
                 a["channel:dms"], a["unsigned-document"], a["secrecy-suspect"]] for a in rh["agencies"]]))

    dk = data["dkim"]
    add("<h2>5. DKIM và TLS / DKIM and TLS coverage</h2>")
    add(_table(["Chỉ số / Measure", "Số / Count", "Tổng / Of", "Tỷ lệ / Share"], [
        ["Thư đi được ký DKIM / Outbound signed", dk["outbound_signed"], dk["outbound_accepted"],
         _pct(dk["outbound_signed_share"])],
        ["Thư đến có chữ ký DKIM khớp tên miền / Inbound with aligned passing DKIM", dk["inbound_aligned_pass"],
         dk["inbound_accepted"], _pct(dk["inbound_aligned_share"])],
        *[[f"TLS: {_DIR_LABEL.get(d, _e(d))}", v["tls"], v["total"], _pct(v["share"])]
          for d, v in data["tls"].items()],
    ]))
    add('<p class="meta">DKIM: thư được chấp nhận / accepted mail only. TLS: mọi phiên nhận thư / every '
        'receiving session.</p>')

    add("<h2>6. Ngoại lệ tạm thời còn được dùng / Temporary exceptions still in use</h2>")
    add(_table(["Địa chỉ / Address", "Cơ quan / Agency", "Đơn vị / Unit", "Số thư / Messages",
                "Lần đầu / First (UTC)", "Lần cuối / Last (UTC)"],
               [[_e(x["address"]), ag(x["agency"]), un(x["agency"], x["unit"]), x["count"], _e(x["first"]), _e(x["last"])]
                for x in data["exceptions"]], numeric_from=3))

    add("<h2>7. Thời gian trả lời / Response times</h2>")
    add(f'<p class="def">{_e(DEFINITIONS["response"])}</p>')
    head = ["Nhóm / Group", "Cần trả lời / Awaiting", "Đã trả lời / Answered", "Chưa / Unanswered",
            "Trung vị / Median", "P90", "Lâu nhất / Max"]
    add(_table(head, [[_CLASS_LABEL.get(r["group"], _e(r["group"])), r["awaiting"], r["answered"], r["unanswered"],
                       _hrs(r["median_h"]), _hrs(r["p90_h"]), _hrs(r["max_h"])] for r in resp["classes"]]))
    add("<h3>Theo độ khẩn / By urgency</h3>")
    add(_table(head, [[_URGENCY_LABEL[r["group"]], r["awaiting"], r["answered"], r["unanswered"], _hrs(r["median_h"]),
                       _hrs(r["p90_h"]), _hrs(r["max_h"])] for r in resp["urgency"]]))
    add("<h3>Theo cơ quan nhận / Per receiving agency</h3>")
    add(_table(head, [[_e(r["group"]), r["awaiting"], r["answered"], r["unanswered"], _hrs(r["median_h"]),
                       _hrs(r["p90_h"]), _hrs(r["max_h"])] for r in resp["agencies"]]))
    shown = len(resp["unanswered"])
    add(f"<h3>Thư chưa được trả lời / Unanswered ({resp['unanswered_total']}"
        + (f", {shown} chờ lâu nhất / longest waiting shown" if shown < resp["unanswered_total"] else "") + ")</h3>")
    add(_table(["Mã / Exchange", "Nhận lúc / Received (UTC)", "Chờ / Waiting", "Từ / From", "Tới / To",
                "Tiêu đề / Subject", "Số, ký hiệu / Number", "Khẩn / Urgency"],
               [[_e(u["id"]), _e(u["time"]), _hrs(u["waiting_h"]), _e(u["from"]), _e(u["to"]), _e(u["subject"]),
                 _e(u["doc_number"]),
                 f'<span class="bad">{_e(u["urgency"])}</span>' if u["urgency"] != "none" else ""]
                for u in resp["unanswered"]], numeric_from=99))

    add("<h2>8. Ai gửi thư nhân danh tên miền của ta / Who sends in our domains' names</h2>")
    add(f'<p class="def">{_e(DEFINITIONS["own_domain_senders"])}</p>')
    add(_table(["Tên miền (From) / Domain", "Địa chỉ gửi / Source IP", "Số thư / Messages", "DMARC đạt / Pass",
                "Không đạt / Fail", "DKIM khớp / DKIM aligned", "SPF khớp / SPF aligned",
                "Bị từ chối, giữ lại / Refused or held"],
               [[_e(r["domain"]), _e(r["source_ip"]), r["messages"], r["pass"],
                 f'<span class="bad">{r["fail"]}</span>' if r["fail"] else 0, r["dkim_aligned"], r["spf_aligned"],
                 r["refused"]] for r in data.get("own_domain_senders", [])], numeric_from=2))

    add("<h2>9. Tính toàn vẹn / Integrity</h2>")
    add("<p>Đầu chuỗi băm của nhật ký khi lập báo cáo; lưu bản in để đối chiếu về sau bằng "
        "<code>mailgw audit verify</code>. / Heads of the log's hash chains when this report was made; keep the "
        "printed copy to compare with <code>mailgw audit verify</code> later.</p>")
    add(_table(["Chuỗi / Chain", "Số thứ tự / Seq", "Băm / Hash"],
               [[_e(k), v["seq"], f"<code>{_e(v['hash'])}</code>"] for k, v in sorted(data["chain_heads"].items())]))
    payload = json.dumps(data, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    add(f'<script type="application/json" id="report-data">{payload}</script>')
    add("</body></html>")
    return "\n".join(p)


def _verdict(meets: bool | None, short: bool = False) -> str:
    if meets is None:
        return ""
    text = ("Đạt / Yes" if meets else "Chưa đạt / No") if short else (
        " (đạt chỉ tiêu 60 % / meets the 60 % benchmark)" if meets else " (chưa đạt 60 % / below the 60 % benchmark)")
    return f'<span class="{"ok" if meets else "bad"}">{text}</span>'
