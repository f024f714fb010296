"""The `mailgw` command line on real files: queue management, directory publishing, DKIM keys."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailgw.queue.spool import Spool
from tests.conftest import REPO, message, write_config


def mailgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", *args], capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def config(tmp_path, ca, password_hash) -> Path:
    return write_config(tmp_path, 2526, ca, password_hash)


def test_queue_list_hold_release_show_delete_flush(config, tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    env = {"mail_from": "a@binhthuan.gov.vn", "rcpts": ["b@example.com"], "received_at": 1.0}
    spool.put_sync("MSG1", {"envelope": env, "record": {}}, message())
    spool.put_sync("MSG2", {"envelope": env, "record": {}}, message(subject="hai"), held=True)

    run = mailgw("queue", "list", "--json", "--config", str(config))
    assert run.returncode == 0, run.stderr
    rows = {r["id"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert rows["MSG1"]["state"] == "queued" and rows["MSG2"]["state"] == "held"
    assert rows["MSG1"]["rcpts"] == ["b@example.com"]

    assert mailgw("queue", "hold", "MSG1", "--config", str(config)).returncode == 0
    assert spool.locate("MSG1") == "hold"
    assert mailgw("queue", "release", "MSG2", "--config", str(config)).returncode == 0
    assert spool.locate("MSG2") == "queue"
    show = mailgw("queue", "show", "MSG2", "--config", str(config))
    assert show.returncode == 0 and '"state": "queued"' in show.stdout and "Subject:" in show.stdout
    assert mailgw("queue", "delete", "MSG1", "--config", str(config)).returncode == 0
    assert spool.locate("MSG1") is None
    missing = mailgw("queue", "delete", "MSG1", "--config", str(config))
    assert missing.returncode == 1 and "no such message" in missing.stderr
    assert mailgw("queue", "show", "../../etc/passwd", "--config", str(config)).returncode == 1
    flush = mailgw("queue", "flush", "--config", str(config))
    assert flush.returncode == 0 and os.path.exists(tmp_path / "spool" / "flush")


def test_directory_publish_html_and_csv(config, tmp_path):
    out = tmp_path / "danh-ba.csv"
    assert mailgw("directory", "publish", "--format", "csv", "--out", str(out), "--config", str(config)).returncode == 0
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert any("vanthu.sotttt@binhthuan.gov.vn" in r for r in rows)
    html = tmp_path / "danh-ba.html"
    assert mailgw("directory", "publish", "--format", "html", "--out", str(html), "--config", str(config)).returncode == 0
    assert "motcua@binhthuan.gov.vn" in html.read_text(encoding="utf-8")


def test_dkim_keygen_writes_a_private_key_and_prints_the_record(config, tmp_path):
    run = mailgw("dkim", "keygen", "--domain", "binhthuan.gov.vn", "--selector", "s2026", "--algorithm", "rsa", "--config", str(config))
    assert run.returncode == 0, run.stderr
    key = tmp_path / "keys" / "binhthuan.gov.vn.s2026.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert 's2026._domainkey.binhthuan.gov.vn. IN TXT "v=DKIM1; k=rsa; p=' in run.stdout
    again = mailgw("dkim", "keygen", "--domain", "binhthuan.gov.vn", "--selector", "s2026", "--config", str(config))
    assert again.returncode == 1 and "never overwritten" in again.stderr


def test_classify_command_prints_the_contract_json():
    fixture = sorted((REPO / "tests" / "data" / "classify").glob("*.eml"))[0]
    expected = json.loads(fixture.with_suffix(".expected.json").read_text())
    run = mailgw("classify", str(fixture), "--json")
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert set(got) == {"category", "doc_type", "doc_number", "secrecy", "secrecy_strength", "declassified", "urgency", "confidence", "evidence"}
    assert got["category"] == expected["category"] == "meeting_invitation"


def test_queue_show_body_prints_the_whole_message(config, tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    env = {"mail_from": "a@binhthuan.gov.vn", "rcpts": ["b@example.com"], "received_at": 1.0}
    spool.put_sync("MSG1", {"envelope": env, "record": {}}, message(body="Nội dung thư đầy đủ.\r\n"))
    head = mailgw("queue", "show", "MSG1", "--config", str(config))
    assert head.returncode == 0 and "Subject:" in head.stdout and "Nội dung thư" not in head.stdout
    whole = mailgw("queue", "show", "MSG1", "--body", "--config", str(config))
    assert whole.returncode == 0 and whole.stdout.endswith("Nội dung thư đầy đủ.\n") and "Subject:" in whole.stdout
    assert json.loads(whole.stdout.split("\n\n", 1)[0])["state"] == "queued"


def test_admin_actions_go_to_the_journal_when_the_log_is_down(tmp_path, ca, password_hash):
    """The database refuses connections: the hold is done and its event waits in the journal the gateway
    replays; replayed into a log, `audit show` finds it."""
    from mailgw.audit import query
    from mailgw.audit.log import AuditLog
    from mailgw.audit.writer import Journal

    config = write_config(tmp_path, 2526, ca, password_hash, database="postgresql+psycopg://nobody@127.0.0.1:1/none")
    spool = Spool(str(tmp_path / "spool"))
    env = {"mail_from": "a@binhthuan.gov.vn", "rcpts": ["b@example.com", "c@example.com"], "received_at": 1.0}
    spool.put_sync("MSG1", {"envelope": env, "record": {}}, message())
    run = mailgw("queue", "hold", "MSG1", "--reason", "kiểm tra", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert spool.locate("MSG1") == "hold" and "recorded in the journal" in run.stderr
    journal = Journal(str(tmp_path / "spool" / "journal"))
    entries = [journal.read(name) for name in journal.names()]
    assert sorted((kind, p["recipient"], p["status"]) for kind, p in entries) == [
        ("delivery", "b@example.com", "held"), ("delivery", "c@example.com", "held")]
    log = AuditLog.open(f"sqlite:///{tmp_path}/replayed.db", "gw1")
    log.delivery([p for _, p in entries])  # what the gateway's writer does with the journal
    with log.engine.connect() as conn:
        history = query.deliveries(conn, ["MSG1"])["MSG1"]
    log.close()
    assert sorted((d.recipient, d.status) for d in history) == [("b@example.com", "held"), ("c@example.com", "held")]
    assert all("mailgw queue hold by" in (d.reply or "") and "kiểm tra" in (d.reply or "") for d in history)
    config2 = write_config(tmp_path, 2526, ca, password_hash, database="sqlite:///replayed.db")
    verify = mailgw("audit", "verify", "--config", str(config2))
    assert verify.returncode == 0, verify.stdout + verify.stderr
