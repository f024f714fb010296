"""The monthly report's numbers on a small data set counted by hand, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest

from mailgw.audit import commands, report
from mailgw.audit.log import AuditLog
from mailgw.audit.testing import sample_record


@pytest.fixture
def url(audit_url: str) -> str:
    """The exchange log under test: SQLite, then PostgreSQL (tests/conftest.py audit_url)."""
    return audit_url


def rc(address: str, agency: str | None, unit: str | None, official: bool, local: bool) -> dict:  # type: ignore[type-arg]
    return {"address": address, "agency": agency, "unit": unit, "official": official, "local": local}


def snd(address: str, agency: str | None, unit: str | None, official: bool, exception: bool = False) -> dict:  # type: ignore[type-arg]
    return {"address": address, "agency": agency, "unit": unit, "official": official, "exception": exception}


CLS = sample_record()["classification"]
PARTNER = rc("vanthu@mic.gov.vn", "BTTTT", None, True, False)
STTTT = snd("vp.stttt@binhthuan.gov.vn", "STTTT", "VP", True)
_FILE = sample_record()["attachments"]["files"][0]
UNSIGNED = {"count": 1, "total_size": _FILE["size"], "signed_any": False,
            "files": [{**_FILE, "signed": False, "pdf": {**_FILE["pdf"], "signatures": 0, "signers": []}}]}


def dec(decision: str, rule: str, tags: list[str] = []) -> dict:  # type: ignore[type-arg]
    return {"decision": decision, "rule": rule, "mode": "enforce", "tags": tags, "matched": tags + [rule],
            "reply": "..."}


def cls(category: str, doc_number: str | None, **kw: str) -> dict:  # type: ignore[type-arg]
    return {**CLS, "category": category, "doc_number": doc_number, **kw}


def inbound(**kw):  # type: ignore[no-untyped-def]
    base = {"direction": "inbound", "role": "mx", "listener": "mx", "attachments": {},
            "dkim": {"signed": False, "aligned_pass": False, "signatures": []}}
    return sample_record(**{**base, **kw})


DATA = [
    # R1: STTTT sends a signed invitation to an official partner.
    sample_record(id="R1", time="2025-03-02T01:00:00Z", sender=STTTT, recipients=[PARTNER]),
    # R2: STTTT sends an unsigned official letter, no TLS, no DKIM signature.
    sample_record(id="R2", time="2025-03-02T02:00:00Z", sender=STTTT, recipients=[PARTNER], tls=None,
                  dkim={"signed": False, "aligned_pass": False, "signatures": []}, attachments=UNSIGNED,
                  classification=cls("official_letter", "456/STTTT-VP"),
                  decision=dec("accept", "default", ["channel:dms", "unsigned-document"])),
    # R3: SYT to UBND inside the province, a signed report.
    sample_record(id="R3", time="2025-03-03T01:00:00Z", direction="internal",
                  sender=snd("khtc.syt@binhthuan.gov.vn", "SYT", "KHTC", True),
                  recipients=[rc("vp.ubnd@binhthuan.gov.vn", "UBND", "VP", True, True)],
                  classification=cls("report", "12/BC-SYT")),
    # R4: a citizen writes to UBND; R5 answers 5 hours later by In-Reply-To.
    inbound(id="R4", time="2025-03-05T01:00:00Z", mail_from="dan@gmail.com",
            sender=snd("dan@gmail.com", None, None, False),
            recipients=[rc("vp.ubnd@binhthuan.gov.vn", "UBND", "VP", True, True)],
            header={**sample_record()["header"], "message_id": "<q1@gmail.com>", "subject": "Hỏi thủ tục"},
            classification=cls("general", None)),
    sample_record(id="R5", time="2025-03-05T06:00:00Z", sender=snd("vp.ubnd@binhthuan.gov.vn", "UBND", "VP", True),
                  recipients=[rc("dan@gmail.com", None, None, False, False)], attachments={},
                  header={**sample_record()["header"], "message_id": "<a1@binhthuan.gov.vn>",
                          "in_reply_to": "<q1@gmail.com>", "references": "<q1@gmail.com>"},
                  classification=cls("general", None)),
    # R6: the ministry sends an official letter to STTTT (verified by DKIM); R7 answers in April,
    # naming the letter's number in its subject (no In-Reply-To).
    inbound(id="R6", time="2025-03-31T00:00:00Z", mail_from="vanthu@mic.gov.vn",
            sender=snd("vanthu@mic.gov.vn", "BTTTT", None, True),
            recipients=[rc("vp.stttt@binhthuan.gov.vn", "STTTT", "VP", True, True)],
            dkim={"signed": True, "aligned_pass": True, "signatures": []},
            header={**sample_record()["header"], "message_id": "<cv99@mic.gov.vn>"},
            classification=cls("official_letter", "99/BTTTT-KHTC")),
    sample_record(id="R7", time="2025-04-02T00:00:00Z", sender=STTTT, recipients=[PARTNER],
                  header={**sample_record()["header"], "message_id": "<r7@x>",
                          "subject": "V/v trả lời Công văn số 99/BTTTT-KHTC"},
                  classification=cls("official_letter", "77/STTTT-VP")),
    # R8: a business writes to SYT, no TLS, and nobody answers.
    inbound(id="R8", time="2025-03-20T00:00:00Z", mail_from="contact@congtyabc.com.vn", tls=None,
            sender=snd("contact@congtyabc.com.vn", None, None, False),
            recipients=[rc("vp.syt@binhthuan.gov.vn", "SYT", "VP", True, True)],
            header={**sample_record()["header"], "message_id": "<b1@congtyabc.com.vn>", "subject": "Báo giá"},
            classification=cls("general", None)),
    # R9: a spoof rejected; R10: a secret document blocked; R11: a lookalike quarantined.
    inbound(id="R9", time="2025-03-06T00:00:00Z", sender=snd("ct@binhthuan.gov.vn", None, None, True),
            recipients=[rc("vp.ubnd@binhthuan.gov.vn", "UBND", "VP", True, True)],
            decision=dec("reject", "spoof-local-domain")),
    sample_record(id="R10", time="2025-03-07T00:00:00Z", sender=snd("vp.syt@binhthuan.gov.vn", "SYT", "VP", True),
                  classification=cls("report", "5/BC-SYT", secrecy="mat", secrecy_strength="strong"),
                  decision=dec("reject", "secrecy-block"), body="never stored"),
    inbound(id="R11", time="2025-03-08T00:00:00Z", sender=snd("x@blnhthuan.gov.vn", None, None, True),
            recipients=[rc("vp.stc@binhthuan.gov.vn", "STC", "VP", True, True)],
            decision=dec("quarantine", "lookalike-domain")),
    # R12: a director still using a temporary exception (a gmail address).
    sample_record(id="R12", time="2025-03-09T00:00:00Z", sender=snd("giamdoc.syt@gmail.com", "SYT", "VP", True, True),
                  recipients=[PARTNER], classification=cls("general", None),
                  decision=dec("accept", "default", ["secrecy-suspect"])),
    # R13: 01:00 on 1 March in Vietnam (still February in UTC): in the period. Deferred.
    sample_record(id="R13", time="2025-02-28T18:00:00Z", sender=snd("vp.sxd@binhthuan.gov.vn", "SXD", "VP", True),
                  decision=dec("defer", "directory-unavailable")),
    # R14: 00:30 on 1 April in Vietnam: outside the period.
    sample_record(id="R14", time="2025-03-31T17:30:00Z", sender=STTTT),
]
AS_OF = dt.datetime(2025, 4, 10)


@pytest.fixture
def data(url: str) -> dict:  # type: ignore[type-arg]
    log = AuditLog.open(url, "gw1")
    log.append(DATA)
    d = report.compute(log.engine, "2025-03", as_of=AS_OF)
    log.close()
    return d


def test_volumes_and_decisions(data: dict) -> None:  # type: ignore[type-arg]
    assert data["total"] == 12
    assert data["decisions"] == {"accept": 8, "reject": 2, "quarantine": 1, "defer": 1}
    assert data["directions"] == {"outbound": 6, "internal": 1, "inbound": 5}
    agencies = {a["agency"]: (a["inbound"], a["outbound"], a["internal"], a["total"]) for a in data["agencies"]}
    assert agencies == {"STTTT": (1, 2, 0, 3), "UBND": (2, 1, 1, 4), "SYT": (1, 2, 1, 4), "STC": (1, 0, 0, 1),
                        "SXD": (0, 1, 0, 1)}
    units = {(u["agency"], u["unit"]): u["total"] for u in data["units"]}
    assert units[("SYT", "KHTC")] == 1 and units[("SYT", "VP")] == 3


def test_electronic_share_against_the_benchmark(data: dict) -> None:  # type: ignore[type-arg]
    e = data["electronic"]
    assert (e["total"]["documents"], e["total"]["signed"]) == (3, 2)
    assert e["total"]["share"] == pytest.approx(2 / 3) and e["total"]["meets_benchmark"] is True
    rows = {r["agency"]: (r["documents"], r["signed"], r["meets_benchmark"]) for r in e["agencies"]}
    assert rows == {"STTTT": (2, 1, False), "SYT": (1, 1, True)}


def test_rule_hits(data: dict) -> None:  # type: ignore[type-arg]
    rh = data["rule_hits"]
    assert rh["rejections"] == {"spoof-local-domain": 1, "secrecy-block": 1}
    assert rh["quarantines"] == {"lookalike-domain": 1}
    assert rh["deferrals"] == {"directory-unavailable": 1}
    assert rh["tags"] == {"channel:dms": 1, "unsigned-document": 1, "secrecy-suspect": 1}
    assert rh["secrecy_blocks"] == 1
    per = {a["agency"]: a for a in rh["agencies"]}
    assert (per["SYT"]["reject"], per["SYT"]["secrecy-block"], per["SYT"]["secrecy-suspect"]) == (1, 1, 1)
    assert (per["STTTT"]["channel:dms"], per["STTTT"]["unsigned-document"]) == (1, 1)
    assert per["STC"]["quarantine"] == 1 and per["SXD"]["defer"] == 1 and per["UBND"]["reject"] == 1


def test_dkim_tls_and_exceptions(data: dict) -> None:  # type: ignore[type-arg]
    dk = data["dkim"]
    assert (dk["outbound_accepted"], dk["outbound_signed"]) == (5, 4)
    assert (dk["inbound_accepted"], dk["inbound_aligned_pass"]) == (3, 1)
    assert {d: (v["tls"], v["total"]) for d, v in data["tls"].items()} == {
        "inbound": (4, 5), "outbound": (5, 6), "internal": (1, 1)}
    [x] = data["exceptions"]
    assert (x["address"], x["agency"], x["count"]) == ("giamdoc.syt@gmail.com", "SYT", 1)


def test_response_times(data: dict) -> None:  # type: ignore[type-arg]
    r = data["response"]
    assert (r["awaiting"], r["answered"], r["unanswered_total"]) == (3, 2, 1)
    classes = {c["group"]: (c["awaiting"], c["answered"], c["median_h"]) for c in r["classes"]}
    assert classes == {"citizen": (1, 1, 5.0), "agency": (1, 1, 48.0), "business": (1, 0, None)}
    agencies = {c["group"]: (c["awaiting"], c["answered"]) for c in r["agencies"]}
    assert agencies == {"UBND": (1, 1), "STTTT": (1, 1), "SYT": (1, 0)}
    [u] = r["unanswered"]
    assert (u["id"], u["waiting_h"], u["class"]) == ("R8", 21 * 24.0, "business")


def test_report_command_writes_a_self_contained_page(url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = AuditLog.open(url, "gw1")
    log.append(DATA)
    log.close()
    out = tmp_path / "report.html"
    err = io.StringIO()
    assert commands.report(url, "2025-03", str(out), err=err) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="vi">' in page
    assert page.count("<svg") == 3 and "<img" not in page
    assert not re.search(r'(src|href)="(?!#)', page)  # nothing outside the file: only in-page references
    assert "66.7 %" in page and "Chỉ tiêu: 60 %" in page and "Benchmark: 60 %" in page
    assert "giamdoc.syt@gmail.com" in page and "Báo giá" in page and "never stored" not in page
    embedded = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert embedded["total"] == 12 and embedded["period"] == "2025-03"
    assert commands.report(url, "2025-13", str(out), err=err) == 2
    assert commands.report(url, "March", str(out), err=err) == 2
