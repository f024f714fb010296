"""Policies: strict loading, rule order, audit mode, reload, and each shipped rule over real SMTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailgw import policy
from mailgw.config.yamlfile import ConfigError
from mailgw.directory import model as directory
from mailgw.message.facts import AuditModeHit
from tests.conftest import REPO, message, send

BAD = Path(__file__).parent / "data" / "bad_policies"
BT = "binhthuan.gov.vn"
CLERK = f"vanthu.sotttt@{BT}"
OTHER_CLERK = f"vanthu.snv@{BT}"


@pytest.fixture(scope="module")
def demo_directory() -> Any:
    return directory.load(str(REPO / "directory.yaml"))


# --- loading -------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(p.stem for p in BAD.glob("*.yaml")))
def test_broken_policy_files_report_file_and_line(case, tmp_path, demo_directory):
    shutil.copy(BAD / f"{case}.yaml", tmp_path)
    expected = (BAD / f"{case}.expected-error").read_text().splitlines()
    with pytest.raises(ConfigError) as err:
        policy.load(str(tmp_path), demo_directory)
    assert [str(p).replace(str(tmp_path) + "/", "") for p in err.value.problems] == expected


def test_rules_that_only_look_shadowed_are_not_reported(tmp_path, demo_directory):
    """A narrower earlier set, a bound that lets one more number through, any recipient where all were
    asked, a parent domain, a negation the other way round, a tag added between two rules, an earlier
    rule dated or in audit mode, an 'any' with an alternative: each later rule matches a message the
    earlier one does not, so none is called unreachable (tests/data/shadow_near_misses.yaml)."""
    shutil.copy(REPO / "tests" / "data" / "shadow_near_misses.yaml", tmp_path)
    pack = policy.load(str(tmp_path), demo_directory)
    assert pack.warnings == () and len(pack.rules) == 18


def test_implication_is_sound_on_every_combination_of_a_vocabulary(tmp_path, demo_directory):
    """Each pair of rules written from a small vocabulary (sets, ranges, domains, networks, any/all
    recipients, not, any), and each view over the values they name: wherever the checker says one
    rule's condition implies another's, the second holds on every view where the first does."""
    import itertools

    from mailgw.policy import conditions

    whens = [
        "{secrecy: [mat, toi_mat, tuyet_mat]}", "{secrecy: mat}", "{secrecy: [mat, toi_mat]}",
        "{secrecy: mat, direction: outbound}", "{not: {secrecy: none}}", "{not: {secrecy: [none, mat]}}",
        "{size: {gt: 10}}", "{size: {ge: 10}}", "{size: {gt: 10, lt: 20}}", "{size: {ge: 12, le: 15}}", "{size: 10}",
        "{any_recipient: {domain: gmail.com}}", "{all_recipients: {domain: gmail.com}}",
        "{any_recipient: {domain: mail.gmail.com}}", "{all_recipients: {domain: mail.gmail.com, official: false}}",
        "{client_ip: 10.0.0.0/8}", "{client_ip: [10.1.0.0/16, 192.168.0.0/16]}", "{client_ip: 10.1.2.0/24}",
        "{any: [{secrecy: mat}, {size: {gt: 10}}]}", "{any: [{secrecy: mat}, {size: {gt: 15}}]}",
        "{any_attachment: {dangerous: true}}", "{all_attachments: {dangerous: [macro]}}",
        "{any_attachment: {dangerous: [macro, dde]}}",
    ]
    text = "rules:\n" + "".join(
        f"  - {{id: r{i}, description: d, basis: b, when: {w}, then: {{tags: [t{i}]}}}}\n" for i, w in enumerate(whens))
    (tmp_path / "p.yaml").write_text(text)
    tests = [r.when for r in policy.load(str(tmp_path), demo_directory).rules]
    views = [
        {"classification": {"secrecy": secrecy}, "direction": direction, "size": size, "client_ip": ip,
         "recipients": [{"domain": d, "official": d.endswith("gov.vn")} for d in domains],
         "attachments": {"files": [{"dangerous": list(danger)}]}}
        for secrecy, direction, size, ip, domains, danger in itertools.product(
            ("none", "mat", "toi_mat", "tuyet_mat"), ("inbound", "outbound"), (9, 10, 12, 15, 20, 25),
            ("10.1.2.3", "10.1.9.9", "10.9.9.9", "192.168.1.1", "8.8.8.8"),
            (["gmail.com"], ["mail.gmail.com"], ["gmail.com", "x.gov.vn"], ["x.gov.vn"]), ((), ("macro",), ("exe",)))
    ]
    claims = 0
    for a, b in itertools.product(tests, tests):
        if conditions.implies(a, b):
            claims += 1
            assert all(b.holds(v) for v in views if a.holds(v)), (a.key(), b.key())
    assert claims > 2 * len(tests)  # more than each with itself and Always: the analysis says something


def test_mailgw_check_reports_a_broken_policy_and_exits_1(tmp_path):
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copy(REPO / "directory.yaml", tmp_path)
    shutil.copy(BAD / "05-unreachable.yaml", tmp_path / "policies" / "50-local.yaml")
    settings = (REPO / "gateway.yaml").read_text()
    (tmp_path / "gateway.yaml").write_text(settings)
    for extra in ("credentials.yaml",):
        if (REPO / extra).exists():
            shutil.copy(REPO / extra, tmp_path)
    run = subprocess.run([sys.executable, "-m", "mailgw", "check", "--config", str(tmp_path / "gateway.yaml")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{tmp_path}/policies/50-local.yaml:11: rule 'block-urgent-reports' can never match" in run.stderr


def test_the_shipped_pack_loads_in_the_documented_order(demo_directory):
    pack = policy.load(str(REPO / "policies"), demo_directory)
    assert [r.id for r in pack.rules] == [
        "secrecy-block", "spoof-local-domain", "spoof-local-domain-temperror",
        "dmarc-reject", "dmarc-quarantine", "dmarc-none", "dmarc-temperror", "dangerous-attachment",
        "encrypted-office", "damaged-attachment", "official-to-unofficial", "lookalike-domain", "display-name-spoof", "unverified-official", "secrecy-suspect",
        "declassified",
        "should-use-dms", "urgency", "unsigned-document",
    ]
    assert pack.warnings == ()
    assert all(r.basis and r.description for r in pack.rules)


def test_version_changes_with_the_text_of_the_files(tmp_path, demo_directory):
    shutil.copytree(REPO / "policies", tmp_path / "p")
    before = policy.load(str(tmp_path / "p"), demo_directory).version
    f = tmp_path / "p" / "30-documents.yaml"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert policy.load(str(tmp_path / "p"), demo_directory).version != before


# --- over SMTP: every shipped rule -----------------------------------------------


@pytest.fixture
async def gw(recording_gateway):
    return recording_gateway


def _record(gw: Any, subject_or_id: str | None = None) -> dict[str, Any]:
    assert gw.records, "no decision record was written"
    return gw.records[-1]


async def _refused(gw: Any, listener: str, raw: bytes, mail_from: str, rcpts: list[str]) -> aiosmtplib.SMTPDataError:
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(gw, listener, raw, mail_from, rcpts)
    return err.value


async def test_secrecy_block_rejects_and_keeps_no_copy(gw, sink, tmp_path):
    raw = message(subject="[MẬT] Báo cáo tình hình an ninh trật tự", sender=CLERK, to=OTHER_CLERK,
                  body="Nội dung báo cáo về tình hình an ninh trật tự quý III.\r\n")
    err = await _refused(gw, "relay", raw, CLERK, [OTHER_CLERK])
    assert err.code == 550 and err.message.startswith("5.7.1 Thu co van ban mang dau do mat")  # folded: no SMTPUTF8
    rec = _record(gw)
    assert rec["decision"]["rule"] == "secrecy-block" and rec["decision"]["decision"] == "reject"
    assert err.message.endswith(f"[{rec['id']}]")
    # Metadata and hashes only: no subject text, no body, no file of it in the spool.
    assert rec["redacted"] is True and rec["header"]["subject"].startswith("sha256:")
    assert "an ninh" not in json.dumps(rec, ensure_ascii=False)
    spooled = [p for p in (tmp_path / "spool").rglob("*") if p.is_file() and rec["id"] in p.name]
    assert spooled == []
    assert sink.messages == []


async def test_spoof_of_a_local_domain_on_mx_is_rejected_5_7_26(gw, sink):
    raw = message(subject="Chuyển khoản gấp", sender=f"giamdoc@{BT}", to=f"ketoan@{BT}", body="Chuyển gấp 50 triệu.\r\n")
    err = await _refused(gw, "mx", raw, "bounce@attacker.example", [f"ketoan@{BT}"])
    assert (err.code, err.message[:6]) == (550, "5.7.26")
    assert _record(gw)["decision"]["rule"] == "spoof-local-domain"


async def test_the_same_sender_on_relay_is_ours_and_passes(gw, sink):
    raw = message(subject="Chuyển khoản gấp", sender=f"giamdoc.skhdt@{BT}", to=f"ketoan@{BT}", body="Nội bộ.\r\n")
    await send(gw, "relay", raw, f"giamdoc.skhdt@{BT}", [f"ketoan@{BT}"])
    await sink.wait_for(lambda: sink.to(f"ketoan@{BT}"))


async def test_official_document_to_a_private_address_is_rejected_naming_it(gw, sink):
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=f"nvan@{BT}", to="nvan.canhan@gmail.com")
    err = await _refused(gw, "relay", raw, f"nvan@{BT}", ["nvan.canhan@gmail.com", OTHER_CLERK])
    assert err.code == 550 and "nvan.canhan@gmail.com" in err.message and OTHER_CLERK not in err.message
    assert _record(gw)["decision"]["matched"] == ["official-to-unofficial"]
    assert sink.messages == []


async def test_public_service_mailbox_may_send_documents_to_citizens(gw, sink):
    box = f"motcua@{BT}"
    raw = message(subject="Thông báo số 15/TB-UBND về kết quả giải quyết hồ sơ", sender=box, to="nguoidan@gmail.com")
    await send(gw, "relay", raw, box, ["nguoidan@gmail.com"])
    await sink.wait_for(lambda: sink.to("nguoidan@gmail.com"))
    rec = _record(gw)
    assert rec["classification"]["category"] == "announcement" and rec["decision"]["decision"] == "accept"


async def test_a_general_message_to_a_private_address_passes(gw, sink):
    raw = message(subject="Hẹn cà phê cuối tuần", sender=f"nvan@{BT}", to="ban@gmail.com")
    await send(gw, "relay", raw, f"nvan@{BT}", ["ban@gmail.com"])
    await sink.wait_for(lambda: sink.to("ban@gmail.com"))


async def test_lookalike_domain_is_quarantined_and_not_delivered(gw, sink, tmp_path):
    raw = message(subject="Thông báo cập nhật mật khẩu hộp thư công vụ", sender="thongbao@binhthuan-gov.vn", to=OTHER_CLERK)
    response = await send(gw, "mx", raw, "thongbao@binhthuan-gov.vn", [OTHER_CLERK])
    rec = _record(gw)
    assert response[1].startswith(f"2.0.0 OK: queued as {rec['id']}")
    assert rec["decision"]["decision"] == "quarantine" and rec["decision"]["rule"] == "lookalike-domain"
    assert [e.id for e in gw.spool.entries("hold")] == [rec["id"]]
    assert sink.messages == []


@pytest.mark.parametrize("domain", ["blnhthuan.gov.vn", "binhthuan.gov.vn.com", "xn--binhthun-7fg.gov.vn", "binhthuangovvn.net"])
async def test_lookalike_variants_are_held(gw, domain):
    raw = message(subject="Trao đổi", sender=f"a@{domain}", to=OTHER_CLERK)
    await send(gw, "mx", raw, f"a@{domain}", [OTHER_CLERK])
    assert _record(gw)["decision"]["rule"] == "lookalike-domain", domain


async def test_inbound_document_from_an_unsigned_official_is_tagged_and_delivered(gw, sink):
    raw = message(subject="Quyết định 123/QĐ-BTTTT về việc ban hành Kế hoạch", sender="vanthu@mic.gov.vn", to=OTHER_CLERK)
    await send(gw, "mx", raw, "vanthu@mic.gov.vn", [OTHER_CLERK])
    await sink.wait_for(lambda: sink.to(OTHER_CLERK))
    d = _record(gw)["decision"]
    assert (d["decision"], d["rule"]) == ("accept", "default")
    assert set(d["tags"]) == {"unverified-official", "channel:dms", "unsigned-document"}
    assert d["matched"] == ["unverified-official", "should-use-dms", "unsigned-document"]
    # the recipient's copy says so, in a field a mail client can show
    head = sink.to(OTHER_CLERK)[0].data.split(b"\r\n\r\n", 1)[0]
    assert b"X-Mailgw-Unverified-Sender: Nguoi gui chua duoc xac thuc" in head


async def test_the_tags_the_settings_name_reach_the_recipient_and_a_forged_field_never_does(make_gateway, sink):
    """``tags_header: [unverified-official, "urgency:*"]``: an inbound document from an unsigned official
    address and a HỎA TỐC telegram arrive at the next hop with those tags in X-Mailgw-Tags (and no other
    tag); each carried a forged X-Mailgw-Tags of its own, which is gone. A message none of whose tags
    is named gets no field at all, and loses its forged one too."""
    import email.policy
    from email import message_from_bytes

    gw = await make_gateway(tags_header=["unverified-official", "urgency:*"])
    forged = "X-Mailgw-Tags: verified-official, secrecy-cleared\r\n"
    cases = [
        ("mx", message(subject="Quyết định 123/QĐ-BTTTT về việc ban hành Kế hoạch", sender="vanthu@mic.gov.vn",
                       to=OTHER_CLERK, extra_headers=forged), "vanthu@mic.gov.vn", OTHER_CLERK),
        ("relay", message(subject="HỎA TỐC - Công điện số 3/CĐ-UBND về phòng chống bão", sender=CLERK,
                          to="vanthu@mic.gov.vn", extra_headers=forged), CLERK, "vanthu@mic.gov.vn"),
        ("relay", message(subject="Trao đổi lịch họp", sender=CLERK, to=f"vp@{BT}", extra_headers=forged),
         CLERK, f"vp@{BT}"),
    ]
    for listener, raw, mail_from, rcpt in cases:
        await send(gw, listener, raw, mail_from, [rcpt])
    await sink.wait_for(lambda: all(sink.to(rcpt) for _, _, _, rcpt in cases))
    shown = []
    for _, _, _, rcpt in cases:
        [copy] = sink.to(rcpt)
        got = message_from_bytes(copy.data, policy=email.policy.default)
        fields = got.get_all("X-Mailgw-Tags") or []
        assert len(fields) <= 1 and "verified-official," not in str(fields) and "secrecy-cleared" not in str(fields)
        shown.append(str(fields[0]) if fields else None)
    assert shown[0] == ("unverified-official; nhãn do cổng thư gắn theo quy định của cơ quan / "
                        "labels the mail gateway added under the agency's policies")
    assert shown[1] == shown[0].replace("unverified-official", "urgency:hoa_toc")  # not channel:dms
    assert shown[2] is None


async def test_weak_secrecy_is_tagged_suspect(gw, sink):
    raw = message(subject="Báo cáo tình hình mật độ dân cư và công tác bí mật nhà nước", sender=CLERK, to=OTHER_CLERK,
                  body="Báo cáo có nội dung liên quan bí mật nhà nước, đề nghị lưu ý.\r\n")
    await send(gw, "relay", raw, CLERK, [OTHER_CLERK])
    d = _record(gw)
    assert d["classification"]["secrecy_strength"] == "weak", d["classification"]
    assert "secrecy-suspect" in d["decision"]["tags"] and d["decision"]["decision"] == "accept"


async def test_declassified_document_is_tagged(gw, sink):
    raw = message(subject="GIẢI MẬT - MẬT - Báo cáo số 12/BC-STTTT năm 2010", sender=CLERK, to=OTHER_CLERK)
    await send(gw, "relay", raw, CLERK, [OTHER_CLERK])
    rec = _record(gw)
    assert rec["classification"]["declassified"] is True, rec["classification"]
    assert "declassified" in rec["decision"]["tags"]


async def test_urgent_document_gets_priority_headers_at_the_next_hop(gw, sink):
    raw = message(subject="HỎA TỐC - Công điện số 03/CĐ-UBND về ứng phó bão số 3", sender=CLERK, to=OTHER_CLERK)
    await send(gw, "relay", raw, CLERK, [OTHER_CLERK])
    await sink.wait_for(lambda: sink.to(OTHER_CLERK))
    data = sink.to(OTHER_CLERK)[0].data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nImportance: high\r\n" in head and b"\r\nX-Priority: 1\r\n" in head
    assert b"\r\nX-GovVN-Urgency: hoa_toc\r\n" in head
    assert {"urgency:hoa_toc", "channel:dms", "unsigned-document"} <= set(_record(gw)["decision"]["tags"])


# --- rule order, audit mode, actions, reload --------------------------------------


def _add_policy(gw_dir: Path, name: str, text: str) -> None:
    (gw_dir / "policies" / name).write_text(text, encoding="utf-8")


async def test_audit_mode_logs_what_it_would_do_and_changes_nothing(make_gateway, sink, tmp_path):
    (tmp_path / "policies").mkdir()
    pack = (REPO / "policies" / "20-official.yaml").read_text(encoding="utf-8")
    _add_policy(tmp_path, "20-official.yaml", pack.replace(
        "  - id: official-to-unofficial\n", "  - id: official-to-unofficial\n    mode: audit\n"))
    gw = await make_gateway()
    records: list[dict[str, Any]] = []

    async def keep(rec: dict[str, Any]) -> None:
        records.append(rec)

    gw.edge.recorder = gw.edge.spooled_recorder = keep
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=f"nvan@{BT}", to="nvan.canhan@gmail.com")
    await send(gw, "relay", raw, f"nvan@{BT}", ["nvan.canhan@gmail.com"])
    await sink.wait_for(lambda: sink.to("nvan.canhan@gmail.com"))
    d = records[-1]["decision"]
    assert (d["decision"], d["rule"]) == ("accept", "default")
    assert d["audit"] == [{"rule": "official-to-unofficial", "would": "reject", "tags": []}]
    assert "official-to-unofficial" in d["matched"]


async def test_first_deciding_rule_wins_and_tags_stop_there(make_gateway, sink, tmp_path):
    (tmp_path / "policies").mkdir()
    _add_policy(tmp_path, "10-order.yaml", """
