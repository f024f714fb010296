"""SMTP replies: the only module that spells status codes.

A reply has two audiences. The client gets ``code``, the enhanced code and a
text in Vietnamese then English that names no internal mechanism; the log and
the decision record get ``reason``, the detail. The class digit of the
enhanced code is always derived from the basic code (maddy once sent
``450 5.7.25``: a temporary reply with a permanent enhanced code).
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class SmtpReply:
    """A reply line: ``code`` (e.g. 550), ``detail`` (e.g. "7.1"), client text, internal reason."""

    code: int
    detail: str
    text: str
    reason: str = ""

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced code, its class taken from the basic code."""
        return f"{enhanced_class(self.code)}.{self.detail}"

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        # One line only: a reply text never carries CR or LF (no reply splitting).
        text = " ".join(self.text.split())
        return f"{self.code} {self.enhanced} {text}"

    def with_id(self, exchange_id: str) -> SmtpReply:
        """The same reply with the exchange id an auditor can look up appended."""
        return dataclasses.replace(self, text=f"{self.text} [{exchange_id}]")


def enhanced_class(code: int) -> int:
    """2, 4 or 5: the enhanced status class that goes with a basic reply code."""
    if 200 <= code < 400:
        return 2
    if 400 <= code < 500:
        return 4
    if 500 <= code < 600:
        return 5
    raise ValueError(f"not an SMTP reply code: {code}")


class Refusal(Exception):
    """Raised by a stage to stop a message; ``reply`` says how."""

    def __init__(self, reply: SmtpReply):
        super().__init__(reply.reason or reply.text)
        self.reply = reply


class Reject(Refusal):
    """The message's own fault: a 5xx reply."""


class Defer(Refusal):
    """Our fault or a temporary condition: a 4xx reply, the client tries again."""


def _r(code: int, detail: str, vi: str, en: str) -> SmtpReply:
    return SmtpReply(code, detail, f"{vi} / {en}")


# Replies the protocol edge sends. Texts: Vietnamese first, then English.
OK_SENDER = SmtpReply(250, "1.0", "OK")
OK_RECIPIENT = SmtpReply(250, "1.5", "OK")
TEMP_FAILURE = _r(451, "3.0", "Lỗi tạm thời của máy chủ, vui lòng gửi lại sau", "Temporary server error, please try again later")
NO_STORAGE = _r(452, "3.1", "Máy chủ tạm thời hết chỗ lưu trữ", "Insufficient system storage, try again later")
TOO_MANY_RECIPIENTS = _r(452, "5.3", "Quá nhiều người nhận trong một thư", "Too many recipients")
TOO_MANY_CONNECTIONS = _r(421, "7.0", "Quá nhiều kết nối từ địa chỉ của bạn", "Too many connections from your address")
TOO_MANY_COMMANDS = _r(421, "7.0", "Quá nhiều lệnh trong một phiên", "Too many commands in this session")
IDLE_TIMEOUT = _r(421, "4.2", "Hết thời gian chờ", "Idle timeout, closing connection")
SHUTTING_DOWN = _r(421, "3.2", "Máy chủ đang dừng", "Server shutting down, try again later")
NO_SUCH_MAILBOX = _r(550, "1.1", "Hộp thư không tồn tại", "No such mailbox here")
RELAY_DENIED = _r(550, "7.1", "Không chuyển tiếp thư tới người nhận này", "Relaying denied")
CLIENT_NOT_ALLOWED = _r(554, "7.1", "Máy của bạn không được phép gửi thư qua cổng này", "Client host not allowed to use this service")
BAD_ADDRESS = _r(553, "1.3", "Địa chỉ không hợp lệ", "Invalid address syntax")
BAD_SENDER_ADDRESS = _r(553, "1.7", "Địa chỉ người gửi không hợp lệ", "Invalid sender address")
SENDER_NOT_OWNED = _r(553, "7.1", "Tài khoản không được gửi thư với địa chỉ này", "Sender address not owned by the authenticated user")
FROM_NOT_OWNED = _r(550, "7.1", "Tài khoản không được gửi thư với địa chỉ người gửi (From) này", "From address not owned by the authenticated user")
AMBIGUOUS_AUTHOR = _r(550, "7.1", "Thư phải có đúng một trường From với đúng một địa chỉ", "The message must have exactly one From header with exactly one address")
# What is wrong with the author, said precisely (stage author); all 5.7.1 but the UTF-8 one.
NO_FROM = _r(550, "7.1", "Thư không có trường From (người gửi)", "The message has no From header")
TWO_FROM = _r(550, "7.1", "Thư có nhiều hơn một trường From", "The message has more than one From header")
FROM_NO_ADDRESS = _r(550, "7.1", "Trường From không có địa chỉ thư", "The From header has no address")
FROM_TWO_ADDRESSES = _r(550, "7.1", "Trường From có nhiều hơn một địa chỉ", "The From header has more than one address")
FROM_GROUP = _r(550, "7.1", "Trường From là một nhóm địa chỉ, không phải một người gửi",
                "The From header is a group, not one author")
