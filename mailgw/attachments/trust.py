"""The trust store for PDF signatures: root certificates from a PEM/DER file or a directory of them.

Vietnamese state bodies sign with certificates of the Government Cipher
Committee (VGCA) and public CAs under Decree 23/2025; which roots count is the
admin's choice, so the store is configured (settings ``attachments.trust_store``),
never built in.
"""

from __future__ import annotations

import functools
import os

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

_SUFFIXES = (".pem", ".crt", ".cer", ".der")
_MAX_FILE = 4 * 1024 * 1024


def load_roots(path: str) -> tuple[bytes, ...]:
    """The DER bytes of every certificate in ``path``; raises OSError or ValueError on a bad file."""
    stamp = _stamp(path)
    return _load(path, stamp)


def _stamp(path: str) -> tuple[float, ...]:
    if os.path.isdir(path):
        return tuple(os.stat(os.path.join(path, n)).st_mtime for n in sorted(os.listdir(path)))
    return (os.stat(path).st_mtime,)


@functools.lru_cache(maxsize=8)
def _load(path: str, stamp: tuple[float, ...]) -> tuple[bytes, ...]:
    files = [path]
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.lower().endswith(_SUFFIXES)]
    out: list[bytes] = []
    for name in files:
        with open(name, "rb") as f:
            data = f.read(_MAX_FILE + 1)
        if len(data) > _MAX_FILE:
            raise ValueError(f"{name} is over {_MAX_FILE} bytes")
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except ValueError as e:
            raise ValueError(f"{name} is not a PEM or DER certificate ({e})") from None
        out.extend(c.public_bytes(Encoding.DER) for c in certs)
    return tuple(out)