rules:
  - id: tag-first
    description: tag every report
    basis: test
    when: {category: report}
    then: {tags: [first]}
  - id: hold-reports
    description: hold reports
    basis: test
    when: {category: report, urgency: none}
    then: {decision: quarantine, tags: [held]}
  - id: reject-reports
    description: would reject reports, but comes after the hold
    basis: test
    when: {category: report, direction: outbound}
    then:
      decision: reject
      reply: {code: 550, enhanced: 5.7.1, text: "Không / No"}
  - id: tag-last
    description: never reached for reports
    basis: test
    when: {category: [report, plan]}
    then: {tags: [last]}
""")
    gw = await make_gateway()
    records: list[dict[str, Any]] = []

    async def keep(rec: dict[str, Any]) -> None:
        records.append(rec)

    gw.edge.recorder = gw.edge.spooled_recorder = keep
    await send(gw, "relay", message(subject="Báo cáo số 210/BC-STTTT", sender=CLERK, to=OTHER_CLERK), CLERK, [OTHER_CLERK])
    d = records[-1]["decision"]
    assert (d["decision"], d["rule"], d["matched"], d["tags"]) == ("quarantine", "hold-reports", ["tag-first", "hold-reports"], ["first", "held"])
    await send(gw, "relay", message(subject="Kế hoạch số 112/KH-STTTT", sender=CLERK, to=OTHER_CLERK), CLERK, [OTHER_CLERK])
    d = records[-1]["decision"]
    assert (d["decision"], d["rule"], d["matched"], d["tags"]) == ("accept", "default", ["tag-last"], ["last"])


async def test_archive_copy_notify_sender_and_validity_dates(make_gateway, sink, tmp_path):
    (tmp_path / "policies").mkdir()
    _add_policy(tmp_path, "10-actions.yaml", """
