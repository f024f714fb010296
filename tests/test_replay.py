"""`mailgw policy replay`: a candidate policies folder run over exchanges the gateway recorded.

The log holds records the gateway's own code made (tests/made_records.py); the
command runs as an admin runs it, in a process of its own, on the settings of that
gateway.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailgw.audit import query
from mailgw.audit.log import AuditLog
from tests.conftest import REPO
from tests.made_records import MIC, STC, STTTT, gateway_context, letter, made, stock

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


# --- replay against `policy test` on the messages themselves ---------------------------------------

# A candidate an admin might try: the document rule in audit mode, the secrecy block in audit mode too,
# and a new rule that tags mail to the ministry: a decision, a rule and tags that change.
_MINISTRY_RULE = """rules:
  - id: to-ministry
    description: Thư gửi Bộ / Mail to the ministry
    basis: test
    when:
      any_recipient: {domain: mic.gov.vn}
    then:
      tags: [to-ministry]
"""


def _make_candidate(home: Path) -> Path:
    def edit(text: str, rule: str) -> str:
        return text.replace(f"  - id: {rule}\n", f"  - id: {rule}\n    mode: audit\n", 1)

    folder = _candidate(home, lambda text: edit(text, "official-to-unofficial"))
    security = folder / "10-security.yaml"
    security.write_text(edit(security.read_text(encoding="utf-8"), "secrecy-block"), encoding="utf-8")
    (folder / "40-local.yaml").write_text(_MINISTRY_RULE, encoding="utf-8")
    return folder


async def test_replay_agrees_with_policy_test_on_the_messages_the_gateway_decided(
        make_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Messages through the real gateway into its exchange log; the replay's outcome under a candidate
    is, for each, what `mailgw policy test` says of the same .eml under that candidate."""
    import aiosmtplib

    from mailgw import cli
    from tests.conftest import send

    gw = await make_gateway()
    sample = [  # listener, message, envelope sender, recipients
        ("relay", letter("Công văn số 15/STTTT-VP về việc cung cấp thông tin", STTTT, CITIZEN), STTTT, [CITIZEN]),
        ("relay", letter("Giấy mời họp giao ban", STTTT, MIC), STTTT, [MIC]),
        ("relay", letter("HỎA TỐC - Công điện số 3/CĐ-UBND về phòng chống bão", STTTT, MIC), STTTT, [MIC]),
        ("relay", letter("MẬT - Báo cáo số 5/BC-STC", STC, MIC, body="MẬT\r\nBáo cáo tình hình.\r\n"), STC, [MIC]),
        ("relay", letter("Gửi tài liệu", STC, MIC, body="Gửi kèm tài liệu mật để Bộ tham khảo.\r\n"), STC, [MIC]),
        ("mx", letter("Hỏi về thủ tục", CITIZEN, STC), CITIZEN, [STC]),
        ("mx", letter("Thông báo", "x@blnhthuan.gov.vn", STC), "x@blnhthuan.gov.vn", [STC]),
    ]
    for i, (listener, raw, mail_from, rcpts) in enumerate(sample):
        (tmp_path / f"{i}.eml").write_bytes(raw)
        with contextlib.suppress(aiosmtplib.SMTPResponseException):  # the refused ones are recorded too
            await send(gw, listener, raw, mail_from, rcpts)
    log = AuditLog.open(f"sqlite:///{tmp_path}/mailgw.db", "reader")
    with log.engine.connect() as conn:
        recorded = {r.header.message_id: r for r in query.iter_records(conn, query.Filters.parse({}))}
    log.close()
    assert len(recorded) == len(sample)
    candidate = _make_candidate(tmp_path)
    settings = (tmp_path / "gateway.yaml").read_text(encoding="utf-8")
    (tmp_path / "candidate.yaml").write_text(settings.replace("policies: policies", "policies: candidate"))
    assert "policies: candidate" in (tmp_path / "candidate.yaml").read_text()

    assert cli.main(["policy", "replay", "--config", str(tmp_path / "gateway.yaml"), "--candidate", str(candidate),
                     "--json"]) == 0
    *lines, last = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert last["summary"]["replayed"] == len(sample) and last["summary"]["differs_from_record"] == 0
    after = {c["id"]: c["after"] for c in lines}
    assert len(after) == 5  # the letter to a citizen, the secret report, the three to the ministry
    agreed = []
    for i, (listener, raw, mail_from, rcpts) in enumerate(sample):
        [rec] = [r for mid, r in recorded.items() if mid and mid in raw.decode("utf-8", "replace")]
        replayed = after.get(rec.id) or {"decision": rec.decision.decision, "rule": rec.decision.rule,
                                          "tags": sorted(rec.decision.tags)}  # unchanged: as recorded
        args = ["policy", "test", "--config", str(tmp_path / "candidate.yaml"), "--listener", listener,
                "--mail-from", mail_from, *(a for r in rcpts for a in ("--rcpt", r)), "--json", str(tmp_path / f"{i}.eml")]
        assert cli.main(args) == 0
        tested = json.loads(capsys.readouterr().out)
        assert (replayed["decision"], replayed["rule"], sorted(replayed["tags"])) == (
            tested["decision"], tested["rule"], sorted(tested["tags"])), (i, rec.id)
        agreed.append((tested["decision"], tested["rule"]))
    assert ("accept", "default") in agreed and ("quarantine", "lookalike-domain") in agreed
    assert agreed[0] == ("accept", "default") and agreed[3] == ("accept", "default")  # the two rules in audit mode