FROM_UNREADABLE = _r(550, "7.1", "Không đọc được trường From thành đúng một địa chỉ",
                     "The From header cannot be read as exactly one address")
FROM_INVALID_ADDRESS = _r(550, "7.1", "Địa chỉ trong trường From không hợp lệ", "The From address is not a valid address")
FROM_UTF8_WITHOUT_SMTPUTF8 = _r(550, "6.7", "Địa chỉ From có ký tự ngoài ASCII cần tham số SMTPUTF8",
                                "A non-ASCII From address requires the SMTPUTF8 parameter (RFC 6532)")
BAD_HEADER = _r(550, "6.0", "Phần đầu thư không hợp lệ", "Malformed message header")
BARE_LINE_ENDING = _r(550, "5.2", "Thư chứa ký tự xuống dòng CR hoặc LF đơn lẻ", "Message contains a bare CR or LF (see RFC 5321 2.3.8)")
LOOP_DETECTED = _r(554, "4.6", "Thư bị lặp vòng (quá nhiều trường Received)", "Mail loop detected: too many Received headers")
MESSAGE_TOO_BIG = _r(552, "3.4", "Thư vượt quá dung lượng cho phép", "Message exceeds the size limit")
NUL_BYTE = _r(550, "6.0", "Thư chứa ký tự NUL", "Message contains a NUL character")
UTF8_WITHOUT_SMTPUTF8 = _r(553, "6.7", "Địa chỉ có ký tự ngoài ASCII cần tham số SMTPUTF8",
                           "Non-ASCII address requires the SMTPUTF8 parameter (RFC 6531)")
BAD_STRUCTURE = _r(550, "6.0", "Cấu trúc thư lồng nhau quá sâu hoặc không đọc được", "Message structure nested too deeply or unreadable")
HEADER_TOO_BIG = _r(552, "3.4", "Phần đầu thư quá lớn hoặc quá nhiều dòng", "Message header section too large")
LINE_TOO_LONG = _r(500, "6.0", "Dòng thư dài quá 998 ký tự", "Line too long (see RFC 5321 4.5.3.1.6)")
COMMAND_TOO_LONG = _r(500, "5.2", "Lệnh quá dài", "Command line too long")
AUTH_FAILED = _r(535, "7.8", "Sai tên đăng nhập hoặc mật khẩu", "Authentication credentials invalid")
AUTH_TOO_MANY = _r(421, "7.0", "Đăng nhập sai quá nhiều lần, đóng kết nối", "Too many failed logins, closing connection")
AUTH_REQUIRED = _r(530, "7.0", "Cần đăng nhập trước khi gửi thư", "Authentication required")
SIGNING_FAILED = _r(451, "3.0", "Lỗi tạm thời khi xử lý thư, vui lòng gửi lại sau", "Temporary error while processing the message, please try again later")
DEFAULT_DEFER = _r(451, "7.1", "Thư tạm thời chưa được nhận, vui lòng gửi lại sau", "Message deferred, please try again later")
DEFAULT_REJECT = _r(550, "7.1", "Thư bị từ chối theo chính sách của cơ quan", "Message rejected by policy")


