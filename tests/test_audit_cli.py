"""`mailgw audit ...` and `mailgw report` on a known month of records made by the gateway, on SQLite and PostgreSQL.

The data set below is small enough to count by hand; the expected numbers in
the report test are those counts, worked out in the comments.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select as io_select
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from mailgw import cli
from mailgw.audit.log import AuditLog
from mailgw.audit.schema import Access, Exchange
from mailgw.message.model import Context
from tests import attachment_fixtures as fx
from tests.conftest import REPO, write_config
from tests.made_records import gateway_context, letter, made

STTTT, SNV, STC = (f"vanthu.{a}@binhthuan.gov.vn" for a in ("sotttt", "snv", "stc"))
MIC, CITIZEN, BUSINESS = "vanthu@mic.gov.vn", "dan@gmail.com", "info@congty.vn"


def _month(ctx: Context) -> list[dict[str, Any]]:
    """A month of exchanges, each decided and recorded by the gateway's own code (tests/made_records.py)."""
    ca = fx.TestCA()
    return [
        # sotttt sends a signed invitation to the ministry: an official document, signed (1 of 2).
        made(ctx, "X01", "2025-03-03T02:00:00Z", "relay",
             letter("Giấy mời họp giao ban", STTTT, MIC, pdf=ca.sign_pdf(fx.pdf_plain("GIAY MOI\nSo: 07/GM-STTTT")),
                    filename="07-GM-STTTT.pdf"), STTTT, [MIC]),
        # sotttt tries to send an official letter to a citizen: rejected.
        made(ctx, "X02", "2025-03-05T03:00:00Z", "relay",
             letter("Công văn số 15/STTTT-VP về việc cung cấp thông tin", STTTT, CITIZEN), STTTT, [CITIZEN]),
        # A citizen writes to snv (awaiting a reply) ...
        made(ctx, "X03", "2025-03-10T01:00:00Z", "mx",
             letter("Hỏi về thủ tục cấp phép", CITIZEN, SNV, message_id="<q1@gmail.com>"), CITIZEN, [SNV]),
        # ... and snv answers five hours later.
        made(ctx, "X04", "2025-03-10T06:00:00Z", "relay",
             letter("Re: Hỏi về thủ tục cấp phép", SNV, CITIZEN, in_reply_to="<q1@gmail.com>"), SNV, [CITIZEN]),
        # snv sends an unsigned plan to stc inside the province: official document, not signed (2 of 2).
        made(ctx, "X05", "2025-03-20T02:00:00Z", "relay",
             letter("Kế hoạch số 20/KH-SNV triển khai công tác năm 2025", SNV, STC,
                    pdf=fx.pdf_plain("KE HOACH\nSo: 20/KH-SNV"), filename="20-KH-SNV.pdf"), SNV, [STC]),
        # A business sends a report to stc: awaiting a reply, never answered.
        made(ctx, "X06", "2025-03-25T04:00:00Z", "mx",
             letter("Báo cáo số 3/BC-CT tình hình hoạt động", BUSINESS, STC), BUSINESS, [STC]),
        # Deferred by our own error (decided, then not spooled).
        made(ctx, "X07", "2025-03-28T05:00:00Z", "mx", letter("Hỏi thêm về lệ phí", CITIZEN, SNV), CITIZEN, [SNV],
             fault=True),
        # 2025-04-01 01:30 in Vietnam: April, not March.
        made(ctx, "X08", "2025-03-31T18:30:00Z", "relay",
             letter("Báo cáo tháng 3", STTTT, MIC, pdf=ca.sign_pdf(fx.pdf_plain("BAO CAO\nSo: 9/BC-STTTT")),
                    filename="9-BC-STTTT.pdf"), STTTT, [MIC]),
    ]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _month(gateway_context(tmp_path_factory.mktemp("month")))


@pytest.fixture
def config(tmp_path: Path, ca: Any, password_hash: str, audit_url: str, month: list[dict[str, Any]]) -> Path:
    log = AuditLog.open(audit_url, "gw1", checkpoint_every=3)
    log.append(month[:4])  # two transactions, as a gateway would commit them
    log.append(month[4:])
    log.delivery([{"exchange_id": "X01", "recipient": "vanthu@mic.gov.vn", "time": "2025-03-03T02:00:05Z",
                   "status": "sent", "reply": "250 2.0.0 ok", "attempt": 1}])
    log.close()
    return write_config(tmp_path, 2526, ca, password_hash, database=audit_url)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def ids(out: str) -> list[str]:
    return [json.loads(line)["id"] for line in out.splitlines()]


