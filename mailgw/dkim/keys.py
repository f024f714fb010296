"""DKIM private keys on disk: making them, loading them for the signer, and checking them for `mailgw check`."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailgw.dkim.canon import ED25519_SHA256, RSA_SHA256

PrivateKey = Union[rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]

MIN_SIGNING_RSA_BITS = 1024  # receivers reject shorter keys (RFC 8301)
RECOMMENDED_RSA_BITS = 2048

# A DNS label sequence; also keeps key file names free of "/" and "..".
_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")


class DkimKeyError(Exception):
    """A key file that cannot be used for signing."""


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """One signature to add: ``d=domain``, ``s=selector``, and the key that makes it."""

    domain: str
    selector: str
    algorithm: str  # RSA_SHA256 or ED25519_SHA256
    private_key: PrivateKey = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", _check_name(self.domain, "domain"))
        object.__setattr__(self, "selector", _check_name(self.selector, "selector"))
        expected = _algorithm_of(self.private_key)
        if self.algorithm != expected:
            raise DkimKeyError(f"algorithm {self.algorithm!r} does not match the key ({expected})")
        if isinstance(self.private_key, rsa.RSAPrivateKey) and self.private_key.key_size < MIN_SIGNING_RSA_BITS:
            raise DkimKeyError(f"RSA key of {self.private_key.key_size} bits: receivers reject keys under 1024 bits")

    @classmethod
    def from_file(cls, domain: str, selector: str, path: str | Path) -> SigningKey:
        key = load_key(path)
        return cls(domain, selector, _algorithm_of(key), key)


def load_key(path: str | Path) -> PrivateKey:
    """The RSA or Ed25519 private key in ``path``: PEM (PKCS#8 or PKCS#1), or a bare base64 Ed25519 seed (dkimpy's format)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DkimKeyError(f"cannot read DKIM key {path}: {e.strerror}") from e
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise DkimKeyError(f"{path}: not an unencrypted PEM private key ({e})") from e
    else:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except binascii.Error as e:
            raise DkimKeyError(f"{path}: neither a PEM private key nor a base64 Ed25519 seed") from e
        if len(seed) != 32:
            raise DkimKeyError(f"{path}: neither a PEM private key nor a base64 Ed25519 seed")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise DkimKeyError(f"{path}: a {type(key).__name__}, but DKIM signs with RSA or Ed25519 only")
    return key


def key_warnings(path: str | Path) -> list[str]:
    """What is wrong with a key file, for `mailgw check`; [] when nothing is."""
    try:
        info = os.stat(path)
    except OSError as e:
        return [f"cannot read DKIM key {path}: {e.strerror}"]
    mode, owner = info.st_mode, info.st_uid
    problems = []
    if hasattr(os, "geteuid") and owner != os.geteuid():
        problems.append(f"DKIM key {path} is owned by uid {owner}, not by the user running mailgw (uid {os.geteuid()}); run chown")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(
            f"DKIM key {path} is accessible to group or others (mode {stat.S_IMODE(mode):04o}); run chmod 600"
        )
    try:
        key = load_key(path)
    except DkimKeyError as e:
        return problems + [str(e)]
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < RECOMMENDED_RSA_BITS:
        problems.append(f"DKIM key {path} is RSA of {key.key_size} bits; use {RECOMMENDED_RSA_BITS} bits or Ed25519 with RSA")
    return problems


def keygen(domain: str, selector: str, algorithm: str, key_dir: str | Path, *, rsa_bits: int = RECOMMENDED_RSA_BITS) -> tuple[Path, str]:
    """Make a key pair: write the private key to ``key_dir/DOMAIN.SELECTOR.key`` (mode 0600) and return it with the DNS record.

    ``algorithm`` is ``ed25519`` or ``rsa``. An existing file is never
    overwritten (``FileExistsError``): replacing a published key by accident
    would break every signature until DNS catches up.
    """
    domain, selector = _check_name(domain, "domain"), _check_name(selector, "selector")
    kind = algorithm.lower().removesuffix("-sha256")
    key: PrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        if rsa_bits < RECOMMENDED_RSA_BITS:
            raise ValueError(f"RSA keys of fewer than {RECOMMENDED_RSA_BITS} bits are not made")
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r} (ed25519 or rsa)")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    directory = Path(key_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{domain}.{selector}.key"
    # Created 0600 from the start: a chmod afterwards would leave a window
    # in which the key is readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return path, txt_record(domain, selector, key)


def txt_record(domain: str, selector: str, key: PrivateKey) -> str:
    """The zone-file line that publishes ``key``'s public half, strings cut at 255 octets."""
    value = "v=DKIM1; k={}; p={}".format(*_public_tags(key))
    strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT {strings}"


def published_key_problem(key: SigningKey, records: list[bytes]) -> str | None:
    """What is wrong with the TXT records published for ``key`` (at ``selector._domainkey.domain``); None when one matches.

    A record matches when its ``p=`` is the key's public half and its ``k=``
    (default ``rsa``) the key's type; receivers would fail every signature otherwise.
    """
    name = f"{key.selector}._domainkey.{key.domain}"
    if not records:
        return f"no DNS TXT record at {name}: receivers cannot verify this key's signatures (publish what `mailgw dkim keygen` printed)"
    kind, public = _public_tags(key.private_key)
    for record in records:
        tags = {}
        for part in record.decode("ascii", "replace").split(";"):
            tag, eq, value = part.partition("=")
            if eq:
                tags[tag.strip().lower()] = "".join(value.split())
        if tags.get("p") == public and tags.get("k", "rsa").lower() == kind:
            return None
    return f"the DNS TXT record at {name} does not publish this key: receivers will fail its signatures"


def _public_tags(key: PrivateKey) -> tuple[str, str]:
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "rsa", base64.b64encode(der).decode("ascii")


def _algorithm_of(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA_SHA256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ED25519_SHA256
    raise DkimKeyError(f"a {type(key).__name__} cannot make DKIM signatures (RSA or Ed25519 only)")


def _check_name(name: str, what: str) -> str:
    try:
        ascii_name = name.strip().rstrip(".").lower().encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"not a valid DKIM {what}: {name!r}") from e
    if not _NAME.match(ascii_name) or len(ascii_name) > 253:
        raise ValueError(f"not a valid DKIM {what}: {name!r}")
    return ascii_name
