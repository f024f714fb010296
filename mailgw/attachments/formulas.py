"""Formulas in the text formats Excel opens as a workbook: DDE links and Excel 4 macros.

Excel reads a CSV, DIF or SYLK file as a workbook whatever it is called, and a
cell there may hold a formula. Two kinds run commands:

- a DDE link, ``app|'topic'!item`` (``=cmd|'/c calc'!A0``): Excel asks the
  application ``app`` (any program name) for ``item``, starting it with ``topic``
  as its command line; in CSV and DIF the cell starts with ``=``, ``+``, ``-`` or
  ``@``, in SYLK it is a cell's ``;E`` expression;
- an Excel 4 (XLM) macro: a SYLK file can declare a macro sheet (an ``O`` record
  with the ``;E`` flag), name a cell ``Auto_Open`` so that it runs on opening, and
  call EXEC, CALL, REGISTER or RUN, which start programs and call into DLLs.

The searches are linear in the file: they start at the rare byte of each shape
(the ``|`` of a DDE link, the name of an XLM function) and look at most a few
hundred bytes around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# The part of a DDE link from the pipe: a quoted topic ('...') or a bare one, then "!".
_DDE_TAIL = re.compile(rb"\|[ \t]*(?:'[^'\r\n]{0,512}'|[^\s!'|]{1,512})[ \t]*!")
_APP_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_FORMULA_START = b"=+-@"
_CELL_DELIMITERS = (b",", b";", b"\t")
_LEFT = 256  # bytes looked at before a pipe
# XLM functions that start programs or call into libraries (Microsoft's Excel 4.0 macro reference).
_XLM_CALL = re.compile(rb"\b(?:EXEC|CALL|REGISTER(?:\.ID)?|RUN)\s*\(", re.IGNORECASE)
_AUTO_NAME = re.compile(rb"(?:^|[\r\n])NN;N[ \t]*auto_(?:open|close|activate|deactivate)", re.IGNORECASE)
_OPTIONS = re.compile(rb"(?:^|[\r\n])(O;[^\r\n]{0,4096})")
_CHECK_EVERY = 256


def dde(data: bytes, check: Callable[[], None] | None = None) -> bool:
    """A DDE link in a cell of a CSV, DIF or SYLK file (or any text Excel may open as one).

    ``check`` is called every few hundred candidates (the message's time budget).
    """
    if b"|" not in data:
        return False
    sylk = data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"ID;")
    for n, m in enumerate(_DDE_TAIL.finditer(data)):
        if check is not None and n % _CHECK_EVERY == _CHECK_EVERY - 1:
            check()
        left = data[max(0, m.start() - _LEFT):m.start()]
        left = left[max(left.rfind(b"\n"), left.rfind(b"\r")) + 1:]  # the line, up to the pipe
        if sylk:  # a cell's expression is its ";E" field, written without "="
            field = left[left.rfind(b";") + 1:]
            if field[:1] == b"E" and _without_app(field[1:]) is not None:
                return True
            continue
        head = _without_app(left)
        if head is None:
            continue
        cell = head[max(head.rfind(d) for d in _CELL_DELIMITERS) + 1:].lstrip(b" \t\"'")
        if cell[:1] and cell[:1] in _FORMULA_START:
            return True
    return False


def dde_formula(expression: bytes) -> bool:
    """A DDE link anywhere in one formula (an OOXML ``<f>`` element, which has no leading ``=``)."""
    return any(_without_app(expression[max(0, m.start() - _LEFT):m.start()]) is not None
               for m in _DDE_TAIL.finditer(expression))


def _without_app(left: bytes) -> bytes | None:
    """What comes before the application name that ends ``left``; None when no name ends it."""
    stripped = left.rstrip(b" \t")
    head = stripped.rstrip(_APP_CHARS)
    if len(head) == len(stripped):
        return None
    return head


def sylk_macro(data: bytes) -> bool:
    """A SYLK file that is an Excel 4 macro sheet, names a cell to run on opening, or calls EXEC/CALL/REGISTER/RUN."""
    if _AUTO_NAME.search(data) or _XLM_CALL.search(data):
        return True
    for m in _OPTIONS.finditer(data):
        fields = m.group(1).replace(b";;", b"\x00").split(b";")
        if b"E" in fields[1:]:  # the ;E option: the sheet is a macro sheet
            return True
    return False
