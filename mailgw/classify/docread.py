"""First-page text of PDF and DOCX attachments, for the classify stage, within byte and time budgets.

The classifier needs only the head of page one: the "Số: ..." line, the secrecy
and urgency stamps, the title. Attachments come from anyone, so every read is
bounded: a file over the byte budget is not opened; reading stops at the time
budget (CPU time of the calling thread, so a busy machine does not fail benign
files), at the character budget, or at the end of page one; and decompression is
capped. A file that is skipped or cut short says so in ``FirstPage.skipped``,
which the classifier reports in its evidence. Nothing here raises.

PDF: PDFium (pypdfium2) in worker processes with a CPU budget and a memory cap
(mailgw.classify.pdfworker: about 1 ms for a typical page one, native code kept out of
the gateway's process). When no worker can be had, or PDFium cannot read the
file, pypdf (pure Python, so a hostile file cannot corrupt memory) reads it in
this thread, with its resource limits tightened for the call through
``pypdf.apply_configuration`` and a deadline checked on every content-stream
operator. DOCX: the main part is
streamed with lxml's ``iterparse`` (entities off, no network) straight from the
zip, and parsing stops at the first page break. python-docx was measured at
7.7 ms per small document against 0.6 ms here, and it loads every part of the
package into memory, which is the wrong shape for hostile input.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import posixpath
import re
import threading
import time
import zipfile
from typing import IO, Any

from mailgw.attachments import sniff as attachments_sniff
from mailgw.attachments.pdf import hardened_reader
from mailgw.classify import pdfworker

log = logging.getLogger(__name__)

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_OFFICE_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    """Budgets for reading one attachment's first page."""

    max_bytes: int = 15 * 1024 * 1024       # the attachment itself
    max_seconds: float = 0.25               # CPU time of the calling thread
    max_chars: int = 1500                   # text kept from page one (its head: number, stamps, title)
    max_unpacked_bytes: int = 20 * 1024 * 1024  # a DOCX's main part, or a PDF stream, decompressed
    pdfium: bool = True                     # PDFs through PDFium workers first; False: pypdf only


@dataclasses.dataclass(frozen=True)
class FirstPage:
    """The text read from page one, and why reading stopped early, if it did."""

    kind: str                 # "pdf" or "docx"
    text: str
    skipped: str | None = None  # reason, in English, when the file was not read (or not to the end)
    cpu: float = 0.0          # CPU seconds spent in a worker process (not in the caller's thread time)


class _Stop(Exception):
    """Raised inside a parser callback to end reading; ``reason`` None means enough text."""

    def __init__(self, reason: str | None):
        super().__init__(reason or "enough")
        self.reason = reason


def sniff(data: bytes, filename: str = "", content_type: str = "") -> str | None:
    """"pdf" or "docx" when the bytes are one, else None: by content, with the attachment inspector's
    sniffer (mailgw.attachments.sniff), so the classifier reads as a PDF exactly what inspection calls one.

    A ZIP that is named or labelled a Word document but is too damaged to tell is
    still tried as one, so that the evidence says it could not be read.
    """
    found = attachments_sniff.sniff(data)
    if found.family == attachments_sniff.PDF:
        return "pdf"
    if "wordprocessingml" in found.mime or found.mime.startswith("application/vnd.ms-word."):
        return "docx"
    named = filename.lower().endswith((".docx", ".docm", ".dotx")) or "wordprocessingml" in content_type
    if named and data[:4] == b"PK\x03\x04" and found.family not in (attachments_sniff.EXECUTABLE,
                                                                       attachments_sniff.SCRIPT):
        return "docx"
    return None


