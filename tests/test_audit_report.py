"""The monthly report's numbers on a small month of exchanges the gateway decided and recorded, counted by hand, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mailgw.audit import commands, report
from mailgw.audit.log import AuditLog
from mailgw.dkim import SigningKey, load_key, sign, txt_record
from tests import attachment_fixtures as fx
from tests.made_records import KEYS, gateway_context, letter, made


@pytest.fixture
def url(audit_url: str) -> str:
    """The exchange log under test: SQLite, then PostgreSQL (tests/conftest.py audit_url)."""
    return audit_url


STTTT, PARTNER = "vp.sotttt@binhthuan.gov.vn", "vanthu@mic.gov.vn"
UBND, STC_KHTC, STC_VP, SNV = "vp@binhthuan.gov.vn", "ketoan@binhthuan.gov.vn", "vanthu.stc@binhthuan.gov.vn", "vp.snv@binhthuan.gov.vn"
CITIZEN, BUSINESS, EXCEPTION = "dan@gmail.com", "contact@congtyabc.com.vn", "ubnd.xatanthanh.htn@gmail.com"


def _month(tmp: Path) -> list[dict[str, Any]]:
    """Each exchange decided and recorded by the gateway's own code (tests/made_records.py)."""
    mic_key = load_key(KEYS / "rsa2048.pem")
    ctx = gateway_context(tmp, sign="binhthuan.gov.vn", dns=(txt_record("mic.gov.vn", "mic", mic_key),))
    ca = fx.TestCA()
    signed = lambda text: ca.sign_pdf(fx.pdf_plain(text))  # noqa: E731
    cv99 = letter("Công văn số 99/BTTTT-KHTC V/v báo cáo số liệu", PARTNER, STTTT, message_id="<cv99@mic.gov.vn>")
    cv99 = sign(cv99, [SigningKey.from_file("mic.gov.vn", "mic", KEYS / "rsa2048.pem")]) + cv99
    return [
        # R1: STTTT sends a signed invitation to an official partner.
        made(ctx, "R1", "2025-03-02T01:00:00Z", "relay", letter("Giấy mời họp", STTTT, PARTNER, pdf=signed("GIAY MOI\nSo: 07/GM-STTTT"), filename="07-GM-STTTT.pdf"), STTTT, [PARTNER]),
        # R2: STTTT sends an unsigned official letter, no TLS.
        made(ctx, "R2", "2025-03-02T02:00:00Z", "relay", letter("Công văn số 456/STTTT-VP V/v cung cấp thông tin", STTTT, PARTNER, pdf=fx.pdf_plain("CONG VAN\nSo: 456/STTTT-VP"), filename="456-STTTT-VP.pdf"), STTTT, [PARTNER], tls=None),
        # R3: STC (its planning division) to UBND inside the province, a signed report.
        made(ctx, "R3", "2025-03-03T01:00:00Z", "relay", letter("Báo cáo số 12/BC-STC", STC_KHTC, UBND, pdf=signed("BAO CAO\nSo: 12/BC-STC"), filename="12-BC-STC.pdf"), STC_KHTC, [UBND]),
        # R4: a citizen writes to UBND; R5 answers 5 hours later by In-Reply-To.
        made(ctx, "R4", "2025-03-05T01:00:00Z", "mx", letter("Hỏi thủ tục", CITIZEN, UBND, message_id="<q1@gmail.com>"), CITIZEN, [UBND]),
        made(ctx, "R5", "2025-03-05T06:00:00Z", "relay", letter("Re: Hỏi thủ tục", UBND, CITIZEN, message_id="<a1@binhthuan.gov.vn>", in_reply_to="<q1@gmail.com>"), UBND, [CITIZEN]),
        # R6: the ministry sends an official letter to STTTT, DKIM-signed (verified); R7 answers in April,
        # naming the letter's number in its subject (no In-Reply-To).
        made(ctx, "R6", "2025-03-31T00:00:00Z", "mx", cv99, PARTNER, [STTTT]),
        made(ctx, "R7", "2025-04-02T00:00:00Z", "relay", letter("V/v trả lời Công văn số 99/BTTTT-KHTC", STTTT, PARTNER, body="Số: 77/STTTT-VP\r\nKính gửi Bộ Thông tin và Truyền thông,\r\n", message_id="<r7@x>"), STTTT, [PARTNER]),
        # R8: a business writes to STC, no TLS, and nobody answers.
        made(ctx, "R8", "2025-03-20T00:00:00Z", "mx", letter("Báo giá", BUSINESS, STC_VP, message_id="<b1@congtyabc.com.vn>"), BUSINESS, [STC_VP], tls=None),
        # R9: a spoof rejected; R10: a secret document blocked (its subject kept only as a hash); R11: a lookalike held.
        made(ctx, "R9", "2025-03-06T00:00:00Z", "mx", letter("Thông báo khẩn", "ct@binhthuan.gov.vn", UBND), "ct@binhthuan.gov.vn", [UBND]),
        made(ctx, "R10", "2025-03-07T00:00:00Z", "relay", letter("MẬT - Báo cáo số 5/BC-STC (never stored)", STC_VP, UBND, body="MẬT\r\nBáo cáo tình hình.\r\n"), STC_VP, [UBND]),
        made(ctx, "R11", "2025-03-08T00:00:00Z", "mx", letter("Thông báo", "x@blnhthuan.gov.vn", STC_VP), "x@blnhthuan.gov.vn", [STC_VP]),
        # R12: a commune still using a temporary exception (a gmail address), a weak secrecy mark.
        made(ctx, "R12", "2025-03-09T00:00:00Z", "relay", letter("Gửi tài liệu", EXCEPTION, PARTNER, body="Gửi kèm tài liệu mật của xã để Bộ tham khảo.\r\n"), EXCEPTION, [PARTNER]),
        # R13: 01:00 on 1 March in Vietnam (still February in UTC): in the period. Deferred by our fault.
        made(ctx, "R13", "2025-02-28T18:00:00Z", "relay", letter("Lịch công tác", SNV, PARTNER), SNV, [PARTNER], fault=True),
        # R14: 00:30 on 1 April in Vietnam: outside the period.
        made(ctx, "R14", "2025-03-31T17:30:00Z", "relay", letter("Lịch công tác tuần", STTTT, PARTNER), STTTT, [PARTNER]),
    ]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _month(tmp_path_factory.mktemp("report-month"))