rules:
  - id: expired-rule
    description: no longer in force
    basis: test
    valid_until: 2020-12-31
    when: {category: plan}
    then:
      decision: reject
      reply: {code: 550, enhanced: 5.7.1, text: "Cũ / Old"}
  - id: archive-plans
    description: keep a copy of every plan
    basis: test
    when: {category: plan}
    then: {archive: [luutru@binhthuan.gov.vn], tags: [archived]}
  - id: hold-big-reports
    description: hold reports and tell the sender
    basis: test
    when: {category: report}
    then: {decision: quarantine, notify_sender: true}
""")
    gw = await make_gateway()
    await send(gw, "relay", message(subject="Kế hoạch số 112/KH-STTTT", sender=CLERK, to=OTHER_CLERK), CLERK, [OTHER_CLERK])
    await sink.wait_for(lambda: sink.to("luutru@binhthuan.gov.vn") and sink.to(OTHER_CLERK))
    await send(gw, "relay", message(subject="Báo cáo số 210/BC-STTTT", sender=CLERK, to=OTHER_CLERK), CLERK, [OTHER_CLERK])
    await sink.wait_for(lambda: sink.to(CLERK))
    notice = sink.to(CLERK)[0]
    assert notice.mail_from == "" and b"Auto-Submitted: auto-replied" in notice.data
    assert len(sink.to(OTHER_CLERK)) == 1  # the report is held, not delivered


async def test_reload_with_a_bad_policy_keeps_the_old_set(make_gateway, sink, tmp_path):
    gw = await make_gateway()
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=f"nvan@{BT}", to="nvan.canhan@gmail.com")
    (tmp_path / "policies" / "40-broken.yaml").write_text("rules:\n  - id: Bad Id\n    when: {}\n")
    assert gw.reload() is False
    err = await _refused(gw, "relay", raw, f"nvan@{BT}", ["nvan.canhan@gmail.com"])
    assert err.code == 550  # the old pack still runs
    (tmp_path / "policies" / "40-broken.yaml").unlink()
    official = tmp_path / "policies" / "20-official.yaml"
    official.write_text(official.read_text(encoding="utf-8").replace(
        "  - id: official-to-unofficial\n", "  - id: official-to-unofficial\n    mode: audit\n"), encoding="utf-8")
    assert gw.reload() is True
    await send(gw, "relay", raw, f"nvan@{BT}", ["nvan.canhan@gmail.com"])
    await sink.wait_for(lambda: sink.to("nvan.canhan@gmail.com"))


# --- mailgw policy test --------------------------------------------------------


def _policy_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", "policy", "test", "--config", str(REPO / "gateway.yaml"), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_policy_test_json_follows_the_contract():
    fixture = REPO / "tests" / "data" / "classify" / "012-e12-fwd-quyet-dinh-25.eml"
    run = _policy_test(str(fixture), "--json")
    assert run.returncode == 0, run.stderr
    t = json.loads(run.stdout)
    assert (t["decision"], t["rule"], t["matched"]) == ("reject", "official-to-unofficial", ["official-to-unofficial"])
    assert t["reply"].startswith("550 5.7.1 ") and t["reply"].endswith(f"[{t['id']}]")
    assert t["classification"]["category"] == "decision" and t["tags"] == []
    assert [s["stage"] for s in t["stages"]][-1] == "policy" and "classify" in [s["stage"] for s in t["stages"]]
    why = {r["rule"]: r for r in t["rules"]}
    assert why["official-to-unofficial"]["matched"] and "nvan.canhan@gmail.com" in why["official-to-unofficial"]["why"]
    assert not why["secrecy-block"]["matched"]


def test_policy_test_readable_trace_and_envelope_options():
    fixture = REPO / "tests" / "data" / "classify" / "007-e07-quyet-dinh-123.eml"
    run = _policy_test(str(fixture), "--listener", "mx", "--rcpt", OTHER_CLERK)
    assert run.returncode == 0, run.stderr
    assert "Quyết định / Decision: accept (quy tắc / rule default)" in run.stdout
    assert "KHỚP / MATCH  unverified-official" in run.stdout
    bad = _policy_test(str(fixture), "--listener", "nowhere")
    assert bad.returncode == 2 and "no listener named 'nowhere'" in bad.stderr
    missing = _policy_test("/nonexistent.eml")
    assert missing.returncode == 1 and "/nonexistent.eml:0: cannot read" in missing.stderr


def test_the_readme_examples_are_valid_rules(tmp_path, demo_directory):
    """The README's rules load as written, and the worked example does what the text says."""
    import datetime

    from mailgw.policy import engine

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## For IT admins: policies", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        (tmp_path / f"{i}.yaml").write_text(block, encoding="utf-8")
    pack = policy.load(str(tmp_path), demo_directory)
    assert [r.id for r in pack.rules] == ["reports-to-province-archive", "hold-documents-to-danang"]
    view = {
        "direction": "outbound", "classification": {"category": "decision"},
        "recipients": [{"address": "vanthu@danang.gov.vn", "domain": "danang.gov.vn", "official": True}],
        "sender": {"address": CLERK, "agency": "sotttt"}, "attachments": {"files": []},
    }
    out = engine.evaluate(pack, view, today=datetime.date(2026, 11, 21))
    assert (out.decision, out.matched, out.audit) == ("accept", ["hold-documents-to-danang"],
                                                      [AuditModeHit(rule="hold-documents-to-danang", would="quarantine", tags=[])])
    assert engine.evaluate(pack, view, today=datetime.date(2027, 1, 1)).matched == []


