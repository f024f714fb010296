"""Logins for the submission listener: salted argon2id hashes in a YAML file.

The file maps each login (a mailbox address) to its hash::

    users:
      vanthu.sotttt@binhthuan.gov.vn: "$argon2id$v=19$m=65536,t=3,p=4$..."

Make a hash with ``mailgw passwd ADDRESS``. Which From addresses a login may
use comes from the directory (its own address and delegations).
"""

from __future__ import annotations

import dataclasses

import argon2

from mailgw.config import yamlfile
from mailgw.config.yamlfile import Checker, YMap

_HASHER = argon2.PasswordHasher()
# Verified when the login is unknown, so an unknown login costs as much as a known one.
_DUMMY_HASH = _HASHER.hash("mailgw-no-such-user")


@dataclasses.dataclass(frozen=True)
class Credentials:
    users: dict[str, str]  # lowercased login -> argon2 hash

    def verify(self, login: str, password: str) -> bool:
        """True when the password matches; slow on purpose (argon2): call it off the event loop."""
        stored = self.users.get(login.lower())
        try:
            ok = _HASHER.verify(stored or _DUMMY_HASH, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
        return bool(ok) and stored is not None


def load(path: str) -> Credentials:
    data = yamlfile.load(path)
    c = Checker(path)
    if not isinstance(data, YMap):
        c.error(None, None, "the credentials file must be a mapping with a 'users' key")
        c.raise_if_errors()
    c.keys(data, ("users",), required=("users",))
    users = data.get("users") or YMap()
    out: dict[str, str] = {}
    if not isinstance(users, YMap):
        c.error(data, "users", "'users' must map each login to its password hash")
    else:
        for login, hashed in users.items():
            if not isinstance(login, str) or "@" not in login:
                c.error(users, login, f"login {login!r} must be a mailbox address")
            elif not isinstance(hashed, str) or not hashed.startswith("$argon2"):
                c.error(users, login, f"the password of {login} must be an argon2 hash (make one with 'mailgw passwd')")
            elif login.lower() in out:
                c.error(users, login, f"duplicate login {login!r}")
            else:
                out[login.lower()] = hashed
    c.raise_if_errors()
    return Credentials(out)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)