AS_OF = dt.datetime(2025, 4, 10)


@pytest.fixture
def data(url: str, month: list[dict[str, Any]]) -> dict:  # type: ignore[type-arg]
    log = AuditLog.open(url, "gw1")
    log.append(month)
    d = report.compute(log.engine, "2025-03", as_of=AS_OF)
    log.close()
    return d


def test_volumes_and_decisions(data: dict) -> None:  # type: ignore[type-arg]
    assert data["total"] == 12
    assert data["decisions"] == {"accept": 8, "reject": 2, "quarantine": 1, "defer": 1}
    assert data["directions"] == {"outbound": 5, "internal": 2, "inbound": 5}
    agencies = {a["agency"]: (a["inbound"], a["outbound"], a["internal"], a["total"]) for a in data["agencies"]}
    # ubnd: R4 and R9 in, R5 and R12 (its exception address) out, R3 and R10 inside the province
    assert agencies == {"sotttt": (1, 2, 0, 3), "ubnd": (2, 2, 2, 6), "stc": (2, 0, 2, 4), "snv": (0, 1, 0, 1)}
    units = {(u["agency"], u["unit"]): u["total"] for u in data["units"]}
    assert units[("stc", "khtc")] == 1 and units[("stc", "vp")] == 3 and units[("ubnd", "vp")] == 5


def test_electronic_share_against_the_benchmark(data: dict) -> None:  # type: ignore[type-arg]
    e = data["electronic"]
    assert (e["total"]["documents"], e["total"]["signed"]) == (3, 2)
    assert e["total"]["share"] == pytest.approx(2 / 3) and e["total"]["meets_benchmark"] is True
    rows = {r["agency"]: (r["documents"], r["signed"], r["meets_benchmark"]) for r in e["agencies"]}
    assert rows == {"sotttt": (2, 1, False), "stc": (1, 1, True)}  # R1 and R2; R3


def test_rule_hits(data: dict) -> None:  # type: ignore[type-arg]
    rh = data["rule_hits"]
    assert rh["rejections"] == {"spoof-local-domain": 1, "secrecy-block": 1}
    assert rh["quarantines"] == {"lookalike-domain": 1}
    assert rh["deferrals"] == {"error": 1}
    assert rh["tags"] == {"channel:dms": 3, "unsigned-document": 2, "secrecy-suspect": 1}  # R2 R6 R13; R2 R6; R12
    assert rh["secrecy_blocks"] == 1
    per = {a["agency"]: a for a in rh["agencies"]}
    assert (per["ubnd"]["reject"], per["ubnd"]["secrecy-block"], per["ubnd"]["secrecy-suspect"]) == (2, 1, 1)
    assert (per["sotttt"]["channel:dms"], per["sotttt"]["unsigned-document"]) == (2, 2)
    assert (per["stc"]["reject"], per["stc"]["quarantine"]) == (1, 1) and per["snv"]["defer"] == 1


def test_dkim_tls_and_exceptions(data: dict) -> None:  # type: ignore[type-arg]
    dk = data["dkim"]
    assert (dk["outbound_accepted"], dk["outbound_signed"]) == (5, 4)  # R1 R2 R3 R5 signed; R12 (webmail) not
    assert (dk["inbound_accepted"], dk["inbound_aligned_pass"]) == (3, 1)  # R4 R6 R8; R6
    assert {d: (v["tls"], v["total"]) for d, v in data["tls"].items()} == {
        "inbound": (4, 5), "outbound": (4, 5), "internal": (2, 2)}
    [x] = data["exceptions"]
    assert (x["address"], x["agency"], x["count"]) == ("ubnd.xatanthanh.htn@gmail.com", "ubnd", 1)


