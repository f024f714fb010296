"""The console's accounts: login, argon2 hash (as `mailgw passwd` makes it), role and scope.

The file::

    users:
      kiemtra.snv:
        password: "$argon2id$v=19$m=65536,t=3,p=4$..."
        role: auditor
        scope: [snv]            # agency codes, or agency/unit (snv/vp); omitted: every agency
        name: Nguyễn Văn A      # shown in the console and kept in the access log
      quantri:
        password: "$argon2id$..."
        role: admin             # every page, and the queue, policy and replay pages

Roles: ``auditor`` reads the exchange log within its scope; ``admin`` reads all of
it and acts on the queue. Scope codes are checked against the directory.
"""

from __future__ import annotations

import dataclasses

import argon2

from mailgw.config import yamlfile
from mailgw.config.yamlfile import Checker, YList, YMap
from mailgw.directory.model import Directory

ROLES = ("auditor", "admin")
_HASHER = argon2.PasswordHasher()
# Verified when the login is unknown, so an unknown login costs as much as a known one.
_DUMMY_HASH = _HASHER.hash("mailgw-console-no-such-user")


@dataclasses.dataclass(frozen=True)
class Account:
    login: str
    password: str = dataclasses.field(repr=False)
    role: str
    scope: tuple[str, ...] | None  # None: every agency
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclasses.dataclass(frozen=True)
class Accounts:
    users: dict[str, Account]  # lowercased login -> account

    def verify(self, login: str, password: str) -> Account | None:
        """The account when the password matches; slow on purpose (argon2): call it off the event loop."""
        account = self.users.get(login.strip().lower())
        try:
            ok = _HASHER.verify(account.password if account else _DUMMY_HASH, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        return account if ok and account is not None else None


def load(path: str, directory: Directory | None = None) -> Accounts:
    """Read and check the accounts file; ConfigError naming every problem (FILE:LINE)."""
    data = yamlfile.load(path)
    c = Checker(path)
    if not isinstance(data, YMap):
        c.error(None, None, "the console accounts file must be a mapping with a 'users' key")
        c.raise_if_errors()
    c.keys(data, ("users",), required=("users",))
    users = data.get("users")
    out: dict[str, Account] = {}
    if not isinstance(users, YMap):
        c.error(data, "users", "'users' must map each login to its password, role and scope")
        users = YMap()
    for login, entry in users.items():
        if not isinstance(login, str) or not login.strip() or any(ch.isspace() for ch in login):
            c.error(users, login, f"login {login!r} must be one word")
            continue
        m = c.mapping(entry, users, login, f"account {login!r}")
        if m is None:
            continue
        c.keys(m, ("password", "role", "scope", "name"), required=("password", "role"), what=f"account {login!r}")
        hashed = m.get("password")
        if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
            c.error(m, "password", f"the password of {login} must be an argon2 hash (make one with 'mailgw passwd')")
        role = m.get("role")
        if role not in ROLES:
            c.error(m, "role", f"role must be one of {', '.join(ROLES)}, not {role!r}")
        scope = _scope(c, m, login, directory)
        if role == "admin" and scope is not None:
            c.error(m, "scope", "an admin sees every agency: 'scope' applies to auditors only")
        if login.lower() in out:
            c.error(users, login, f"duplicate login {login!r}")
        name = c.typed(m, "name", str)
        if isinstance(hashed, str) and role in ROLES:
            out[login.lower()] = Account(login.lower(), hashed, str(role), scope, name)
    c.raise_if_errors()
    return Accounts(out)


def _scope(c: Checker, m: YMap, login: str, directory: Directory | None) -> tuple[str, ...] | None:
    value = m.get("scope")
    if value is None or value == "all":
        return None
    if not isinstance(value, YList) or not value or not all(isinstance(v, str) for v in value):
        c.error(m, "scope", f"scope of {login} must be 'all' or a list of agency codes (snv) or units (snv/vp)")
        return ()
    for i, code in enumerate(value):
        agency_code, _, unit_code = code.partition("/")
        agency = directory.agency(agency_code) if directory else None
        if directory is not None and agency is None:
            c.error(value, i, f"no agency {agency_code!r} in the directory")
        elif agency is not None and unit_code and agency.unit(unit_code) is None:
            c.error(value, i, f"no unit {unit_code!r} in agency {agency_code!r}")
    return tuple(str(v) for v in value)
