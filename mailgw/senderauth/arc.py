"""ARC (RFC 8617) with dkimpy: verify the chain of inbound mail, judge a trusted forwarder's word, seal what we pass on.

``await verify(raw, resolver)`` checks the ARC sets of a message: every seal, and the
latest ARC-Message-Signature (older ones are expected to break: each forwarder may
change the message). The keys are fetched first, concurrently, through the gateway's
resolver (at most ``MAX_KEYS``), then dkimpy's ``ARC.verify`` runs over them; it never
asks DNS itself. ``vouches(arc, from_domain)`` says whether a passing chain, sealed last
by a forwarder the directory trusts, recorded that the message authenticated for its
From domain when the forwarder received it (``dmarc=pass header.from=<that domain>``,
or ``dkim=pass`` with a ``header.d`` aligned with it): RFC 7489's local policy override
(section 7.2, ``trusted_forwarder``). ``seal(...)`` adds our ARC set (dkimpy's
``ARC.sign``: RSA-SHA256, relaxed/relaxed, our Authentication-Results copied into
ARC-Authentication-Results).

Invariants:

- a DNS failure for a key the chain needs is ``temperror``, never ``fail``;
- more than ``MAX_SETS`` sets (RFC 8617 section 4.2.1), more than ``MAX_KEYS`` distinct
  keys, ARC fields with no instance, or a set missing a field: ``fail``, without
  more work;
- a chain an earlier hop already marked ``cv=fail`` is ``fail`` (and never sealed
  again: section 5.1.1);
- nothing a message holds makes this module raise: dkimpy's exceptions (and its
  IndexErrors on odd spacing) are a ``fail`` with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
from typing import Any, Mapping, Protocol, Sequence

import authres
import dkim
from cryptography.hazmat.primitives import serialization
from dkim.util import parse_tag_value
from msgspec.structs import replace

from mailgw.config.resolver import DnsTemporaryError
from mailgw.dkim.orgdomain import aligned, normalise
from mailgw.message.facts import ArcFacts, ArcSet

__all__ = ["MAX_KEYS", "MAX_SETS", "ArcSealError", "ArcSealKey", "load_seal_key", "present", "seal", "verify", "vouches"]

MAX_SETS = 50  # RFC 8617 section 4.2.1: i= is 1 to 50
MAX_KEYS = 10  # distinct (selector, domain) keys fetched for one chain: five hops with two keys each
MAX_RECORDED = 4096  # characters of an ARC-Authentication-Results value read
MAX_RESULTS = 16  # resinfos kept from it

_FIELDS = re.compile(rb"^arc-(?:seal|message-signature|authentication-results)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_INSTANCE = re.compile(rb"^\s*i\s*=\s*\d+\s*;\s*")

# dkimpy logs every failed check at ERROR; a forged chain is the sender's problem, not ours.
_QUIET = logging.getLogger("mailgw.senderauth.arc.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class TxtResolver(Protocol):
    async def txt(self, name: str) -> list[bytes]: ...


class ArcSealError(Exception):
    """Our ARC set could not be made (the reason is in the message)."""


@dataclasses.dataclass(frozen=True)
class ArcSealKey:
    """The key that seals: ``d=domain``, ``s=selector``, the RSA private key as PEM (dkimpy's form)."""

    domain: str
    selector: str
    pem: bytes = dataclasses.field(repr=False)
    private_key: Any = dataclasses.field(repr=False, default=None)  # the same key, for OpenSSL to sign with


def load_seal_key(settings: Any, keyring: Mapping[str, Sequence[Any]]) -> ArcSealKey | None:
    """The sealing key the settings' ``arc:`` names among the loaded ``dkim:`` keys; None without ``arc:``.

    Raises ConfigError (the settings file and the ``arc:`` line) when it names no
    loaded key, or one that is not RSA: dkimpy seals with RSA-SHA256 only, the one
    algorithm every ARC verifier knows (RFC 8617 section 4.1.3 defers to DKIM's, and
    Ed25519 ARC seals are not verified by the large receivers).
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailgw.config.yamlfile import ConfigError, Problem

    wanted = getattr(settings, "arc", None)
    if wanted is None:
        return None
    keys = [k for k in keyring.get(normalise(wanted.domain), ()) if not wanted.selector or k.selector == wanted.selector.lower()]
    rsa_keys = [k for k in keys if isinstance(k.private_key, rsa.RSAPrivateKey)]
    which = f"{wanted.domain}" + (f" (selector {wanted.selector})" if wanted.selector else "")
    problem = None
    if not keys:
        problem = f"arc: no key of 'dkim:' is for {which}: the sealing key must be one of them"
    elif not rsa_keys:
        problem = f"arc: the key of {which} is not RSA: ARC seals are RSA-SHA256"
    elif len(rsa_keys) > 1:
        problem = f"arc: {wanted.domain} has {len(rsa_keys)} RSA keys: name the one that seals with 'selector:'"
    if problem:
        raise ConfigError([Problem(settings.file, wanted.line, problem)])
    key = rsa_keys[0]
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return ArcSealKey(key.domain, key.selector, pem, key.private_key)


def present(raw: bytes) -> bool:
    """Whether the header section has any ARC field (most mail has none: nothing else is done for it)."""
    end = raw.find(b"\r\n\r\n")
    return _FIELDS.search(raw if end < 0 else raw[: end + 2]) is not None


async def verify(raw: bytes, resolver: TxtResolver) -> ArcFacts:
    """The ARC verdict of ``raw`` (see the module docstring); ``resolver`` answers the key lookups."""
    if not present(raw):
        return ArcFacts()
    try:
        arc = _Verifier(raw)
        top, fields = arc.sorted_arc_headers()
        arc.top = top
    except Exception as e:  # noqa: BLE001 - dkimpy's parser on hostile input: a fail, never a crash
        return ArcFacts(result="fail", reason=f"ARC fields cannot be read ({type(e).__name__})")
    if top == 0:
        return ArcFacts(result="fail", reason="ARC fields without an instance tag i=")
    sets = _sets(fields)
    latest = sets.get(top, {})
    sealer = _tag(latest.get("seal"), b"d")
    base = ArcFacts(result="fail", sets=top, sealer=sealer, recorded=_recorded(latest.get("results")))
    if top > MAX_SETS:
        return _replace(base, reason=f"more than {MAX_SETS} ARC sets (RFC 8617 section 4.2.1)")
    missing = [i for i in range(1, top + 1) if len(sets.get(i, {})) != 3]
    if missing:
        return _replace(base, reason=f"ARC set {missing[0]} is incomplete or missing")
    names = _key_names(sets, top)
    if len(names) > MAX_KEYS:
        return _replace(base, reason=f"the chain needs more than {MAX_KEYS} keys")
    fetched = await asyncio.gather(*(_fetch(resolver, name) for name in names))
    keys = dict(zip(names, fetched))
    failed_lookups = [n for n, v in keys.items() if isinstance(v, DnsTemporaryError)]

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower().rstrip(".")
        value = keys.get(key)
        if isinstance(value, DnsTemporaryError):
            raise dkim.DnsTimeoutError(str(value))
        return value

    try:
        cv, results, reason = arc.verify(dnsfunc=dnsfunc)
    except Exception as e:  # noqa: BLE001 - see the module docstring
        cv, results, reason = dkim.CV_Fail, [], f"{type(e).__name__}: {e}"
    chain = [_set(r) for r in reversed(results)]
    if cv == dkim.CV_Pass:
        return _replace(base, result="pass", reason="every seal and the latest message signature verify", chain=chain)
    if cv is None:
        return _replace(base, reason=_text(reason), chain=chain)  # an earlier hop recorded cv=fail
    if failed_lookups:
        return _replace(base, result="temperror", reason=f"key lookup failed: {failed_lookups[0]}", chain=chain)
    return _replace(base, reason=_text(reason), chain=chain)


def vouches(arc: ArcFacts | None, from_domain: str, *, strict_dkim: bool = False) -> str | None:
    """The recorded result that vouches for ``from_domain``, when a trusted forwarder's passing chain has one; else None.

    What counts: ``dmarc=pass`` for that very From domain, or ``dkim=pass`` whose
    ``header.d`` is aligned with it (strictly when the domain's DMARC record asks
    ``adkim=s``). SPF alone does not: the forwarder's own DMARC verdict covers it.
    """
    if arc is None or arc.result != "pass" or not arc.trusted or not arc.recorded:
        return None
    from_domain = normalise(from_domain)
    try:
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: x; " + "; ".join(arc.recorded))
    except Exception:  # noqa: BLE001 - recorded strings came from authres itself; any oddity vouches for nothing
        return None
    found: dict[str, str] = {}
    for res in parsed.results:
        result = str(res.result or "").lower()
        props = {f"{p.type}.{p.name}".lower(): str(p.value or "").lower() for p in res.properties}
        if res.method == "dmarc" and result == "pass" and normalise(props.get("header.from", "")) == from_domain:
            found.setdefault("dmarc", str(res))
        d = props.get("header.d", "")
        if res.method == "dkim" and result == "pass" and d and aligned(d, from_domain, strict=strict_dkim):
            found.setdefault("dkim", str(res))
    return found.get("dmarc") or found.get("dkim")  # the forwarder's own DMARC verdict says the most


class _Verifier(dkim.ARC):  # type: ignore[misc]
    """dkimpy's ARC verifier that hashes the body for the latest ARC-Message-Signature only.

    dkimpy checks every set's message signature, each with its own body hash (0.7 s
    of CPU for a 10 MB body): fifty forged sets would cost half a minute. Only the
    latest must hold (RFC 8617 section 5.2 step 5; a later hop's changes break the
    older ones, and dkimpy's verdict reads the latest only), so the older ones are
    checked against an empty body and reported as not checked; their seals, which
    cover no body, are all verified.
    """

    top = 0
    body: bytes

    def __init__(self, message: bytes):
        super().__init__(message, logger=_QUIET, minkey=1024)

    def verify_instance(self, arc_headers_w_instance: Any, instance: int, dnsfunc: Any = None) -> dict[str, Any]:
        if instance == self.top:
            latest: dict[str, Any] = super().verify_instance(arc_headers_w_instance, instance, dnsfunc=dnsfunc)
            return latest
        body, self.body = self.body, b""
        try:
            older: dict[str, Any] = super().verify_instance(arc_headers_w_instance, instance, dnsfunc=dnsfunc)
        finally:
            self.body = body
        older["ams-valid"] = None
        return older


class _Sealer(dkim.ARC):  # type: ignore[misc]
    """dkimpy's ARC signer with its RSA signatures made by OpenSSL (``cryptography``).

    dkimpy signs in pure Python (``pow`` on 1024-bit halves): 13 ms of CPU per
    signature, two per seal, four times the whole pipeline's cost for a message.
    ``gen_header`` is dkimpy 1.1's own, but for the one line that signs (dkimpy is
    capped below 1.2 for this and mailgw/dkim's use of its internals).
    """

    def __init__(self, message: bytes, key: Any):
        super().__init__(message, logger=_QUIET, signature_algorithm=b"rsa-sha256")
        self._key = key

    def gen_header(self, fields: list[tuple[bytes, bytes]], include_headers: Any, canon_policy: Any, header_name: bytes,
                   pk: Any, standardize: bool = False) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        header_value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        h = dkim.HashThrough(self.hasher(), False)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(h, canon_policy, headers, include_headers, (header_name, b" " + header_value),
                                                dict(fields))
        signature = self._key.sign(h.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        idx = [i for i in range(len(fields)) if fields[i][0] == b"b"][0]
        fields[idx] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        folded: bytes = dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)
        return folded


def seal(message: bytes, *, domain: str, selector: str, pem: bytes, authserv_id: str, now: float | None = None,
         key: Any = None) -> bytes:
    """Our ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, CRLF-terminated) for the top of ``message``.

    ``message`` is the exact bytes that will be queued, with our Authentication-Results
    (authserv-id ``authserv_id``) in it: dkimpy copies that field into the
    ARC-Authentication-Results and takes ``cv=`` from its ``arc=`` clause. Raises
    ArcSealError when no set can be made (the message's chain forbids one, or signing failed).
    """
    try:
        if key is None:
            key = serialization.load_pem_private_key(pem, password=None)
        signer = _Sealer(message, key)
        fields = signer.sign(selector.encode("ascii"), domain.encode("ascii"), pem, authserv_id.encode("ascii"),
                             timestamp=int(now) if now is not None else None)
    except Exception as e:  # noqa: BLE001 - dkimpy raises several kinds; the caller decides what a failure means
        raise ArcSealError(f"{type(e).__name__}: {e}") from e
    if not fields:
        raise ArcSealError(f"no Authentication-Results of {authserv_id} that dkimpy could read, or a terminated chain")
    return b"".join(fields)


# --- helpers --------------------------------------------------------------------


def _sets(fields: list[tuple[int, tuple[bytes, bytes]]]) -> dict[int, dict[str, bytes]]:
    """Instance -> {"seal", "signature", "results"}: the relaxed field values of each set (a repeated field spoils its set)."""
    kinds = {b"arc-seal": "seal", b"arc-message-signature": "signature", b"arc-authentication-results": "results"}
    out: dict[int, dict[str, bytes]] = {}
    spoiled: set[int] = set()
    for instance, (name, value) in fields:
        kind = kinds[name.lower()]
        if kind in out.setdefault(instance, {}):
            spoiled.add(instance)
        out[instance][kind] = value
    for instance in spoiled:
        out[instance] = {}
    return out


def _tag(value: bytes | None, tag: bytes) -> str | None:
    if not value:
        return None
    try:
        found = parse_tag_value(value).get(tag)
    except Exception:  # noqa: BLE001 - InvalidTagValueList and others on hostile tag lists
        return None
    return found.decode("ascii", "replace").strip().lower() if found else None


def _key_names(sets: dict[int, dict[str, bytes]], top: int) -> list[str]:
    """The key names (``s._domainkey.d``) of every seal and signature, newest set first, each once."""
    names: list[str] = []
    for instance in range(top, 0, -1):
        for kind in ("seal", "signature"):
            d, s = _tag(sets[instance].get(kind), b"d"), _tag(sets[instance].get(kind), b"s")
            if d and s:
                name = f"{s}._domainkey.{d}"
                if name not in names:
                    names.append(name)
    return names


async def _fetch(resolver: TxtResolver, name: str) -> bytes | None | DnsTemporaryError:
    try:
        records = await resolver.txt(name)
    except DnsTemporaryError as e:
        return e
    return records[0] if records else None


def _recorded(value: bytes | None) -> list[str]:
    """The resinfos of an ARC-Authentication-Results value (``i=N; authserv-id; ...``), comments dropped; [] when unreadable."""
    if not value:
        return []
    text = _INSTANCE.sub(b"", value[:MAX_RECORDED]).decode("utf-8", "replace").strip()
    try:
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + text)
    except Exception:  # noqa: BLE001 - authres raises its own SyntaxError and others on hostile text
        return []
    return [_text(str(r), 300) for r in parsed.results[:MAX_RESULTS]]


def _set(result: dict[str, Any]) -> ArcSet:
    def text(key: str) -> str:
        value = result.get(key, b"")
        return value.decode("ascii", "replace").lower() if isinstance(value, bytes) else str(value)

    return ArcSet(instance=int(result.get("instance", 0)), seal_domain=text("as-domain"),
                  seal_selector=text("as-selector"), cv=text("cv"), seal_valid=bool(result.get("as-valid")),
                  signature_domain=text("ams-domain"),
                  signature_valid=None if result.get("ams-valid") is None else bool(result.get("ams-valid")))


def _text(reason: object, limit: int = 200) -> str:
    """A reason as one printable line, bounded."""
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return " ".join(text.split())[:limit]


def _replace(facts: ArcFacts, **changes: Any) -> ArcFacts:
    return replace(facts, **changes)
