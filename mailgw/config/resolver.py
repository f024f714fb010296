"""DNS answers for DKIM verification and MX delivery: the real resolver, or a local file for tests and air-gapped rigs.

Both resolvers share one small interface:

``await resolver.txt(name)``
    a list of records, each the concatenation of its character-strings (RFC 6376
    section 3.6.2.2), in the order the answer gave them; an empty list when the
    name does not exist or has no TXT record (a permanent answer: the DKIM result
    is ``permerror``).
``await resolver.mx(name)``
    ``[(preference, exchange), ...]`` as the answer gave them, the exchange without
    its final dot and ``""`` for the null MX ``0 .`` (RFC 7505); ``[]`` when the
    name exists but has no MX record (mail goes to the name itself, RFC 5321 5.1);
    ``DnsNameError`` when the name does not exist (NXDOMAIN).
``await resolver.addresses(name)``
    the IPv4 then the IPv6 addresses of ``name``; ``[]`` when it has none;
    ``DnsNameError`` when it does not exist.
``await resolver.lookup(name, rdtype)``
    for SPF: the ``A``, ``AAAA`` or ``PTR`` records of ``name`` as text (addresses;
    PTR names without the final dot); ``[]`` when the name does not exist or has
    none (SPF counts both as a void lookup).

All four raise ``DnsTemporaryError`` when no answer could be had (timeout,
SERVFAIL, no reachable server): DKIM gives ``temperror``, never ``fail``, and
delivery tries again later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine, Protocol, Sequence, TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver


class DnsTemporaryError(Exception):
    """No usable answer for now (timeout, SERVFAIL, ...): ask again later."""


class DnsNameError(Exception):
    """The name does not exist (NXDOMAIN): a permanent answer."""


class TxtResolver(Protocol):
    """What DKIM verification needs from DNS."""

    async def txt(self, name: str) -> list[bytes]:
        """The TXT records at ``name``; [] when there are none; raises ``DnsTemporaryError``."""
        ...


class MxResolver(Protocol):
    """What delivery to MX hosts needs from DNS."""

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) of ``name``'s MX records; see the module docstring."""
        ...

    async def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``; see the module docstring."""
        ...


class DnsResolver:
    """TXT, MX and address lookups through dnspython's asynchronous resolver.

    ``nameservers`` (IP addresses) and ``port`` override the system's
    /etc/resolv.conf; ``timeout`` bounds the whole lookup, retries included.
    """

    def __init__(self, nameservers: Sequence[str] | None = None, *, port: int = 53, timeout: float = 5.0):
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    async def txt(self, name: str) -> list[bytes]:
        if not _is_name(name):
            return []
        try:
            answer = await self._resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.LifetimeTimeout as e:
            raise DnsTemporaryError(f"timeout looking up {name}") from e
        except dns.resolver.NoNameservers as e:
            # Every server answered SERVFAIL/REFUSED or could not be reached.
            raise DnsTemporaryError(f"no server could answer for {name} (SERVFAIL)") from e
        except dns.exception.DNSException as e:
            raise DnsTemporaryError(f"DNS error looking up {name}: {e}") from e
        return [b"".join(rdata.strings) for rdata in answer]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        answer = await self._resolve(name, "MX")
        return [(r.preference, _exchange(r.exchange)) for r in answer] if answer is not None else []

    async def addresses(self, name: str) -> list[str]:
        found: list[str] = []
        temporary: DnsTemporaryError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolve(name, rdtype)
            except DnsTemporaryError as e:
                temporary = e  # the other family may still answer
                continue
            found.extend(r.address for r in answer or ())
        if not found and temporary is not None:
            raise temporary
        return found

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = await self._resolve(name, rdtype)
        except DnsNameError:
            return []
        return [_text(r) for r in answer or ()]

    async def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer; None when the name has no record of that type; DnsNameError for NXDOMAIN."""
        if not _is_name(name):
            raise DnsNameError(f"{name[:80]!r} cannot be a DNS name")
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as e:
            raise DnsNameError(f"{name} does not exist") from e
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.LifetimeTimeout as e:
            raise DnsTemporaryError(f"timeout looking up {rdtype} {name}") from e
        except dns.resolver.NoNameservers as e:
            raise DnsTemporaryError(f"no server could answer {rdtype} {name} (SERVFAIL)") from e
        except dns.exception.DNSException as e:
            raise DnsTemporaryError(f"DNS error looking up {rdtype} {name}: {e}") from e


