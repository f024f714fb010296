"""PDF facts: JavaScript and launch actions, digital signatures and their signers, embedded files,
encryption and damage.

Two views, as the MIME walker does: every object pypdf can reach (through the
cross-reference table and the object streams, so compressed objects count)
and a scan of the raw bytes for the action names, which also finds objects a
damaged cross-reference table hides. pypdf runs with its resource limits
tightened for the call, as in mailgw.classify.docread.

A signature is a dictionary with ``/ByteRange`` and ``/Contents`` (document
timestamps, ``/DocTimeStamp``, are not signatures of a person). Its signer is
the subject of the certificate that the PKCS#7 SignerInfo names, read with
asn1crypto. Whether a signature is trusted is asked only when a trust store is
configured: pyHanko validates it (integrity, then the chain to a configured
root, no network fetches); without a store ``trusted`` is None, and so it is
when pyHanko cannot be imported (said once in the log at WARNING: unknown is
not the same as untrusted).

Encryption is told by the security handler the trailer's ``/Encrypt``
dictionary names: ``/Standard`` is a password (a PDF whose user password is
empty opens for every reader and is ``decrypted``, then read as usual), a
public-key handler (``/Adobe.PubSec``, ``/PubSec``; ``adbe.pkcs7.s3``-``s5``)
opens only for the holders of the recipients' certificates, and any other
handler is a third party's. pypdf opens only the standard handler, so the
dictionary is also found in the raw bytes when pypdf refuses the file.

A PDF pypdf cannot read (no cross-reference it can rebuild, a file cut short, no
document catalog or page tree) is ``damaged``, with the reason: its content was
not inspected, only scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import io
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from pypdf import PdfReader

from mailgw.attachments.budget import Budget, OverLimit

log = logging.getLogger(__name__)

# pypdf and pyHanko log a warning for every defect they repair, and the sender
# chooses the defects: left at WARNING, one hostile PDF could write thousands of
# lines into the gateway's log. What matters is in the facts.
for _name in ("pypdf", "pyhanko", "pyhanko_certvalidator"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_MAX_OBJECTS = 200_000     # indirect objects looked at
_MAX_NODES = 2_000_000     # dictionary entries and array items walked, in all
_MAX_NESTING = 64
_MAX_SIG_CONTENTS = 1 << 20
_ACTION_NAMES = re.compile(rb"/(?:JavaScript|JS|Launch)(?![A-Za-z0-9#])")
_ESCAPED_NAME = re.compile(rb"/[A-Za-z0-9]*#[0-9A-Fa-f]{2}[A-Za-z0-9#]*")
# The trailer's (or cross-reference stream's) /Encrypt entry, an indirect reference or a direct dictionary.
_ENCRYPT_REF = re.compile(rb"/Encrypt\s*(\d{1,10})\s+(\d{1,5})\s+R")
_ENCRYPT_DIRECT = re.compile(rb"/Encrypt\s*<<")
_FILTER = re.compile(rb"/Filter\s*/([A-Za-z0-9_.#+-]{1,64})")
_SUBFILTER = re.compile(rb"/SubFilter\s*/([A-Za-z0-9_.#+-]{1,64})")
_PUBLIC_KEY_HANDLERS = frozenset({"Adobe.PubSec", "PubSec", "Adobe.PPKLite.PubSec"})
_ENCRYPT_DICT = 4096  # bytes of the encryption dictionary looked at in the raw scan


@dataclasses.dataclass
class PdfFacts:
    javascript: bool = False
    launch: bool = False
    signatures: int = 0
    signers: list[str] = dataclasses.field(default_factory=list)
    trusted: bool | None = None
    encrypted: bool = False               # not openable: a password or certificate mailgw does not have
    encryption: str | None = None         # "password", "certificate" or "other" (the security handler)
    encrypted_reason: str | None = None   # why it stays closed
    decrypted: bool = False               # encrypted, but with an empty user password: read as usual
    damaged: str | None = None
    embedded: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)  # (name, bytes) of embedded files

    def to_json(self) -> dict[str, Any]:
        return {"javascript": self.javascript, "launch": self.launch, "signatures": self.signatures,
                "signers": list(self.signers), "trusted": self.trusted}


@contextlib.contextmanager
def hardened_reader(data: bytes, cap: int) -> Iterator[PdfReader]:
    """pypdf's reader for an attacker's bytes: the one place its limits are set (inspection and the classifier).

    Every stream decoder stops at ``cap`` bytes, the parser's work and the page
    tree are bounded, no external program is ever started, and the reader is
    lenient (``strict=False``) as the readers clerks use are. The limits hold for
    the ``with`` block (pypdf applies them per thread).
    """
    import pypdf  # imported on first use: most messages carry no PDF

    with pypdf.apply_configuration(
        zlib_maximum_output_length=cap, lzw_maximum_output_length=cap,
        run_length_maximum_output_length=cap, brotli_maximum_output_length=cap,
        array_based_stream_maximum_output_length=cap, image_maximum_buffer_size=cap,
        stream_decoding_work_maximum_length=4 * cap, maximum_declared_stream_length=cap,
        jbig2dec_binary=None,  # never start an external program for an attachment
        stream_parsing_work_maximum_count=400_000,
        page_tree_maximum_entries=20_000, page_tree_maximum_depth=32,
        xform_maximum_invocations_per_extraction=200,
        disable_legacy_handling=True,
    ):
        yield pypdf.PdfReader(io.BytesIO(data), strict=False)


def inspect(data: bytes, budget: Budget) -> PdfFacts:
    """The facts of one PDF; never raises except OverLimit for the message's time budget."""
    facts = PdfFacts()
    _scan_raw(data, facts)
    contents: list[bytes] = []
    try:
        _walk(data, budget, facts, contents, budget.limits.max_decoded_size)
    except _Stop as stop:
        facts.damaged = stop.reason
    except RecursionError:
        facts.damaged = "structure nested too deeply"
    except MemoryError:
        facts.damaged = "out of memory while reading"
    except OverLimit:
        raise
    except Exception as exc:
        if _limit(exc):
            facts.damaged = f"over a reading limit ({_short(exc)})"
        elif not _raw_encryption(data, facts):  # pypdf refuses every handler but the standard one
            facts.damaged = _damage(data, exc)
    for blob in contents:
        name = signer_name(blob)
        if name and name not in facts.signers:
            facts.signers.append(name)
    facts.signatures = len(contents)
    store = budget.limits.trust_store
    if store and facts.signatures:
        facts.trusted = _trusted(data, store, facts.signatures)
    return facts


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _raw_encryption(data: bytes, facts: PdfFacts) -> bool:
    """Whether the raw bytes' /Encrypt dictionary names a handler pypdf does not read (which is then why
    it refused the file); the encryption facts are set from it either way."""
    direct = None
    for direct in _ENCRYPT_DIRECT.finditer(data):
        pass  # the last one: an update's trailer comes after the original's
    refs = list(_ENCRYPT_REF.finditer(data))
    if refs and (direct is None or refs[-1].start() > direct.start()):
        num, gen = refs[-1].group(1), refs[-1].group(2)
        header = re.search(rb"(?<![0-9])" + num + rb"\s+" + gen + rb"\s+obj\b", data)
        if header is None:
            facts.encrypted, facts.encryption = True, "other"
            facts.encrypted_reason = "encrypted, and its encryption dictionary cannot be found"
            return True
        dictionary = data[header.end():header.end() + _ENCRYPT_DICT]
    elif direct is not None:
        dictionary = data[direct.end():direct.end() + _ENCRYPT_DICT]
    else:
        return False
    handler = _FILTER.search(dictionary)
    name = _unescape(handler.group(1)).decode("ascii", "replace") if handler else ""
    sub = _SUBFILTER.search(dictionary)
    sub_name = _unescape(sub.group(1)).decode("ascii", "replace") if sub else ""
    facts.encrypted = True
    if name in _PUBLIC_KEY_HANDLERS or sub_name.startswith("adbe.pkcs7.s"):
        facts.encryption = "certificate"
        facts.encrypted_reason = "encrypted for the holders of given certificates (public-key security)"
    elif name == "Standard":  # the handler pypdf reads: what stopped it is damage
        facts.encryption = "password"
        facts.encrypted_reason = "encrypted with a password, and the file cannot be read"
        return False
    else:
        facts.encryption = "other"
        facts.encrypted_reason = f"encrypted by the security handler /{name or '?'}, which mailgw cannot open"
    return True


