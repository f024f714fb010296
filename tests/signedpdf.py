"""Digitally signed PDFs for tests: real PAdES signatures made with pyHanko and a test CA.

Decree 30 Art. 5: an e-document equals its paper original when it carries two
signatures, the competent signer's and the agency's. ``sign_pdf_twice`` adds
both, as incremental updates, the way a signing tool in an agency would.
"""

from __future__ import annotations

import datetime
import functools
import io

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)


def _name(common: str, org: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])


@functools.lru_cache(maxsize=1)
def test_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed root standing in for the government CA (the real roots are configured, never built in)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Test Root CA (mailgw tests)", "mailgw test PKI")
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(_NOW)
        .not_valid_after(_NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@functools.lru_cache(maxsize=8)
def signer_certificate(common: str, org: str = "UBND tỉnh Bình Thuận") -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) of a signer issued by the test CA."""
    ca_key, ca_cert = test_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(common, org)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(_NOW)
        .not_valid_after(_NOW + datetime.timedelta(days=3650))
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def sign_pdf(data: bytes, common: str, field: str) -> bytes:
    """``data`` with one more signature (an incremental update), by ``common``'s test certificate."""
    from pyhanko.sign import signers
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign.fields import SigFieldSpec, append_signature_field

    signer = _load_signer(*signer_certificate(common))
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    append_signature_field(writer, SigFieldSpec(sig_field_name=field))
    out = io.BytesIO()
    signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name=field), signer=signer, output=out)
    return out.getvalue()


def _load_signer(key_pem: bytes, cert_pem: bytes):  # noqa: ANN202 - pyHanko's own type
    from asn1crypto import keys, pem, x509 as asn1_x509
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    _, _, key_der = pem.unarmor(key_pem)
    _, _, cert_der = pem.unarmor(cert_pem)
    _, ca_cert = test_ca()
    ca = asn1_x509.Certificate.load(ca_cert.public_bytes(serialization.Encoding.DER))
    return signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert_der),
        signing_key=keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs([ca]),
    )


def sign_pdf_twice(data: bytes) -> bytes:
    """The signer's signature, then the agency's (Decree 30 Art. 5)."""
    once = sign_pdf(data, "Nguyễn Văn Giám Đốc", "ChuKyNguoiKy")
    return sign_pdf(once, "Sở Thông tin và Truyền thông tỉnh Bình Thuận", "ChuKyCoQuan")
