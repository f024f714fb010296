"""What a serving process would otherwise pay on its first messages, paid before its listeners open.

Two costs are deferred to first use, so that a process that never meets a PDF
never pays them: pypdf (with the PIL and fontTools modules it imports, about
150 ms of CPU, under the interpreter lock that every session of the process
shares) and the PDF reader's worker processes (``mailgw.classify.pdfworker``,
about 120 ms each to start Python and PDFium). Paid during traffic, they land on
the first messages with a PDF, and on everything else the process serves
meanwhile: the first twenty sessions after a start waited up to half a second.

:func:`warm_up` pays them at start-up: it runs the stages that read files
(parse, classify, attachments) on a small built-in message carrying a one-page
PDF, which imports what they import on first use, and starts the PDF reader's
workers (``PDF_READERS``; more start on demand, up to the pool's size). It reads nothing from the network, writes nothing, and records
nothing; a failure is logged and the process serves as it would have
(tests/test_warmup.py checks that messages after it import no module and start no worker).
"""

from __future__ import annotations

import base64
import logging
import time

from mailgw.classify import docread
from mailgw.message.model import Context, Envelope, Message, new_id
from mailgw.stages import attachments, classify, parse

log = logging.getLogger(__name__)

# PDF readers started per serving process (the pool's size on a 2-core machine; more start when
# PDFs overlap): with one serving process per core, a large machine does not start dozens idle.
PDF_READERS = 2


def pdf_of(objects: list[bytes], header: bytes = b"%PDF-1.4\n") -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first the catalog), its cross-reference offsets computed."""
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def one_page_pdf(content: bytes, *, flate: bool = False) -> bytes:
    """A valid one-page PDF whose page draws ``content`` (a content stream; Helvetica as F1)."""
    import zlib

    stream = zlib.compress(content, 9) if flate else content
    return pdf_of([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d%s >>\nstream\n" % (len(stream), b" /Filter /FlateDecode" if flate else b"") + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


def _message(hostname: str) -> bytes:
    pdf = base64.encodebytes(one_page_pdf(b"BT /F1 12 Tf 72 760 Td (KE HOACH) Tj ET")).replace(b"\n", b"\r\n")
    return (
        b"From: <warm-up@" + hostname.encode() + b">\r\nTo: <warm-up@" + hostname.encode() + b">\r\n"
        b"Subject: =?utf-8?b?" + base64.b64encode("Kế hoạch".encode()) + b"?=\r\n"
        b"Date: Mon, 07 Dec 2026 08:00:00 +0700\r\nMessage-ID: <warm-up@" + hostname.encode() + b">\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Kính gửi: Văn phòng.\r\n".encode() +
        b"--b\r\nContent-Type: application/pdf; name=\"ke-hoach.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"ke-hoach.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + pdf + b"--b--\r\n"
    )


def warm_up(ctx: Context) -> float:
    """Run the file-reading stages once and start the PDF reader's workers; the seconds it took."""
    started = time.monotonic()
    try:
        listener = ctx.settings.listeners[0]
        envelope = Envelope(mail_from="", rcpts=[f"warm-up@{ctx.settings.hostname}"], listener=listener.name,
                            role=listener.role, client_ip="127.0.0.1", helo=ctx.settings.hostname)
        message = Message(new_id(), envelope, _message(ctx.settings.hostname))
        for stage in (parse.run, classify.run, attachments.run):
            stage(message, ctx)
        docread.start_pdf_workers(PDF_READERS)
    except Exception:  # never fatal: the first messages pay it, as before
        log.warning("warm-up failed; the first messages will pay for it", exc_info=True)
    return time.monotonic() - started