def _limit(exc: BaseException) -> bool:
    try:
        from pypdf.errors import LimitReachedError
    except Exception:
        return False
    return isinstance(exc, LimitReachedError)


def _damage(data: bytes, exc: BaseException) -> str:
    if b"%%EOF" not in data[-2048:] and b"startxref" not in data[-2048:]:
        return f"cut short: no end-of-file marker ({_short(exc)})"
    return f"cannot be parsed ({_short(exc)})"


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:160] if text else type(exc).__name__


def _scan_raw(data: bytes, facts: PdfFacts) -> None:
    found = {m.group(0)[1:] for m in _ACTION_NAMES.finditer(data)}
    for m in _ESCAPED_NAME.finditer(data):
        found.add(_unescape(m.group(0)[1:]))
    facts.javascript = facts.javascript or bool(found & {b"JavaScript", b"JS"})
    facts.launch = facts.launch or b"Launch" in found


def _unescape(name: bytes) -> bytes:
    return re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), name)


def _walk(data: bytes, budget: Budget, facts: PdfFacts, contents: list[bytes], cap: int) -> None:
    """Every object pypdf reaches; ``cap`` bounds each decoded stream (object streams, embedded files)."""
    import pypdf
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    with hardened_reader(data, cap) as reader:
        if reader.is_encrypted:
            facts.encryption = "password"  # pypdf reads only the standard (password) handler
            try:
                opened = bool(reader.decrypt(""))
            except Exception:
                opened = False
            if not opened:
                facts.encrypted = True  # strings and streams are closed; the raw scan still saw the names
                facts.encrypted_reason = "a password is needed to open it"
                return
            facts.decrypted = True
        try:
            root = reader.trailer["/Root"].get_object()
            if not hasattr(root, "keys"):
                raise _Stop("its document catalog is not a dictionary")
            len(reader.pages)  # the page tree, read within page_tree_maximum_entries/depth
        except (_Stop, OverLimit, pypdf.errors.LimitReachedError):
            raise
        except Exception as exc:
            raise _Stop(f"no readable document catalog or page tree ({_short(exc)})") from None
        ids: list[tuple[int, int]] = []
        for gen, table in reader.xref.items():
            ids.extend((num, gen) for num in table)
        ids.extend((num, 0) for num in reader.xref_objStm)
        nodes = 0
        seen_streams: set[int] = set()
        for index, (num, gen) in enumerate(ids[:_MAX_OBJECTS]):
            if index % 256 == 0:
                budget.check_time()
            try:
                obj = reader.get_object(IndirectObject(num, gen, reader))
            except Exception:
                continue
            stack: list[tuple[Any, int]] = [(obj, 0)]
            while stack:
                node, level = stack.pop()
                nodes += 1
                if nodes > _MAX_NODES:
                    raise _Stop(f"more than {_MAX_NODES} PDF object entries")
                if nodes % 4096 == 0:
                    budget.check_time()
                if level > _MAX_NESTING:
                    continue
                if isinstance(node, DictionaryObject):  # StreamObject is one too: its dictionary
                    _look(node, facts, contents, seen_streams, cap)
                    stack.extend((v, level + 1) for v in node.values() if not isinstance(v, IndirectObject))
                elif isinstance(node, ArrayObject):
                    stack.extend((v, level + 1) for v in node if not isinstance(v, IndirectObject))


