"""Shared fixtures: a recording next hop, TLS certificates, and the real gateway on port 0."""

from __future__ import annotations

import asyncio
import email.header
import os
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import aiosmtplib
import pytest
import trustme
import uvloop
import yaml

from mailgw.app import Gateway
from mailgw.smtp.credentials import hash_password
from tests.sink import Sink

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "mật-khẩu-thử-nghiệm"  # non-ASCII on purpose: AUTH carries UTF-8
LOGIN = "vanthu.sotttt@binhthuan.gov.vn"

# `mailgw serve` runs on uvloop (mailgw/cli.py): the gateways the tests start in
# their own process run on it too, STARTTLS included.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def free_port() -> int:
    """A loopback TCP port free a moment ago, for a `mailgw serve` child to bind (it cannot be handed a socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, sink_port: int, ca: trustme.CA, password_hash: str, **overrides: Any) -> Path:
    """A settings file in ``tmp_path`` with every listener on a free port and routes to the sink."""
    cert = ca.issue_cert("localhost", "127.0.0.1", "mailgw.test")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    shutil.copy(REPO / "directory.yaml", tmp_path / "directory.yaml")
    (tmp_path / "credentials.yaml").write_text(yaml.safe_dump({"users": {LOGIN: password_hash}}))
    if not (tmp_path / "policies").exists():
        shutil.copytree(REPO / "policies", tmp_path / "policies")
    settings: dict[str, Any] = {
        "hostname": "mailgw.test",
        "directory": "directory.yaml",
        "policies": "policies",
        "database": "sqlite:///mailgw.db",
        "spool": "spool",
        "credentials": "credentials.yaml",
        "listeners": [
            {"name": "mx", "role": "mx", "listen": "127.0.0.1:0"},
            {"name": "relay", "role": "relay", "listen": "127.0.0.1:0", "trusted_networks": ["127.0.0.0/8"]},
            {"name": "submission", "role": "submission", "listen": "127.0.0.1:0"},
        ],
        "routes": {"local": f"smtp://127.0.0.1:{sink_port}", "remote": f"smtp://127.0.0.1:{sink_port}"},
        "tls": {"cert": "cert.pem", "key": "key.pem"},
        "queue": {"retry_min": "200ms", "retry_max": "1s", "lifetime": "5d", "scan_interval": "100ms", "connect_timeout": "5s", "command_timeout": "10s"},
        "limits": {"idle_timeout": "30s", "auth_penalty": "20ms"},
    }
    if "dns" not in overrides:
        # No test may ask the Internet: mx mail is checked (DKIM, SPF, DMARC) against an answers
        # file, empty unless the test writes one (every name then does not exist).
        (tmp_path / "answers.zone").touch()
        settings["dns"] = {"answers": "answers.zone"}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty exchange log: a SQLite file, or a fresh schema on the PostgreSQL at 127.0.0.1:5432."""
    from mailgw.audit.testing import REQUIRE_PG, pg_schema_url

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/audit.db"
        return
    with pg_schema_url() as pg:
        if pg is None:
            msg = "PostgreSQL not reachable at 127.0.0.1:5432 (database test, user postgres or root, trust auth)"
            if os.environ.get(REQUIRE_PG) == "1":
                pytest.fail(msg + f" and {REQUIRE_PG}=1")
            pytest.skip(msg)
        yield pg


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(tmp_path: Path, sink: Sink, ca: trustme.CA, password_hash: str) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def make(**overrides: Any) -> Gateway:
        path = write_config(tmp_path, sink.port, ca, password_hash, **overrides)
        gw = Gateway(str(path))
        await gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.drain()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def keep_records(gw: Gateway) -> list[dict[str, Any]]:
    """The decision records ``gw`` makes from now on, as the exchange log receives them."""
    captured: list[dict[str, Any]] = []

    async def keep(rec: dict[str, Any]) -> None:
        captured.append(rec)

    gw.edge.recorder = gw.edge.spooled_recorder = keep
    return captured


@pytest.fixture
async def recording_gateway(make_gateway: GatewayFactory) -> Gateway:
    """A gateway whose decision records are kept in ``gw.records``, as the exchange log receives them."""
    g = await make_gateway()
    g.records = keep_records(g)  # type: ignore[attr-defined]
    return g


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a state that no event announces (a queue emptied, a count dropped), checked every 20 ms."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def port(gw: Gateway, listener: str) -> int:
    return gw.addresses[listener][1]


def message(
    subject: str = "Trao đổi công việc tuần này",
    sender: str = "vanthu.sotttt@binhthuan.gov.vn",
    to: str = "vanthu.snv@binhthuan.gov.vn",
    body: str = "Kính gửi các đơn vị,\r\nXin mời dự họp.\r\n",
    extra_headers: str = "",
) -> bytes:
    """A small, well-formed UTF-8 message with CRLF line endings."""

    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {_encoded(subject)}\r\n"
        f"Date: Sat, 21 Nov 2026 09:00:00 +0700\r\nMessage-ID: <{abs(hash(subject + body))}@test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"{extra_headers}\r\n{body}"
    ).encode("utf-8")


async def send(gw: Gateway, listener: str, raw: bytes, sender: str, rcpts: list[str], **kw: Any) -> Any:
    """Send with aiosmtplib; plain text unless a ``tls_context`` is given."""
    if "tls_context" not in kw:
        kw["start_tls"] = False
    return await aiosmtplib.send(raw, sender=sender, recipients=rcpts, hostname="127.0.0.1", port=port(gw, listener), **kw)


def _encoded(subject: str) -> str:
    """A Subject value, RFC 2047-encoded and folded with CRLF (a bare LF is refused at the edge)."""
    return email.header.Header(subject, "utf-8").encode(linesep="\r\n")
