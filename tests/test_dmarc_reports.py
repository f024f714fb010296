"""DMARC reporting: results counted in the exchange log, RFC 7489 aggregate reports, `dmarc record`, `check`.

A day of mail goes through the real gateway over real sockets (clients bound to
several loopback addresses, so the reports have several sources), with DNS from a
zone-style answers file; the reports the gateway then makes are read back by
parsedmarc (an independent, widely used parser of aggregate reports), and the one
it sends is taken from a recording next hop and its DKIM signature checked with
dkimpy. DKIM keys are the test keys of tests/data/dkim.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import gzip
import io
import json
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim as dkimpy
import parsedmarc
import pytest
from sqlalchemy import select

from mailgw import cli
from mailgw.audit.log import AuditLog
from mailgw.audit.prune import prune
from mailgw.audit.schema import DmarcSource
from mailgw.audit.store import open_engine
from mailgw.config.resolver import FileResolver
from mailgw.dkim import sign
from mailgw.senderauth import reports
from tests.conftest import message
from tests.made_records import gateway_context, made
from tests.test_dkim_pipeline import _keyfile, _signing_key, _zone_line

OURS = "binhthuan.gov.vn"
LOCAL_RCPT = f"vanthu.snv@{OURS}"
HANOI = "hanoi.gov.vn"  # p=reject, reports to its own mailbox
HUE = "hue.gov.vn"  # p=quarantine, reports to an outside analyser (authorised), a third party (not), a small box
ANALYSER = "reports@analyser.example"
THIRD_PARTY = "steal@unauthorised.example"
SMALL_BOX = f"small@{HUE}"
REPORTER = f"dmarc-reports@{OURS}"

SERVERS = "127.0.0.2"  # the provinces' own mail servers
ATTACKER = "127.0.0.3"
CLOUD = "127.0.0.4"  # a service that sends for us, with our DKIM key

ZONE = (
    f'_dmarc.{HANOI}. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{HANOI}"',
    f'{HANOI}. IN TXT "v=spf1 ip4:{SERVERS} -all"',
    f'_dmarc.{HUE}. IN TXT "v=DMARC1; p=quarantine; fo=1; rua=mailto:{ANALYSER},mailto:{THIRD_PARTY},mailto:{SMALL_BOX}!1k"',
    f'{HUE}._report._dmarc.analyser.example. IN TXT "v=DMARC1"',
    f'{HUE}. IN TXT "v=spf1 ip4:{SERVERS} -all"',
    f'_dmarc.{OURS}. IN TXT "v=DMARC1; p=reject; rua=mailto:{REPORTER}"',
    f'{OURS}. IN TXT "v=spf1 ip4:{SERVERS} -all"',
    'evil.example. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
    _zone_line(HANOI, "rsa"),
    _zone_line(OURS, "rsa"),
)


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "answers.zone").write_text("\n".join(ZONE) + "\n")
    return {
        "dns": {"answers": "answers.zone"},
        "dkim": [{"domain": OURS, "selector": "rsa", "key": _keyfile(tmp_path, "rsa")}],
        "dmarc": {"reports": {"send": True, "org_name": "Sở TT&TT Bình Thuận", "email": REPORTER,
                              "extra_contact_info": "https://stttt.binhthuan.gov.vn"},
                  "record": {"p": "reject", "spf": [f"ip4:{SERVERS}"]}},
    }


def _letter(author: str, signer: str | None = None, subject: str = "Công văn số 45/UBND-VP",
            body: str = "Kính gửi Sở TT&TT.\r\n") -> bytes:
    raw = message(subject=subject, sender=author, to=LOCAL_RCPT, body=f"{body}{abs(hash(author + subject))}\r\n")
    return sign(raw, [_signing_key("rsa", signer)]) + raw if signer else raw


async def _send(gw: Any, source: str, raw: bytes, mail_from: str, helo: str = "client.test") -> int:
    """Send from ``source`` (a loopback address); the final reply code."""
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.addresses["mx"][1], start_tls=False,
                                   source_address=(source, 0), local_hostname=helo) as client:
            await client.sendmail(mail_from, [LOCAL_RCPT], raw)
        return 250
    except aiosmtplib.SMTPResponseException as e:
        return e.code


async def _mailgw(*argv: str) -> tuple[int, str, str]:
    """`mailgw ARGV...` in a thread (it runs its own event loops), with its output."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def _rows(url: str) -> list[Any]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(DmarcSource).order_by(DmarcSource.policy_domain, DmarcSource.source_ip)))
    finally:
        engine.dispose()