async def test_a_quarantined_message_waits_until_an_admin_releases_it(gw, sink):
    raw = message(subject="Thông báo", sender="thongbao@binhthuan-gov.vn", to=OTHER_CLERK)
    await send(gw, "mx", raw, "thongbao@binhthuan-gov.vn", [OTHER_CLERK])
    held = _record(gw)["id"]
    import asyncio

    await asyncio.sleep(0.5)  # several delivery scans
    assert sink.messages == [] and gw.spool.locate(held) == "hold"
    assert gw.spool.release(held)
    await sink.wait_for(lambda: sink.to(OTHER_CLERK))


def test_a_real_neighbour_listed_as_partner_is_never_a_lookalike():
    from mailgw.policy.lookalike import resembles

    assert resembles("ninhthuan.gov.vn", ["binhthuan.gov.vn"]) is not None  # one letter apart
    assert resembles("ninhthuan.gov.vn", ["binhthuan.gov.vn", "ninhthuan.gov.vn"]) is None  # a partner's own domain
    assert resembles("mail.ninhthuan.gov.vn", ["binhthuan.gov.vn", "ninhthuan.gov.vn"]) is None
    assert resembles("hanoi.gov.vn", ["hanam.gov.vn"]) is None  # short names: two letters is not a resemblance
    assert resembles("danang.gov.vn", ["binhthuan.gov.vn"]) is None


