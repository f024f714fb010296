"""DKIM key files: keygen, loading, the checks `mailgw check` reports."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailgw.config.resolver import FileResolver
from mailgw.dkim import DkimKeyError, SigningKey, key_warnings, keygen, load_key, sign, verify

DATA = Path(__file__).parent / "data" / "dkim"
MESSAGE = b"From: Van thu <vanthu@binhthuan.gov.vn>\r\nTo: x@example.net\r\nSubject: keygen\r\n\r\nbody\r\n"


@pytest.fixture
def open_umask():
    # With umask 0 a file created 0644 and chmod-ed later would show 0644 at
    # creation; keygen must create it 0600 whatever the umask.
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
async def test_keygen_writes_a_private_key_and_returns_a_working_record(tmp_path, open_umask, algorithm):
    path, record = keygen("binhthuan.gov.vn", "mailgw", algorithm, tmp_path / "keys")
    assert path == tmp_path / "keys" / "binhthuan.gov.vn.mailgw.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert key_warnings(path) == []
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    match = re.fullmatch(r'mailgw\._domainkey\.binhthuan\.gov\.vn\. IN TXT ((?:"[^"]*" ?)+)', record)
    assert match, record
    strings = re.findall(r'"([^"]*)"', match.group(1))
    assert all(len(s) <= 255 for s in strings)
    value = "".join(strings)
    kind = "ed25519" if algorithm == "ed25519" else "rsa"
    assert value.startswith(f"v=DKIM1; k={kind}; p=")
    if algorithm == "rsa":
        assert len(strings) == 2  # a 2048-bit key does not fit in one string
        public = serialization.load_der_public_key(base64.b64decode(value.split("p=")[1]))
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    # The record as printed is what a resolver serves, and it verifies the key's signatures.
    key = SigningKey.from_file("binhthuan.gov.vn", "mailgw", path)
    report = await verify(sign(MESSAGE, [key]) + MESSAGE, FileResolver.from_text(record))
    assert [(s.result, s.aligned) for s in report.signatures] == [("pass", True)]


def test_keygen_never_overwrites_a_key(tmp_path):
    path, _ = keygen("binhthuan.gov.vn", "mailgw", "ed25519", tmp_path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keygen("binhthuan.gov.vn", "mailgw", "ed25519", tmp_path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(("domain", "selector", "algorithm", "message"), [
    ("../../etc", "mailgw", "ed25519", "domain"),
    ("binhthuan.gov.vn", "a/b", "ed25519", "selector"),
    ("binhthuan.gov.vn", "mailgw", "dsa", "unknown DKIM algorithm"),
])
def test_keygen_refuses_bad_input(tmp_path, domain, selector, algorithm, message):
    with pytest.raises(ValueError, match=message):
        keygen(domain, selector, algorithm, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_key_warnings(tmp_path):
    loose = tmp_path / "loose.key"
    shutil.copyfile(DATA / "keys" / "ed25519.pem", loose)
    loose.chmod(0o644)
    assert key_warnings(loose) == [f"DKIM key {loose} is accessible to group or others (mode 0644); run chmod 600"]

    short = tmp_path / "short.key"
    shutil.copyfile(DATA / "keys" / "rsa512.pem", short)
    short.chmod(0o600)
    (warning,) = key_warnings(short)
    assert "RSA of 512 bits" in warning

    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ec_key.chmod(0o600)
    (warning,) = key_warnings(ec_key)
    assert "RSA or Ed25519 only" in warning

    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello\n")
    garbage.chmod(0o600)
    assert key_warnings(garbage) == [f"{garbage}: neither a PEM private key nor a base64 Ed25519 seed"]

    assert key_warnings(tmp_path / "absent.key") == [f"cannot read DKIM key {tmp_path / 'absent.key'}: No such file or directory"]


def test_load_key_reads_dkimpy_ed25519_seeds():
    # RFC 8032 section 7.1 test 1, in dkimpy's key file format; its public
    # key is the one RFC 8463 publishes for selector "brisbane".
    key = load_key(DATA / "vectors" / "rfc8032_7_1.key")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(raw) == b"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def test_load_key_reads_pkcs1_rsa():
    key = load_key(DATA / "vectors" / "test.private")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 1024


def test_signing_key_checks():
    rsa_key = load_key(DATA / "keys" / "rsa2048.pem")
    with pytest.raises(DkimKeyError, match="does not match"):
        SigningKey("example.gov.vn", "sel", "ed25519-sha256", rsa_key)
    with pytest.raises(DkimKeyError, match="under 1024 bits"):
        SigningKey.from_file("example.gov.vn", "short", DATA / "keys" / "rsa512.pem")
    with pytest.raises(DkimKeyError, match="cannot read"):
        SigningKey.from_file("example.gov.vn", "x", DATA / "keys" / "absent.pem")
    key = SigningKey.from_file("Example.GOV.vn.", "Sel", DATA / "keys" / "ed25519.pem")
    assert (key.domain, key.selector, key.algorithm) == ("example.gov.vn", "sel", "ed25519-sha256")
    assert "PRIVATE" not in repr(key) and "private_key" not in repr(key)
