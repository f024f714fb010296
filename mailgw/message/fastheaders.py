"""Exact shortcuts for the header values most messages carry, with the email package's full parser behind them.

``email.policy.default`` parses every header value with a general RFC 5322
parser that builds a token tree (a quarter of a millisecond for a From field).
Most messages carry the same few shapes: a From or To of the form
``Name <local@domain>`` or a bare address, a Subject that is plain text or
RFC 2047 encoded words, a Message-ID ``<left@right>``. For those shapes the
functions here compute what the full parser would give, using the parser's
own pieces where it matters (``get_encoded_word`` decodes the encoded words),
and return None for anything else: the caller then asks the full parser.

A shape is taken only when the full parser provably reads it without a
defect and in the same way; tests/test_fastheaders.py compares both on a
large set of ordinary and hostile values. When in doubt, None.
"""

from __future__ import annotations

import email.policy
import re
from email import _encoded_words as _ew  # type: ignore[attr-defined]  # private: not in typeshed
from email import _header_value_parser as parser
from email import headerregistry, utils
from email.headerregistry import Address
from typing import Any

# The email package's own helpers for what BaseHeader does to a decoded value (private: not in typeshed).
_has_surrogates: Any = utils._has_surrogates  # type: ignore[attr-defined]
_sanitize: Any = utils._sanitize  # type: ignore[attr-defined]

# RFC 5322 atext: exactly the printable ASCII characters the parser does not end an atom on.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# One encoded word as one whitespace-delimited token; get_encoded_word decides whether it is one.
_EW = r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?="
_EW_TOKEN = re.compile(_EW)

# One mailbox of an address list, then a comma or the end:
#   local@domain | [display] <local@domain>
# where display is atoms separated by white space, or one encoded word
# followed by white space, or a quoted string of printable ASCII without
# quoted pairs. The encoded-word branch comes first: an encoded word is also
# a run of atext, and atoms containing "=?" are refused below.
_MAILBOX = re.compile(
    rf"""[ \t]*
    (?:
        (?P<bare_local>{_DOT_ATOM})@(?P<bare_domain>{_DOT_ATOM})
      | (?:
            (?P<ew>{_EW})[ \t]+
          | (?P<atoms>{_ATEXT}+(?:[ \t]+{_ATEXT}+)*)[ \t]*
          | "(?P<quoted>[ !#-\[\]-~]+)"[ \t]*
        )?
        <(?P<local>{_DOT_ATOM})@(?P<domain>{_DOT_ATOM})>
    )
    [ \t]*(?:,|\Z)""",
    re.VERBOSE,
)
_WSP = re.compile(r"[ \t]+")
_SPACES = re.compile(r" {2,}")
_WSP_SPLIT = re.compile(r"([ \t]+)").split
_MSG_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>\Z")

_UNSTRUCTURED = (headerregistry.UnstructuredHeader, headerregistry.UniqueUnstructuredHeader)
_ADDRESS = (headerregistry.AddressHeader, headerregistry.UniqueAddressHeader)


def unfold(value: str) -> str:
    """What ``policy.header_fetch_parse`` hands the parser: the value without its CR and LF characters."""
    return value.replace("\r", "").replace("\n", "")


def _stored(value: Any) -> bool:
    """Whether ``value`` is a header value as the parser stores it (a header object set through the API is not)."""
    return isinstance(value, str) and not hasattr(value, "name")


def text(name: str, value: Any) -> str | None:
    """``str(email.policy.default.header_fetch_parse(name, value))`` for the shapes above, else None.

    ``value`` is a header value as the parser stored it (``raw_items``).
    """
    if not _stored(value):
        return None
    factory: Any = email.policy.default.header_factory  # a HeaderRegistry (typeshed says a callable)
    kind = factory.registry.get(name.lower(), factory.default_class)
    value = unfold(value)
    if kind in _UNSTRUCTURED:
        decoded = unstructured(value)
    elif kind in _ADDRESS:
        found = _address_list(value)
        decoded = None if found is None else ", ".join(str(a) for a in found)
    elif kind is headerregistry.MessageIDHeader:
        decoded = value if value.isascii() and _MSG_ID.match(value) else None
    else:
        return None
    if decoded is not None and _has_surrogates(decoded):  # as BaseHeader does
        decoded = _sanitize(decoded)
    return decoded


