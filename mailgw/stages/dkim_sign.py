"""Stage: dkim_sign. The DKIM signatures of outbound mail, made last, over the exact bytes that will be queued.

On relay and submission, when the From address (``Facts.author``) is in a
local domain with keys in the settings' ``dkim:`` list, the message is signed
with every key of the most specific such domain (the From domain itself or a
parent: relaxed alignment): an RSA and an Ed25519 key give two signatures
(dual signing, RFC 8463 section 4). The library signs relaxed/relaxed, whole
body (no ``l=``), with the identity fields oversigned.

A message is never sent unsigned when it should be signed: a failure to sign
is our fault and gives 451 (the client tries again); a header section the
signer cannot parse is the message's own fault and gives 550 5.6.0.

``Facts.dkim`` becomes ``DkimFacts(signed=True, signatures=[(d, s, a), ...])``
(dkim_verify left it None on these listeners), which the decision record and
the compliance report read.

Keys are read once per Context by ``load_keys`` (at start and on every
reload), so a key file changed on disk takes effect on SIGHUP and a bad one
is a ``FILE:LINE`` problem then, never a surprise at signing time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Mapping

from mailgw.config.resolver import DnsTemporaryError
from mailgw.config.yamlfile import ConfigError, Problem
from mailgw.dkim import DkimKeyError, DkimSigningError, SigningKey, key_warnings, published_key_problem, sign
from mailgw.dkim.canon import MessageFormatError
from mailgw.dkim.orgdomain import normalise
from mailgw.message import replies
from mailgw.message.facts import DkimFacts, DkimSignature
from mailgw.message.model import Context, Message
from mailgw.message.replies import Defer, Reject

Keyring = Mapping[str, tuple[SigningKey, ...]]  # domain (A-labels) -> its keys, in settings order

_OUTBOUND_ROLES = ("relay", "submission")


def run(message: Message, ctx: Context) -> None:
    if message.envelope.role not in _OUTBOUND_ROLES:
        return
    # The pipeline stops at a refusal; this guard keeps a refused message unsigned anyway.
    if message.verdict.refused:
        return
    author = message.facts.author
    keys = keys_for(ctx.signing_keys, author)
    if not keys or author is None or not ctx.directory.is_local(author):
        return
    try:
        fields = sign(message.final_bytes(), keys, crlf=message.final_crlf_only())
    except DkimSigningError as e:
        if isinstance(e.__cause__, MessageFormatError):
            raise Reject(dataclasses.replace(replies.BAD_HEADER, reason=f"DKIM signing: {e}")) from e
        raise Defer(dataclasses.replace(replies.SIGNING_FAILED, reason=f"DKIM signing failed: {e}")) from e
    message.prepend[:0] = [fields]
    message.facts.dkim = DkimFacts(signed=True, signatures=[DkimSignature(d=k.domain, s=k.selector, a=k.algorithm)
                                                           for k in keys])


def keys_for(keyring: Keyring, author: str | None) -> tuple[SigningKey, ...]:
    """The keys that sign mail from ``author``: those of its domain, else of its nearest parent domain that has keys."""
    if not author or "@" not in author or not keyring:
        return ()
    labels = normalise(author.rpartition("@")[2]).split(".")
    for i in range(len(labels) - 1):
        keys = keyring.get(".".join(labels[i:]))
        if keys:
            return keys
    return ()


def load_keys(settings: Any, directory: Any = None) -> tuple[dict[str, tuple[SigningKey, ...]], list[Problem]]:
    """The settings' ``dkim:`` keys by domain, and the warnings about them (file mode and owner, short RSA keys, unused keys).

    Raises ConfigError naming the settings file and the entry's line for a key
    that cannot be used (unreadable, not a private key, too short, algorithm
    other than the entry says, the same domain and selector twice).
    """
    keyring: dict[str, list[SigningKey]] = {}
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for entry in settings.dkim:
        where = (settings.file, entry.line)
        try:
            key = SigningKey.from_file(entry.domain, entry.selector, entry.key)
        except (DkimKeyError, ValueError) as e:
            problems.append(Problem(*where, f"DKIM key for {entry.domain} (selector {entry.selector}): {e}"))
            continue
        if entry.algorithm and not key.algorithm.startswith(entry.algorithm):
            problems.append(Problem(*where, f"DKIM key {entry.key} is {key.algorithm}, not {entry.algorithm} as this entry says"))
            continue
        pair = (key.domain, key.selector)
        if pair in seen:
            problems.append(Problem(*where, f"DKIM selector {key.selector} of {key.domain} is already given at line {seen[pair]}"))
            continue
        seen[pair] = entry.line
        keyring.setdefault(key.domain, []).append(key)
        for text in key_warnings(entry.key):
            problems.append(Problem(*where, text, warning=True))
        if directory is not None and not directory.is_local_domain(key.domain):
            problems.append(Problem(*where, f"{key.domain} is not a local domain of the directory: this key never signs", warning=True))
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    return {domain: tuple(keys) for domain, keys in keyring.items()}, problems


def check_published(ctx: Context) -> list[Problem]:
    """Warnings for keys whose DNS record is missing or does not match, looked up through ``ctx.resolver``.

    For `mailgw check`. A lookup that fails (no DNS on this machine, a
    timeout) is a warning that the key could not be checked, never an error.
    """
    loaded = {(k.domain, k.selector): k for keys in ctx.signing_keys.values() for k in keys}
    entries = [(e, loaded[(normalise(e.domain), e.selector.lower())]) for e in ctx.settings.dkim
               if (normalise(e.domain), e.selector.lower()) in loaded]
    resolver = ctx.resolver
    if not entries or resolver is None:
        return []
    timeout = ctx.settings.dns.timeout

    async def one(key: SigningKey) -> str | None:
        name = f"{key.selector}._domainkey.{key.domain}"
        try:
            records = await asyncio.wait_for(resolver.txt(name), timeout)
        except (DnsTemporaryError, asyncio.TimeoutError) as e:
            return f"could not check the DNS record of DKIM key {name}: {str(e) or f'no answer within {timeout:g}s'}"
        return published_key_problem(key, records)

    async def all_keys() -> list[str | None]:
        return list(await asyncio.gather(*(one(key) for _, key in entries)))

    found = asyncio.run(all_keys())
    return [Problem(ctx.settings.file, entry.line, text, warning=True) for (entry, _), text in zip(entries, found) if text]
