"""Synthetic month of a province's gateway traffic, for the audit benchmark and report demos.

    python bench/make_month.py --url sqlite:///month.db --month 2025-03 --count 60000
    python bench/make_month.py --url sqlite:///month.db --month 2025-03 --count 20000 --directory directory.yaml

The province (modelled on Bình Thuận) has a dozen departments sharing the
binhthuan.gov.vn domain, each with a few units; with ``--directory`` the
agencies, units, mailboxes, partners and temporary exceptions are those of a
real directory file instead (the demo ``directory.yaml`` is Bình Thuận's), and
records name parties as the gateway would. Mail comes from and goes to
citizens, businesses and other agencies. About half of the inbound mail that
expects an answer gets one, linked by In-Reply-To/References, after hours or
days. Decisions, tags and rule hits follow the shipped policy pack.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import random
import sys
import time
from typing import Any, Callable, Iterator

AGENCIES = {
    "UBND": ["VP", "TCD", "KT", "NC"], "STTTT": ["VP", "BCVT", "CNTT", "TTBCXB"],
    "STC": ["VP", "NS", "TCDN"], "SYT": ["VP", "NVY", "KHTC"], "SGDDT": ["VP", "GDTrH", "KTKD"],
    "SNV": ["VP", "TCBC", "CCHC"], "STNMT": ["VP", "DD", "MT"], "SXD": ["VP", "QLXD"],
    "SKHDT": ["VP", "DKKD", "TH"], "SNNPTNT": ["VP", "TL"], "STP": ["VP", "HCTP"],
    "SLDTBXH": ["VP", "LDVL"],
}
PARTNERS = ["vanthu@mic.gov.vn", "vp@lamdong.gov.vn", "vanthu@ninhthuan.gov.vn", "bbt@chinhphu.vn",
            "vanthu@mof.gov.vn", "tcdt@moet.gov.vn", "vp@dongnai.gov.vn"]
BUSINESSES = ["contact@congtyabc.com.vn", "info@thanhcong.vn", "sales@vinatech.com.vn", "hr@phuocthanh.vn"]
CATEGORIES = [("general", 40), ("meeting_invitation", 12), ("report", 10), ("official_letter", 12),
              ("announcement", 5), ("plan", 4), ("decision", 4), ("directive", 1), ("guidance", 2),
              ("submission", 2), ("minutes", 2), ("work_schedule", 2), ("draft_for_comment", 2),
              ("official_telegram", 1), ("legal_normative", 1)]
DOC_TYPE = {"meeting_invitation": "GM", "report": "BC", "announcement": "TB", "plan": "KH", "decision": "QĐ",
            "directive": "CT", "guidance": "HD", "submission": "TTr", "minutes": "BB",
            "official_telegram": "CĐ", "legal_normative": "QĐ"}
DMS = {"official_letter", "decision", "directive", "plan", "programme", "work_schedule", "direction",
       "submission", "official_telegram", "guidance", "legal_normative", "administrative_other",
       "introduction_letter"}
SUBJECT = {"general": "Trao đổi công việc", "meeting_invitation": "Giấy mời họp", "report": "Báo cáo",
           "official_letter": "V/v triển khai", "announcement": "Thông báo", "plan": "Kế hoạch",
           "decision": "Quyết định", "directive": "Chỉ thị", "guidance": "Hướng dẫn", "submission": "Tờ trình",
           "minutes": "Biên bản họp", "work_schedule": "Lịch công tác tuần", "draft_for_comment": "Xin ý kiến dự thảo",
           "official_telegram": "Công điện hỏa tốc", "legal_normative": "Quyết định ban hành quy định"}
EXCEPTIONS = ["giamdoc.syt@gmail.com"]


def _address(agency: str, unit: str) -> str:
    return f"{unit.lower()}.{agency.lower()}@binhthuan.gov.vn"


def _local(rnd: random.Random) -> tuple[str, str, str | None]:
    agency = rnd.choice(list(AGENCIES))
    unit = rnd.choice(AGENCIES[agency])
    return _address(agency, unit), agency, unit


@dataclasses.dataclass(frozen=True)
class Province:
    """Who sends and receives: local mailboxes, official addresses elsewhere, temporary exceptions."""

    local: Callable[[random.Random], tuple[str, str, str | None]]  # address, agency, unit
    partners: list[str]
    partner_agency: str | None  # what a record says is the agency of an official address elsewhere
    exception: tuple[str, str | None, str | None]  # address, agency, unit
    directory_version: str


DEFAULT = Province(_local, PARTNERS, "PARTNER", (EXCEPTIONS[0], "SYT", "VP"), "2025-03-01")


def from_directory(path: str) -> Province:
    """The province of a directory file: its agencies' mailboxes, its partners, its first exception."""
    from mailgw.directory import model as directory

    d = directory.load(path)
    boxes: dict[str, list[tuple[str, str, str | None]]] = {}
    for m in d.mailboxes:
        boxes.setdefault(m.agency.code, []).append((m.address, m.agency.code, m.unit.code if m.unit else None))
    codes = sorted(boxes)

    def local(rnd: random.Random) -> tuple[str, str, str | None]:
        return rnd.choice(boxes[rnd.choice(codes)])

    partners = [f"{box}@{dom}" for p in d.partners for dom in p.domains for box in ("vanthu", "vp")]
    # Other provinces and ministries: official by the .gov.vn suffix, in no directory.
    partners += ["vanthu@ninhthuan.gov.vn", "vp@lamdong.gov.vn", "vanthu@mof.gov.vn", "tcdt@moet.gov.vn"]
    x = d.exceptions[0] if d.exceptions else None
    exception = (x.address, x.agency.code if x.agency else None, None) if x else (EXCEPTIONS[0], codes[0], None)
    return Province(local, partners, None, exception, d.version)


