"""Exchange records made by the gateway's own code, for tests of the auditors' commands.

The pipeline decides a real message with the shipped policies and directory,
and :func:`mailgw.audit.record.build` writes its record, as the edge does; only
the arrival time is chosen, so a month of exchanges can be laid out. Nothing
here shapes a record by hand: a change to what the gateway writes reaches the
readers' tests at once. (tests/test_journeys.py drives the live gateway over
SMTP; this is the same code without the sockets, for data sets with dates.)
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
from pathlib import Path
from typing import Any

from mailgw import pipeline
from mailgw.audit import record
from mailgw.message import replies
from mailgw.message.model import Context, Envelope, Message
from tests import attachment_fixtures as fx
from tests.conftest import message

KEYS = Path(__file__).parent / "data" / "dkim" / "keys"


def gateway_context(tmp: Path, *, sign: str | None = None, dns: tuple[str, ...] = ()) -> Context:
    """The tests' gateway settings (tests/conftest.py write_config) loaded as the gateway loads them.

    ``sign``: a local domain whose mail is DKIM-signed (Ed25519, selector ``mail``);
    ``dns``: the zone lines DNS answers with (none: inbound mail is simply unsigned).
    """
    import shutil

    import trustme

    from mailgw.app import load_context
    from mailgw.smtp.credentials import hash_password
    from tests.conftest import PASSWORD, write_config

    (tmp / "answers.zone").write_text("\n".join(dns) + "\n")
    overrides: dict[str, Any] = {"dns": {"answers": "answers.zone"}}
    if sign:
        (tmp / "keys").mkdir(exist_ok=True)
        shutil.copy(KEYS / "ed25519.pem", tmp / "keys" / "mail.pem")
        (tmp / "keys" / "mail.pem").chmod(0o600)
        overrides["dkim"] = [{"domain": sign, "selector": "mail", "key": "keys/mail.pem"}]
    path = write_config(tmp, 9, trustme.CA(), hash_password(PASSWORD), **overrides)
    ctx, _ = load_context(str(path))
    return ctx


def made(ctx: Context, xid: str, when: str, listener: str, raw: bytes, mail_from: str, rcpts: list[str], *,
         tls: str | None = "TLSv1.3", fault: bool = False) -> dict[str, Any]:
    """The record the gateway writes for ``raw`` arriving at ``when`` (ISO 8601, UTC) on ``listener``.

    ``fault``: the message was decided, then could not be spooled (our fault): the
    edge refuses it 451 under rule ``error``, and that is what is recorded.
    """
    role = next(li.role for li in ctx.settings.listeners if li.name == listener)
    received = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    env = Envelope(mail_from=mail_from, rcpts=list(rcpts), listener=listener, role=role, client_ip="127.0.0.1",
                   helo="client.test", tls=tls, received_at=received)
    msg = Message(id=xid, envelope=env, raw=raw)
    verdict = pipeline.run(msg, ctx)
    if fault:
        verdict = pipeline.refuse(msg, replies.TEMP_FAILURE, "error")
    return record.build(msg, ctx, verdict.reply).to_json()


def letter(subject: str, sender: str, to: str, body: str = "Kính gửi Quý cơ quan,\r\nNội dung như trên.\r\n", *,
           pdf: bytes | None = None, filename: str = "vanban.pdf", message_id: str | None = None,
           in_reply_to: str | None = None) -> bytes:
    """A message as a clerk's mail client writes it: text, and the document as a PDF when given."""
    extra = ""
    if message_id:
        extra += f"Message-ID: {message_id}\r\n"
    if in_reply_to:
        extra += f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n"
    if pdf is None:
        raw = message(subject=subject, sender=sender, to=to, body=body)
    else:
        parts = fx.multipart([fx.text_part(body), fx.attachment(pdf, ctype="application/pdf", filename=filename)])
        raw = fx.message(parts, subject=subject, sender=sender, to=to)
    if extra:
        head, _, rest = raw.partition(b"\r\n\r\n")
        kept = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:"))
        raw = kept + b"\r\n" + extra.encode() + b"\r\n" + rest
    return raw


