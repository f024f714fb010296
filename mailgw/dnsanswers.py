"""DNS TXT answers for DKIM verification: the real resolver, or a local file for tests and air-gapped rigs.

Both resolvers share one small interface, ``await resolver.txt(name)``:

- a list of records, each the concatenation of its character-strings (RFC 6376
  section 3.6.2.2), in the order the answer gave them;
- an empty list when the name does not exist or has no TXT record (a permanent
  answer: the DKIM result is ``permerror``);
- ``DnsTemporaryError`` when no answer could be had (timeout, SERVFAIL, no
  reachable server): the DKIM result is ``temperror``, never ``fail``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver


class DnsTemporaryError(Exception):
    """No usable answer for now (timeout, SERVFAIL, ...): ask again later."""


class TxtResolver(Protocol):
    """What DKIM verification needs from DNS."""

    async def txt(self, name: str) -> list[bytes]:
        """The TXT records at ``name``; [] when there are none; raises ``DnsTemporaryError``."""
        ...


class DnsResolver:
    """TXT lookups through dnspython's asynchronous resolver.

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


# What a line of an answers file may say instead of giving a TXT record.
_SIMULATED_FAILURES = ("TIMEOUT", "SERVFAIL")


@dataclasses.dataclass(frozen=True)
class _Entry:
    records: tuple[bytes, ...] = ()
    failure: str | None = None


class FileResolver:
    """Answers TXT queries from a local file, in zone-file syntax, one record per line.

    ::

        # comment
        brisbane._domainkey.football.example.com. IN TXT "v=DKIM1; k=ed25519; p=11qY..."
        big._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; " "p=MIIBIj..." "...AQAB"
        sel._domainkey.slow.example. TIMEOUT
        sel._domainkey.broken.example. SERVFAIL

    Names are absolute (a trailing dot is optional); TTL and class are
    optional; the TXT data is parsed by dnspython, so quoting and escapes mean
    what they mean in a zone file. Several lines for one name give several
    records. ``TIMEOUT`` and ``SERVFAIL`` make lookups of that name raise
    ``DnsTemporaryError`` (immediately: tests need not wait). Unlisted names
    do not exist. The lines ``keygen`` prints can be pasted in as they are.
    """

    def __init__(self, entries: dict[str, _Entry]):
        self._entries = entries

    @classmethod
    def from_file(cls, path: str | Path) -> FileResolver:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>") -> FileResolver:
        records: dict[str, list[bytes]] = {}
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
            elif kind == "TXT":
                try:
                    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, after)
                except dns.exception.DNSException as e:
                    raise ValueError(f"{source}:{lineno}: bad TXT data: {e}") from e
                records.setdefault(key, []).append(b"".join(rdata.strings))
            else:
                raise ValueError(f"{source}:{lineno}: expected TXT, TIMEOUT or SERVFAIL, not {word!r}")
        entries = {k: _Entry(records=tuple(v)) for k, v in records.items()}
        # A simulated failure wins over records given for the same name.
        entries.update({k: _Entry(failure=v) for k, v in failures.items()})
        return cls(entries)

    async def txt(self, name: str) -> list[bytes]:
        entry = self._entries.get(_normalise(name))
        if entry is None:
            return []
        if entry.failure == "TIMEOUT":
            raise DnsTemporaryError(f"timeout looking up {name} (simulated)")
        if entry.failure == "SERVFAIL":
            raise DnsTemporaryError(f"no server could answer for {name} (SERVFAIL, simulated)")
        return list(entry.records)


def load(dns: object) -> TxtResolver:
    """The resolver the settings' ``dns:`` section asks for (mailgw.settings.DnsSettings).

    Raises ConfigError with ``FILE:LINE:`` problems when the answers file is bad.
    """
    from mailgw.yamlfile import ConfigError, Problem

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


def _normalise(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()
