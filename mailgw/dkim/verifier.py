"""DKIM verification of inbound mail, before policy decides what a failed or missing signature means."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import email.policy
import hashlib
import re
import time
from typing import Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from mailgw.config.resolver import DnsTemporaryError, TxtResolver
from mailgw.dkim import canon, orgdomain
from mailgw.dkim.results import (
    FAIL,
    NEUTRAL,
    PASS,
    PERMERROR,
    POLICY,
    TEMPERROR,
    DkimReport,
    SignatureResult,
)

PublicKey = Union[rsa.RSAPublicKey, ed25519.Ed25519PublicKey]

MAX_SIGNATURES = 5  # each costs a DNS query and a signature check (OpenDKIM issue #271)
MIN_RSA_BITS = 1024  # RFC 8301: shorter keys never verify
CLOCK_SKEW = 300  # seconds of leeway for t= and x=
MAX_SIGNED_HEADERS = 100  # h= entries; each costs a scan of the header (real signers list under 50)

_DNS_NAME = re.compile(rb"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*$")
_KEY_TYPES = {canon.RSA_SHA256: b"rsa", canon.ED25519_SHA256: b"ed25519"}


class _Invalid(Exception):
    """Ends the check of one signature with ``result`` and a reason."""

    def __init__(self, result: str, reason: str):
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Signature:
    header: tuple[bytes, bytes]
    tags: dict[bytes, bytes]
    d: str
    s: str
    a: str
    include: list[bytes]
    policy: CanonicalizationPolicy
    length: int | None
    body_hash: bytes
    signature: bytes
    identity_domain: str | None

    @property
    def key_name(self) -> str:
        return f"{self.s}._domainkey.{self.d}."


@dataclasses.dataclass(frozen=True)
class _Key:
    public: PublicKey
    kind: bytes
    bits: int
    strict_identity: bool  # t=s: i= must be exactly d=


async def verify(
    message: bytes,
    resolver: TxtResolver,
    *,
    now: float | None = None,
    max_signatures: int = MAX_SIGNATURES,
    min_rsa_bits: int = MIN_RSA_BITS,
) -> DkimReport:
    """Check every DKIM-Signature of ``message`` (the first ``max_signatures``, top down).

    Key lookups run concurrently through ``resolver``; a DNS failure gives
    ``temperror`` for the signatures that needed that key, never ``fail``.
    Never raises for anything found in the message.
    """
    now = time.time() if now is None else now
    try:
        headers, body = canon.parse_message(message)
    except canon.MessageFormatError as e:
        return DkimReport(signatures=(), from_domain=None, error=f"message header cannot be parsed: {e}")
    from_domain = _author_domain(headers)
    fields = [(n, v) for n, v in headers if n.lower() == b"dkim-signature"]
    parsed: list[_Signature | SignatureResult] = []
    for field in fields[:max_signatures]:
        try:
            parsed.append(_parse_signature(field, now))
        except _Invalid as e:
            parsed.append(_unparsed_result(field, e.result, e.reason))
    names = sorted({p.key_name for p in parsed if isinstance(p, _Signature)})
    fetched = await asyncio.gather(*(_fetch_key(resolver, name) for name in names))
    keys = dict(zip(names, fetched))
    bodies: dict[bytes, tuple[bytes, bytes]] = {}  # canonical body per body algorithm (simple/relaxed)
    results = []
    for p in parsed:
        if isinstance(p, _Signature):
            p = _check(p, keys[p.key_name], headers, body, bodies, min_rsa_bits)
        results.append(dataclasses.replace(p, aligned=from_domain is not None and orgdomain.aligned(p.d, from_domain)))
    for field in fields[max_signatures:]:
        results.append(_unparsed_result(field, NEUTRAL, f"not checked: more than {max_signatures} signatures"))
    return DkimReport(signatures=tuple(results), from_domain=from_domain)


def _parse_signature(field: tuple[bytes, bytes], now: float) -> _Signature:
    try:
        tags = parse_tag_value(field[1])
    except InvalidTagValueList as e:
        raise _Invalid(PERMERROR, f"malformed signature ({e.__class__.__name__})") from e
    for tag in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in tags:
            raise _Invalid(PERMERROR, f"signature has no {tag.decode()}= tag")
    if tags[b"v"] != b"1":
        raise _Invalid(PERMERROR, "unsupported signature version")
    algorithm = tags[b"a"].decode("ascii", "replace").lower()
    if algorithm == "rsa-sha1":
        raise _Invalid(PERMERROR, "rsa-sha1 is not accepted (RFC 8301)")
    if algorithm not in _KEY_TYPES:
        raise _Invalid(PERMERROR, "unknown signature algorithm")
    for tag in (b"d", b"s"):
        if not _DNS_NAME.match(tags[tag]) or len(tags[tag]) > 253:
            raise _Invalid(PERMERROR, f"{tag.decode()}= is not a domain name")
    d, s = tags[b"d"].decode().lower(), tags[b"s"].decode().lower()
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple").lower())
    except InvalidCanonicalizationPolicyError as e:
        raise _Invalid(PERMERROR, "unknown canonicalization") from e
    include = canon.split_header_list(tags[b"h"])
    if b"from" not in include:
        raise _Invalid(PERMERROR, "From is not signed")
    if len(include) > MAX_SIGNED_HEADERS:
        raise _Invalid(PERMERROR, f"h= lists more than {MAX_SIGNED_HEADERS} header fields")
    if b"q" in tags and b"dns/txt" not in [q.strip().lower() for q in tags[b"q"].split(b":")]:
        raise _Invalid(PERMERROR, "unsupported query method")
    identity_domain = None
    if b"i" in tags:
        identity_domain = tags[b"i"].rpartition(b"@")[2].decode("ascii", "replace").lower()
        if identity_domain != d and not identity_domain.endswith("." + d):
            raise _Invalid(PERMERROR, "i= is not within d=")
    length = _number(tags, b"l")
    signed_at = _number(tags, b"t")
    expires = _number(tags, b"x")
    if signed_at is not None and signed_at > now + CLOCK_SKEW:
        raise _Invalid(PERMERROR, "signature timestamp t= is in the future")
    if expires is not None:
        if signed_at is not None and expires < signed_at:
            raise _Invalid(PERMERROR, "x= is earlier than t=")
        if expires + CLOCK_SKEW < now:
            raise _Invalid(PERMERROR, "signature expired (x=)")
    return _Signature(
        header=(field[0], field[1]),
        tags=tags,
        d=d,
        s=s,
        a=algorithm,
        include=include,
        policy=policy,
        length=length,
        body_hash=_base64(tags[b"bh"], "bh="),
        signature=_base64(tags[b"b"], "b="),
        identity_domain=identity_domain,
    )


async def _fetch_key(resolver: TxtResolver, name: str) -> _Key | _Invalid:
    try:
        records = await resolver.txt(name)
    except DnsTemporaryError as e:
        return _Invalid(TEMPERROR, f"key lookup failed: {e}")
    if not records:
        return _Invalid(PERMERROR, f"no key published at {name}")
    problems = []
    for record in records:
        try:
            return _parse_key(record)
        except _Invalid as e:
            problems.append(e)
    return problems[0]


def _parse_key(record: bytes) -> _Key:
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as e:
        raise _Invalid(PERMERROR, "malformed key record") from e
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        raise _Invalid(PERMERROR, "key record is not v=DKIM1")
    if b"h" in tags and b"sha256" not in [h.strip().lower() for h in tags[b"h"].split(b":")]:
        raise _Invalid(PERMERROR, "key does not allow sha256")
    if b"s" in tags and not {b"*", b"email"} & {x.strip().lower() for x in tags[b"s"].split(b":")}:
        raise _Invalid(PERMERROR, "key is not for email")
    kind = tags.get(b"k", b"rsa").lower()
    p = re.sub(rb"\s+", b"", tags.get(b"p", b""))
    if not p:
        raise _Invalid(PERMERROR, "key revoked (empty p=)")
    try:
        raw = base64.b64decode(p, validate=True)
    except binascii.Error as e:
        raise _Invalid(PERMERROR, "key p= is not base64") from e
    public: PublicKey
    try:
        if kind == b"rsa":
            loaded = serialization.load_der_public_key(raw)
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise _Invalid(PERMERROR, "k=rsa but p= is not an RSA key")
            public, bits = loaded, loaded.key_size
        elif kind == b"ed25519":
            public, bits = ed25519.Ed25519PublicKey.from_public_bytes(raw), 256
        else:
            raise _Invalid(PERMERROR, "unknown key type k=")
    except (ValueError, UnsupportedAlgorithm) as e:
        raise _Invalid(PERMERROR, "key p= cannot be parsed") from e
    flags = {f.strip().lower() for f in tags.get(b"t", b"").split(b":")}
    return _Key(public=public, kind=kind, bits=bits, strict_identity=b"s" in flags)


def _check(
    sig: _Signature,
    key: _Key | _Invalid,
    headers: list[list[bytes]],
    body: bytes,
    bodies: dict[bytes, tuple[bytes, bytes]],
    min_rsa_bits: int,
) -> SignatureResult:
    bits = key.bits if isinstance(key, _Key) else None
    result = SignatureResult(d=sig.d, s=sig.s, a=sig.a, result=PASS, covers_body=sig.length is None,
                             key_bits=bits, b_prefix=_b_prefix(sig.tags[b"b"]))
    try:
        if isinstance(key, _Invalid):
            raise key
        if key.kind != _KEY_TYPES[sig.a]:
            raise _Invalid(PERMERROR, "key type does not match a=")
        if key.strict_identity and sig.identity_domain not in (None, sig.d):
            raise _Invalid(PERMERROR, "key requires i= in d= itself (t=s)")
        if key.kind == b"rsa" and key.bits < min_rsa_bits:
            raise _Invalid(POLICY, f"RSA key too short ({key.bits} bits, {min_rsa_bits} needed)")
        computed, full_length = _body_hash(sig, body, bodies)
        if sig.length is not None and sig.length > full_length:
            raise _Invalid(FAIL, "l= is longer than the body")
        if computed != sig.body_hash:
            raise _Invalid(FAIL, "body hash mismatch")
        # A From above the signed ones is what a reader sees: if h= lists
        # fewer From than the message has, one of them is unsigned.
        from_count = sum(1 for name, _ in headers if name.lower() == b"from")
        if from_count > sig.include.count(b"from"):
            raise _Invalid(FAIL, "unsigned From header added")
        data = canon.signed_header_data(headers, sig.include, sig.policy, sig.header)
        _verify_raw(key.public, sig.signature, data)
    except _Invalid as e:
        return dataclasses.replace(result, result=e.result, reason=e.reason)
    if sig.length is not None:
        return dataclasses.replace(result, reason=f"body signed only up to l={sig.length}")
    return result


def _body_hash(sig: _Signature, body: bytes, bodies: dict[bytes, tuple[bytes, bytes]]) -> tuple[bytes, int]:
    algorithm = sig.policy.body_algorithm.name
    if algorithm not in bodies:
        canonical = canon.canonical_body(body, sig.policy)
        bodies[algorithm] = (canonical, hashlib.sha256(canonical).digest())
    canonical, whole = bodies[algorithm]
    if sig.length is None:
        return whole, len(canonical)
    return hashlib.sha256(canonical[: sig.length]).digest(), len(canonical)


def _verify_raw(public: PublicKey, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, hashlib.sha256(data).digest())
        else:
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as e:
        raise _Invalid(FAIL, "signature did not verify") from e


def _unparsed_result(field: tuple[bytes, bytes], result: str, reason: str) -> SignatureResult:
    """A result for a signature that was not (or could not be) checked, with what can be read of it."""
    try:
        tags = parse_tag_value(field[1])
    except InvalidTagValueList:
        tags = {}

    def tag(name: bytes) -> str:
        value = tags.get(name, b"")
        return value.decode("ascii", "replace").lower() if _DNS_NAME.match(value) or name == b"a" else ""

    return SignatureResult(d=tag(b"d"), s=tag(b"s"), a=tag(b"a"), result=result, reason=reason,
                           covers_body=b"l" not in tags, b_prefix=_b_prefix(tags.get(b"b", b"")))


def _author_domain(headers: list[list[bytes]]) -> str | None:
    """The domain of the single address in the single From field; None when that is not what the message has."""
    values = [v for n, v in headers if n.lower() == b"from"]
    if len(values) != 1:
        return None
    text = re.sub(r"\r?\n", "", values[0].decode("utf-8", "replace")).strip()
    try:
        parsed = email.policy.default.header_factory("From", text)
        addresses = parsed.addresses
    except Exception:  # noqa: BLE001 - the stdlib parser may raise many things on hostile input
        return None
    if len(addresses) != 1 or not addresses[0].domain:
        return None
    domain = orgdomain.normalise(addresses[0].domain)
    return domain if _DNS_NAME.match(domain.encode("ascii", "replace")) else None


def _number(tags: dict[bytes, bytes], tag: bytes) -> int | None:
    if tag not in tags:
        return None
    value = tags[tag].strip()
    if not re.fullmatch(rb"\d{1,76}", value):
        raise _Invalid(PERMERROR, f"{tag.decode()}= is not a number")
    return int(value)


def _base64(value: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(re.sub(rb"\s+", b"", value), validate=True)
    except binascii.Error as e:
        raise _Invalid(PERMERROR, f"{what} is not base64") from e


def _b_prefix(b_value: bytes) -> str:
    return re.sub(rb"\s+", b"", b_value)[:8].decode("ascii", "replace")