def test_a_secret_exchange_replays_on_its_redacted_record_and_shows_nothing_more(tmp_path: Path) -> None:
    """A document marked MẬT is blocked and its record redacted (the subject a hash, the cues without their
    text); a replay that lets it through shows its outcome and nothing of the document the record left out."""
    ctx = gateway_context(tmp_path)
    subject, body = "MẬT - Báo cáo số 5/BC-STC về tình hình an ninh", "MẬT\r\nNội dung tuyệt đối không lộ ra.\r\n"
    secret = made(ctx, "S1", "2025-03-05T03:00:00Z", "relay", letter(subject, STC, MIC, body=body), STC, [MIC])
    assert secret["redacted"] and secret["decision"]["rule"] == "secrecy-block"
    log = AuditLog.open(ctx.settings.database, "gw1")
    log.append([secret])
    log.close()
    candidate = _make_candidate(tmp_path)
    run = _replay(tmp_path, candidate, "--json")
    assert run.returncode == 0, run.stderr
    [change, last] = [json.loads(line) for line in run.stdout.splitlines()]
    assert change["id"] == "S1" and change["before"]["rule"] == "secrecy-block"
    assert (change["after"]["decision"], change["after"]["rule"]) == ("accept", "default")
    assert "to-ministry" in change["after"]["tags"]  # replayed on the facts the record kept: the recipient
    text = _replay(tmp_path, candidate, "--show", "5")
    assert text.returncode == 0, text.stderr
    for out in (run.stdout, text.stdout):
        for secret_text in ("an ninh", "5/BC-STC", "tuyệt đối", "Báo cáo"):
            assert secret_text not in out
    # Every value the replay prints of the exchange is one its redacted record already shows, or a tag the
    # packs' rules name.
    from mailgw.policy import load as load_policies

    shown = json.dumps(secret, ensure_ascii=False)
    named = {t for folder in (tmp_path / "policies", candidate)
             for r in load_policies(str(folder), ctx.directory).rules for t in r.then.tags}
    assert {*change["after"]["tags"], *change["before"]["tags"]} <= named
    assert change["time"] in shown and change["sender"] in shown
    assert set(change) == {"id", "time", "sender", "before", "after", "recorded"}


def test_the_replay_path_decides_as_the_traced_path_on_every_kind_of_record(tmp_path: Path) -> None:
    """The engine without its trace (``explain=False``, conditions shared between packs through ``memo``)
    gives the decision, rule, tags, headers and matched rules the traced path gives, on a record of
    every kind the gateway makes (tests/made_records.py stock)."""
    from mailgw.audit.record import decode
    from mailgw.policy import engine
    from mailgw.policy.replay import _view

    ctx = gateway_context(tmp_path)
    assert ctx.policies is not None
    for kind, rec in stock().items():
        view, day = _view(ctx, decode(rec))
        traced = engine.evaluate(ctx.policies, {**view, "tags": list(view["tags"])}, today=day)
        memo: dict[int, bool] = {}
        for _ in range(2):  # the second time every shared condition comes from the memo
            fast = engine.evaluate(ctx.policies, {**view, "tags": list(view["tags"])}, today=day, explain=False,
                                   memo=memo)
            assert (fast.decision, fast.rule, fast.tags, fast.headers, fast.matched) == (
                traced.decision, traced.rule, traced.tags, traced.headers, traced.matched), kind
            assert fast.trace == [] and traced.trace
