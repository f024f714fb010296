"""`mailgw policy replay`: a candidate policies folder run over exchanges the gateway recorded.

The log holds records the gateway's own code made (tests/made_records.py); the
command runs as an admin runs it, in a process of its own, on the settings of that
gateway.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailgw.audit.log import AuditLog
from tests.conftest import REPO
from tests.made_records import MIC, STC, STTTT, gateway_context, letter, made

CITIZEN = "dan@gmail.com"


@pytest.fixture
def gateway(tmp_path: Path) -> Path:
    """A gateway's settings and its log with four exchanges: refused, held, accepted, and one refused
    by the protocol checks (a bare LF) before any rule ran."""
    ctx = gateway_context(tmp_path)
    records = [
        made(ctx, "X1", "2025-03-05T03:00:00Z", "relay",
             letter("Công văn số 15/STTTT-VP về việc cung cấp thông tin", STTTT, CITIZEN), STTTT, [CITIZEN]),
        made(ctx, "X2", "2025-03-06T03:00:00Z", "mx", letter("Thông báo", "x@blnhthuan.gov.vn", STC),
             "x@blnhthuan.gov.vn", [STC]),
        made(ctx, "X3", "2025-03-07T03:00:00Z", "relay", letter("Lịch công tác tuần", STTTT, MIC), STTTT, [MIC]),
        made(ctx, "X4", "2025-03-08T03:00:00Z", "relay",
             letter("Báo cáo", STTTT, MIC).replace(b"\r\n\r\n", b"\r\nX-Bad: a\nb\r\n\r\n", 1), STTTT, [MIC]),
    ]
    assert [(r["decision"]["decision"], r["decision"]["rule"]) for r in records] == [
        ("reject", "official-to-unofficial"), ("quarantine", "lookalike-domain"), ("accept", "default"),
        ("reject", "smtp")]
    log = AuditLog.open(ctx.settings.database, "gw1")
    log.append(records)
    log.close()
    return tmp_path


def _replay(home: Path, candidate: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", "policy", "replay", "--config", str(home / "gateway.yaml"),
                           "--candidate", str(candidate), *args], capture_output=True, text=True, cwd=REPO)


def _candidate(home: Path, edit: Any) -> Path:
    folder = home / "candidate"
    shutil.copytree(home / "policies", folder)
    path = folder / "20-official.yaml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def test_a_rule_put_in_audit_mode_shows_the_exchange_it_would_let_through(gateway: Path) -> None:
    candidate = _candidate(gateway, lambda text: text.replace(
        "  - id: official-to-unofficial\n", "  - id: official-to-unofficial\n    mode: audit\n", 1))
    run = _replay(gateway, candidate, "--json")
    assert run.returncode == 0, run.stderr
    *changes, last = [json.loads(line) for line in run.stdout.splitlines()]
    out = last["summary"]
    assert (out["replayed"], out["changed"], out["skipped"]) == (3, 1, {"refused before the rules (rule smtp)": 1})
    assert out["differs_from_record"] == 0  # the pack in force, on the kept facts, decides as it did
    [change] = changes
    assert change["id"] == "X1"
    assert set(change["before"]) == set(change["after"]) == {"decision", "rule", "tags"}
    assert (change["before"]["decision"], change["before"]["rule"]) == ("reject", "official-to-unofficial")
    assert (change["after"]["decision"], change["after"]["rule"]) == ("accept", "default")
    assert out["decisions"]["before"]["reject"] == 1 and "reject" not in out["decisions"]["after"]
    text = _replay(gateway, candidate)
    assert text.returncode == 0, text.stderr
    assert "X1  reject (official-to-unofficial) -> accept (default)" in text.stdout
    assert "Thay đổi / Changes: 1" in text.stdout


def test_filters_narrow_the_replay_and_the_same_pack_changes_nothing(gateway: Path) -> None:
    same = _candidate(gateway, lambda text: text)
    run = _replay(gateway, same, "--json", "--since", "2025-03-06")
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.splitlines()  # no change: the summary alone
    assert (json.loads(line)["summary"]["replayed"], json.loads(line)["summary"]["changed"]) == (2, 0)


def test_a_broken_candidate_is_named_at_its_line(gateway: Path) -> None:
    broken = _candidate(gateway, lambda text: text.replace("decision: reject", "decision: rejekt", 1))
    run = _replay(gateway, broken)
    assert run.returncode == 1 and "20-official.yaml:" in run.stderr and "rejekt" in run.stderr
    assert "Traceback" not in run.stderr
