"""Delivery status notifications (RFC 3464): the one bounce a sender gets.

A DSN is sent from the null sender ``<>`` and is itself never bounced
(RFC 5321 6.1). Its text is for staff: Vietnamese first, then English. It
returns the original's headers only, never its body: the body may carry an
official document, and a DSN may travel to a mailbox we cannot vouch for.
"""

from __future__ import annotations

import email.header
import email.utils
import re
import secrets
from typing import Sequence

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_HEADER_LIMIT = 50_000  # bytes of the original's header returned (Postfix bounce_size_limit)


class Failure:
    """One recipient that could not be delivered."""

    def __init__(self, rcpt: str, reply: str, remote: str = "", expired: bool = False, by_admin: bool = False):
        self.rcpt, self.reply, self.remote, self.expired = rcpt, reply, remote, expired
        self.by_admin = by_admin  # returned by `mailgw queue bounce`, never sent

    @property
    def status(self) -> str:
        m = _ENHANCED.search(self.reply)
        if m and m.group(1) == "5":
            return m.group(0)
        return "4.4.7" if self.expired else "5.0.0"


def build(*, hostname: str, original_id: str, original_sender: str, arrival: float, failures: Sequence[Failure], original: bytes) -> bytes:
    """The DSN message for ``failures`` of the message ``original``, addressed to its sender.

    When an address or the returned header section is UTF-8, the DSN is an
    internationalised one (RFC 6533): UTF-8 header fields, the status in
    ``message/global-delivery-status`` with ``utf-8`` address types, the header
    section in ``message/global-headers``; delivery then asks for SMTPUTF8.
    """
    boundary = f"=_mailgw_{secrets.token_hex(12)}"
    now = email.utils.formatdate(localtime=False)
    head_end = original.find(b"\r\n\r\n")
    original_headers = original[: head_end + 2 if head_end >= 0 else len(original)][:_HEADER_LIMIT]
    utf8 = (not original_sender.isascii() or any(not f.rcpt.isascii() for f in failures)
            or not original_headers.isascii())
    listing = "\r\n".join(f"    <{f.rcpt}>: {_one_line(f.reply)}" for f in failures)
    reason_vi = "đã quá thời hạn gửi" if any(f.expired for f in failures) else "máy chủ nhận đã từ chối"
    reason_en = "the delivery time limit expired" if any(f.expired for f in failures) else "the receiving server refused it"
    if any(f.by_admin for f in failures):
        reason_vi, reason_en = "quản trị viên cổng thư đã trả lại thư", "the gateway's administrator returned it"
    text = (
        f"Đây là thông báo tự động của cổng thư {hostname}.\r\n"
        f"Thư của bạn (mã {original_id}) KHÔNG gửi được tới người nhận dưới đây vì {reason_vi}.\r\n"
        f"Vui lòng kiểm tra địa chỉ hoặc liên hệ bộ phận công nghệ thông tin và cung cấp mã thư.\r\n"
        f"\r\n"
        f"This is an automatic message from the mail gateway {hostname}.\r\n"
        f"Your message (id {original_id}) could NOT be delivered to the recipients below: {reason_en}.\r\n"
        f"Please check the addresses or contact your IT staff, quoting the message id.\r\n"
        f"\r\n{listing}\r\n"
    )
    per_rcpt = []
    for f in failures:
        fields = [
            f"Final-Recipient: {'rfc822' if f.rcpt.isascii() else 'utf-8'}; {f.rcpt}",
            "Action: failed",
            f"Status: {f.status}",
        ]
        if f.remote:
            fields.append(f"Remote-MTA: dns; {_ascii(_one_line(f.remote))}")
        # A next hop's reply is text from a stranger: one line, no controls, ASCII (RFC 3464 2.3.6).
        fields.append(f"Diagnostic-Code: smtp; {_ascii(_one_line(f.reply))}")
        fields.append(f"Last-Attempt-Date: {now}")
        per_rcpt.append("\r\n".join(fields))
    status = (
        f"Reporting-MTA: dns; {hostname}\r\n"
        f"X-Mailgw-Queue-ID: {original_id}\r\n"
        f"Arrival-Date: {email.utils.formatdate(arrival, localtime=False)}\r\n"
        "\r\n" + "\r\n\r\n".join(per_rcpt) + "\r\n"
    )
    headers = (
        f"From: {_encoded('Hệ thống thư')} (Mail Delivery System) <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{original_sender}>\r\n"
        f"Subject: {_encoded('Thư không gửi được')} / Undelivered Mail Returned to Sender\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: <{original_id}.dsn.{secrets.token_hex(6)}@{hostname}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {'message/global-delivery-status' if utf8 else 'message/delivery-status'}\r\n\r\n"
        f"{status}\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {'message/global-headers' if utf8 else 'text/rfc822-headers'}\r\n\r\n"
    ).encode("utf-8")
    return headers.encode("utf-8" if utf8 else "ascii") + body + original_headers + f"\r\n--{boundary}--\r\n".encode("ascii")


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(text: str) -> str:
    return " ".join(_CONTROLS.sub(" ", text).split())[:900]


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _encoded(text: str) -> str:
    return email.header.Header(text, "utf-8").encode()


def held_notice(*, hostname: str, original_id: str, original_sender: str, subject: str) -> bytes:
    """A note to the sender that their message is held for review (a rule's ``notify_sender``).

    Like a DSN it comes from ``<>`` and carries no part of the original but its subject.
    """
    now = email.utils.formatdate(localtime=False)
    text = (
        f"Đây là thông báo tự động của cổng thư {hostname}.\r\n"
        f"Thư của bạn (mã {original_id}, tiêu đề: {_one_line(subject)[:200]}) đang được giữ lại để kiểm tra\r\n"
        f"theo quy định của cơ quan. Bộ phận công nghệ thông tin sẽ xem xét; thư sẽ được gửi đi hoặc bị hủy.\r\n"
        f"Nếu cần, vui lòng liên hệ bộ phận công nghệ thông tin và cung cấp mã thư.\r\n"
        f"\r\n"
        f"This is an automatic message from the mail gateway {hostname}.\r\n"
        f"Your message (id {original_id}) is held for review under your agency's rules. IT staff will\r\n"
        f"release or delete it. If needed, contact your IT staff, quoting the message id.\r\n"
    )
    headers = (
        f"From: {_encoded('Cổng thư điện tử')} <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{original_sender}>\r\n"
        f"Subject: {_encoded('Thư đang được giữ lại để kiểm tra / Message held for review')}\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: <{original_id}.held.{secrets.token_hex(6)}@{hostname}>\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
    )
    return (headers + "\r\n" + text).encode("utf-8")
