"""Running it like Postfix, on the real `mailgw serve` process: its log lines on stderr, systemd's
readiness messages on a socket the test binds, `mailgw reload` and `mailgw status` against it."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import yaml

from tests.conftest import REPO, free_port, message, write_config

SENDER = "vanthu.sotttt@binhthuan.gov.vn"


def _config(tmp_path: Path, sink: Any, ca: Any, password_hash: str, **overrides: Any) -> tuple[Path, int, int]:
    mx, relay = free_port(), free_port()
    path = write_config(
        tmp_path, sink.port, ca, password_hash,
        listeners=[{"name": "mx", "role": "mx", "listen": f"127.0.0.1:{mx}"},
                   {"name": "relay", "role": "relay", "listen": f"127.0.0.1:{relay}", "trusted_networks": ["127.0.0.0/8"]}],
        **overrides,
    )
    return path, mx, relay


class Notifications:
    """The NOTIFY_SOCKET end: a unix datagram socket, as systemd binds it, read all the time as systemd does."""

    def __init__(self, tmp_path: Path):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: queue.Queue[dict[str, str]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except OSError:
                return
            self.messages.put(dict(line.split("=", 1) for line in data.split("\n") if "=" in line))

    async def wait_for(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        # A safety bound, not a measure: a supervisor and two workers start in 5-10 s alone, but once
        # took over 30 s for READY in a full parallel run of the suite on a 2-core machine.
        async def first() -> dict[str, str]:
            while True:
                msg = await asyncio.to_thread(self.messages.get, True, timeout)
                if key in msg:
                    return msg

        return await asyncio.wait_for(first(), timeout)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _serve(path: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        fd = err.fileno()
        st = os.fstat(fd)
        return subprocess.Popen(
            [sys.executable, "-m", "mailgw", "serve", "--config", str(path)], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=err, env={**os.environ, "PYTHONPATH": str(REPO), **env,
                             # stderr is "the journal": systemd names its device and inode
                             "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        )


def _mailgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


async def _refused(raw: bytes, sender: str, rcpts: list[str], port: int) -> aiosmtplib.SMTPResponseException:
    with pytest.raises((aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)) as e:
        await aiosmtplib.send(raw, sender=sender, recipients=rcpts, hostname="127.0.0.1", port=port, start_tls=False)
    if isinstance(e.value, aiosmtplib.SMTPRecipientsRefused):
        return e.value.recipients[0]
    return e.value


async def test_journal_lines_readiness_reload_and_status(tmp_path, sink, ca, password_hash):
    path, mx, relay = _config(tmp_path, sink, ca, password_hash)
    notify = Notifications(tmp_path)
    log = tmp_path / "serve.log"
    proc = _serve(path, log, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    try:
        ready = await notify.wait_for("READY")
        assert "policies" in ready["STATUS"] and ready["MAINPID"] == str(proc.pid)
        # READY=1 comes after the ports are bound: a connection succeeds at once.
        _, w = await asyncio.open_connection("127.0.0.1", mx)
        w.close()
        await notify.wait_for("WATCHDOG")  # WatchdogSec=1s: pinged while healthy

        # A refusal at RCPT: mx takes local recipients only.
        rcpt = await _refused(message(), "someone@example.com", ["victim@example.net"], mx)
        assert rcpt.code == 550
        # A refusal at DATA: two authors. The clerk quotes the id at the end of the reply.
        two_from = message(extra_headers="From: other@binhthuan.gov.vn\r\n")
        data = await _refused(two_from, SENDER, ["vanthu.snv@binhthuan.gov.vn"], relay)
        refused_id = re.search(r"\[([0-9A-F]+)\]", data.message).group(1)
        # An accepted message, delivered to the sink.
        await aiosmtplib.send(message(subject="giao ban"), sender=SENDER, recipients=["vanthu.snv@binhthuan.gov.vn"],
                              hostname="127.0.0.1", port=relay, start_tls=False)
        await sink.wait_for(lambda: sink.to("vanthu.snv@binhthuan.gov.vn"))

        # `mailgw status` on the running gateway: versions in force, queue, exchange log.
        st = await asyncio.to_thread(_mailgw, "status", "--config", str(path), "--json")
        assert st.returncode == 0, st.stderr
        info = json.loads(st.stdout)
        assert info["running"] and info["gateway"]["pid"] == proc.pid
        assert info["gateway"]["policies"]["version"] and info["gateway"]["directory"]["version"]
        assert info["gateway"]["exchange_log"] == "database"
        assert info["journal"] == {"waiting": 0, "bad": 0}
        human = await asyncio.to_thread(_mailgw, "status", "--config", str(path))
        assert f"policies:     version {info['gateway']['policies']['version']}" in human.stdout
        assert "exchange log: writing to its database" in human.stdout

        # A reload that keeps the old files fails `mailgw reload` (ExecReload), with RELOADING=1 then READY=1.
        good = path.read_text()
        path.write_text(good + "\nnot_a_key: 1\n")
        bad = await asyncio.to_thread(_mailgw, "reload", "--config", str(path), "--pid", str(proc.pid))
        assert bad.returncode == 1 and "unknown key 'not_a_key'" in bad.stderr, bad.stderr
        assert "RELOADING" in (await notify.wait_for("RELOADING"))
        assert "FAILED" in (await notify.wait_for("READY"))["STATUS"]
        path.write_text(good)
        ok = await asyncio.to_thread(_mailgw, "reload", "--config", str(path))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("reloaded: policies version ")
        await notify.wait_for("RELOADING")
        assert "FAILED" not in (await notify.wait_for("READY"))["STATUS"]
    finally:
        proc.send_signal(signal.SIGTERM)
        stopping = await notify.wait_for("STOPPING")
        assert proc.wait(timeout=30) == 0
        notify.close()
    assert stopping["STOPPING"] == "1"

    lines = log.read_text().splitlines()
    # Journal shape: a priority on every line, no timestamp of our own (the journal adds it).
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines[:3]
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)
    assert not any("alembic" in line for line in lines)  # no INFO noise from migrations
    assert any(line.startswith("<3>") and "reload failed" in line for line in lines)

    reject = [line for line in lines if " reject stage=RCPT " in line]
    assert len(reject) == 1 and reject[0].startswith("<6>")
    assert "listener=mx client=127.0.0.1" in reject[0] and "from=<someone@example.com>" in reject[0]
    assert 'reply="550 5.7.1 ' in reject[0] and "victim@example.net" in reject[0]

    # The id the clerk quotes is in the log, on the exchange's line.
    found = [line for line in lines if refused_id in line]
    # With workers (auto: one per core, the default) the line names the worker that took the session.
    assert len(found) == 1 and re.match(r"<6>(\[worker \d+\] )?mailgw\.smtp\.edge: exchange id=" + refused_id, found[0]), found
    assert "decision=reject" in found[0] and "status=rejected" in found[0] and 'reply="550 ' in found[0]
    assert f"from=<{SENDER}> to=<vanthu.snv@binhthuan.gov.vn>" in found[0] and "delay=" in found[0]

    queued = [line for line in lines if " exchange id=" in line and "status=queued" in line]
    assert len(queued) == 1 and "decision=accept rule=" in queued[0]
    queued_id = re.search(r"exchange id=(\S+)", queued[0]).group(1)
    sent = [line for line in lines if f"delivery id={queued_id} " in line]
    assert len(sent) == 1 and "status=sent" in sent[0] and "dsn=2.0.0" in sent[0] and "relay=" in sent[0]

    # Stopped: status says so and exits 1.
    st = await asyncio.to_thread(_mailgw, "status", "--config", str(path))
    assert st.returncode == 1 and st.stdout.startswith("mailgw not running")


async def test_json_log_format_and_status_of_a_spool(tmp_path, sink, ca, password_hash):
    path, mx, relay = _config(tmp_path, sink, ca, password_hash, log={"format": "json"})
    tried: list[list[str]] = []
    sink.data_reply = lambda rcpts: tried.append(rcpts) or "451 4.3.0 try later"  # stays queued, deferred
    notify = Notifications(tmp_path)
    log = tmp_path / "serve.log"
    proc = _serve(path, log, {"NOTIFY_SOCKET": notify.path})
    try:
        await notify.wait_for("READY")
        data = await _refused(message(extra_headers="From: x@binhthuan.gov.vn\r\n"), SENDER,
                              ["vanthu.snv@binhthuan.gov.vn"], relay)
        refused_id = re.search(r"\[([0-9A-F]+)\]", data.message).group(1)
        await aiosmtplib.send(message(), sender=SENDER, recipients=["a@mic.gov.vn"], hostname="127.0.0.1",
                              port=relay, start_tls=False)
        await sink.wait_for(lambda: bool(tried))
    finally:
        proc.send_signal(signal.SIGTERM)  # the running attempt finishes and is logged before the exit
        assert proc.wait(timeout=30) == 0
        notify.close()
    records = [json.loads(line[3:]) for line in log.read_text().splitlines()]  # "<6>{...}"
    exchange = [r for r in records if r.get("event") == "exchange" and r["id"] == refused_id]
    assert len(exchange) == 1
    assert exchange[0]["decision"] == "reject" and exchange[0]["reply"].startswith("550 ")
    assert exchange[0]["to"] == ["vanthu.snv@binhthuan.gov.vn"] and "time" not in exchange[0]
    deferred = [r for r in records if r.get("event") == "delivery"]
    assert deferred and deferred[0]["status"] == "deferred" and deferred[0]["dsn"] == "4.3.0"

    # Stopped: `mailgw status` reads the spool alone; then an admin holds the message.
    info = json.loads(_mailgw("status", "--config", str(path), "--json").stdout)
    assert info["queue"]["deferred"] + info["queue"]["active"] == 1 and info["queue"]["hold"] == 0
    (msg_id,) = os.listdir(tmp_path / "spool" / "queue")
    assert _mailgw("queue", "hold", msg_id, "--config", str(path)).returncode == 0
    st = _mailgw("status", "--config", str(path), "--json")
    info = json.loads(st.stdout)
    assert st.returncode == 1 and not info["running"] and info["gateway"]["state"] == "stopped"
    assert info["queue"] == {"active": 0, "deferred": 0, "hold": 1, "corrupt": 0}
    assert yaml.safe_load(path.read_text())["log"] == {"format": "json"}


def test_systemd_units_verify(tmp_path):
    """systemd's own checker on the shipped units (the install path replaced by an executable that exists)."""
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = sorted((REPO / "systemd").iterdir())
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/mailgw/.venv/bin/mailgw", sys.executable))
    run = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / u.name) for u in units)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    service = (REPO / "systemd" / "mailgw.service").read_text()
    for line in ("Type=notify", "KillMode=mixed", "ExecReload=/opt/mailgw/.venv/bin/mailgw reload --pid $MAINPID",
                 "ProtectProc=invisible", "ProcSubset=pid", "RemoveIPC=yes", "PrivateMounts=yes", "WatchdogSec="):
        assert line in service
    assert {u.name for u in units} >= {"mailgw-prune.timer", "mailgw-prune.service", "mailgw-report.timer",
                                       "mailgw-report.service"}