@pytest.mark.parametrize("filters, expected", [
    (["--decision", "reject"], ["X02"]),
    (["--sender", "VanThu.SoTTTT@BinhThuan.gov.vn"], ["X08", "X02", "X01"]),
    (["--recipient", "VANTHU.SNV@binhthuan.gov.vn"], ["X07", "X03"]),
    (["--agency", "snv"], ["X07", "X05", "X04", "X03"]),
    (["--category", "plan"], ["X05"]),
    (["--rule", "should-use-dms"], ["X05"]),  # a tag-only rule that matched counts too
    (["--rule", "official-to-unofficial"], ["X02"]),
    (["--doc-number", "07 / gm-STTTT"], ["X01"]),
    (["--since", "2025-03-10", "--until", "2025-03-20"], ["X05", "X04", "X03"]),  # whole days, Vietnam time
    (["--until", "2025-03-31", "--decision", "accept"], ["X06", "X05", "X04", "X03", "X01"]),
    (["--since", "2025-03-10T01:00:00Z", "--until", "2025-03-10T06:00:00Z"], ["X03"]),  # until is exclusive
    (["--agency", "snv", "--decision", "accept", "--limit", "1"], ["X05"]),
    (["--since", "7d"], []),
    (["--limit", "2"], ["X08", "X07"]),
])
def test_search_filters(config: Path, capsys: Any, filters: list[str], expected: list[str]) -> None:
    status, out, err = run(capsys, "audit", "search", "--json", "--config", str(config), *filters)
    assert status == 0, err
    assert ids(out) == expected


def test_search_text_show_and_usage_errors(config: Path, capsys: Any) -> None:
    status, out, err = run(capsys, "audit", "search", "--category", "plan", "--config", str(config))
    assert status == 0 and "X05" in out and "20/KH-SNV" in out and "1 exchange(s)" in err
    status, out, _ = run(capsys, "audit", "show", "X01", "--config", str(config))
    assert status == 0
    assert "Decision:             accept by rule default" in out and "vanthu@mic.gov.vn  sent  attempt 1" in out
    status, out, _ = run(capsys, "audit", "show", "X01", "--json", "--config", str(config))
    rec = json.loads(out)
    assert rec["classification"]["doc_number"] == "07/GM-STTTT" and rec["deliveries"][0]["status"] == "sent"
    assert rec["audit"]["node"] == "gw1" and len(rec["audit"]["hash"]) == 64
    status, _, err = run(capsys, "audit", "show", "NOPE", "--config", str(config))
    assert status == 1 and "NOPE" in err
    status, _, err = run(capsys, "audit", "search", "--since", "yesterday", "--config", str(config))
    assert status == 2 and "yesterday" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["audit", "search", "--limit", "many", "--config", str(config)])
    assert e.value.code == 2
    status, _, err = run(capsys, "report", "--period", "2025-13", "--out", "x.html", "--config", str(config))
    assert status == 2 and "YYYY-MM" in err


def test_unknown_category_or_agency_is_refused_with_the_known_ones(config: Path, capsys: Any) -> None:
    status, out, err = run(capsys, "audit", "search", "--category", "invitation", "--config", str(config))
    assert status == 2 and out == ""
    assert "unknown value 'invitation'" in err and "meeting_invitation" in err and "general" in err
    status, _, err = run(capsys, "audit", "search", "--category", "offical_letter", "--config", str(config))
    assert status == 2 and "did you mean 'official_letter'?" in err
    status, _, err = run(capsys, "audit", "export", "--format", "csv", "--agency", "snvv", "--out", "x.csv",
                         "--config", str(config))
    assert status == 2 and "did you mean 'snv'?" in err and "known: skhdt, snv, sotttt, stc, ubnd" in err
    status, out, err = run(capsys, "audit", "search", "--agency", "snv", "--config", str(config))
    assert status == 0 and "4 exchange(s)" in err


def test_export_csv_and_jsonl(config: Path, capsys: Any, tmp_path: Path) -> None:
    out_csv, out_jsonl = tmp_path / "snv.csv", tmp_path / "all.jsonl"
    status, _, err = run(capsys, "audit", "export", "--format", "csv", "--agency", "snv", "--out", str(out_csv),
                         "--config", str(config))
    assert status == 0 and "4 exchange(s) written" in err
    assert "%|" not in err  # no progress bar when nobody watches a terminal
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == ["X07", "X05", "X04", "X03"]
    assert rows[1]["doc_number"] == "20/KH-SNV" and rows[1]["tags"] == "channel:dms;unsigned-document"
    assert stat.S_IMODE(out_csv.stat().st_mode) == 0o600
    status, _, _ = run(capsys, "audit", "export", "--format", "jsonl", "--out", str(out_jsonl), "--config", str(config))
    assert status == 0
    lines = [json.loads(line) for line in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in lines] == [f"X0{i}" for i in range(8, 0, -1)]
    assert lines[-1]["deliveries"][0]["recipient"] == "vanthu@mic.gov.vn"