# --- one rule for "internal" -----------------------------------------------------


@pytest.mark.parametrize("mail_from, author, rcpt, expected", [
    # a local clerk's letter sent with an outside bounce address (a list manager's): still internal
    ("bounce+123@lists.example.org", CLERK, OTHER_CLERK, "internal"),
    # a local envelope sender but an outside author (a relay forwarding a citizen's mail): not internal
    (CLERK, "nguoidan@gmail.com", OTHER_CLERK, "outbound"),
    (CLERK, CLERK, "ban@gmail.com", "outbound"),
    (CLERK, CLERK, OTHER_CLERK, "internal"),
])
async def test_the_record_and_the_policy_agree_on_internal(gw, sink, mail_from, author, rcpt, expected):
    from mailgw import trace

    raw = message(subject="Trao đổi công việc", sender=author, to=rcpt)
    await send(gw, "relay", raw, mail_from, [rcpt])
    assert _record(gw)["direction"] == expected
    t = trace.run(gw.context(), raw, listener="relay", mail_from=mail_from, rcpts=[rcpt])
    assert t["facts"]["internal"] is (expected == "internal")



# --- display-name spoofing ---------------------------------------------------------


@pytest.mark.parametrize("from_value, warned", [
    ('"hanh.vp@binhthuan.gov.vn" <evil@attacker.example>', True),
    ("=?utf-8?b?aGFuaC52cEBiaW5odGh1YW4uZ292LnZu?= <evil@attacker.example>", True),  # the same, encoded
    ("=?utf-8?q?Nguy=E1=BB=85n_Th=E1=BB=8B_H=E1=BA=A1nh?= <nth.canhan@gmail.com>", True),  # a directory name
    ('"NGUYEN THI HANH" <nth.canhan@gmail.com>', True),  # folded and in capitals: the same name
    ("Tin tức <news@example.org>", False),
    ('"news@example.org" <news@example.org>', False),  # the name is the real address
])
async def test_a_misleading_display_name_is_tagged_and_warned(gw, sink, from_value, warned):
    raw = (f"From: {from_value}\r\nTo: {OTHER_CLERK}\r\nSubject: Thông báo\r\n\r\nNội dung.\r\n").encode()
    await send(gw, "mx", raw, "bounce@attacker.example", [OTHER_CLERK])
    await sink.wait_for(lambda: sink.to(OTHER_CLERK))
    head = sink.to(OTHER_CLERK)[0].data.split(b"\r\n\r\n", 1)[0]
    assert (b"\r\nX-Mailgw-Warning: " in head) is warned
    assert ("display-name-spoof" in _record(gw)["decision"]["tags"]) is warned


