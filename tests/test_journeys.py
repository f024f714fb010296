"""Journeys: the real gateway takes a realistic mix over SMTP, then staff, admins and auditors
use every command they have on the spool and exchange log it wrote.

Nothing here is shaped by hand: every record, spool file and delivery event was
written by the running gateway in the same test, on SQLite and on PostgreSQL.
The commands run as an admin or auditor runs them: ``python -m mailgw ...`` in
a process of their own, against the gateway's own settings file.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import yaml

from mailgw.audit import record
from mailgw.classify.vn.text import fold
from tests import attachment_fixtures as fx
from tests.conftest import message, send

BT = "binhthuan.gov.vn"
CLERK = f"vanthu.sotttt@{BT}"
OTHER = f"vanthu.snv@{BT}"
LEADER = f"giamdoc.skhdt@{BT}"
GONE = f"nghihuu@{BT}"  # the next hop says this mailbox does not exist: a DSN follows
REPO = Path(__file__).resolve().parent.parent


async def mailgw(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailgw", *args, "--config", str(config), cwd=str(REPO),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def queued_id(response: tuple[dict[str, Any], str]) -> str:
    m = re.search(r"queued as (\S+)", response[1])
    assert m, response
    return m.group(1)


def refused_id(error: aiosmtplib.SMTPResponseException) -> str:
    m = re.search(r"\[([0-9A-Z-]+)\]$", error.message)
    assert m, error.message
    return m.group(1)


async def refused(gw: Any, listener: str, raw: bytes, sender: str, rcpts: list[str]) -> aiosmtplib.SMTPResponseException:
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        await send(gw, listener, raw, sender, rcpts)
    return err.value


def with_files(subject: str, *files: bytes, sender: str = CLERK, to: str = OTHER, text: str = "Kính gửi các đơn vị.\r\n") -> bytes:
    return fx.message(fx.multipart([fx.text_part(text), *files]), subject=subject, sender=sender, to=to)


async def test_every_user_journey_on_what_the_gateway_wrote(make_gateway, sink, audit_url, tmp_path):
    gw = await make_gateway(database=audit_url)
    config = tmp_path / "gateway.yaml"
    assert yaml.safe_load(config.read_text())["database"] == audit_url
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 Mailbox does not exist" if rcpt == GONE else None
    ca = fx.TestCA()
    ids: dict[str, str] = {}

    # --- Staff: ordinary mail goes through; a refusal says why, in Vietnamese then English, with an id.
    ids["plain"] = queued_id(await send(gw, "relay", message(subject="Trao đổi lịch công tác tuần"), CLERK, [OTHER]))
    ids["pdf"] = queued_id(await send(gw, "relay", with_files(
        "Báo cáo số 12/BC-STTTT", fx.attachment(fx.pdf_plain("So: 12/BC-STTTT"), ctype="application/pdf",
                                                 filename="baocao.pdf")), CLERK, [OTHER]))
    ids["docx"] = queued_id(await send(gw, "relay", with_files(
        "Kế hoạch năm 2027", fx.attachment(fx.python_docx("Số: 45/KH-STTTT"), filename="kehoach.docx",
                                          ctype="application/vnd.openxmlformats-officedocument.wordprocessingml.document")),
        CLERK, [OTHER]))
    ids["zip"] = queued_id(await send(gw, "relay", with_files(
        "Hồ sơ kèm theo", fx.attachment(fx.zip_bytes([("ghichu.txt", "Ghi chú".encode())]), ctype="application/zip",
                                       filename="hoso.zip")), CLERK, [OTHER]))
    signed = await asyncio.to_thread(ca.sign_pdf, fx.pdf_plain("So: 30/QD-UBND"))  # pyHanko runs its own loop
    utf8_name = "=?utf-8?b?" + base64.b64encode("Quyết định 30.pdf".encode()).decode() + "?="
    ids["signed"] = queued_id(await send(gw, "relay", with_files(
        "Quyết định số 30/QĐ-UBND", fx.attachment(signed, ctype="application/pdf", filename=utf8_name)), CLERK, [OTHER]))
    ids["urgent"] = queued_id(await send(gw, "relay", message(
        subject="HỎA TỐC - Công điện số 03/CĐ-UBND về ứng phó bão số 3"), CLERK, [OTHER]))
    ids["bounced"] = queued_id(await send(gw, "relay", message(subject="Giấy mời họp", to=GONE), CLERK, [GONE]))

    unofficial = await refused(gw, "relay", message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=LEADER,
                                                       to="canhan@gmail.com"), LEADER, ["canhan@gmail.com"])
    assert unofficial.code == 550 and "canhan@gmail.com" in unofficial.message
    ids["unofficial"] = refused_id(unofficial)
    secret_raw = message(subject="[MẬT] Báo cáo tình hình an ninh trật tự", body="Nội dung mật.\r\n")
    secret = await refused(gw, "relay", secret_raw, CLERK, [OTHER])
    assert secret.code == 550 and secret.message.startswith("5.7.1 ")
    ids["secret"] = refused_id(secret)

    ids["lookalike"] = queued_id(await send(gw, "mx", message(subject="Cập nhật mật khẩu hộp thư",
                                                              sender="thongbao@binhthuan-gov.vn"),
                                            "thongbao@binhthuan-gov.vn", [OTHER]))
    await sink.wait_for(lambda: len(sink.to(OTHER)) >= 6 and sink.to(CLERK))  # six delivered, one DSN to the clerk
    assert not [m for m in sink.messages if b"binhthuan-gov.vn" in m.data.split(b"\r\n\r\n")[0]]  # held

    # --- IT admin: the queue shows the held message; release it, and it is delivered.
    rc, out, err = await mailgw(config, "queue", "list", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["state"]) for r in rows] == [(ids["lookalike"], "held")]
    rc, out, err = await mailgw(config, "queue", "show", ids["lookalike"])
    assert rc == 0 and '"rule": "lookalike-domain"' in out and "Subject:" in out, err
    rc, out, err = await mailgw(config, "queue", "release", ids["lookalike"])
    assert rc == 0 and "release done" in out, err
    await sink.wait_for(lambda: any(b"binhthuan-gov.vn" in m.data for m in sink.messages))
    rc, out, err = await mailgw(config, "queue", "release", "NO-SUCH-ID")
    assert rc == 1 and "no such message" in err and "Traceback" not in err

    # ... and `policy test` gives the reply the gateway gave.
    eml = tmp_path / "secret.eml"
    eml.write_bytes(secret_raw)
    rc, out, err = await mailgw(config, "policy", "test", str(eml), "--listener", "relay", "--mail-from", CLERK,
                                "--rcpt", OTHER, "--json")
    trace = json.loads(out)
    assert (trace["decision"], trace["rule"]) == ("reject", "secrecy-block"), (rc, err)
    # the same reply, which the client (no SMTPUTF8) got folded to ASCII
    assert fold(trace["reply"]).rsplit(" [", 1)[0] == f"{secret.code} {secret.message}".rsplit(" [", 1)[0]

    # --- Auditor: search, show, export (CSV and JSON Lines), verify, report.
    rc, out, err = await mailgw(config, "audit", "search", "--json", "--limit", "100")
    assert rc == 0, err
    found = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert set(ids.values()) <= set(found)
    dsns = [r for r in found.values() if r["role"] == "dsn"]
    assert [d["dsn_for"] for d in dsns] == [ids["bounced"]]
    by_id = {i: record.decode(json.dumps(found[i])) for i in found}  # every record reads back as the model

    pdf = by_id[ids["signed"]].attachments
    assert pdf.count == 1 and pdf.signed_any and pdf.files[0].name == "Quyết định 30.pdf"
    assert pdf.files[0].pdf is not None and pdf.files[0].pdf.signers == ["Nguyễn Văn An"]
    assert by_id[ids["zip"]].attachments.count == 2  # the archive and its member
    assert by_id[ids["urgent"]].classification.urgency == "hoa_toc"
    assert by_id[ids["docx"]].classification.doc_number == "45/KH-STTTT"
    assert by_id[ids["secret"]].redacted and by_id[ids["secret"]].header.subject.startswith("sha256:")
    assert by_id[ids["lookalike"]].decision.decision == "quarantine"
    assert by_id[ids["plain"]].direction == "internal" and by_id[ids["lookalike"]].direction == "inbound"

    rc, out, err = await mailgw(config, "audit", "show", ids["signed"])
    assert rc == 0, err
    assert re.search(r"Attachment: +2 Quyết định 30\.pdf \d+ bytes, application/pdf .*signed by Nguyễn Văn An", out), out
    assert re.search(r"Category: +decision \(QĐ\) 30/QĐ-UBND", out), out
    assert re.search(rf"Deliveries:\n  \S+  {OTHER}  sent  attempt 1  127\.0\.0\.1:\d+: 250 ", out), out
    rc, out, err = await mailgw(config, "audit", "show", ids["secret"])
    assert rc == 0 and "redacted (metadata and hashes only)" in out and "an ninh" not in out, err
    assert "secrecy-block" in out and "Deliveries: none logged" in out
    rc, out, err = await mailgw(config, "audit", "show", dsns[0]["id"])
    assert rc == 0 and f"DSN for: {ids['bounced']}".replace(": ", ":" + " " * 14) in out, out
    rc, out, err = await mailgw(config, "audit", "show", ids["bounced"])
    assert rc == 0 and re.search(rf"{GONE}  bounced  attempt 1  127\.0\.0\.1:\d+: RCPT TO: 550 5\.1\.1", out), out

    csv_path, jsonl_path = tmp_path / "x.csv", tmp_path / "x.jsonl"
    rc, _, err = await mailgw(config, "audit", "export", "--format", "csv", "--out", str(csv_path))
    assert rc == 0, err
    rows = {r["id"]: r for r in csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines())}
    assert set(rows) == set(found)
    assert (rows[ids["signed"]]["attachments"], rows[ids["signed"]]["signed_attachments"]) == ("1", "1")
    assert (rows[ids["zip"]]["attachments"], rows[ids["zip"]]["signed_attachments"]) == ("2", "0")
    assert rows[ids["unofficial"]]["rule"] == "official-to-unofficial" and rows[ids["unofficial"]]["decision"] == "reject"
    assert rows[ids["urgent"]]["urgency"] == "hoa_toc" and rows[ids["pdf"]]["doc_number"] == "12/BC-STTTT"
    assert rows[ids["bounced"]]["deliveries"] == f"{GONE}=bounced#1"
    rc, _, err = await mailgw(config, "audit", "export", "--format", "jsonl", "--out", str(jsonl_path))
    assert rc == 0, err
    exported = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert {r["id"] for r in exported} == set(found)
    assert all(record.decode(json.dumps(r)) == by_id[r["id"]] for r in exported)

    rc, out, err = await mailgw(config, "audit", "verify")
    assert rc == 0, out + err

    period = dt.datetime.now(dt.timezone(dt.timedelta(hours=7))).strftime("%Y-%m")
    report_path = tmp_path / "report.html"
    rc, _, err = await mailgw(config, "report", "--period", period, "--out", str(report_path))
    assert rc == 0, err
    page = report_path.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))
    exchanges = [r for r in found.values() if r["role"] not in ("dsn", "notice")]
    assert data["total"] == len(exchanges)
    assert data["decisions"] == {"accept": 7, "reject": 2, "quarantine": 1}
    assert data["rule_hits"]["rejections"] == {"official-to-unofficial": 1, "secrecy-block": 1}
    assert data["rule_hits"]["quarantines"] == {"lookalike-domain": 1} and data["dsns"] == 1
    assert data["rule_hits"]["secrecy_blocks"] == 1