def _parsed(data: bytes) -> dict[str, Any]:
    """parsedmarc's reading of a .xml.gz report (offline: no DNS, no IP database download)."""
    return dict(parsedmarc.parse_aggregate_report_file(data, offline=True))


def _by_ip(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in report["records"]:
        out.setdefault(r["source"]["ip_address"], []).append(r)
    return out


async def test_a_day_of_mail_is_counted_reported_validated_and_sent(make_gateway, sink, tmp_path):
    gw = await make_gateway(**_settings(tmp_path))
    db = f"sqlite:///{tmp_path}/mailgw.db"
    cfg = str(tmp_path / "gateway.yaml")
    # The day's mail: the province's own servers, signed; spoofs; a secret document (refused and redacted,
    # still counted); a quarantined spoof of a p=quarantine domain; our own domain, signed and forged.
    codes = []
    for _ in range(3):
        codes.append(await _send(gw, SERVERS, _letter(f"vanphong@{HANOI}", signer=HANOI), f"vanphong@{HANOI}"))
    codes.append(await _send(gw, SERVERS, _letter(f"vanphong@{HANOI}", signer=HANOI, subject="MẬT - Báo cáo số 5/BC-UBND",
                                                  body="MẬT\r\nBáo cáo tình hình.\r\n"), f"vanphong@{HANOI}"))
    for _ in range(2):
        codes.append(await _send(gw, ATTACKER, _letter(f"chutich@{HANOI}"), "x@evil.example"))
    codes.append(await _send(gw, ATTACKER, _letter(f"giamdoc@{HUE}"), "x@evil.example"))
    codes.append(await _send(gw, CLOUD, _letter(f"vanthu.sotttt@{OURS}", signer=OURS), f"bounce@{OURS}"))
    codes.append(await _send(gw, ATTACKER, _letter(f"vanthu.sotttt@{OURS}"), "x@evil.example"))
    # A notice from the null sender <>: SPF checks the HELO name; DKIM passes.
    codes.append(await _send(gw, SERVERS, _letter(f"mailer-daemon@{HANOI}", signer=HANOI), "", helo=f"mx.{HANOI}"))
    assert codes == [250, 250, 250, 550, 550, 550, 250, 250, 550, 250]

    # Counted in the exchange log, per day, domain, source and outcome.
    rows = _rows(db)
    counts = {(r.policy_domain, r.source_ip, r.envelope_from, r.result, r.disposition, r.reason): r.count
              for r in rows}
    assert counts == {
        (HANOI, SERVERS, HANOI, "pass", "none", ""): 4,  # the secret one too: counted, nothing more kept
        (HANOI, SERVERS, "", "pass", "none", ""): 1,
        (HANOI, ATTACKER, "evil.example", "fail", "reject", ""): 2,
        (HUE, ATTACKER, "evil.example", "fail", "quarantine", ""): 1,
        (OURS, CLOUD, OURS, "pass", "none", ""): 1,
        (OURS, ATTACKER, "evil.example", "fail", "reject", ""): 1,
    }
    spoof = next(r for r in rows if r.policy_domain == HANOI and r.source_ip == ATTACKER)
    assert (spoof.envelope_from, spoof.spf_domain, spoof.spf_result, spoof.dkim, spoof.spf) == (
        "evil.example", "evil.example", "pass", "fail", "fail")
    good = next(r for r in rows if r.policy_domain == HANOI and r.envelope_from == HANOI)
    assert (json.loads(good.dkim_results), good.dkim, good.spf) == ([[HANOI, "rsa", "pass"]], "pass", "pass")
    (day,) = {r.day for r in rows}

    # The day's reports in a folder, read by parsedmarc.
    code, out, err = await _mailgw("dmarc", "report", "--config", cfg, "--day", day.isoformat(), "--out",
                                   str(tmp_path / "reports"))
    assert code == 0, err
    files = {p.name.split("!")[1]: p for p in (tmp_path / "reports").iterdir()}
    assert set(files) == {HANOI, HUE, OURS}
    hanoi = _parsed(files[HANOI].read_bytes())
    meta = hanoi["report_metadata"]
    assert (meta["org_name"], meta["org_email"], meta["report_id"]) == (
        "Sở TT&TT Bình Thuận", REPORTER, reports.report_id(HANOI, day))
    assert meta["begin_date"].startswith(day.isoformat()) and meta["end_date"].startswith(day.isoformat())
    assert {k: hanoi["policy_published"][k] for k in ("domain", "p", "sp", "pct", "adkim", "aspf")} == {
        "domain": HANOI, "p": "reject", "sp": "reject", "pct": "100", "adkim": "r", "aspf": "r"}
    by_ip = _by_ip(hanoi)
    ok, null_sender = sorted(by_ip[SERVERS], key=lambda r: -r["count"])
    assert (ok["count"], ok["alignment"]["dmarc"], ok["policy_evaluated"]["disposition"]) == (4, True, "none")
    assert [(d["domain"], d["selector"], d["result"]) for d in ok["auth_results"]["dkim"]] == [(HANOI, "rsa", "pass")]
    assert (ok["auth_results"]["spf"][0]["domain"], ok["auth_results"]["spf"][0]["result"]) == (HANOI, "pass")
    # Written empty (the schema requires the element); parsedmarc then names the SPF-checked domain there.
    assert b"<envelope_from />" in gzip.decompress(files[HANOI].read_bytes())
    assert (null_sender["count"], null_sender["identifiers"]["envelope_from"]) == (1, f"mx.{HANOI}")
    assert [(x["domain"], x["scope"], x["result"]) for x in null_sender["auth_results"]["spf"]] == [
        (f"mx.{HANOI}", "helo", "none")]
    (forged,) = by_ip[ATTACKER]
    assert (forged["count"], forged["alignment"]["dmarc"], forged["policy_evaluated"]["disposition"]) == (
        2, False, "reject")
    assert (forged["identifiers"]["header_from"], forged["identifiers"]["envelope_from"]) == (HANOI, "evil.example")
    hue = _parsed(files[HUE].read_bytes())
    assert hue["policy_published"]["fo"] == "1"  # read from the record when the report was made
    assert [r["policy_evaluated"]["disposition"] for r in hue["records"]] == ["quarantine"]

    # Sent: through the gateway's own queue, DKIM-signed, to the rua= addresses that may have them.
    code, out, err = await _mailgw("dmarc", "report", "--config", cfg, "--day", day.isoformat(), "--send")
    assert code == 0, err
    assert f"{HUE}:" in out and f"{THIRD_PARTY}: not authorised" in out and f"{SMALL_BOX}: report of" in out
    assert f"{OURS}: 1 message(s)" not in out and "one of our own domains" in out
    await sink.wait_for(lambda: sink.to(f"dmarc@{HANOI}") and sink.to(ANALYSER))
    for rcpt, domain in ((f"dmarc@{HANOI}", HANOI), (ANALYSER, HUE)):
        (got,) = sink.to(rcpt)
        assert got.rcpts == [rcpt]
        keys = {f"rsa._domainkey.{OURS}.".encode(): _zone_line(OURS, "rsa").split(" IN TXT ", 1)[1]}
        txt = "".join(part.strip('"') for part in keys[f"rsa._domainkey.{OURS}.".encode()].split('" "')).encode()
        assert dkimpy.verify(got.data, dnsfunc=lambda name, timeout=5: txt)
        mail = email.message_from_bytes(got.data, policy=email.policy.default)
        assert mail["Subject"] == (f"Report Domain: {domain} Submitter: {OURS} "
                                   f"Report-ID: <{reports.report_id(domain, day)}>")
        (part,) = [p for p in mail.iter_attachments()]
        assert part.get_content_type() == "application/gzip" and part.get_filename().startswith(f"{OURS}!{domain}!")
        sent = _parsed(part.get_content())
        assert sent["policy_published"]["domain"] == domain
        assert gzip.decompress(part.get_content()) == gzip.decompress(files[domain].read_bytes())
    assert not sink.to(THIRD_PARTY) and not sink.to(SMALL_BOX) and not sink.to(REPORTER)
    # Each report is an exchange of the log, and is never sent twice.
    code, again, _ = await _mailgw("dmarc", "report", "--config", cfg, "--day", day.isoformat(), "--send")
    assert code == 0 and again.count("already sent") == 2
    code, shown, _ = await _mailgw("audit", "show", "--config", cfg, reports.report_id(HANOI, day), "--json")
    shown_record = json.loads(shown)
    assert (shown_record["decision"]["rule"], shown_record["role"], shown_record["dkim"]["signed"]) == (
        "dmarc-report", "report", True)

    # The monthly report: who sends in our domains' names.
    period = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=7)).strftime("%Y-%m")
    code, _, err = await _mailgw("report", "--config", cfg, "--period", period, "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    section = page.split("Ai gửi thư nhân danh tên miền của ta / Who sends in our domains' names", 1)[1]
    section = section.split("<h2>", 1)[0]
    assert f"<td>{OURS}</td><td>{CLOUD}</td><td class=\"n\">1</td>" in section.replace("\n", "")
    data = json.loads(page.split('id="report-data">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    assert data["own_domain_senders"] == [
        {"domain": OURS, "source_ip": ATTACKER, "messages": 1, "pass": 0, "fail": 1, "dkim_aligned": 0,
         "spf_aligned": 0, "refused": 1},
        {"domain": OURS, "source_ip": CLOUD, "messages": 1, "pass": 1, "fail": 0, "dkim_aligned": 1,
         "spf_aligned": 0, "refused": 0},
    ]


# --- counting: SQLite and PostgreSQL, replay, several nodes ----------------------------------


async def test_counts_are_kept_once_per_exchange_on_both_databases(audit_url, tmp_path):
    ctx = gateway_context(tmp_path, dns=ZONE)
    hanoi_mail = [made(ctx, f"X{n}", "2026-12-01T10:00:00Z", "mx", _letter(f"vanphong@{HANOI}", signer=HANOI),
                       f"vanphong@{HANOI}", [LOCAL_RCPT]) for n in range(3)]
    secret = made(ctx, "S1", "2026-12-01T11:00:00Z", "mx",
                  _letter(f"vanphong@{HANOI}", signer=HANOI, subject="MẬT - Báo cáo số 5/BC-UBND",
                          body="MẬT\r\nBáo cáo tình hình.\r\n"), f"vanphong@{HANOI}", [LOCAL_RCPT])
    assert secret.get("redacted") and secret["decision"]["rule"] == "secrecy-block"
    next_day = made(ctx, "N1", "2026-12-02T00:30:00Z", "mx", _letter(f"vanphong@{HANOI}", signer=HANOI),
                    f"vanphong@{HANOI}", [LOCAL_RCPT])
    unpublished = made(ctx, "U1", "2026-12-01T10:00:00Z", "mx", _letter("x@cantho.gov.vn"), "x@cantho.gov.vn",
                       [LOCAL_RCPT])  # no DMARC record: nobody to report to, not counted
    one = AuditLog.open(audit_url, "node-a")
    two = AuditLog.open(audit_url, "node-b")
    try:
        one.append(hanoi_mail[:2] + [unpublished])
        two.append([hanoi_mail[2], secret, next_day])
        one.append(hanoi_mail)  # a replay (journal, spool at start-up): already logged, not counted again
    finally:
        one.close()
        two.close()
    rows = _rows(audit_url)
    assert [(r.day, r.policy_domain, r.count) for r in rows] == [
        (dt.date(2026, 12, 1), HANOI, 4), (dt.date(2026, 12, 2), HANOI, 1)]
    first = rows[0]
    assert (first.first_seen, first.last_seen) == (dt.datetime(2026, 12, 1, 10), dt.datetime(2026, 12, 1, 11))
    # The report from these rows, on this database, as parsedmarc reads it.
    engine = open_engine(audit_url)
    try:
        (day_rows,) = reports.counted(engine, dt.date(2026, 12, 1)).values()
    finally:
        engine.dispose()
    rep = reports.build(HANOI, dt.date(2026, 12, 1), day_rows, org_name="Sở TT&TT", email_address=REPORTER)
    parsed = _parsed(rep.gz)
    assert [(r["source"]["ip_address"], r["count"]) for r in parsed["records"]] == [("127.0.0.1", 4)]
    assert "MẬT" not in rep.xml.decode() and "secret" not in rep.xml.decode()
    # Retention: pruning the log removes the counts of the pruned days too.
    engine = open_engine(audit_url)
    try:
        problems, _ = prune(engine, dt.datetime(2026, 12, 2))
    finally:
        engine.dispose()
    assert problems == [] and [(r.day, r.count) for r in _rows(audit_url)] == [(dt.date(2026, 12, 2), 1)]


# --- destinations (RFC 7489 section 7.1, size limits) -----------------------------------------


async def test_an_outside_rua_needs_the_report_authorisation_record_and_sizes_are_honoured():
    zone = FileResolver.from_text(
        '_dmarc.hue.gov.vn. IN TXT "v=DMARC1; p=none; rua=mailto:a@hue.gov.vn!10m, mailto:b@stp.hue.gov.vn!1k,'
        'mailto:c@analyser.example, mailto:d@other.example, https://ignored.example/"\n'
        'hue.gov.vn._report._dmarc.analyser.example. IN TXT "v=DMARC1;"\n'
        'hue.gov.vn._report._dmarc.other.example. IN TXT "v=spf1 -all"\n')
    record = await reports.published(HUE, zone)
    assert record is not None
    assert [(d.address, d.limit) for d in record.rua] == [
        ("a@hue.gov.vn", 10 * 1024 * 1024), ("b@stp.hue.gov.vn", 1024), ("c@analyser.example", None),
        ("d@other.example", None)]
    ok, notes = await reports.destinations(record, zone, 5000)
    assert ok == ["a@hue.gov.vn", "c@analyser.example"]
    assert [n.split(":")[0] for n in notes] == ["b@stp.hue.gov.vn", "d@other.example"]
    assert "hue.gov.vn._report._dmarc.other.example" in notes[1]


def test_a_report_file_name_never_leaves_its_folder():
    # The policy domain comes from the From field of mail: it must not name another folder.
    row = type("Row", (), {"policy": "{}", "last_seen": dt.datetime(2026, 12, 1), "count": 1, "source_ip": "192.0.2.1",
                           "disposition": "none", "dkim": "fail", "spf": "fail", "reason": "", "envelope_from": "",
                           "header_from": "x", "dkim_results": "[]", "spf_domain": "x", "spf_scope": "helo",
                           "spf_result": "none"})
    rep = reports.build("../../etc/x\r\nBcc: y", dt.date(2026, 12, 1), [row], org_name="o", email_address=REPORTER)
    assert "/" not in rep.filename and "\n" not in rep.filename and not rep.filename.startswith(".")
    assert rep.report_id.isalnum()


# --- dmarc record, check ----------------------------------------------------------------------


def _config(tmp_path: Path, zone: tuple[str, ...], **dmarc: Any) -> str:
    import trustme

    from mailgw.smtp.credentials import hash_password
    from tests.conftest import write_config

    (tmp_path / "answers.zone").write_text("\n".join(zone) + "\n")
    return str(write_config(tmp_path, 9, trustme.CA(), hash_password("x"), dns={"answers": "answers.zone"},
                            dmarc=dmarc))


def test_dmarc_record_prints_what_our_domains_publish(tmp_path, capsys):
    cfg = _config(tmp_path, (), reports={"email": REPORTER}, record={"p": "quarantine", "spf": ["ip4:203.0.113.5"]})
    assert cli.main(["dmarc", "record", "--config", cfg]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(";")]
    assert lines == [
        f'{OURS}. IN TXT "v=spf1 ip4:203.0.113.5 -all"',
        f'_dmarc.{OURS}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:{REPORTER}"',
        f'stttt.{OURS}. IN TXT "v=spf1 ip4:203.0.113.5 -all"',  # its DMARC record is the organisation's
    ]
    assert cli.main(["dmarc", "record", "--config", cfg, "--domain", OURS, "--spf", "ip6:2001:db8::25", "--p",
                     "reject", "--rua", "dmarc@analyser.example"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(";")]
    assert lines == [
        f'{OURS}. IN TXT "v=spf1 ip6:2001:db8::25 -all"',
        f'_dmarc.{OURS}. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@analyser.example"',
        f'{OURS}._report._dmarc.analyser.example. IN TXT "v=DMARC1"',  # the analyser's consent to our reports
    ]
    assert cli.main(["dmarc", "record", "--config", cfg, "--spf", "ip4:300.1"]) == 2


def test_check_warns_when_the_published_records_disagree_or_are_missing(tmp_path, capsys):
    published = (
        f'_dmarc.{OURS}. IN TXT "v=DMARC1; p=none; rua=mailto:someone@{OURS}"',
        f'{OURS}. IN TXT "v=spf1 ip4:192.0.2.1 -all"',
    )
    cfg = _config(tmp_path, published, reports={"email": REPORTER}, record={"p": "reject", "spf": ["ip4:203.0.113.5"]})
    assert cli.main(["check", "--config", cfg]) == 0  # warnings, not failures
    err = capsys.readouterr().err
    warnings = [line.split(": warning: ", 1)[1] for line in err.splitlines() if ": warning: " in line]
    assert any(w.startswith(f"the DMARC record of {OURS} says p=none, the settings p=reject") for w in warnings)
    assert any(w.startswith(f"the DMARC record of {OURS} does not send reports to {REPORTER}") for w in warnings)
    assert any(w.startswith(f"the SPF record of {OURS} does not allow this gateway's address 203.0.113.5 (SPF fail)")
               for w in warnings)
    assert any(w.startswith(f"stttt.{OURS} publishes no SPF record") for w in warnings)
    assert all(line.startswith(f"{cfg}:") for line in err.splitlines() if ": warning: " in line)
    assert not any("unsigned" in w for w in warnings)  # reports are not sent (dmarc.reports.send is false)
    # Published as the settings say: no warning about them.
    fixed = (
        f'_dmarc.{OURS}. IN TXT "v=DMARC1; p=reject; rua=mailto:{REPORTER}"',
        f'{OURS}. IN TXT "v=spf1 ip4:203.0.113.5 -all"',
        f'stttt.{OURS}. IN TXT "v=spf1 ip4:203.0.113.0/24 -all"',
    )
    cfg = _config(tmp_path, fixed, reports={"email": REPORTER}, record={"p": "reject", "spf": ["ip4:203.0.113.5"]})
    assert cli.main(["check", "--config", cfg]) == 0
    assert "DMARC" not in capsys.readouterr().err and "SPF" not in capsys.readouterr().err


def test_reports_are_opt_in_and_need_their_metadata(tmp_path, capsys):
    cfg = _config(tmp_path, (), reports={"email": REPORTER, "org_name": "Sở"})
    assert cli.main(["dmarc", "report", "--config", cfg, "--send"]) == 1
    assert "dmarc.reports.send is not true" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["dmarc", "report", "--config", cfg, "--day", "2026-13-01x", "--bogus"])
    assert cli.main(["dmarc", "report", "--config", cfg, "--day", "yesterday-ish"]) == 2
    cfg = _config(tmp_path, (), reports={"send": True, "org_name": "Sở", "email": REPORTER})
    assert cli.main(["check", "--config", cfg]) == 0
    assert f"no dkim: key for the domain of dmarc.reports.email {REPORTER}: reports would go out unsigned" in (
        capsys.readouterr().err)
    cfg = _config(tmp_path, (), reports={"send": True})
    assert cli.main(["check", "--config", cfg]) == 1
    err = capsys.readouterr().err
    assert "dmarc.reports.send needs dmarc.reports.org_name" in err and "gateway.yaml:" in err