def test_export_shows_progress_on_a_terminal(config: Path, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    out = tmp_path / "x.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mailgw", "audit", "export", "--format", "jsonl", "--out", str(out),
                             "--config", str(config)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = io_select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=30) == 0
    os.close(master)
    assert b"100%" in seen and b"8/8" in seen, seen
    assert len(out.read_text().splitlines()) == 8


@pytest.mark.parametrize("tamper, record, kind", [
    ("edit", "exchange X03", "altered"),
    ("delete", "exchange X05", "deleted"),
    ("reorder", "exchange X07", "reordered"),
])
def test_verify_names_the_first_bad_record(config: Path, capsys: Any, audit_url: str, tamper: str, record: str,
                                           kind: str) -> None:
    status, out, _ = run(capsys, "audit", "verify", "--config", str(config))
    assert status == 0 and "ok: chain gw1: head seq 9" in out  # 8 exchanges and 1 delivery event
    log = AuditLog.open(audit_url, "gw1")
    with log.engine.begin() as conn:
        if tamper == "edit":  # someone turns a citizen's letter into a partner's
            text = conn.execute(select(Exchange.record).where(Exchange.id == "X03")).scalar_one()
            conn.execute(update(Exchange).where(Exchange.id == "X03").values(record=text.replace("gmail.com", "mic.gov.vn")))
        elif tamper == "delete":
            conn.execute(Exchange.__table__.delete().where(Exchange.id == "X04"))
        else:  # X06 and X07 swap places
            conn.execute(update(Exchange).where(Exchange.id == "X06").values(seq=-1))
            conn.execute(update(Exchange).where(Exchange.id == "X07").values(seq=6))
            conn.execute(update(Exchange).where(Exchange.id == "X06").values(seq=7))
    log.close()
    status, out, _ = run(capsys, "audit", "verify", "--config", str(config))
    assert status == 1
    broken = [line for line in out.splitlines() if line.startswith("BROKEN:")]
    assert len(broken) == 1 and "chain gw1" in broken[0] and f"({record}): {kind}" in broken[0], out


def test_prune_keeps_verify_green(config: Path, capsys: Any) -> None:
    status, out, _ = run(capsys, "audit", "prune", "--before", "2025-03-15", "--config", str(config))
    assert status == 0 and "chain gw1: 4 record(s) removed" in out  # X01-X04; the X01 delivery is at seq 9
    status, out, _ = run(capsys, "audit", "verify", "--config", str(config))
    assert status == 0, out
    status, out, _ = run(capsys, "audit", "search", "--json", "--config", str(config))
    assert ids(out) == ["X08", "X07", "X06", "X05"]


def test_auditor_access_is_logged(config: Path, capsys: Any, audit_url: str, tmp_path: Path) -> None:
    run(capsys, "audit", "search", "--agency", "snv", "--auditor", "Nguyễn Văn An (Thanh tra tỉnh)", "--config", str(config))
    run(capsys, "audit", "export", "--format", "csv", "--out", str(tmp_path / "e.csv"), "--config", str(config))
    log = AuditLog.open(audit_url, "gw1")
    with log.engine.connect() as conn:
        rows = conn.execute(select(Access).order_by(Access.seq)).all()
    log.close()
    assert [r.command for r in rows] == ["audit search", "audit export"]
    search_args = json.loads(rows[0].args)
    assert search_args["agency"] == "snv" and search_args["auditor"] == "Nguyễn Văn An (Thanh tra tỉnh)"
    assert "auditor" not in json.loads(rows[1].args) and json.loads(rows[1].args)["format"] == "csv"
    import pwd
    assert rows[0].os_user.startswith(pwd.getpwuid(os.geteuid()).pw_name)


