"""DKIM signing of outbound mail, the last change to a message before it is queued for delivery."""

from __future__ import annotations

import base64
import collections
import hashlib
import time
from typing import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from dkim.canonicalization import CanonicalizationPolicy

from mailgw.dkim import canon
from mailgw.dkim.keys import SigningKey

# Signed once per instance present plus once more, so that no instance can be
# added above them without breaking the signature (RFC 6376 sections 5.4.2
# and 8.15). An absent one is thereby signed as absent.
OVERSIGNED = (
    b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
    b"in-reply-to", b"references", b"mime-version", b"content-type", b"content-transfer-encoding",
)
# Signed as present, not frozen: lists and resenders legitimately add these.
SIGNED = OVERSIGNED + (
    b"content-id", b"content-description",
    b"resent-date", b"resent-from", b"resent-sender", b"resent-to", b"resent-cc", b"resent-message-id",
    b"list-id", b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post", b"list-owner", b"list-archive",
)
_SIGNED_ONLY = tuple(n for n in SIGNED if n not in OVERSIGNED)

_WIDTH = 78


class DkimSigningError(Exception):
    """The message cannot be signed; the caller must not send it unsigned (451)."""


def sign(message: bytes, keys: Sequence[SigningKey], *, now: float | None = None, expire_after: int | None = None,
         crlf: bool | None = None) -> bytes:
    """The DKIM-Signature header fields (CRLF-terminated) to put on top of ``message``, one per key.

    ``message`` is the exact bytes that will be sent, CRLF line endings. All
    signatures are relaxed/relaxed, cover the whole body (no l=), and oversign
    the identity headers (``OVERSIGNED``). ``expire_after`` (seconds) adds an
    x= tag, which bounds how long the message can be replayed. ``crlf``: whether
    every line of ``message`` ends in CRLF, when the caller knows (canon.parse_message).
    """
    if not keys:
        raise DkimSigningError("no DKIM key to sign with")
    try:
        headers, body = canon.parse_message(message, crlf)
    except canon.MessageFormatError as e:
        raise DkimSigningError(f"message header cannot be parsed: {e}") from e
    present = collections.Counter(name.lower() for name, _ in headers)
    if not present[b"from"]:
        raise DkimSigningError("message has no From header, which DKIM must sign")
    include = [n for n in OVERSIGNED for _ in range(present[n] + 1)]
    include += [n for n in _SIGNED_ONLY for _ in range(present[n])]
    policy = canon.relaxed()
    bh, _ = canon.body_hash(body, policy)
    timestamp = int(time.time() if now is None else now)
    out = []
    for key in keys:
        try:
            out.append(_signature(key, headers, include, policy, bh, timestamp, expire_after))
        except Exception as e:  # noqa: BLE001 - any crypto failure must reach the caller as one error type
            raise DkimSigningError(f"signing for {key.domain} (s={key.selector}) failed: {e}") from e
    return b"".join(out)


def _signature(key: SigningKey, headers: list[list[bytes]], include: list[bytes], policy: CanonicalizationPolicy,
               bh: bytes, timestamp: int, expire_after: int | None) -> bytes:
    name = b"DKIM-Signature"
    folder = _Folder(len(name) + 1)
    tags = [
        ("v", "1"), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", key.domain), ("s", key.selector),
        ("t", str(timestamp)),
    ]
    if expire_after is not None:
        tags.append(("x", str(timestamp + expire_after)))
    for tag, value in tags:
        folder.add(" ", f"{tag}={value};")
    # h= may be folded after any colon (RFC 6376 section 3.5).
    header_names = [n.decode("ascii") for n in include]
    for i, hname in enumerate(header_names):
        first, last = i == 0, i == len(header_names) - 1
        folder.add(" " if first else "", ("h=" if first else "") + hname + (";" if last else ":"))
    folder.add(" ", "bh=" + base64.b64encode(bh).decode("ascii") + ";")
    folder.add(" ", "b=")
    unsigned = folder.text().encode("ascii")
    data = canon.signed_header_data(headers, include, policy, (name, unsigned))
    signature = _raw_sign(key, data)
    folder.add_wrapped(base64.b64encode(signature).decode("ascii"))
    return name + b":" + folder.text().encode("ascii") + b"\r\n"


def _raw_sign(key: SigningKey, data: bytes) -> bytes:
    if isinstance(key.private_key, ed25519.Ed25519PrivateKey):
        # RFC 8463: PureEdDSA over the SHA-256 hash, not over the data.
        return key.private_key.sign(hashlib.sha256(data).digest())
    return key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class _Folder:
    """Builds a header value, folding between pieces so lines stay within 78 columns."""

    def __init__(self, used: int):
        self._parts: list[str] = []
        self._column = used

    def add(self, separator: str, piece: str) -> None:
        if self._parts and self._column + len(separator) + len(piece) > _WIDTH:
            self._parts.append("\r\n " + piece)
            self._column = 1 + len(piece)
        else:
            self._parts.append(separator + piece)
            self._column += len(separator) + len(piece)

    def add_wrapped(self, text: str) -> None:
        """Add ``text`` cut anywhere needed (base64 may be folded at any point)."""
        while text:
            room = _WIDTH - self._column
            if room < 8:
                self._parts.append("\r\n ")
                self._column, room = 1, _WIDTH - 1
            self._parts.append(text[:room])
            self._column += len(text[:room])
            text = text[room:]

    def text(self) -> str:
        return "".join(self._parts)
