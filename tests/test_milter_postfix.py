"""mailgw as the milter (and policy service) of a real Postfix: Debian's postfix, a private instance.

One Postfix and one ``mailgw serve`` for the whole module (a few seconds to
start, then each test is one SMTP transaction or two). Postfix has two
``smtpd`` services: one for mail from the Internet (``-o
milter_macro_daemon_name=mx-in``, mailgw's role mx, with mailgw's policy
service in its recipient restrictions) and one for the agencies' own servers
(``relay-in``, role relay); both relay to tests/sink.py. A third service,
``mx-slow``, is mx with Postfix's milter timeouts at 2 s, and mailgw's DNS
is a server on 127.0.0.1 (tests/dns_server.py) that a test can make silent. The set-up is the
bench's (bench/postfix_vs_mailgw.py: ``Rig`` and ``start_private_postfix``).

Needs root (Postfix's master starts as root) and the Debian packages postfix
and opendkim (``.ci/run`` installs them); skips with the reason otherwise,
unless MAILGW_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mailgw.dkim import SigningKey, sign
from mailgw.queue.spool import Spool
from mailgw.smtp import wire
from tests.conftest import message
from tests.dns_server import DnsServer
from tests.dns_server import start as dns_server_start
from tests.sink import Sink
from tests.test_dkim_opendkim import opendkim_verify
from tests.test_dkim_pipeline import KEY_DATA, _public_records, _zone_line

REPO = Path(__file__).resolve().parent.parent
BT = "binhthuan.gov.vn"
CLERK = f"vanthu.sotttt@{BT}"
OTHER = f"vanthu.snv@{BT}"
LEADER = f"giamdoc.skhdt@{BT}"
REMOTE = "hanoi.gov.vn"
MILTER_TIMEOUT = 2  # seconds: Postfix's milter_command_timeout and milter_content_timeout on the service mx-slow
DNS_TIMEOUT = 3  # seconds: mailgw's limit for one DNS lookup


def _require(what: str) -> None:
    if os.environ.get("MAILGW_REQUIRE_TOOLS") == "1":
        pytest.fail(what + ", and MAILGW_REQUIRE_TOOLS=1 requires it")
    pytest.skip(what)


class ThreadSink:
    """tests/sink.py on an event loop of its own, for a module of synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sink = Sink()
        self._run(self.sink.start())

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for_subject(self, marker: bytes, timeout: float = 30) -> bytes:
        def found() -> bool:
            return any(marker in m.data for m in self.sink.messages)

        self._run(self.sink.wait_for(found, timeout), timeout + 5)
        return next(m.data for m in self.sink.messages if marker in m.data)

    def close(self) -> None:
        self._run(self.sink.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Stack:
    def __init__(self, rig: Any, postfix: Any, sink: ThreadSink, mailgw: subprocess.Popen[bytes], home: Path,
                 dns: DnsServer):
        self.rig, self.postfix, self.sink, self.mailgw, self.home, self.dns = rig, postfix, sink, mailgw, home, dns
        self.exchange_ids: list[str] = []  # every exchange mailgw made, as Postfix's clients and the sink saw them

    def send(self, service: str, raw: bytes, mail_from: str, rcpts: list[str],
             mail_options: tuple[str, ...] = ()) -> tuple[int, str]:
        """One transaction through Postfix; (code, text) of the reply to DATA, or of the first refusal."""
        port = self.postfix.services[service]
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            try:
                s.sendmail(mail_from, rcpts, raw, mail_options=list(mail_options))
            except smtplib.SMTPRecipientsRefused as e:
                code, text = next(iter(e.recipients.values()))
                return code, text.decode()
            except smtplib.SMTPResponseException as e:
                text = e.smtp_error.decode() if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
                return e.smtp_code, text
            return 250, ""

    def mailgw_log(self) -> str:
        return (self.rig.dir / "mailgw.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if os.geteuid() != 0:
        _require("Postfix's master must start as root")
    if not shutil.which("postfix", path="/usr/sbin:/usr/bin") or not shutil.which("smtp-sink", path="/usr/sbin:/usr/bin"):
        _require("Postfix is not installed (Debian package postfix)")
    from bench.postfix_vs_mailgw import Rig, free_port, start_private_postfix, wait_running

    rig = Rig()
    sink: ThreadSink | None = None
    dns: DnsServer | None = None
    try:
        sink = ThreadSink()
        home = rig.dir / "mailgw"
        home.mkdir()
        shutil.copy(REPO / "directory.yaml", home / "directory.yaml")
        shutil.copytree(REPO / "policies", home / "policies")
        (home / "keys").mkdir()
        shutil.copy(KEY_DATA / "rsa2048.pem", home / "keys" / "rsa.pem")
        (home / "keys" / "rsa.pem").chmod(0o600)
        # mailgw's DNS: a server on 127.0.0.1 with the remote province's DKIM key, as its DNS would publish it.
        name, _, txt = _zone_line(REMOTE, "rsa").partition(" IN TXT ")
        dns = sink._run(dns_server_start({name.lower(): [("TXT", txt)]}))
        milter_port, policy_port = free_port(), free_port()
        daemons = {"mx-in": "mx", "relay-in": "relay"}
        settings = {
            "hostname": "mailgw.test", "directory": "directory.yaml", "policies": "policies",
            "database": "sqlite:///audit.db", "spool": "spool",
            "listeners": [
                {"name": "milter", "role": "milter", "listen": f"127.0.0.1:{milter_port}", "daemons": daemons},
                {"name": "policy", "role": "policy", "listen": f"127.0.0.1:{policy_port}", "daemons": daemons},
            ],
            "routes": {"local": f"smtp://127.0.0.1:{sink.sink.port}", "remote": f"smtp://127.0.0.1:{sink.sink.port}"},
            "dkim": [{"domain": BT, "selector": "rsa", "key": "keys/rsa.pem"}],
            "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": f"{DNS_TIMEOUT}s"},
        }
        config = home / "gateway.yaml"
        config.write_text(yaml.safe_dump(settings, allow_unicode=True))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        mailgw = rig.spawn([sys.executable, "-m", "mailgw", "serve", "--config", str(config)], log="mailgw.log",
                           cwd=str(home), env=env)
        wait_running(home / "spool", mailgw)
        postfix = start_private_postfix(
            rig, sink.sink.port, f"inet:127.0.0.1:{milter_port}",
            services={"mx-in": "-o milter_macro_daemon_name=mx-in -o smtpd_recipient_restrictions=$mx_rcpt",
                      "relay-in": "-o milter_macro_daemon_name=relay-in",
                      # Mail from the Internet, with a mailgw that must answer within MILTER_TIMEOUT.
                      "mx-slow": "-o milter_macro_daemon_name=mx-in -o smtpd_recipient_restrictions=$mx_rcpt"
                                 f" -o milter_command_timeout={MILTER_TIMEOUT}s -o milter_content_timeout={MILTER_TIMEOUT}s"},
            extra_main=(f"mx_rcpt = check_policy_service {{ inet:127.0.0.1:{policy_port}, policy_context=mx-in }},"
                        " permit_mynetworks, reject\n"
                        "milter_connect_timeout = 10s\n"),
        )
        yield Stack(rig, postfix, sink, mailgw, home, dns)
    finally:
        if sink is not None:
            if dns is not None:
                sink.loop.call_soon_threadsafe(dns.transport.close)
            sink.close()
        rig.close()


def _exchange_id(text: str) -> str:
    m = re.search(r"\[([0-9A-F]{21})\]\s*$", text)
    assert m, text
    return m.group(1)


def _queued_ids(data: bytes) -> str:
    m = re.search(rb"by mailgw\.test \(mailgw\) with \S+ id ([0-9A-F]{21})", data)
    assert m, data[:2000]
    return m.group(1).decode()


def _spooled(stack: Stack) -> list[Any]:
    return list(Spool(str(stack.home / "spool")).entries())


def test_official_document_to_gmail_refused_at_data_with_the_bilingual_text(stack: Stack) -> None:
    raw = message(subject="Fwd: Quyết định số 25/QĐ-UBND", sender=LEADER, to="canhan@gmail.com")
    code, text = stack.send("relay-in", raw, LEADER, ["canhan@gmail.com"])
    assert code == 550, text
    exchange = _exchange_id(text)
    stack.exchange_ids.append(exchange)
    rec = _audit_show(stack, exchange)
    assert rec["decision"]["rule"] == "official-to-unofficial" and rec["role"] == "relay"
    # Exactly the edge's reply, folded to ASCII and cut into lines as the edge cuts it.
    lines = wire.reply_lines(rec["decision"]["reply"], utf8=False)
    assert text.split("\n") == [line[4:] for line in lines]
    assert "canhan@gmail.com" in text and text.isascii()


def test_refusal_in_utf8_when_the_client_used_smtputf8(stack: Stack) -> None:
    raw = message(subject="Fwd: Quyết định số 26/QĐ-UBND", sender=LEADER, to="canhan@gmail.com")
    code, text = stack.send("relay-in", raw, LEADER, ["canhan@gmail.com"], mail_options=("SMTPUTF8",))
    assert code == 550, text
    rec = _audit_show(stack, _exchange_id(text))
    assert text.split("\n") == [line[4:] for line in wire.reply_lines(rec["decision"]["reply"], utf8=True)]
    assert "Văn bản hành chính" in text


def test_secret_document_refused_with_nothing_kept(stack: Stack) -> None:
    before = {m["queue_id"] for m in stack.postfix.postqueue_json()}
    raw = message(subject="[MẬT] Báo cáo tình hình an ninh trật tự", body="Nội dung mật.\r\n")
    code, text = stack.send("relay-in", raw, CLERK, [OTHER])
    assert code == 550 and text.startswith("5.7.1 "), text
    stack.exchange_ids.append(_exchange_id(text))
    after = stack.postfix.postqueue_json()
    assert [m for m in after if m["queue_id"] not in before] == []  # nothing in any of Postfix's queues
    assert _spooled(stack) == []  # nor in mailgw's spool
    rec = _audit_show(stack, stack.exchange_ids[-1])
    assert rec["decision"]["rule"] == "secrecy-block"


def test_lookalike_is_in_postfix_hold_queue(stack: Stack) -> None:
    raw = message(subject="Cập nhật mật khẩu hộp thư", sender="thongbao@binhthuan-gov.vn")
    code, text = stack.send("mx-in", raw, "thongbao@binhthuan-gov.vn", [OTHER])
    assert code == 250, text
    held = [m for m in stack.postfix.postqueue_json() if m["sender"] == "thongbao@binhthuan-gov.vn"]
    assert [m["queue_name"] for m in held] == ["hold"]
    queue_id = held[0]["queue_id"]
    log = stack.mailgw_log()
    m = re.search(rf"exchange id=([0-9A-F]{{21}}) listener=milter .*status=held .*mta_id={queue_id}", log)
    assert m, log[-3000:]
    stack.exchange_ids.append(m.group(1))
    assert _audit_show(stack, m.group(1))["decision"]["rule"] == "lookalike-domain"
    mailq = subprocess.run(["mailq", "-C", str(stack.postfix.etc)], capture_output=True, text=True).stdout
    assert f"{queue_id}!" in mailq  # "!": on hold


def test_outbound_leaves_postfix_signed_by_mailgw_and_verifies_with_opendkim(stack: Stack, tmp_path: Path) -> None:
    opendkim = shutil.which("opendkim", path="/usr/sbin:/usr/bin")
    if not opendkim:
        _require("the opendkim binary is not installed (Debian package opendkim)")
    raw = message(subject="Kế hoạch số 45/KH-STTTT triển khai chuyển đổi số", to=f"vanphong@{REMOTE}",
                  body="Kính gửi Văn phòng UBND thành phố.\r\nNội dung kế hoạch.\r\n")
    code, text = stack.send("relay-in", raw, CLERK, [f"vanphong@{REMOTE}"])
    assert code == 250, text
    data = stack.sink.wait_for_subject(b"Message-ID: <" + str(abs(hash("Kế hoạch số 45/KH-STTTT triển khai chuyển đổi số"
                                       + "Kính gửi Văn phòng UBND thành phố.\r\nNội dung kế hoạch.\r\n"))).encode())
    head = data.split(b"\r\n\r\n")[0]
    assert head.startswith(b"DKIM-Signature:") or b"\r\nDKIM-Signature:" in head
    assert opendkim_verify(opendkim, tmp_path, data, _public_records((BT, "rsa"))) == [("pass", BT, "rsa")]
    stack.exchange_ids.append(_queued_ids(data))


def test_inbound_dkim_result_in_authentication_results(stack: Stack) -> None:
    body = "Kính gửi Sở TT&TT.\r\nNội dung công văn 77.\r\n"
    raw = message(subject="Công văn số 77/UBND-VP", sender=f"vanphong@{REMOTE}", to=OTHER, body=body)
    signed = sign(raw, [SigningKey.from_file(REMOTE, "rsa", KEY_DATA / "rsa2048.pem")]) + raw
    code, text = stack.send("mx-in", signed, f"vanphong@{REMOTE}", [OTHER])
    assert code == 250, text
    data = stack.sink.wait_for_subject(b"77.\r\n")
    results = re.findall(rb"(?im)^Authentication-Results:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", data)
    assert len(results) == 1 and b"mailgw.test;" in results[0], results
    assert re.search(rb"dkim=pass[^;]*header\.d=hanoi\.gov\.vn", results[0]), results[0]
    stack.exchange_ids.append(_queued_ids(data))


def test_foreign_recipient_refused_by_the_policy_service_before_data(stack: Stack) -> None:
    code, text = stack.send("mx-in", message(sender="someone@example.com", to="victim@gmail.com"),
                            "someone@example.com", ["victim@gmail.com"])
    assert code == 550 and text.startswith("5.7.1 ") and "Relaying denied" in text, text
    assert re.search(r"reject stage=RCPT listener=policy role=mx .*arg=victim@gmail.com", stack.mailgw_log())


def test_every_exchange_is_in_mailgw_exchange_log(stack: Stack) -> None:
    # Its own exchanges, one refused at DATA and one delivered, then those of the tests before it, if any ran.
    code, text = stack.send("relay-in", message(subject="[MẬT] Danh sách cán bộ", body="Mật.\r\n"), CLERK, [OTHER])
    assert code == 550, text
    refused = _exchange_id(text)
    raw = message(subject="Giấy mời họp giao ban tuần", body="Kính mời dự họp giao ban số 12.\r\n")
    code, text = stack.send("relay-in", raw, CLERK, [OTHER])
    assert code == 250, text
    delivered = _queued_ids(stack.sink.wait_for_subject(b"giao ban s\xe1\xbb\x91 12."))
    rows = _audit_search(stack)
    assert {refused, delivered, *stack.exchange_ids} <= {r["id"] for r in rows}
    assert {r["listener"] for r in rows} == {"milter"}


def test_mailgw_slow_postfix_tempfails_then_delivers_once_mailgw_is_fast_again(stack: Stack) -> None:
    slow = "cham.example"  # its DNS server does not answer: mailgw waits for the SPF and DMARC lookups
    sender = f"vanphong@{slow}"
    raw = message(subject="Thư khi DNS chậm", sender=sender, to=OTHER, body="Nội dung thư số 31 khi DNS chậm.\r\n")
    marker = "thư số 31 khi DNS chậm".encode()
    stack.dns.silent.add(slow)
    try:
        started = time.monotonic()
        code, text = stack.send("mx-slow", raw, sender, [OTHER])
        waited = time.monotonic() - started
    finally:
        stack.dns.silent.discard(slow)
    # Postfix's own answer (milter_default_action = tempfail), not mailgw's: no exchange id in it.
    assert (code, text) == (451, "4.7.1 Service unavailable - try again later"), (code, text)
    assert MILTER_TIMEOUT <= waited < MILTER_TIMEOUT + DNS_TIMEOUT, waited
    assert any(q == slow + "." or q.endswith("." + slow + ".") for q in stack.dns.queries)
    postfix_log = (stack.postfix.etc.parent / "postfix.log").read_text(errors="replace")
    assert re.search(r"warning: milter \S+: can't read SMFIC_BODYEOB reply packet header: Connection timed out\n"
                     rf".*milter-reject: END-OF-MESSAGE .*: 4\.7\.1 Service unavailable.*from=<{sender}>", postfix_log), \
        postfix_log[-3000:]
    assert not [m for m in stack.postfix.postqueue_json() if m["sender"] == sender]  # nothing queued
    # mailgw fast again (its DNS answers): the client's retry goes through, and only that copy arrives.
    code, text = stack.send("mx-slow", raw, sender, [OTHER])
    assert code == 250, text
    stack.sink.wait_for_subject(marker)
    assert sum(marker in m.data for m in stack.sink.sink.messages) == 1
    # mailgw finished the first attempt after Postfix had given up: its exchange log keeps that
    # exchange as accepted and says, in its delivery history, that the MTA never queued it.
    deadline = time.monotonic() + 30
    while True:
        mine = [r["id"] for r in _audit_search(stack) if r["mail_from"] == sender]
        history = {x: _audit_show(stack, x).get("deliveries") or [] for x in mine}
        if len(mine) == 2 and any(history.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # mailgw's writer is another process: nothing to wait on but the log itself
    assert sorted([(d["recipient"], d["status"]) for d in h] for h in history.values()) == [[], [(OTHER, "abandoned")]], history
    assert all("not queued by the MTA" in d["reply"] for h in history.values() for d in h)


def test_mailgw_stopped_postfix_tempfails(stack: Stack) -> None:
    stack.mailgw.terminate()
    assert stack.mailgw.wait(30) == 0
    code, text = stack.send("relay-in", message(subject="Khi mailgw dừng"), CLERK, [OTHER])
    assert code == 451 and text.startswith("4.7.1 "), (code, text)  # milter_default_action = tempfail: retried later
    assert not [m for m in stack.postfix.postqueue_json() if m["sender"] == CLERK]


def _audit_url(stack: Stack) -> str:
    return f"sqlite:///{stack.home / 'audit.db'}"


def _audit_search(stack: Stack) -> list[dict[str, Any]]:
    """``mailgw audit search --json`` on mailgw's exchange log (in this process: a CLI start costs seconds)."""
    from mailgw.audit import commands
    from mailgw.audit.query import FILTER_NAMES

    out = io.StringIO()
    assert commands.search(_audit_url(stack), {**{n: None for n in FILTER_NAMES}, "limit": 100}, True, out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _audit_show(stack: Stack, exchange: str) -> dict[str, Any]:
    """``mailgw audit show ID --json``."""
    from mailgw.audit import commands

    out = io.StringIO()
    assert commands.show(_audit_url(stack), exchange, True, out) == 0
    return json.loads(out.getvalue())