def _look(node: Any, facts: PdfFacts, contents: list[bytes], seen: set[int], cap: int) -> None:
    keys = set(node.keys())
    kind = node.get("/S")
    if "/JS" in keys or "/JavaScript" in keys or kind == "/JavaScript":
        facts.javascript = True
    if kind == "/Launch":
        facts.launch = True
    if "/ByteRange" in keys and "/Contents" in keys and node.get("/Type") != "/DocTimeStamp":
        blob = node.get("/Contents")
        if hasattr(blob, "get_object"):
            blob = blob.get_object()
        raw = _bytes(blob)
        if raw:
            contents.append(raw[:_MAX_SIG_CONTENTS])
    if "/EF" in keys and len(facts.embedded) < 100:
        _embedded(node, facts, seen, cap)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return bytes(value)
    original = getattr(value, "original_bytes", None)
    if isinstance(original, bytes):
        return original
    return b""


def _embedded(spec: Any, facts: PdfFacts, seen: set[int], cap: int) -> None:
    """A file specification with an embedded file: its name and decoded bytes."""
    from pypdf.generic import StreamObject

    try:
        ef = spec["/EF"].get_object()
        ref = ef.raw_get("/UF") if "/UF" in ef else ef.raw_get("/F")
        key = getattr(ref, "idnum", None)
        if key is not None and key in seen:
            return
        stream = ref.get_object()
        if not isinstance(stream, StreamObject):
            return
        if key is not None:
            seen.add(key)
        name = ""
        for field in ("/UF", "/F"):
            if field in spec:
                name = str(spec[field].get_object())
                if name:
                    break
        data = stream.get_data()
        if len(data) <= cap:
            facts.embedded.append((name or "(embedded file)", data))
    except Exception:
        return


