"""The service log: where its lines go and how they look.

Three shapes, one per situation:

- stderr is the systemd journal (``JOURNAL_STREAM`` names stderr's device and
  inode): every line starts with its syslog priority (``<6>``, ``<4>``, ``<3>``,
  sd-daemon(3)) and carries no timestamp, which the journal adds itself;
- anything else (a terminal, a file): ``TIME LEVEL [who] logger: message``;
- ``log: {format: json}``: one JSON object per line (``time``, ``level``,
  ``logger``, ``message``, ``who`` and the event's own fields), with the
  priority prefix under the journal too.

Events (one per exchange, per refused command, per delivery attempt) go
through :func:`event`: a kind and its fields, written ``kind key=value ...``
in text and as fields in JSON, so both formats say the same.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any, TextIO

# syslog priorities of Python's levels (sd-daemon(3): "<N>" at the start of a line)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is connected to the journal: systemd sets JOURNAL_STREAM=DEV:INODE."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class TextFormatter(logging.Formatter):
    def __init__(self, who: str, journal: bool):
        prefix = f"[{who}] " if who else ""
        fmt = f"{prefix}%(name)s: %(message)s" if journal else f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journal:
            # A traceback's lines are lines of the journal too: each gets the priority.
            p = f"<{priority(record.levelno)}>"
            return "\n".join(p + line for line in text.split("\n"))
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, who: str, journal: bool):
        super().__init__()
        self.who = who
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {}
        if not self.journal:
            out["time"] = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds")
        out["level"] = record.levelname
        out["logger"] = record.name
        if self.who:
            out["who"] = self.who
        out["message"] = record.getMessage()
        fields = getattr(record, "mailgw", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        text = json.dumps(out, ensure_ascii=False, default=str)
        return f"<{priority(record.levelno)}>{text}" if self.journal else text


def setup(level: str = "INFO", who: str = "", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once for a serving process (``who`` names a worker: ``worker 2``)."""
    stream = stream or sys.stderr
    journal = under_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(who, journal) if fmt == "json" else TextFormatter(who, journal))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    # aiosmtpd logs every command at INFO ("mail.log"); keep that for DEBUG only,
    # and drop its warning about its own deprecated attribute.
    smtp_log = logging.getLogger("mail.log")
    smtp_log.setLevel(quiet)
    smtp_log.addFilter(lambda record: "login_data is deprecated" not in record.getMessage())
    # alembic says "Context impl SQLiteImpl", "Will assume transactional DDL" at every start.
    logging.getLogger("alembic").setLevel(quiet)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return ",".join(f"<{x}>" for x in v)
    text = str(v)
    if text == "" or any(ch in text for ch in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


def event(logger: logging.Logger, level: int, kind: str, **fields: Any) -> None:
    """One event line: ``kind key=value ...`` (values with spaces quoted), the fields kept for JSON.

    ``from`` and address lists are written ``<a>`` as Postfix does; None values are left out.
    """
    if not logger.isEnabledFor(level):
        return
    shown = {k: v for k, v in fields.items() if v is not None}
    parts = [kind]
    for k, v in shown.items():
        if k in ("from", "to") and isinstance(v, str):
            parts.append(f"{k}=<{v}>")
        else:
            parts.append(f"{k}={_value(v)}")
    logger.log(level, "%s", " ".join(parts), extra={"mailgw": {"event": kind, **shown}})