def first_page(data: bytes, kind: str, limits: ReadLimits = ReadLimits()) -> FirstPage:
    """The first-page text of a PDF or DOCX held in ``data``; never raises."""
    if len(data) > limits.max_bytes:
        return FirstPage(kind, "", f"{len(data)} bytes, over the {limits.max_bytes}-byte budget")
    if limits.max_seconds <= 0:
        return FirstPage(kind, "", "time budget reached")
    if kind == "pdf" and limits.pdfium:
        page = _pdf_in_worker(data, limits)
        if page is not None and page.skipped != _PDFIUM_FAILED:
            return page
        if page is not None:  # PDFium could not make sense of it: pypdf may, in what is left of the budget
            left = limits.max_seconds - page.cpu
            if left <= 0:
                return FirstPage(kind, "", "time budget reached", cpu=page.cpu)
            found = _in_this_thread(data, kind, dataclasses.replace(limits, max_seconds=left))
            return dataclasses.replace(found, cpu=page.cpu)
    return _in_this_thread(data, kind, limits)


def _in_this_thread(data: bytes, kind: str, limits: ReadLimits) -> FirstPage:
    deadline = time.thread_time() + limits.max_seconds
    try:
        if kind == "pdf":
            return _pdf(data, limits, deadline)
        if kind == "docx":
            return _docx(data, limits, deadline)
        return FirstPage(kind, "", f"unsupported kind {kind!r}")
    except _Stop as stop:
        return FirstPage(kind, "", stop.reason or "stopped")
    except RecursionError:
        return FirstPage(kind, "", "structure nested too deeply")
    except MemoryError:
        return FirstPage(kind, "", "out of memory while reading")
    except Exception as exc:  # a damaged or hostile file: report it, never fail the message
        return FirstPage(kind, "", f"unreadable: {type(exc).__name__}: {str(exc)[:120]}")


_POOL: pdfworker.Pool | None = None
_PDFIUM_FAILED = "unreadable by PDFium"
_POOL_LOCK = threading.Lock()
# PDFium marks line ends with CR LF and may emit control characters (soft hyphens as 0x02).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")


def _pool() -> pdfworker.Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or not _POOL.owned():  # a forked child starts workers of its own
            _POOL = pdfworker.Pool()
        return _POOL


def start_pdf_workers(count: int | None = None) -> int:
    """Start up to ``count`` of the PDF reader's workers now rather than on the first PDF (mailgw.warmup); how many are ready."""
    return _pool().start(count)


def _pdf_in_worker(data: bytes, limits: ReadLimits) -> FirstPage | None:
    """Page one through PDFium; None when no worker can be had.

    ``skipped == _PDFIUM_FAILED`` asks the caller to try pypdf.
    """
    reply = _pool().read(data, limits.max_chars, limits.max_seconds)
    if reply is None:
        return None
    if reply.status == pdfworker.OK:
        text = _CONTROL.sub("", reply.text.replace("\r\n", "\n").replace("\r", "\n"))[: limits.max_chars]
        return FirstPage("pdf", text, None, cpu=reply.cpu)
    if reply.status == pdfworker.ENCRYPTED:
        return FirstPage("pdf", "", "encrypted", cpu=reply.cpu)
    if reply.status == pdfworker.NO_PAGES:
        return FirstPage("pdf", "", "no pages", cpu=reply.cpu)
    if reply.died == pdfworker.TIME_BUDGET:
        return FirstPage("pdf", "", "time budget reached", cpu=reply.cpu)
    if reply.died is not None:
        # A file that kills the reader may be an attack on it: worth a line in the log.
        log.warning("PDF reader worker ended on an attachment: %s", reply.died)
    return FirstPage("pdf", "", _PDFIUM_FAILED, cpu=reply.cpu)