def signer_name(blob: bytes) -> str | None:
    """The signer's name from a PKCS#7/CMS SignedData: its certificate's common name, else its subject."""
    try:
        from asn1crypto import cms

        info = cms.ContentInfo.load(blob, strict=False)
        if info["content_type"].native != "signed_data":
            return None
        signed = info["content"]
        certs = [c.chosen for c in signed["certificates"] if c.name == "certificate"]
        for signer in signed["signer_infos"]:
            sid = signer["sid"]
            for cert in certs:
                if sid.name == "issuer_and_serial_number":
                    match = (cert.issuer == sid.chosen["issuer"]
                             and cert.serial_number == sid.chosen["serial_number"].native)
                else:
                    match = cert.key_identifier == sid.chosen.native
                if match:
                    subject = cert.subject
                    name = subject.native.get("common_name") if isinstance(subject.native, dict) else None
                    if isinstance(name, list):
                        name = name[0] if name else None
                    return str(name or subject.human_friendly)
        return None
    except Exception:
        return None


@functools.cache
def _validator() -> tuple[Any, Any, Any] | None:
    """pyHanko's reader, validator and validation context; None (logged once) when it cannot be imported."""
    try:
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import validate_pdf_signature
        from pyhanko_certvalidator import ValidationContext
    except Exception as e:  # ImportError, or an import-time warning that a filter turned into an error
        log.warning("PDF signatures cannot be validated: pyHanko did not import (%s: %s); "
                    "signed PDFs get trusted=null until mailgw is restarted with it", type(e).__name__, e)
        return None
    return PdfFileReader, validate_pdf_signature, ValidationContext


def _trusted(data: bytes, store: str, count: int) -> bool | None:
    """True when every signature validates (intact, and chained to a root of the store); None without pyHanko."""
    if _validator() is None:
        return None
    result: list[bool] = []

    def work() -> None:
        result.append(_validate(data, store, count))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        work()  # no event loop in this thread (the pipeline's worker thread): validate here
    else:
        thread = threading.Thread(target=work, name="mailgw-pdf-trust")
        thread.start()
        thread.join()
    return bool(result and result[0])


def _validate(data: bytes, store: str, count: int) -> bool:
    validator = _validator()
    if validator is None:
        return False
    PdfFileReader, validate_pdf_signature, ValidationContext = validator
    try:
        from asn1crypto import x509 as asn1_x509

        from mailgw.attachments.trust import load_roots

        roots = [asn1_x509.Certificate.load(der) for der in load_roots(store)]
        context = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = list(reader.embedded_regular_signatures)
        if len(signatures) < count:
            return False  # a signature pyHanko cannot see is not one it vouched for
        for sig in signatures:
            status = validate_pdf_signature(sig, context)
            if not status.bottom_line:
                return False
        return bool(signatures)
    except Exception:
        return False