def queued(exchange_id: str) -> SmtpReply:
    """The 250 after DATA: sent only once the message is durable."""
    return SmtpReply(250, "0.0", f"OK: queued as {exchange_id}")


# aiosmtpd sends some replies itself, without enhanced codes; the protocol edge
# rewrites them (by their prefix) so every reply a client sees carries one.
BUILTIN_REWRITES: tuple[tuple[str, SmtpReply], ...] = (
    ("552 Error: message size exceeds", MESSAGE_TOO_BIG),
    ("552 Error: Too much mail data", MESSAGE_TOO_BIG),
    ("500 Line too long", LINE_TOO_LONG),
    ("500 Command line too long", COMMAND_TOO_LONG),
    ("530 5.7.0 Authentication required", AUTH_REQUIRED),
    ("535 5.7.8 Authentication credentials invalid", AUTH_FAILED),
)


# aiosmtpd's other replies ("503 Error: need MAIL command", "501 Syntax: HELO hostname",
# "250 OK", ...) get an enhanced code and the Vietnamese, by their basic code; their own
# English detail is kept after ours. Greeting, EHLO lines, 354 and 334 need none (RFC 2034).
_BY_CODE: dict[int, tuple[str, str, str]] = {
    250: ("0.0", "", ""),
    221: ("0.0", "", ""),
    500: ("5.2", "Lệnh không hợp lệ", "Syntax error"),
    501: ("5.4", "Tham số của lệnh không hợp lệ", "Syntax error in parameters"),
    502: ("5.1", "Lệnh không được hỗ trợ", "Command not implemented"),
    503: ("5.1", "Sai thứ tự lệnh", "Bad sequence of commands"),
    504: ("5.4", "Tham số của lệnh không được hỗ trợ", "Command parameter not implemented"),
    530: ("7.0", "Cần đăng nhập trước khi gửi thư", "Authentication required"),
    535: ("7.8", "Sai tên đăng nhập hoặc mật khẩu", "Authentication credentials invalid"),
    538: ("7.11", "Cần mã hóa kết nối (STARTTLS) trước khi đăng nhập", "Encryption required for authentication"),
    421: ("3.0", "Máy chủ tạm ngừng phục vụ", "Service not available"),
    451: ("3.0", "Lỗi tạm thời của máy chủ", "Temporary server error"),
    454: ("7.0", "Tạm thời không thực hiện được", "Temporary failure"),
    550: ("7.1", "Yêu cầu bị từ chối", "Request refused"),
    552: ("3.4", "Vượt quá giới hạn", "Limit exceeded"),
    554: ("5.0", "Giao dịch thất bại", "Transaction failed"),
    555: ("5.4", "Tham số MAIL hoặc RCPT không được hỗ trợ", "MAIL or RCPT parameters not recognised"),
}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_NEEDS_NONE = (220, 334, 354)


def with_enhanced_code(status: str) -> str:
    """``status`` (one reply line) with an enhanced code and the Vietnamese text, when it has no code of its own."""
    if len(status) < 4 or not status[:3].isdigit() or status[3] not in " -" or _HAS_ENHANCED.match(status):
        return status
    code = int(status[:3])
    if code in _NEEDS_NONE or status[3] == "-" or code not in _BY_CODE:
        return status
    detail, vi, en = _BY_CODE[code]
    own = status[4:].strip()
    for prefix in ("Error: ", "Syntax: "):
        if own.startswith(prefix):
            own = own[len(prefix):]
    enhanced = f"{enhanced_class(code)}.{detail}"
    if not vi:
        return f"{code} {enhanced} {own}".rstrip()
    return f"{code} {enhanced} {vi} / {en}" + (f": {own}" if own else "")