def _pdf(data: bytes, limits: ReadLimits, deadline: float) -> FirstPage:

    cap = limits.max_unpacked_bytes
    with hardened_reader(data, cap) as reader:
        if reader.is_encrypted:
            # An empty user password opens many "protected" PDFs; anything else stays closed.
            try:
                if not reader.decrypt(""):
                    return FirstPage("pdf", "", "encrypted")
            except Exception:
                return FirstPage("pdf", "", "encrypted")
        _check(deadline)
        if len(reader.pages) == 0:
            return FirstPage("pdf", "", "no pages")
        page = reader.pages[0]
        _check(deadline)
        pieces: list[str] = []
        count = [0]

        def on_operator(op: bytes, args: Any, cm: Any, tm: Any) -> None:
            if time.thread_time() > deadline:
                raise _Stop("time budget reached")

        def on_text(text: str, cm: Any, tm: Any, font_dict: Any, font_size: Any) -> None:
            if text:
                pieces.append(text)
                count[0] += len(text)
                if count[0] >= limits.max_chars:
                    raise _Stop(None)

        reason: str | None = None
        try:
            page.extract_text(visitor_operand_before=on_operator, visitor_text=on_text)
        except _Stop as stop:
            reason = stop.reason
        text = "".join(pieces)[: limits.max_chars]
        return FirstPage("pdf", text, _partial(reason, text))


def _partial(reason: str | None, text: str) -> str | None:
    if reason is None:
        return None
    return f"{reason} after {len(text)} characters" if text else reason


def _check(deadline: float) -> None:
    if time.thread_time() > deadline:
        raise _Stop("time budget reached")


class _Bounded(io.RawIOBase):
    """A read-only stream that fails past ``limit`` bytes, whatever the zip header claims."""

    def __init__(self, raw: IO[bytes], limit: int, deadline: float):
        self._raw = raw
        self._left = limit
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        _check(self._deadline)
        chunk = self._raw.read(min(len(buffer), 65536))
        if len(chunk) > self._left:
            raise _Stop("decompressed size over budget")
        self._left -= len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _main_part(archive: zipfile.ZipFile) -> str:
    """The main document part's name, from the package relationships (usually word/document.xml)."""
    try:
        info = archive.getinfo("_rels/.rels")
        if info.file_size <= 64 * 1024:
            from lxml import etree

            root = etree.fromstring(archive.read(info), etree.XMLParser(
                resolve_entities=False, no_network=True, load_dtd=False))
            for rel in root:
                if rel.get("Type") == _OFFICE_DOC and rel.get("Target"):
                    target = posixpath.normpath(rel.get("Target", "").lstrip("/"))
                    if target in archive.NameToInfo:
                        return str(target)
    except Exception:
        pass
    return "word/document.xml"


def _docx(data: bytes, limits: ReadLimits, deadline: float) -> FirstPage:
    from lxml import etree

    archive = zipfile.ZipFile(io.BytesIO(data))
    name = _main_part(archive)
    try:
        info = archive.getinfo(name)
    except KeyError:
        return FirstPage("docx", "", "no main document part")
    if info.file_size > limits.max_unpacked_bytes:
        return FirstPage("docx", "", f"main part {info.file_size} bytes unpacked, over the budget")
    pieces: list[str] = []
    count = 0
    reason: str | None = None
    with archive.open(info) as member:
        stream = io.BufferedReader(_Bounded(member, limits.max_unpacked_bytes, deadline))
        events = etree.iterparse(stream, events=("start", "end"), resolve_entities=False,
                                 no_network=True, load_dtd=False, huge_tree=False, remove_comments=True)
        try:
            for event, el in events:
                tag = el.tag
                if event == "start":
                    if tag == _W + "br" and el.get(_W + "type") == "page" and count:
                        raise _Stop(None)
                    if tag == _W + "lastRenderedPageBreak" and count:
                        raise _Stop(None)
                    continue
                if tag == _W + "t":
                    text = el.text or ""
                    pieces.append(text)
                    count += len(text)
                elif tag in (_W + "br", _W + "cr"):
                    pieces.append("\n")
                elif tag == _W + "tab":
                    pieces.append("\t")
                elif tag in (_W + "p", _W + "tc"):
                    pieces.append("\n")
                    el.clear()
                if count >= limits.max_chars:
                    raise _Stop(None)
                if len(pieces) % 256 == 0:
                    _check(deadline)
        except _Stop as stop:
            reason = stop.reason
    text = "".join(pieces)[: limits.max_chars]
    return FirstPage("docx", text, _partial(reason, text))