# --- policy test: a batch survives any one message; the tool and the gateway agree --------


def _nested_to(depth: int) -> bytes:
    # A To field the stdlib's address parser recurses into once per nested comment (folded: lines stay short).
    comment = b"(" * depth + b")" * depth
    folded = b"\r\n ".join(comment[i:i + 76] for i in range(0, len(comment), 76))
    return message(subject="Thông báo", sender=CLERK, to=OTHER_CLERK).replace(b"\r\nTo: ", b"\r\nTo: " + folded + b" ", 1)


async def test_policy_test_gives_the_gateways_reply_for_a_huge_nested_to(gw, sink, tmp_path):
    raw = _nested_to(3000)
    try:
        await send(gw, "relay", raw, CLERK, [OTHER_CLERK])
        code, text = 250, "2.0.0"
    except aiosmtplib.SMTPResponseException as e:
        code, text = e.code, e.message
    record = _record(gw)

    from mailgw import trace

    t = trace.run(gw.context(), raw, listener="relay", mail_from=CLERK, rcpts=[OTHER_CLERK])
    assert (int(t["reply"][:3]), t["reply"][4:9]) == (code, text[:5])
    assert (t["decision"], t["rule"]) == (record["decision"]["decision"], record["decision"]["rule"])


def test_policy_test_batch_goes_on_past_a_message_it_cannot_trace(tmp_path):
    good = REPO / "tests" / "data" / "classify" / "007-e07-quyet-dinh-123.eml"
    huge = tmp_path / "huge-to.eml"
    huge.write_bytes(_nested_to(3000))
    lonely = tmp_path / "no-recipient.eml"
    lonely.write_bytes(b"From: " + CLERK.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n")
    run = _policy_test(str(lonely), str(huge), str(good), "--json")
    assert run.returncode == 1, run.stderr
    assert f"{lonely}:0: no recipient" in run.stderr and "Traceback" not in run.stderr
    assert f"{huge}:0: no recipient" in run.stderr  # its To cannot be read: said, not a crash
    traced = [json.loads(line) for line in run.stdout.splitlines()]
    assert [t["file"] for t in traced] == [str(good)] and traced[0]["decision"] == "accept"
    given = _policy_test(str(huge), "--rcpt", OTHER_CLERK, "--json")
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["envelope"]["rcpts"] == [OTHER_CLERK]
