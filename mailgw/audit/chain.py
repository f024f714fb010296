"""Hash chain of the exchange log: what exactly is hashed, for writers, the verifier and prune.

Each entry of a chain stores ``content_hash`` (SHA-256 of its canonical
content) and ``prev_hash`` (the previous entry's ``hash``), and
``hash = SHA-256(chain, seq, kind, prev_hash, content_hash)``. Changing,
removing or moving any entry therefore changes every later ``hash``.

Canonical content:
- exchange: the stored ``record`` text itself, which is canonical JSON
  (sorted keys, no spaces, UTF-8); the archived body is outside it and bound
  by its SHA-256 inside the record (``body_sha256``).
- delivery event: canonical JSON of its six fields.
- auditor access: canonical JSON of time, user, host, command and arguments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

KIND_EXCHANGE = "exchange"
KIND_DELIVERY = "delivery"
KIND_ACCESS = "access"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no insignificant spaces, non-ASCII kept as is."""
    return _CANONICAL.encode(value)  # json.dumps with these options, without building an encoder per call


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_hash(chain: str, seq: int, kind: str, prev_hash: str, content_hash: str) -> str:
    """The hash that links an entry into its chain; its position and kind are part of it."""
    return sha256_text(f"{chain}\n{seq}\n{kind}\n{prev_hash}\n{content_hash}")


def iso(t: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds and a Z, the one spelling used in hashed content."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def delivery_content(exchange_id: str, recipient: str, time: dt.datetime, status: str,
                     reply: str | None, attempt: int) -> str:
    return canonical({
        "exchange_id": exchange_id, "recipient": recipient, "time": iso(time),
        "status": status, "reply": reply, "attempt": attempt,
    })


def access_content(time: dt.datetime, os_user: str, host: str, command: str, args: str) -> str:
    return canonical({"time": iso(time), "user": os_user, "host": host, "command": command, "args": args})
