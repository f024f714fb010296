"""The real `mailgw serve` process: SIGKILL under load loses nothing, SIGHUP reloads safely, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import yaml

from tests.conftest import REPO, free_port, message, write_config


def _config(tmp_path: Path, sink, ca, password_hash) -> tuple[Path, int]:
    relay = free_port()
    path = write_config(
        tmp_path, sink.port, ca, password_hash,
        listeners=[{"name": "relay", "role": "relay", "listen": f"127.0.0.1:{relay}", "trusted_networks": ["127.0.0.0/8"]}],
        limits={"connections_per_ip": 100},
    )
    return path, relay


async def _start(path: Path, port: int) -> subprocess.Popen:
    log = open(path.parent / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgw", "serve", "--config", str(path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=log,
    )
    log.close()  # the child has its own copy
    for _ in range(400):  # 20 s: a loaded machine starts slowly
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start: " + (path.parent / "serve.log").read_text())


async def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    sink.data_reply = lambda rcpts: "451 4.3.0 slow down"  # keep mail in the spool while we kill
    proc = await _start(path, relay)
    acked: set[int] = set()
    total = 300

    async def client(worker: int) -> None:
        for i in range(worker, total, 10):
            try:
                _, reply = await aiosmtplib.send(
                    message(subject=f"crash-{i:04d}"), sender="vanthu.sotttt@binhthuan.gov.vn",
                    recipients=[f"r{i}@binhthuan.gov.vn"], hostname="127.0.0.1", port=relay, start_tls=False, timeout=5,
                )
                if reply.startswith("2.0.0"):
                    acked.add(i)
            except (aiosmtplib.SMTPException, OSError):
                return  # the gateway died under us: the rest was never acknowledged

    async def killer() -> None:
        while len(acked) < 120:
            await asyncio.sleep(0.01)
        sink.data_reply = lambda rcpts: None  # deliveries start succeeding just before the kill
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)

    await asyncio.gather(killer(), *(client(w) for w in range(10)))
    proc.wait(timeout=10)
    assert 120 <= len(acked) < total, len(acked)

    proc = await _start(path, relay)
    try:
        def delivered() -> set[int]:
            return {int(m) for msg in sink.messages for m in re.findall(rb"crash-(\d{4})", msg.data)}

        await sink.wait_for(lambda: acked <= delivered(), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert acked <= delivered()


async def test_sighup_with_a_bad_file_keeps_the_running_configuration(tmp_path, sink, ca, password_hash):
    path, relay = _config(tmp_path, sink, ca, password_hash)
    proc = await _start(path, relay)
    try:
        good = path.read_text()
        path.write_text(good + "\nnot_a_key: 1\n")
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert proc.poll() is None
        await aiosmtplib.send(message(), sender="a@binhthuan.gov.vn", recipients=["x@binhthuan.gov.vn"], hostname="127.0.0.1", port=relay, start_tls=False)
        await sink.wait_for(lambda: sink.to("x@binhthuan.gov.vn"))
        # A good reload takes effect: the recipient limit drops to 1.
        settings = yaml.safe_load(good)
        settings["limits"]["recipients"] = 1
        path.write_text(yaml.safe_dump(settings))
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        errors, _ = await aiosmtplib.send(message(), sender="a@binhthuan.gov.vn", recipients=["x@binhthuan.gov.vn", "y@binhthuan.gov.vn"], hostname="127.0.0.1", port=relay, start_tls=False)
        assert errors["y@binhthuan.gov.vn"].code == 452
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    log = (path.parent / "serve.log").read_text()
    assert "reload failed; keeping the running configuration" in log
    assert "gateway.yaml:" in log and "unknown key 'not_a_key'" in log



async def test_tls_offers_only_mozillas_intermediate_groups(tmp_path, sink, ca, password_hash):
    # OpenSSL's defaults add X448 and secp521r1; mailgw serve runs with mailgw/smtp/openssl.cnf.
    import shutil

    openssl = shutil.which("openssl")
    if openssl is None:
        import pytest

        pytest.skip("the openssl command is not installed")
    path, relay = _config(tmp_path, sink, ca, password_hash)
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    log = open(tmp_path / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "mailgw", "serve", "--config", str(path)], cwd=REPO,
                            env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    try:
        for _ in range(400):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", relay)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        results = {}
        for group in ("X448", "secp521r1", "X25519"):
            run = await asyncio.to_thread(
                subprocess.run, [openssl, "s_client", "-connect", f"127.0.0.1:{relay}", "-starttls", "smtp",
                                 "-groups", group, "-brief"],
                input=b"QUIT\r\n", capture_output=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
            results[group] = b"Protocol version" in run.stderr or b"CONNECTION ESTABLISHED" in run.stderr
        assert results == {"X448": False, "secp521r1": False, "X25519": True}, results
    finally:
        proc.terminate()
        proc.wait(30)
