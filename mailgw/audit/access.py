"""Auditor access log: every auditor command is itself recorded, in a chain of its own, before it runs.

Who is the operating-system user of the process (from the effective uid, not
from environment variables anyone can set), plus the user who ran ``sudo``.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import socket
from typing import Any, Mapping

from sqlalchemy import Engine, insert

from mailgw.audit import chain as ch
from mailgw.audit.log import lock_head, set_head
from mailgw.audit.schema import ACCESS_CHAIN, Access
from mailgw.audit.store import IMMEDIATE


def os_user() -> str:
    """The OS user running this process, and who they were before sudo."""
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = f"uid {os.geteuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


def log_access(engine: Engine, command: str, args: Mapping[str, Any]) -> int:
    """Record that ``command`` ran with ``args``; returns its position in the access chain."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    user, host = os_user()[:255], socket.gethostname()[:255]
    args_text = ch.canonical({k: (str(v) if v is not None and not isinstance(v, (int, bool)) else v)
                              for k, v in args.items()})
    content = ch.sha256_text(ch.access_content(now, user, host, command, args_text))
    with engine.connect().execution_options(**IMMEDIATE) as conn:
        with conn.begin():
            seq, prev = lock_head(conn, ACCESS_CHAIN)
            seq += 1
            h = ch.entry_hash(ACCESS_CHAIN, seq, ch.KIND_ACCESS, prev, content)
            conn.execute(insert(Access).values(seq=seq, time=now, os_user=user, host=host, command=command,
                                               args=args_text, content_hash=content, prev_hash=prev, hash=h))
            set_head(conn, ACCESS_CHAIN, seq, h)
    return seq