def _hex(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def generate(month: str, count: int, seed: int = 1, node: str = "gw1", id_prefix: str = "01J",
             province: Province = DEFAULT) -> Iterator[dict[str, Any]]:
    """``count`` exchange records spread over ``month`` (YYYY-MM), oldest first."""
    rnd = random.Random(seed)
    partners, partner_agency = province.partners, province.partner_agency
    year, mon = map(int, month.split("-"))
    start = dt.datetime(year, mon, 1, tzinfo=dt.timezone.utc) - dt.timedelta(hours=7)
    end = (dt.datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=dt.timezone.utc) - dt.timedelta(hours=7))
    span = (end - start).total_seconds()
    times = sorted(rnd.random() * span for _ in range(count))
    waiting: list[tuple[str, str, dict[str, Any]]] = []  # inbound awaiting an answer: msgid, sender, local rcpt
    cats, weights = zip(*CATEGORIES)
    for i, offset in enumerate(times):
        t = start + dt.timedelta(seconds=offset)
        xid = f"{id_prefix}{seed:03d}{i:010d}"
        r = rnd.random()
        category = rnd.choices(cats, weights)[0]
        in_reply_to = None
        if r < 0.45:
            direction = "inbound"
            kind = rnd.random()
            if kind < 0.4:
                sender, s_agency, s_official = f"dan{rnd.randrange(5000)}@gmail.com", None, False
                category = "general" if rnd.random() < 0.8 else category
            elif kind < 0.55:
                sender, s_agency, s_official = rnd.choice(BUSINESSES), None, False
            else:
                sender, s_agency, s_official = rnd.choice(partners), partner_agency, True
            rcpt, r_agency, r_unit = province.local(rnd)
            recipients = [{"address": rcpt, "agency": r_agency, "unit": r_unit, "official": True, "local": True}]
            s_unit, exception = None, False
        else:
            direction = "internal" if r < 0.65 else "outbound"
            sender, s_agency, s_unit = province.local(rnd)
            s_official, exception = True, False
            if rnd.random() < 0.002:
                (sender, s_agency, s_unit), exception = province.exception, True
            if direction == "internal":
                a, ag, un = province.local(rnd)
                recipients = [{"address": a, "agency": ag, "unit": un, "official": True, "local": True}]
            else:
                p = rnd.choice(partners + BUSINESSES + [f"dan{rnd.randrange(5000)}@gmail.com"])
                recipients = [{"address": p, "agency": partner_agency if p in partners else None, "unit": None,
                               "official": p in partners, "local": False}]
                if waiting and rnd.random() < 0.5:
                    j = rnd.randrange(len(waiting))
                    msgid, asker, local_rcpt = waiting.pop(j)
                    in_reply_to = msgid
                    sender, s_agency, s_unit = local_rcpt["address"], local_rcpt["agency"], local_rcpt["unit"]
                    exception = False
                    recipients = [{"address": asker, "agency": partner_agency if asker in partners else None,
                                   "unit": None, "official": asker in partners, "local": False}]
        doc_number = None
        if category not in ("general", "draft_for_comment"):
            code = DOC_TYPE.get(category)
            issuer = (s_agency if s_agency and s_agency != partner_agency else "UBND").upper()
            doc_number = f"{rnd.randrange(1, 999)}/{code}-{issuer}" if code else f"{rnd.randrange(1, 999)}/{issuer}-VP"
        signed = doc_number is not None and rnd.random() < 0.55
        files = [{"name": f"VB-{i}-{k}.pdf", "names": [f"VB-{i}-{k}.pdf"], "location": str(k + 2),
                  "size": rnd.randrange(20_000, 900_000), "sha256": _hex(xid, k), "declared_type": "application/pdf",
                  "true_type": "application/pdf", "extension": "pdf", "kind": "pdf", "signed": signed and k == 0,
                  "pdf": {"signatures": int(signed and k == 0),
                          "signers": ["UBND tỉnh Bình Thuận"] if signed and k == 0 else []}}
                 for k in range(rnd.choice((0, 1, 1, 2, 3)))]
        attachments = {"count": len(files), "total_size": sum(f["size"] for f in files),
                       "signed_any": any(f["signed"] for f in files), "files": files}
        secrecy, strength = "none", "none"
        d = rnd.random()
        decision, rule, matched, tags = "accept", "default", [], []
        if d < 0.0005:
            secrecy, strength, decision, rule = "mat", "strong", "reject", "secrecy-block"
        elif d < 0.012 and direction == "outbound" and category not in ("general", "draft_for_comment"):
            decision, rule = "reject", "official-to-unofficial"
        elif d < 0.02:
            decision, rule = "reject", "dangerous-attachment"
        elif d < 0.025 and direction == "inbound":
            decision, rule = "reject", "spoof-local-domain"
        elif d < 0.035 and direction == "inbound":
            decision, rule = "quarantine", "lookalike-domain"
        elif d < 0.038:
            decision, rule = "defer", "directory-unavailable"
        if decision == "accept":
            if d < 0.045:
                secrecy, strength = "mat", "weak"
                matched.append("secrecy-suspect")
                tags.append("secrecy-suspect")
            if category in DMS:
                matched.append("should-use-dms")
                tags.append("channel:dms")
            if doc_number and not signed:
                matched.append("unsigned-document")
                tags.append("unsigned-document")
        if rule != "default":
            matched.append(rule)
        msgid = f"<{xid.lower()}@{sender.split('@')[1]}>"
        if direction == "inbound" and decision == "accept" and rnd.random() < 0.6:
            waiting.append((msgid, sender, recipients[0]))
            if len(waiting) > 5000:
                waiting.pop(0)
        tls = "TLSv1.3" if rnd.random() < (0.85 if direction == "inbound" else 0.98) else None
        yield {
            "id": xid, "time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "node": node,
            "listener": "mx" if direction == "inbound" else "relay",
            "role": "mx" if direction == "inbound" else "relay", "direction": direction,
            "client_ip": f"203.113.{rnd.randrange(256)}.{rnd.randrange(256)}", "helo": sender.split("@")[1],
            "tls": tls, "auth_user": None, "mail_from": sender, "rcpts": [x["address"] for x in recipients],
            "header": {"from": sender, "to": ", ".join(x["address"] for x in recipients), "cc": None,
                       "subject": f"{SUBJECT[category]} {doc_number or ''}".strip(), "message_id": msgid,
                       "in_reply_to": in_reply_to, "references": in_reply_to},
            "sender": {"address": sender, "agency": s_agency, "unit": s_unit, "official": s_official,
                       "exception": exception},
            "recipients": recipients, "size": rnd.randrange(3_000, 2_000_000), "sha256": _hex(xid),
            "classification": {"category": category, "doc_type": DOC_TYPE.get(category), "doc_number": doc_number,
                               "secrecy": secrecy, "secrecy_strength": strength, "declassified": False,
                               "urgency": "khan" if category == "official_telegram" else "none",
                               "confidence": round(0.5 + rnd.random() / 2, 2),
                               "evidence": [{"cue": "doc_number", "where": "subject", "text": doc_number}]
                               if doc_number else []},
            "dkim": {"signed": direction != "inbound" or rnd.random() < 0.7,
                     "aligned_pass": direction != "inbound" or (s_official and rnd.random() < 0.8)},
            "attachments": attachments,
            "decision": {"decision": decision, "rule": rule, "mode": "enforce", "tags": tags, "matched": matched,
                         "reply": "250 2.0.0 OK" if decision == "accept" else f"550 5.7.1 [{xid}]"},
            "policy_version": "policies@3f2a9c1", "directory_version": province.directory_version,
        }


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, ".")
    from mailgw.audit.log import AuditLog
    from mailgw.audit.record import decode  # every record goes through the model: the gateway's shape, checked

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--month", required=True, help="YYYY-MM")
    ap.add_argument("--count", type=int, default=60_000)
    ap.add_argument("--node", default="gw1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--directory", help="take agencies, mailboxes and partners from this directory file")
    args = ap.parse_args(argv)
    province = from_directory(args.directory) if args.directory else DEFAULT
    log = AuditLog.open(args.url, args.node)
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for rec in generate(args.month, args.count, args.seed, args.node, province=province):
        batch.append(decode(rec).to_json())
        if len(batch) >= args.batch:
            log.append(batch)
            batch = []
    if batch:
        log.append(batch)
    log.close()
    print(f"{args.count} records for {args.month} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