def test_report_numbers_for_the_month(config: Path, capsys: Any, tmp_path: Path) -> None:
    out = tmp_path / "report-2025-03.html"
    status, _, err = run(capsys, "report", "--period", "2025-03", "--out", str(out), "--config", str(config))
    assert status == 0, err
    page = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))
    assert data["total"] == 7  # X01..X07; X08 is April in Vietnam time
    assert data["decisions"] == {"accept": 5, "reject": 1, "defer": 1}
    assert data["directions"] == {"outbound": 3, "inbound": 3, "internal": 1}
    # Official documents sent: X01 (signed) and X05 (unsigned); X02 was rejected, X04 is general.
    e = data["electronic"]
    assert (e["total"]["documents"], e["total"]["signed"], e["total"]["share"]) == (2, 1, 0.5)
    assert e["total"]["meets_benchmark"] is False
    assert {r["agency"]: (r["documents"], r["signed"]) for r in e["agencies"]} == {"sotttt": (1, 1), "snv": (1, 0)}
    rh = data["rule_hits"]
    assert rh["rejections"] == {"official-to-unofficial": 1} and rh["deferrals"] == {"error": 1}
    assert rh["tags"] == {"channel:dms": 1, "unsigned-document": 2, "secrecy-suspect": 0}  # X05; X05 and X06
    # Awaiting a reply: X03 (citizen) answered by X04 after 5 h; X06 (business) never answered.
    resp = data["response"]
    assert (resp["awaiting"], resp["answered"], resp["unanswered_total"]) == (2, 1, 1)
    assert {r["group"]: (r["awaiting"], r["answered"], r["median_h"]) for r in resp["classes"]} == {
        "citizen": (1, 1, 5.0), "business": (1, 0, None)}
    assert [u["id"] for u in resp["unanswered"]] == ["X06"]
    assert data["chain_heads"]["gw1"]["seq"] == 9
    assert "<svg" in page and 'src="http' not in page and "<link" not in page  # one self-contained file
    assert "Tỷ lệ văn bản điện tử" in page and "Electronic share" in page
    # The settings' directory names the agencies and categories, in the tables and in the charts
    # (matplotlib draws text as paths and keeps each label beside them as a comment).
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 3
    labels = [set(re.findall(r"<!-- (.*?) -->", chart)) for chart in charts]
    assert {"Sở Thông tin và Truyền thông", "Sở Nội vụ"} <= labels[0] and "sotttt" not in labels[0], labels[0]
    assert "Kế hoạch" in labels[1] and "plan" not in labels[1], labels[1]  # the categories' chart
    assert "Sở Nội vụ (snv)" in page


def _legacy(month: list[dict[str, Any]], xid: str) -> dict[str, Any]:
    """A record as releases before the typed model wrote it: attachments a list of files with ``signer``."""
    rec = {**month[0], "id": xid}
    rec["attachments"] = [{"name": "QD-12.pdf", "size": 9000, "sha256": "cd34" + "0" * 60,
                           "declared_type": "application/pdf", "true_type": "application/pdf",
                           "signed": True, "signer": "Ủy ban nhân dân tỉnh Bình Thuận"}]
    return rec


def test_records_of_the_earlier_shape_keep_reading(tmp_path: Path, ca: Any, password_hash: str, audit_url: str,
                                                    capsys: Any, month: list[dict[str, Any]]) -> None:
    log = AuditLog.open(audit_url, "gw1")
    log.append([_legacy(month, "OLD1")])
    log.close()
    config = write_config(tmp_path, 2526, ca, password_hash, database=audit_url)
    status, out, err = run(capsys, "audit", "show", "OLD1", "--config", str(config))
    assert status == 0, err
    assert re.search(r"Attachment: +QD-12\.pdf 9000 bytes, application/pdf .*signed by Ủy ban nhân dân tỉnh Bình Thuận",
                     out), out
    csv_path = tmp_path / "old.csv"
    assert run(capsys, "audit", "export", "--format", "csv", "--out", str(csv_path), "--config", str(config))[0] == 0
    row = next(csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines()))
    assert (row["attachments"], row["signed_attachments"]) == ("1", "1")
    status, _, err = run(capsys, "report", "--period", "2025-03", "--out", str(tmp_path / "r.html"), "--config", str(config))
    assert status == 0, err
    assert run(capsys, "audit", "verify", "--config", str(config))[0] == 0  # the stored text is what is hashed


def test_a_record_of_the_wrong_shape_is_a_clear_error(tmp_path: Path, ca: Any, password_hash: str, audit_url: str,
                                                      capsys: Any, month: list[dict[str, Any]]) -> None:
    bad = {**month[0], "id": "BAD1"}
    bad["attachments"] = "three files"  # a shape no release wrote
    log = AuditLog.open(audit_url, "gw1")
    log.append([bad])
    log.close()
    config = write_config(tmp_path, 2526, ca, password_hash, database=audit_url)
    status, out, err = run(capsys, "audit", "show", "BAD1", "--config", str(config))
    assert status == 1 and "exchange BAD1: not an exchange record" in err and "Traceback" not in err
    status, _, err = run(capsys, "report", "--period", "2025-03", "--out", str(tmp_path / "r.html"), "--config", str(config))
    assert status == 1 and "exchange BAD1" in err and not (tmp_path / "r.html").exists()
    status, _, err = run(capsys, "audit", "export", "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"),
                         "--config", str(config))
    assert status == 1 and "exchange BAD1" in err and not (tmp_path / "x.jsonl").exists()
