"""The hashing half of DKIM (RFC 6376 section 3.7), shared by the signer and the verifier.

Parsing and canonicalisation come from dkimpy, which the field has used for
years; only the public-key arithmetic is ours to route through OpenSSL (the
``cryptography`` package), because dkimpy does RSA in pure Python.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import dkim as _dkimpy
from dkim.canonicalization import CanonicalizationPolicy

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"

# (name, raw value) pairs as dkimpy's parser gives them: the value keeps its
# leading whitespace, folding and trailing CRLF.
Headers = Sequence[Sequence[bytes]]

MessageFormatError = _dkimpy.MessageFormatError


def parse_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """Headers and body (CRLF line endings); raises ``MessageFormatError`` on a broken header."""
    return _dkimpy.rfc822_parse(message)


def body_hash(body: bytes, policy: CanonicalizationPolicy, length: int | None = None) -> tuple[bytes, int]:
    """SHA-256 of the canonical body (first ``length`` octets if given) and the canonical body's full length."""
    canonical = policy.canonicalize_body(body)
    signed = canonical if length is None else canonical[:length]
    return hashlib.sha256(signed).digest(), len(canonical)


def signed_header_data(
    headers: Headers,
    include: Sequence[bytes],
    policy: CanonicalizationPolicy,
    signature_header: tuple[bytes, bytes],
) -> bytes:
    """The octets the header signature covers.

    ``include`` is the h= list, lower-cased; instances are taken from the
    bottom up and a name listed more often than it occurs adds nothing (that is
    what makes oversigning work). ``signature_header`` is the DKIM-Signature
    field itself, whose b= value is emptied here.
    """
    selected = _dkimpy.select_headers(headers, include)
    name, value = signature_header
    emptied = _dkimpy.RE_BTAG.sub(b"\\1", value)
    canonical = policy.canonicalize_headers(list(selected) + [(name, emptied)])
    parts = [n + b":" + v for n, v in canonical[:-1]]
    last_name, last_value = canonical[-1]
    # The signature field itself is hashed without its trailing CRLF.
    parts.append(last_name + b":" + last_value.rstrip(b"\r\n"))
    return b"".join(parts)


def split_header_list(h_value: bytes) -> list[bytes]:
    return [name.lower() for name in re.split(rb"\s*:\s*", h_value.strip()) if name]


def relaxed() -> CanonicalizationPolicy:
    return CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