# What a line of an answers file may say instead of giving a TXT record.
_SIMULATED_FAILURES = ("TIMEOUT", "SERVFAIL")


_TYPES = ("TXT", "MX", "A", "AAAA", "PTR")


@dataclasses.dataclass(frozen=True)
class _Entry:
    records: tuple[Any, ...] = ()  # dnspython rdata, of every type given for the name
    failure: str | None = None

    def of(self, rdtype: str) -> list[Any]:
        return [r for r in self.records if dns.rdatatype.to_text(r.rdtype) == rdtype]


class FileResolver:
    """Answers queries from a local file, in zone-file syntax, one record per line.

    ::

        # comment
        brisbane._domainkey.football.example.com. IN TXT "v=DKIM1; k=ed25519; p=11qY..."
        big._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; " "p=MIIBIj..." "...AQAB"
        example.vn.          IN MX   10 mx1.example.vn.
        example.vn.          IN MX   20 mx2.example.vn.
        mx1.example.vn.      IN A    127.0.0.2
        mx2.example.vn.      IN AAAA ::1
        example.vn.          IN TXT  "v=spf1 mx -all"
        2.0.0.127.in-addr.arpa. IN PTR mx1.example.vn.
        nomail.example.vn.   IN MX   0 .
        sel._domainkey.slow.example. TIMEOUT
        broken.example.      SERVFAIL

    Types: TXT, MX, A, AAAA, PTR. Names are absolute (a trailing dot is optional),
    also inside MX data; TTL and class are optional; the data is parsed by
    dnspython, so quoting and escapes mean what they mean in a zone file.
    Several lines for one name give several records. ``TIMEOUT`` and
    ``SERVFAIL`` make every lookup of that name raise ``DnsTemporaryError``
    (immediately: tests need not wait). A listed name without a record of the
    asked type has none (an MX lookup gives ``[]``); unlisted names do not exist
    (NXDOMAIN). The lines ``keygen`` prints can be pasted in as they are.
    """

    def __init__(self, entries: dict[str, _Entry]):
        self._entries = entries

    @classmethod
    def from_file(cls, path: str | Path) -> FileResolver:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>") -> FileResolver:
        records: dict[str, list[Any]] = {}
        failures: dict[str, str] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", ";")):
                continue
            name, rest = _split_word(stripped)
            key = _normalise(name)
            word, after = _split_word(rest)
            if word.isdigit():  # TTL
                word, after = _split_word(after)
            if word.upper() == "IN":
                word, after = _split_word(after)
            kind = word.upper()
            if kind in _SIMULATED_FAILURES:
                if after:
                    raise ValueError(f"{source}:{lineno}: nothing may follow {kind}")
                failures[key] = kind
            elif kind in _TYPES:
                try:
                    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(kind), after,
                                                origin=dns.name.root, relativize=False)
                except (dns.exception.DNSException, ValueError) as e:
                    raise ValueError(f"{source}:{lineno}: bad {kind} data: {e}") from e
                records.setdefault(key, []).append(rdata)
            else:
                raise ValueError(f"{source}:{lineno}: expected {', '.join(_TYPES)}, TIMEOUT or SERVFAIL, not {word!r}")
        entries = {k: _Entry(records=tuple(v)) for k, v in records.items()}
        # A simulated failure wins over records given for the same name.
        entries.update({k: _Entry(failure=v) for k, v in failures.items()})
        return cls(entries)

    async def txt(self, name: str) -> list[bytes]:
        try:
            entry = self._entry(name)
        except DnsNameError:
            return []
        return [b"".join(r.strings) for r in entry.of("TXT")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return [(r.preference, _exchange(r.exchange)) for r in self._entry(name).of("MX")]

    async def addresses(self, name: str) -> list[str]:
        entry = self._entry(name)
        return [r.address for r in entry.of("A")] + [r.address for r in entry.of("AAAA")]

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        try:
            entry = self._entry(name)
        except DnsNameError:
            return []
        return [_text(r) for r in entry.of(rdtype)]

    def _entry(self, name: str) -> _Entry:
        if not _is_name(name):
            raise DnsNameError(f"{name[:80]!r} cannot be a DNS name")
        entry = self._entries.get(_normalise(name))
        if entry is None:
            raise DnsNameError(f"{name} does not exist")
        if entry.failure == "TIMEOUT":
            raise DnsTemporaryError(f"timeout looking up {name} (simulated)")
        if entry.failure == "SERVFAIL":
            raise DnsTemporaryError(f"no server could answer for {name} (SERVFAIL, simulated)")
        return entry


def load(dns: object) -> DnsResolver | FileResolver:
    """The resolver the settings' ``dns:`` section asks for (mailgw.config.settings.DnsSettings).

    Raises ConfigError with ``FILE:LINE:`` problems when the answers file is bad.
    """
    from mailgw.config.yamlfile import ConfigError, Problem

    answers = getattr(dns, "answers", None)
    if answers:
        try:
            return FileResolver.from_file(answers)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([Problem(answers, 0, f"cannot read the DNS answers file: {e}")]) from e
        except ValueError as e:
            where, _, message = str(e).rpartition(": ")
            file, _, line = where.rpartition(":")
            raise ConfigError([Problem(file or answers, int(line) if line.isdigit() else 0, message)]) from e
    return DnsResolver(getattr(dns, "nameservers", ()) or None, port=getattr(dns, "port", 53),
                       timeout=getattr(dns, "timeout", 5.0))


def _split_word(text: str) -> tuple[str, str]:
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _is_name(name: str) -> bool:
    """Whether ``name`` can be asked at all (names from SPF records and macros may not be): a name that cannot, does not exist."""
    try:
        dns.name.from_text(name)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return False
    return True


def _normalise(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


def _text(rdata: Any) -> str:
    """An A/AAAA record's address, a PTR record's name without the final dot."""
    if hasattr(rdata, "address"):
        return str(rdata.address)
    return str(rdata.target.to_text(omit_final_dot=True))


def _exchange(name: dns.name.Name) -> str:
    """An MX exchange as a host name without the final dot; "" for the null MX's root."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)


T = TypeVar("T")


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine of DNS lookups to the end from synchronous code (the pipeline's stages).

    The pipeline runs in a worker thread (the edge uses ``asyncio.to_thread``),
    where no loop runs: each such thread keeps a loop of its own for the DNS
    lookups of every message it handles (dnspython's asynchronous resolver takes
    whatever loop is running), since making and closing a loop per call costs
    0.3 ms of CPU (DKIM, SPF and DMARC each call this). Tasks a coroutine leaves
    behind are cancelled before the loop is handed to the next call. A caller
    that runs the pipeline on its event loop's thread gets a thread of its own,
    since a loop cannot be nested.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = _thread_loop()
        try:
            return loop.run_until_complete(make())
        finally:
            left = asyncio.all_tasks(loop)
            if left:
                for task in left:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dns-lookups") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class _OwnLoop:
    """A thread's loop, closed when the thread ends and its locals go (an unclosed loop warns)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        self.loop.close()


_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    own: _OwnLoop | None = getattr(_local, "own", None)
    if own is None or own.loop.is_closed():
        own = _local.own = _OwnLoop()
    return own.loop
