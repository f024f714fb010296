"""Transports: hand a message to the next hop and say, per recipient, what happened.

Every result carries ``permanent`` explicitly (chasquid's courier): a 5xx
reply is permanent, anything else that is not a success (4xx, timeouts,
refused connections, DNS trouble) is temporary and will be retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
import ssl
import time
import urllib.parse
from typing import Sequence

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.resolver

from mailgw.settings import QueueSettings, Route


@dataclasses.dataclass(frozen=True)
class Result:
    ok: bool
    permanent: bool
    reply: str  # the next hop's reply, or what went wrong, for the log and the DSN
    remote: str = ""  # who answered (host or path)


def sent(reply: str, remote: str) -> Result:
    return Result(True, False, reply, remote)


def temporary(reply: str, remote: str = "") -> Result:
    return Result(False, False, reply, remote)


def permanent(reply: str, remote: str = "") -> Result:
    return Result(False, True, reply, remote)


async def deliver(route: Route, mail_from: str, rcpts: Sequence[str], data: bytes, *, hostname: str, timeouts: QueueSettings) -> dict[str, Result]:
    """Deliver ``data`` to ``rcpts`` (all of them on this route); one Result per recipient."""
    if route.kind == "maildir":
        return await asyncio.to_thread(_to_maildir, route.path, rcpts, data)
    if route.kind == "smtp":
        return await _smtp([(route.host, route.port)], mail_from, rcpts, data, hostname, timeouts)
    # mx: one domain per call (the worker groups recipients by domain)
    domain = rcpts[0].rpartition("@")[2]
    hosts, error = await _mx_hosts(domain, timeouts.connect_timeout)
    if error is not None:
        return {r: error for r in rcpts}
    return await _smtp([(h, 25) for h in hosts], mail_from, rcpts, data, hostname, timeouts)


async def _smtp(hosts: list[tuple[str, int]], mail_from: str, rcpts: Sequence[str], data: bytes, hostname: str, timeouts: QueueSettings) -> dict[str, Result]:
    last: Result = temporary("no host to try")
    for host, port in hosts:
        remote = f"{host}:{port}"
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=hostname,
            timeout=timeouts.command_timeout,
            start_tls=None,  # STARTTLS when offered; opportunistic, as Postfix's "may"
            validate_certs=False,
            tls_context=_opportunistic_tls(),
        )
        try:
            await asyncio.wait_for(client.connect(), timeouts.connect_timeout)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            last = temporary(f"connect to {remote} failed: {_describe(e)}", remote)
            continue  # next MX host
        try:
            return await _transaction(client, mail_from, rcpts, data, remote)
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                client.close()
    return {r: last for r in rcpts}


async def _transaction(client: aiosmtplib.SMTP, mail_from: str, rcpts: Sequence[str], data: bytes, remote: str) -> dict[str, Result]:
    try:
        await client.mail(mail_from, options=_mail_options(client, data))
    except aiosmtplib.SMTPResponseException as e:
        return {r: _from_code(e.code, f"MAIL FROM: {e.code} {e.message}", remote) for r in rcpts}
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        return {r: temporary(f"{remote}: {_describe(e)}", remote) for r in rcpts}
    results: dict[str, Result] = {}
    accepted: list[str] = []
    for rcpt in rcpts:
        try:
            await client.rcpt(rcpt)
            accepted.append(rcpt)
        except aiosmtplib.SMTPResponseException as e:
            results[rcpt] = _from_code(e.code, f"RCPT TO: {e.code} {e.message}", remote)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            results[rcpt] = temporary(f"{remote}: {_describe(e)}", remote)
    if not accepted:
        return results
    try:
        response = await client.data(data)
        for rcpt in accepted:
            results[rcpt] = sent(f"{response.code} {response.message}", remote)
    except aiosmtplib.SMTPResponseException as e:
        for rcpt in accepted:
            results[rcpt] = _from_code(e.code, f"DATA: {e.code} {e.message}", remote)
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        # No final reply: the next hop may or may not have the message. Retrying
        # may duplicate it, which is allowed; losing it is not.
        for rcpt in accepted:
            results[rcpt] = temporary(f"{remote}: {_describe(e)}", remote)
    return results


def _mail_options(client: aiosmtplib.SMTP, data: bytes) -> list[str]:
    options = []
    if client.supports_extension("size"):
        options.append(f"SIZE={len(data)}")
    if client.supports_extension("8bitmime") and not data.isascii():
        options.append("BODY=8BITMIME")
    return options


def _from_code(code: int, text: str, remote: str) -> Result:
    if 500 <= code < 600:
        return permanent(text, remote)
    return temporary(text, remote)


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


@functools.cache
def _opportunistic_tls() -> ssl.SSLContext:
    # One context for every delivery: building one loads the system's CA store
    # (about 10 ms of CPU), which was most of the cost of a delivery. Nothing is
    # verified, so no CA is needed; the defaults' protocol floor stays.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _mx_hosts(domain: str, timeout: float) -> tuple[list[str], Result | None]:
    """The MX hosts of ``domain`` by preference; the domain itself when it has none (RFC 5321 5.1)."""
    resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        return [], permanent(f"domain {domain} does not exist")
    except dns.resolver.NoAnswer:
        return [domain], None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
        return [], temporary(f"DNS lookup of MX {domain} failed: {type(e).__name__}")
    except dns.exception.DNSException as e:
        return [], temporary(f"DNS lookup of MX {domain} failed: {e}")
    records = sorted(answer, key=lambda r: r.preference)
    hosts = [str(r.exchange).rstrip(".") for r in records]
    if hosts == [""]:  # null MX (RFC 7505): the domain accepts no mail
        return [], permanent(f"domain {domain} accepts no mail (null MX)")
    return hosts, None


def _to_maildir(root: str, rcpts: Sequence[str], data: bytes) -> dict[str, Result]:
    """Write one copy per recipient into ROOT/<address>/new (tmp, fsync, rename)."""
    results = {}
    for rcpt in rcpts:
        box = os.path.join(root, urllib.parse.quote(rcpt.lower(), safe="@.+-_"))
        try:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(box, sub), mode=0o700, exist_ok=True)
            name = f"{time.time_ns()}.{os.getpid()}.{os.urandom(4).hex()}.{socket.gethostname()}"
            tmp = os.path.join(box, "tmp", name)
            with open(tmp, "wb") as f:
                f.write(data.replace(b"\r\n", b"\n"))  # Maildir files use the local line ending
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(box, "new", name))
            fd = os.open(os.path.join(box, "new"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            results[rcpt] = sent("250 2.0.0 delivered to maildir", box)
        except OSError as e:
            results[rcpt] = temporary(f"maildir {box}: {e.strerror}", box)
    return results
