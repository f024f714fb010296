"""The official directory (interim: local domains and official suffixes only; replaced by the full loader)."""

from __future__ import annotations

import datetime
import hashlib

from mailgw import yamlfile


class Directory:
    def __init__(self, version: str, local_domains: frozenset[str], suffixes: tuple[str, ...]):
        self.version = version
        self.local_domains = local_domains
        self.suffixes = suffixes

    def is_local_domain(self, domain: str) -> bool:
        d = domain.lower()
        return any(d == l or d.endswith("." + l) for l in self.local_domains)

    def is_local(self, address: str) -> bool:
        return self.is_local_domain(address.rpartition("@")[2])

    def is_official(self, address: str, today: datetime.date | None = None) -> bool:
        d = address.rpartition("@")[2].lower()
        return self.is_local_domain(d) or any(d.endswith(s) for s in self.suffixes)

    def may_send_as(self, login: str, address: str, today: datetime.date | None = None) -> bool:
        return login.lower() == address.lower()


def load(path: str, *, today: datetime.date | None = None) -> Directory:
    data = yamlfile.load(path)
    with open(path, "rb") as f:
        version = hashlib.sha256(f.read()).hexdigest()[:12]
    domains = frozenset(d.lower() for a in data.get("agencies", []) for d in a.get("domains", []))
    return Directory(version, domains, tuple(data.get("official_suffixes", [".gov.vn"])))


def check(path: str, *, today: datetime.date | None = None) -> list[yamlfile.Problem]:
    try:
        load(path, today=today)
    except yamlfile.ConfigError as e:
        return e.problems
    return []
