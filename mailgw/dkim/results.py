"""What DKIM verification found, and how it is told: the decision record (JSON), the Authentication-Results header, partner pinning."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Sequence

from mailgw.dkim.orgdomain import normalise
from mailgw.message.parsed import header_end

# RFC 8601 section 2.7.1 result values.
PASS, FAIL, NEUTRAL, POLICY, TEMPERROR, PERMERROR = "pass", "fail", "neutral", "policy", "temperror", "permerror"


@dataclasses.dataclass(frozen=True)
class SignatureResult:
    """One DKIM-Signature field and its verdict.

    ``result`` is an RFC 8601 value: ``pass``, ``fail`` (the signature or the
    body hash does not match, or an unsigned From was added), ``permerror``
    (bad signature syntax, no key, expired ``x=``...), ``temperror`` (DNS
    could not answer now), ``policy`` (key too short) or ``neutral`` (not
    checked: over the signature limit). ``covers_body`` is false when ``l=``
    leaves part of the body unsigned; such a signature never counts for
    alignment. ``aligned`` compares ``d=`` with the From domain (relaxed).
    """

    d: str
    s: str
    a: str
    result: str
    reason: str = ""
    covers_body: bool = True
    aligned: bool = False
    key_bits: int | None = None
    b_prefix: str = ""  # first characters of b=, to tell signatures apart (RFC 6008)

    @property
    def counts(self) -> bool:
        """A passing, whole-body signature by a domain aligned with From."""
        return self.result == PASS and self.covers_body and self.aligned

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the decision record."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DkimReport:
    """Every DKIM-Signature of a message and what they add up to."""

    signatures: tuple[SignatureResult, ...]
    from_domain: str | None  # None when there is no single From address
    error: str | None = None  # the header could not be parsed at all

    @property
    def aligned_pass(self) -> bool:
        return any(sig.counts for sig in self.signatures)

    @property
    def status(self) -> str:
        """``pass`` (an aligned whole-body pass), ``temperror`` (none, but a DNS answer may change that), ``none`` (unsigned) or ``fail``."""
        if self.aligned_pass:
            return PASS
        if any(sig.result == TEMPERROR for sig in self.signatures):
            return TEMPERROR
        if not self.signatures and self.error is None:
            return "none"
        return FAIL

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the decision record."""
        return {
            "status": self.status,
            "aligned_pass": self.aligned_pass,
            "from_domain": self.from_domain,
            "error": self.error,
            "signatures": [sig.to_json() for sig in self.signatures],
        }


def pinned_ok(report: DkimReport, pins: Iterable[tuple[str, str]]) -> bool:
    """Whether a signature that counts (pass, whole body, aligned) comes from one of the pinned (d=, s=) pairs."""
    wanted = {(normalise(d), s.strip().lower()) for d, s in pins}
    return any(sig.counts and (sig.d, sig.s) in wanted for sig in report.signatures)


def authentication_results(hostname: str, report: DkimReport, *, extra: Sequence[str] = ()) -> str:
    """The value of an RFC 8601 Authentication-Results field (after "Authentication-Results: ").

    One ``dkim=`` resinfo per signature, folded one per line; ``extra`` adds
    already-formatted resinfos for other methods (``spf=pass smtp.mailfrom=...``).
    """
    parts = []
    if report.error is not None:
        parts.append(f"dkim={PERMERROR} ({_comment(report.error)})")
    elif not report.signatures:
        parts.append("dkim=none")
    for sig in report.signatures:
        comments = []
        if sig.key_bits and sig.a.startswith("rsa"):
            comments.append(f"{sig.key_bits}-bit key")
        if sig.reason:
            comments.append(sig.reason)
        text = f"dkim={sig.result}"
        if comments:
            text += f" ({_comment('; '.join(comments))})"
        text += f" header.d={_value(sig.d)} header.s={_value(sig.s)} header.a={_value(sig.a)}"
        if sig.b_prefix:
            text += f" header.b={_value(sig.b_prefix)}"
        parts.append(text)
    parts.extend(extra)
    return ";\r\n\t".join([hostname, *parts])


def strip_forged_authentication_results(raw: bytes, hostname: str) -> bytes:
    """``raw`` without the Authentication-Results fields whose authserv-id is ``hostname`` (RFC 8601 section 5).

    Only we may claim our name; a field from outside that does is forged and
    would make downstream filters trust a check we never made. The body and
    every other field are kept byte for byte.
    """
    end = header_end(raw)
    if b"authentication-results" not in raw[:end].lower():
        return raw  # none at all, the usual case: not rebuilt (a copy of the whole message)
    fields: list[list[bytes]] = []
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    ours = hostname.strip().rstrip(".").lower()
    kept = [b"".join(f) for f in fields if _authserv_id(b"".join(f)) != ours]
    return b"".join(kept) + raw[end:]


_TOKEN = re.compile(r"[^\s()<>@,;:\\\"/\[\]?=]+")


def _authserv_id(field: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field, lower-cased; None for any other field."""
    name, colon, value = field.partition(b":")
    if not colon or name.strip().lower() != b"authentication-results":
        return None
    text = re.sub(r"\r?\n", "", value.decode("utf-8", "replace"))
    text = _skip_cfws(text)
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        ident = re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""
    else:
        match = _TOKEN.match(text)
        ident = match.group(0) if match else ""
    return ident.strip().rstrip(".").lower()


def _skip_cfws(text: str) -> str:
    """``text`` without its leading white space and (nested) comments."""
    text = text.lstrip()
    while text.startswith("("):
        depth, i = 0, 0
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                i += 1
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        text = text[i + 1:].lstrip()
    return text


def _comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment: printable ASCII, no parentheses or backslashes, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch not in "()\\" else "?" for ch in text)
    return cleaned[:200]


def _value(text: str) -> str:
    """A token as it is, anything else as a quoted-string (RFC 8601 ``value``)."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + "".join(ch for ch in text if " " <= ch <= "~" and ch not in '"\\') + '"'
