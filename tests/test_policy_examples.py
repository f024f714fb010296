"""The examples E1-E21 of VN-DOCUMENTS section 10 through `mailgw policy test --json`, under the shipped pack.

The messages are the classifier's golden fixtures (tests/data/classify, made by
make_fixtures.py); the envelope of each comes from the table of the reference.
Examples marked [s2] there carry a PDF with two digital signatures: the test
signs the fixture's PDF twice (the signer's and the agency's certificates, from
test CAs, with pyHanko) before running it.
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from typing import Any

import pytest

from mailgw import trace
from mailgw.app import load_context
from tests.attachment_fixtures import sign_pdf_twice
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "data" / "classify"
BT = "binhthuan.gov.vn"
INTERNAL = f"vanthu.snv@{BT}"

# (fixture, listener, rcpts or None for To/Cc, signed [s2], category, doc_number, decision, rule, tags)
EXAMPLES: list[tuple[str, str, str, list[str] | None, bool, str, str | None, str, str, set[str]]] = [
    ("E1", "001-e01-giay-moi-giao-ban", "relay", [f"cbcc.sotttt@{BT}"], False, "meeting_invitation", None, "accept", "default", set()),
    ("E2", "002-e02-tai-lieu-hop", "relay", None, False, "meeting_material", None, "accept", "default", set()),
    ("E3", "003-e03-thong-bao-nghi-le", "relay", None, False, "announcement", None, "accept", "default", set()),
    ("E4", "004-e04-lich-cong-tac", "relay", None, False, "work_schedule", None, "accept", "default", {"channel:dms"}),
    ("E5", "005-e05-ke-hoach-112", "relay", None, True, "plan", "112/KH-STTTT", "accept", "default", {"channel:dms"}),
    ("E6", "006-e06-cong-van-456", "relay", None, True, "official_letter", "456/STTTT-VP", "accept", "default", {"channel:dms"}),
    ("E7", "007-e07-quyet-dinh-123", "mx", None, False, "decision", "123/QĐ-BTTTT", "accept", "default",
     {"channel:dms", "unsigned-document", "unverified-official"}),
    ("E8", "008-e08-mat-bao-cao-antt", "relay", None, False, "report", None, "reject", "secrecy-block", set()),
    ("E9", "009-e09-mat-khau", "relay", None, False, "general", None, "accept", "default", set()),
    ("E10", "010-e10-hoa-toc-cong-dien", "mx", None, True, "official_telegram", "03/CĐ-UBND", "accept", "default",
     {"urgency:hoa_toc", "channel:dms", "unverified-official"}),
    ("E11", "011-e11-khan-giay-moi-07", "relay", None, False, "meeting_invitation", "07/GM-STTTT", "accept", "default",
     {"urgency:khan", "unsigned-document"}),
    ("E12", "012-e12-fwd-quyet-dinh-25", "relay", None, False, "decision", "25/QĐ-UBND", "reject", "official-to-unofficial", set()),
    ("E13", "013-e13-thong-bao-mat-khau", "mx", None, False, "announcement", None, "quarantine", "lookalike-domain", set()),
    ("E14", "014-e14-rfc2047-nfd", "relay", None, False, "report", "210/BC-STTTT", "accept", "default", {"unsigned-document"}),
    ("E15", "015-e15-so-5-qd", "relay", None, False, "decision", "5/QĐ-UBND", "accept", "default", {"channel:dms", "unsigned-document"}),
    ("E16", "016-e16-chuong-trinh-11", "relay", None, False, "programme", "11/CTr-STTTT", "accept", "default",
     {"channel:dms", "unsigned-document"}),
    ("E17", "017-e17-huong-dan-02", "relay", None, False, "guidance", "02/HD-SNV", "accept", "default", {"channel:dms", "unsigned-document"}),
    ("E18", "018-e18-nghi-dinh-30", "mx", None, False, "legal_normative", "30/2020/NĐ-CP", "accept", "default",
     {"channel:dms", "unsigned-document", "unverified-official"}),
    ("E19", "019-e19-gmail-giay-moi", "mx", None, False, "meeting_invitation", None, "accept", "default", {"unverified-official"}),
    ("E20", "020-e20-chuyen-khoan-gap", "mx", None, False, "general", None, "reject", "spoof-local-domain", set()),
    ("E21", "021-e21-bao-cao-exe", "relay", None, False, "report", None, "reject", "dangerous-attachment", set()),
]


@pytest.fixture(scope="module")
def ctx() -> Any:
    context, _ = load_context(str(REPO / "gateway.yaml"))
    return context


def _message(fixture: str, signed: bool) -> bytes:
    raw = (FIXTURES / f"{fixture}.eml").read_bytes()
    if not signed:
        return raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "application/pdf":
            name = part.get_filename()
            signed_pdf = sign_pdf_twice(part.get_content())
            part.set_content(signed_pdf, maintype="application", subtype="pdf", disposition="attachment", filename=name)
            break
    else:
        raise AssertionError(f"{fixture} has no PDF to sign")
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_gives_its_expected_decision(example, ctx):
    name, fixture, listener, rcpts, signed, category, doc_number, decision, rule, tags = example
    t = trace.run(ctx, _message(fixture, signed), listener=listener, rcpts=rcpts or ())
    assert t["classification"]["category"] == category, name
    if doc_number is not None:
        assert t["classification"]["doc_number"] == doc_number, name
    assert (t["decision"], t["rule"]) == (decision, rule), (name, t["rules"])
    if decision == "accept":
        assert set(t["tags"]) == tags, (name, t["tags"])
    if decision in ("reject", "quarantine"):
        assert t["matched"][-1] == rule
    if signed:
        assert t["attachments"]["signed_any"] is True, name


def test_examples_through_the_command_line(tmp_path):
    """The same path as an admin runs it: several files in one call, one JSON line each."""
    files = [FIXTURES / f"{f}.eml" for f in ("012-e12-fwd-quyet-dinh-25", "013-e13-thong-bao-mat-khau", "020-e20-chuyen-khoan-gap")]
    run = subprocess.run(
        [sys.executable, "-m", "mailgw", "policy", "test", "--config", str(REPO / "gateway.yaml"), "--listener", "mx",
         "--rcpt", INTERNAL, "--json", *map(str, files)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(g["decision"], g["rule"]) for g in got] == [
        ("reject", "spoof-local-domain"),  # E12's sender claims our domain, and on mx nothing signed it
        ("quarantine", "lookalike-domain"),
        ("reject", "spoof-local-domain"),
    ]
    assert got[2]["reply"].startswith("550 5.7.26 ")