def unstructured(value: str) -> str | None:
    """The decoded text of an unfolded unstructured value (Subject ...): ``str(get_unstructured(value))``.

    Text without "=?" is its own decoded form; encoded words are decoded
    one by one, and the white space between two of them dropped (RFC 2047
    section 6.2), as ``get_unstructured`` does.
    """
    if "=?" not in value:
        return value
    pieces = _WSP_SPLIT(value)  # word, white space, word, ... (the first and last word may be empty)
    out: list[str] = []
    previous_ew = False
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(piece)
            continue
        if "=?" not in piece:
            out.append(piece)
            previous_ew = False
            continue
        ew = _encoded_word(piece)
        if ew is None:
            return None
        if previous_ew:
            out[-1] = ""  # the white space between two encoded words
        out.append(ew[0])
        previous_ew = True
    return "".join(out)


def addresses(value: Any) -> list[Address] | None:
    """The addresses of a stored address-list value (From, To, Cc) in the shapes above, else None.

    The same ``Address`` objects ``AddressHeader`` builds from the full parse
    (``header.addresses``), which in these shapes has no group and no defect.
    """
    return _address_list(unfold(value)) if _stored(value) else None


def _address_list(value: str) -> list[Address] | None:
    if not value.isascii():
        return None
    out: list[Address] = []
    pos, end = 0, len(value)
    while pos < end:
        m = _MAILBOX.match(value, pos)
        if m is None:
            return None
        pos = m.end()
        if pos < end and value[pos - 1] != ",":
            return None  # cannot happen: the pattern ends at a comma or the end
        if m["bare_local"] is not None:
            local, domain, display = m["bare_local"], m["bare_domain"], ""
        else:
            local, domain = m["local"], m["domain"]
            if m["ew"] is not None:
                ew = _encoded_word(m["ew"])
                # Printable text (no control, no white space but " ") gets no
                # defect from the parser, and its value is the text with each
                # run of spaces made one.
                if ew is None or ew[1] or not ew[0].isprintable():
                    return None
                display = _SPACES.sub(" ", ew[0])
            elif m["atoms"] is not None:
                if "=?" in m["atoms"]:
                    return None  # the parser would try it as an encoded word
                display = " ".join(_WSP.split(m["atoms"]))
            elif m["quoted"] is not None:
                if "=?" in m["quoted"]:
                    return None  # an encoded word inside a quoted string is a defect
                display = m["quoted"]
            else:
                display = ""
        if local.startswith("=?") or domain.startswith("=?"):
            return None  # a dot-atom starting so is tried as an encoded word
        out.append(Address(display, local, domain))
    if value.endswith(",") or not out:
        return None
    return out


def _encoded_word(token: str) -> tuple[str, bool] | None:
    """(decoded text, whether decoding noted a defect) when ``token`` is exactly one valid encoded word, else None.

    The text is ``str()`` of what ``get_encoded_word`` makes of the token
    (its pieces keep every character). The parser cuts the word at the first
    "?=" after "=?"; when that is the token's end, as it nearly always is,
    the word is ``_ew.decode``'s alone (25 times cheaper than building the
    parser's tokens); otherwise the parser itself reads it.
    """
    if not _EW_TOKEN.fullmatch(token):
        return None
    try:
        if token.find("?=", 2) == len(token) - 2:
            text, _charset, _lang, defects = _ew.decode(token)
            return text, bool(defects)
        ew, rest = parser.get_encoded_word(token)  # "=?utf-8?q?=C3=A0?=": see its hexdigits rule
        if rest:
            return None
        return str(ew), bool(ew.all_defects)
    except Exception:  # noqa: BLE001 - whatever it is, the full parser deals with it
        return None