def _scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics page, read with prometheus-client's own parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_summed_over_workers(tmp_path, sink, ca, password_hash):
    path, mx, relay = _config(tmp_path, sink, ca, password_hash, workers=2, metrics={"listen": "127.0.0.1:0"})
    notify = Notifications(tmp_path)
    proc = _serve(path, tmp_path / "serve.log", {"NOTIFY_SOCKET": notify.path})
    try:
        ready = await notify.wait_for("READY")  # the supervisor's, once both workers listen
        assert ready["MAINPID"] == str(proc.pid)
        address = json.loads((tmp_path / "spool" / "status.json").read_text())["metrics"]
        assert address.startswith("127.0.0.1:")
        await _refused(message(), "someone@example.com", ["victim@example.net"], mx)
        for i in range(3):  # separate connections: the kernel spreads them over the workers
            await aiosmtplib.send(message(subject=f"m{i}"), sender=SENDER, recipients=[f"r{i}@binhthuan.gov.vn"],
                                  hostname="127.0.0.1", port=relay, start_tls=False)
        await _refused(message(extra_headers="From: x@binhthuan.gov.vn\r\n"), SENDER, ["r@binhthuan.gov.vn"], relay)
        await sink.wait_for(lambda: len(sink.messages) == 3)
        m = await asyncio.to_thread(_scrape, address)
        for _ in range(100):  # the last delivery's counter is written just after the sink's 250
            if m.get(("mailgw_deliveries_total", (("status", "sent"),))) == 3:
                break
            await asyncio.sleep(0.05)
            m = await asyncio.to_thread(_scrape, address)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        notify.close()
    assert m[("mailgw_decisions_total", (("decision", "accept"), ("rule", "default")))] == 3
    assert m[("mailgw_decisions_total", (("decision", "reject"), ("rule", "smtp")))] == 1
    assert m[("mailgw_deliveries_total", (("status", "sent"),))] == 3
    assert m[("mailgw_smtp_refusals_total", (("listener", "mx"), ("stage", "RCPT")))] == 1
    assert sum(v for (name, labels), v in m.items() if name == "mailgw_smtp_sessions_total") == 5
    assert m[("mailgw_stage_seconds_count", (("stage", "parse"),))] == 4
    assert m[("mailgw_stage_seconds_count", (("stage", "spool"),))] == 3
    assert m[("mailgw_queue_messages", (("state", "hold"),))] == 0
    assert m[("mailgw_journal_backlog", ())] == 0
    assert m[("mailgw_exchange_log_database_up", ())] == 1
    assert any(name == "mailgw_config_info" and dict(labels)["policies"] for (name, labels) in m)


def test_log_and_metrics_settings(tmp_path, ca, password_hash):
    from mailgw.config import settings
    from mailgw.config.yamlfile import ConfigError

    path = write_config(tmp_path, 2526, ca, password_hash, metrics={})
    s = settings.load(str(path))
    assert s.metrics_listen == ("127.0.0.1", 9464) and s.log_format == "text"
    path = write_config(tmp_path, 2526, ca, password_hash, log={"format": "xml"}, metrics={"listen": "9464"})
    with pytest.raises(ConfigError) as e:
        settings.load(str(path))
    text = str(e.value)
    assert re.search(r"gateway\.yaml:\d+: log format must be text or json, not 'xml'", text), text
    assert re.search(r"gateway\.yaml:\d+: 'listen' must be HOST:PORT, not '9464'", text), text