STTTT, SNV, STC, UBND = (f"{box}@binhthuan.gov.vn" for box in ("vanthu.sotttt", "vanthu.snv", "vanthu.stc", "vp"))
MIC, CITIZEN = "vanthu@mic.gov.vn", "Dan@Gmail.com"


@functools.cache
def stock() -> dict[str, dict[str, Any]]:
    """One gateway-made record of each kind the log's tests need, made once per process.

    letter: an official invitation (07/GM-STTTT, signed PDF) to the ministry, accepted;
    citizen: a citizen's question to STC, inbound; rejected: an official letter (456/STTTT-VP)
    to UBND and a webmail address, refused; quarantined: a lookalike domain, held;
    deferred: decided, then our fault (451, rule ``error``); secret: a document marked MẬT,
    blocked and redacted; weak: a lowercase "mật", accepted and tagged; unsigned: an unsigned
    plan (20/KH-STC) inside the province, tagged; formula: a subject a spreadsheet would run.
    """
    import tempfile

    ctx = gateway_context(Path(tempfile.mkdtemp(prefix="mailgw-stock-")))
    ca = fx.TestCA()
    invitation = ca.sign_pdf(fx.pdf_plain("GIAY MOI\nSo: 07/GM-STTTT"))
    when = "2025-03-01T00:00:00Z"
    return {
        "letter": made(ctx, "letter", when, "relay", letter("Giấy mời họp giao ban", STTTT, MIC, pdf=invitation,
                                                            filename="07-GM-STTTT.pdf"), STTTT, [MIC]),
        "citizen": made(ctx, "citizen", when, "mx", letter("Hỏi về thủ tục", CITIZEN, STC), CITIZEN, [STC]),
        "rejected": made(ctx, "rejected", when, "relay",
                         letter("Công văn số 456/STTTT-VP về việc cung cấp thông tin", STTTT, f"{UBND}, x@gmail.com"),
                         STTTT, [UBND, "x@gmail.com"]),
        "quarantined": made(ctx, "quarantined", when, "mx", letter("Thông báo", "x@blnhthuan.gov.vn", STC),
                            "x@blnhthuan.gov.vn", [STC]),
        "deferred": made(ctx, "deferred", when, "relay", letter("Lịch công tác", SNV, MIC), SNV, [MIC], fault=True),
        "secret": made(ctx, "secret", when, "relay", letter("MẬT - Báo cáo số 5/BC-STC", STC, UBND,
                                                            body="MẬT\r\nBáo cáo tình hình.\r\n"), STC, [UBND]),
        "weak": made(ctx, "weak", when, "relay", letter("Gửi tài liệu", STC, MIC,
                                                        body="Gửi kèm tài liệu mật để Bộ tham khảo.\r\n"), STC, [MIC]),
        "unsigned": made(ctx, "unsigned", when, "relay",
                         letter("Kế hoạch số 20/KH-STC triển khai công tác năm 2025", STC, SNV,
                                pdf=fx.pdf_plain("KE HOACH\nSo: 20/KH-STC"), filename="20-KH-STC.pdf"), STC, [SNV]),
        "formula": made(ctx, "formula", when, "relay", letter('=HYPERLINK("x")', STTTT, SNV), STTTT, [SNV]),
    }


def like(kind: str, xid: str, when: str = "2025-03-01T00:00:00Z", **beside: Any) -> dict[str, Any]:
    """The stock record of ``kind`` as exchange ``xid`` at ``when``: only its identity and time differ.

    ``beside``: what a reader adds next to a record (the archived ``body`` of a held message).
    """
    return {**copy.deepcopy(stock()[kind]), "id": xid, "time": when, **beside}