def test_response_times(data: dict) -> None:  # type: ignore[type-arg]
    r = data["response"]
    assert (r["awaiting"], r["answered"], r["unanswered_total"]) == (3, 2, 1)
    classes = {c["group"]: (c["awaiting"], c["answered"], c["median_h"]) for c in r["classes"]}
    assert classes == {"citizen": (1, 1, 5.0), "agency": (1, 1, 48.0), "business": (1, 0, None)}
    agencies = {c["group"]: (c["awaiting"], c["answered"]) for c in r["agencies"]}
    assert agencies == {"ubnd": (1, 1), "sotttt": (1, 1), "stc": (1, 0)}
    [u] = r["unanswered"]
    assert (u["id"], u["waiting_h"], u["class"]) == ("R8", 21 * 24.0, "business")


def test_report_command_writes_a_self_contained_page(url: str, tmp_path, month) -> None:  # type: ignore[no-untyped-def]
    log = AuditLog.open(url, "gw1")
    log.append(month)
    log.close()
    out = tmp_path / "report.html"
    err = io.StringIO()
    assert commands.report(url, "2025-03", str(out), err=err) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="vi">' in page
    assert page.count("<svg") == 3 and "<img" not in page
    assert not re.search(r'(src|href)="(?!#)', page)  # nothing outside the file: only in-page references
    assert "66.7 %" in page and "Chỉ tiêu: 60 %" in page and "Benchmark: 60 %" in page
    assert "ubnd.xatanthanh.htn@gmail.com" in page and "Báo giá" in page and "never stored" not in page
    embedded = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert embedded["total"] == 12 and embedded["period"] == "2025-03"
    assert commands.report(url, "2025-13", str(out), err=err) == 2
    assert commands.report(url, "March", str(out), err=err) == 2


def test_response_times_show_hoa_toc_and_thuong_khan_apart(tmp_path: Path) -> None:
    """Three letters from the ministry, decided and recorded by the gateway: a HỎA TỐC one answered in an
    hour, a THƯỢNG KHẨN one never answered, an ordinary one answered in two days. The response-time
    section has a row for each urgency group, the ordinary letter in "the rest", and says so on the page."""
    ctx = gateway_context(tmp_path)
    mail = [
        made(ctx, "U1", "2025-03-10T01:00:00Z", "mx", letter("HỎA TỐC - Công văn số 31/BTTTT-VP về phòng chống bão",
                                                             PARTNER, STTTT, message_id="<u1@mic.gov.vn>"), PARTNER, [STTTT]),
        made(ctx, "U2", "2025-03-10T02:00:00Z", "relay", letter("Re: Công văn số 31/BTTTT-VP", STTTT, PARTNER,
                                                                message_id="<u2@x>", in_reply_to="<u1@mic.gov.vn>"),
             STTTT, [PARTNER]),
        made(ctx, "U3", "2025-03-11T01:00:00Z", "mx", letter("THƯỢNG KHẨN - Công văn số 32/BTTTT-VP báo cáo số liệu",
                                                             PARTNER, UBND, message_id="<u3@mic.gov.vn>"), PARTNER, [UBND]),
        made(ctx, "U4", "2025-03-12T01:00:00Z", "mx", letter("Công văn số 33/BTTTT-VP V/v cung cấp thông tin",
                                                             PARTNER, STC_VP, message_id="<u4@mic.gov.vn>"), PARTNER, [STC_VP]),
        made(ctx, "U5", "2025-03-14T01:00:00Z", "relay", letter("Re: Công văn số 33/BTTTT-VP", STC_VP, PARTNER,
                                                                message_id="<u5@x>", in_reply_to="<u4@mic.gov.vn>"),
             STC_VP, [PARTNER]),
    ]
    assert [m["classification"]["urgency"] for m in mail[::2]] == ["hoa_toc", "thuong_khan", "none"]
    log = AuditLog.open(f"sqlite:///{tmp_path}/urgency.db", "gw1")
    log.append(mail)
    d = report.compute(log.engine, "2025-03", as_of=AS_OF)
    log.close()
    rows = {r["group"]: (r["awaiting"], r["answered"], r["unanswered"], r["median_h"]) for r in d["response"]["urgency"]}
    assert rows == {"hoa_toc": (1, 1, 0, 1.0), "thuong_khan": (1, 0, 1, None), "other": (1, 1, 0, 48.0)}
    assert [r["group"] for r in d["response"]["urgency"]] == ["hoa_toc", "thuong_khan", "other"]
    page = report.render(d)
    section = page[page.index("Theo độ khẩn / By urgency"):page.index("Theo cơ quan nhận / Per receiving agency")]
    assert section.index("Hỏa tốc / Immediate") < section.index("Thượng khẩn / Most urgent") < section.index(
        "Còn lại (khẩn, thường)")


def test_an_empty_urgency_group_is_still_shown(data: dict) -> None:  # type: ignore[type-arg]
    """The month of the other tests has no HỎA TỐC or THƯỢNG KHẨN mail: their rows say 0, not nothing."""
    rows = {r["group"]: (r["awaiting"], r["answered"]) for r in data["response"]["urgency"]}
    assert rows == {"hoa_toc": (0, 0), "thuong_khan": (0, 0), "other": (3, 2)}
