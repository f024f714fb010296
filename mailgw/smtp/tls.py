"""TLS for the listeners: server contexts, and a self-signed pair for the demo."""

from __future__ import annotations

import datetime
import logging
import os
import ssl

from mailgw.config.settings import TlsFiles

log = logging.getLogger(__name__)


def server_context(files: TlsFiles, hostname: str) -> ssl.SSLContext:
    """A server context from the files; makes a self-signed pair first when asked and missing."""
    if files.self_signed and not (os.path.exists(files.cert) and os.path.exists(files.key)):
        make_self_signed(files.cert, files.key, hostname)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Mozilla's "intermediate" TLS 1.2 suites (AEAD with forward secrecy: no CBC, no RSA key
    # exchange); TLS 1.3 suites are OpenSSL's, all of them AEAD. The key-exchange groups are set
    # in OpenSSL's configuration (mailgw/smtp/openssl.cnf, which `mailgw serve` starts with):
    # Python 3.11's ssl module has no call for them.
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))


def make_self_signed(cert_path: str, key_path: str, hostname: str) -> None:
    """Write a self-signed certificate for ``hostname`` (demo and tests; never for production)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    for path in (cert_path, key_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    log.warning("made a self-signed certificate for %s in %s (demo only)", hostname, cert_path)
