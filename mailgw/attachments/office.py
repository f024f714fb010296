"""Office files: their encryption, macros and DDE fields.

Encryption. Office opens some encrypted files without asking anyone for a
password: Excel tries "VelvetSweatshop" (MS-OFFCRYPTO 2.4.2.3, the password of a
workbook that is only write-protected) and PowerPoint "/01Hannes Ruescher/01"
(MS-OFFCRYPTO 2.4.2.4). Malware hides macros that way, so ``decrypt`` tries those
two passwords (msoffcrypto-tool) and the caller inspects what comes out as the
file itself. A file they do not open stays encrypted, with the reason. The cost
is bounded: agile encryption hashes the password ``spinCount`` times, and a file
asking for more than ``MAX_SPIN`` rounds (Office writes 100,000) is not tried.

Macros. A file counts as carrying macros when its format is macro-enabled (the
package declares a ``macroEnabled`` main part; not XLSB, whose main part says so
for every workbook), or a VBA project is found in it: in an OLE document
(Word/Excel/PowerPoint 97-2003) or in any OLE member of an OOXML package
(``word/vbaProject.bin`` even in a package that calls itself .docx), or it has
Excel 4 macro sheets (in a package, or a SYLK file's macro sheet), or an ODF
package carries Basic or script modules. olevba is given only OLE bytes that
this module has read within its limits: its own ZIP handling reads whole
members, which a bomb would exploit. Signed OOXML/ODF packages are recognised
too (their signature parts).

DDE. Word runs a DDE or DDEAUTO field's command when the document opens (asking
once, in words few read), Excel a DDE link's: ``dde`` finds the field codes in a
Word document (97-2003, OOXML, RTF), DDE links in a workbook (OOXML and XLSB
external links, or a ``app|'topic'!item`` formula) and in the text formats
(mailgw.attachments.formulas). Every search is a regular expression without
nested repetition over bytes already bounded: linear in the file.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import warnings
import zipfile
from typing import Any

from mailgw.attachments import formulas
from mailgw.attachments import sniff as types
from mailgw.attachments.budget import Budget, OverLimit

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_OLE_MEMBER = 32 * 1024 * 1024
_MAX_XML_MEMBER = 32 * 1024 * 1024
_MAX_MEMBERS = 5000  # package parts looked at for OLE content
_XLSB = "application/vnd.ms-excel.sheet.binary.macroEnabled.12"
_EMBEDDING = re.compile(r"[^/]+/embeddings/[^/]+\Z", re.IGNORECASE)
_CHUNK = 1 << 20   # XML parts are scanned in slices of this size ...
_KEEP = 1 << 14    # ... each keeping this much of the one before: longer than any token searched for
_CODE_HEAD = 64    # bytes of a field code kept (after its leading spaces): the keyword is at its start
# A run of white space, written as such or as character references, stands for one space.
_SPACE_RUN = re.compile(rb"(?:[ \t\r\n]|&#(?:[xX]0*(?:20|9|[aAdD])|0*(?:32|9|10|13));){2,}")
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));")

# The passwords Office applies without asking (see the module's docstring).
DEFAULT_PASSWORDS = ("VelvetSweatshop", "/01Hannes Ruescher/01")
MAX_SPIN = 1_000_000
_MAX_DECRYPT = 64 * 1024 * 1024  # larger encrypted files are not tried (the decoded-size limit is 64M too)
_MAX_ENCRYPTION_INFO = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Opened:
    """What trying the default passwords on an encrypted Office file gave."""

    data: bytes | None     # the decrypted file; None when it stays closed
    encryption: str        # "password", or "other" (a scheme mailgw cannot read)
    reason: str | None     # why it stays closed (English, for admins)


def decrypt(data: bytes, sniffed: types.Sniffed, budget: Budget) -> Opened:
    """Open an encrypted Office file with the passwords Office uses silently; never raises except OverLimit."""
    if sniffed.zip_names:  # OpenDocument: no password opens it silently
        return Opened(None, "password", "encrypted with a password mailgw does not know")
    if len(data) > _MAX_DECRYPT:
        return Opened(None, "password", f"encrypted, and over {_MAX_DECRYPT} bytes: not tried")
    header = _encryption_info_size(data)
    if header > _MAX_ENCRYPTION_INFO:
        return Opened(None, "other", f"an encryption header of {header} bytes (Office writes about one kilobyte)")
    msoffcrypto = _msoffcrypto()
    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
    except Exception as exc:  # extensible encryption, a damaged EncryptionInfo ...
        return Opened(None, "other", f"encryption mailgw cannot read ({_short(exc)})")
    spin = (getattr(office, "info", None) or {}).get("spinValue") if getattr(office, "type", "") == "agile" else None
    if isinstance(spin, int) and spin > MAX_SPIN:
        return Opened(None, "password", f"encrypted with {spin} key-derivation rounds, over the {MAX_SPIN} mailgw tries")
    unsupported = None
    for password in DEFAULT_PASSWORDS:
        budget.check_time()
        out = io.BytesIO()
        try:
            office.load_key(password=password)
            office.decrypt(out)
        except OverLimit:
            raise
        except Exception as exc:
            if type(exc).__name__ != "InvalidKeyError":
                unsupported = _short(exc)
            continue
        return Opened(out.getvalue(), "password", None)
    if unsupported:
        return Opened(None, "password", f"encrypted in a way mailgw cannot undo ({unsupported})")
    return Opened(None, "password", "encrypted with a password mailgw does not know")


def _encryption_info_size(data: bytes) -> int:
    """The size of the EncryptionInfo stream (XML that msoffcrypto-tool parses whole); 0 without one."""
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            return int(ole.get_size("EncryptionInfo")) if ole.exists("EncryptionInfo") else 0
    except Exception:
        return 0


def has_macros(data: bytes, sniffed: types.Sniffed, budget: Budget) -> bool:
    """Whether the Office file ``data`` carries macros; never raises except OverLimit."""
    if sniffed.mime == types.SYLK:
        return formulas.sylk_macro(data)
    if sniffed.mime in types.MACRO_ENABLED_TYPES and sniffed.mime != _XLSB:
        return True
    if data[:8] == _OLE_MAGIC:
        return vba_in_ole(data)
    if sniffed.zip_names:
        return _zip_macros(data, sniffed.zip_names, budget)
    return False


def signed_package(sniffed: types.Sniffed) -> bool:
    """An OOXML or ODF package that carries a digital signature part."""
    for name in sniffed.zip_names:
        low = name.lower()
        if low.startswith("_xmlsignatures/") and low.endswith(".xml") and "/sig" in low:
            return True
        if low == "meta-inf/documentsignatures.xml":
            return True
    return False


def _zip_macros(data: bytes, member_names: tuple[str, ...], budget: Budget) -> bool:
    """Macro sheets, ODF modules, or a VBA project in any OLE member (Office finds the
    project through a relationship, so its part may be called anything)."""
    lowered = [n.lower() for n in member_names]
    if any(n.startswith("xl/macrosheets/") for n in lowered):
        return True
    if any(_odf_module(n) for n in lowered):
        return True
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:
        return False
    with archive:
        infos = archive.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise OverLimit(f"an Office package with more than {_MAX_MEMBERS} parts")
        for info in infos:
            budget.check_time()
            if info.is_dir() or info.flag_bits & 1 or info.file_size < 512:
                continue
            try:
                with archive.open(info) as f:
                    if f.read(8) != _OLE_MAGIC:
                        continue
                    if info.file_size > min(_MAX_OLE_MEMBER, budget.bytes_left()):
                        if _EMBEDDING.match(info.filename):
                            continue  # an embedded object: listed and inspected as a file of its own
                        raise OverLimit(f"OLE part {info.filename} of an Office package is over the "
                                        f"{min(_MAX_OLE_MEMBER, budget.bytes_left())}-byte inspection limit")
                    blob = _OLE_MAGIC + f.read(_MAX_OLE_MEMBER)
            except OverLimit:
                raise
            except Exception:
                continue
            budget.expanded += len(blob)  # unpacked from the package: counts like an archive member
            if vba_in_ole(blob):
                return True
    return False


def _odf_module(name: str) -> bool:
    if name.startswith("basic/"):
        leaf = name.rsplit("/", 1)[-1]
        return name.count("/") >= 2 and leaf.endswith(".xml") and leaf not in ("script-lb.xml", "dialog-lb.xml")
    return name.startswith("scripts/") and not name.endswith("/")


def vba_in_ole(data: bytes) -> bool:
    """Whether an OLE file holds a VBA project (or, for Excel, XLM macro sheets)."""
    olevba = _olevba()
    try:
        parser = olevba.VBA_Parser("attachment", data=data, relaxed=True)
    except Exception:
        return False
    try:
        if parser.detect_vba_macros():
            return True
        try:
            return bool(parser.ftg.is_excel() and parser.detect_xlm_macros())
        except Exception:
            return False
    except Exception:
        return False
    finally:
        try:
            parser.close()
        except Exception:
            pass


# --- DDE ---------------------------------------------------------------------

# A field code that starts with DDE or DDEAUTO (Word reads the keyword without case).
_DDE_FIELD = re.compile(rb"\s*dde(?:auto)?\b", re.IGNORECASE)
# Word 97-2003: a field runs from 0x13 to its separator 0x14 or end 0x15; its code is text
# in the WordDocument stream, 8-bit or UTF-16LE (whose NUL high bytes are dropped first).
_DOC_FIELD = re.compile(rb"\x13([^\x13\x14\x15]{1,2048})")
# OOXML: field codes in w:instrText runs between w:fldChar begin and separate, or w:fldSimple/@w:instr.
_WORD_TOKEN = re.compile(
    rb"<(?:\w+:)?fldChar\b[^>]{0,512}?fldCharType=[\"'](begin|separate|end)[\"']"
    rb"|<(?:\w+:)?instrText\b[^>]{0,512}>([^<]{0,8192})"
    rb"|<(?:\w+:)?fldSimple\b[^>]{0,512}?instr=\"([^\"]{0,8192})")
_RTF_FIELD = re.compile(rb"\\fldinst\b([^}]{0,512})")
_RTF_CONTROL = re.compile(rb"\\[a-z]{1,32}-?\d{0,10} ?|[{}]")
_DDE_LINK = re.compile(rb"<(?:\w+:)?ddeLink\b")
_FORMULA = re.compile(rb"<(?:\w+:)?f\b[^>]{0,512}>([^<]{1,8192})")
_XML_ENTITIES = ((b"&apos;", b"'"), (b"&quot;", b'"'), (b"&lt;", b"<"), (b"&gt;", b">"), (b"&amp;", b"&"))
_BRT_BEGIN_SUP_BOOK = 360  # MS-XLSB 2.4.208: the first record of an external link part; sbt 1 is a DDE link


def dde(data: bytes, sniffed: types.Sniffed, budget: Budget) -> bool:
    """Whether the Office file ``data`` carries a DDE field or link; never raises except OverLimit."""
    try:
        if sniffed.mime in (types.SYLK, types.DIF):
            return formulas.dde(data)
        if sniffed.mime == types.RTF:
            return any(_DDE_FIELD.match(_RTF_CONTROL.sub(b"", m.group(1))) for m in _RTF_FIELD.finditer(data))
        if data[:8] == _OLE_MAGIC:
            return _doc_dde(data)
        if sniffed.zip_names:
            return _package_dde(data, sniffed.zip_names, budget)
    except OverLimit:
        raise
    except Exception:
        return False
    return False


def _doc_dde(data: bytes) -> bool:
    import olefile

    with olefile.OleFileIO(io.BytesIO(data)) as ole:
        if not ole.exists("WordDocument"):
            return False
        with ole.openstream("WordDocument") as stream:
            text = stream.read()
    for m in _DOC_FIELD.finditer(text):
        if _DDE_FIELD.match(m.group(1).replace(b"\x00", b"")):
            return True
    return False


def _package_dde(data: bytes, member_names: tuple[str, ...], budget: Budget) -> bool:
    wanted = [n for n in member_names if _dde_part(n.lower())]
    if not wanted:
        return False
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in wanted[:_MAX_MEMBERS]:
            info = archive.getinfo(name)
            if info.flag_bits & 1:
                continue
            low = name.lower()
            if low.startswith("xl/externallinks/"):  # a small part, read whole
                if info.file_size > min(_MAX_XML_MEMBER, budget.bytes_left()):
                    raise OverLimit(f"external link part {name} is over the inspection limit")
                with archive.open(info) as f:
                    part = f.read(_MAX_XML_MEMBER)
                budget.expanded += len(part)
                if _link_dde(part, low.endswith(".bin")):
                    return True
                continue
            scan = _WordFields() if low.startswith("word/") else _Formulas()
            with archive.open(info) as f:
                if _scan_part(f, scan, budget):
                    return True
    return False


def _scan_part(f: Any, scan: _WordFields | _Formulas, budget: Budget) -> bool:
    """Feed a package part to ``scan`` slice by slice; its bytes count like an archive member's."""
    pending = b""
    while True:
        budget.check_time()
        chunk = f.read(_CHUNK)
        if len(chunk) > budget.bytes_left():
            raise OverLimit(f"Office package parts over the {budget.limits.max_archive_total}-byte limit")
        budget.expanded += len(chunk)
        window = pending + _SPACE_RUN.sub(b" ", chunk)  # padding cannot push a keyword out of reach
        last = not chunk
        done = scan.feed(window, len(window) if last else max(0, len(window) - _KEEP))
        if done is True:
            return True
        if last:
            return False
        pending = window[done:]


class _Formulas:
    """DDE links in the ``<f>`` elements of worksheet XML."""

    def feed(self, window: bytes, upto: int) -> bool | int:
        """Look at the tokens starting before ``upto``; True on a DDE link, else where to resume."""
        resume = upto
        for m in _FORMULA.finditer(window):
            if m.start() >= upto:
                resume = m.start()
                break
            if formulas.dde_formula(_unescape(m.group(1))):
                return True
        return resume


class _WordFields:
    """Field codes in Word XML: w:instrText runs between w:fldChar begin and separate, or w:fldSimple/@w:instr."""

    def __init__(self) -> None:
        self.codes: list[bytearray] = []  # field codes being read, innermost last

    def feed(self, window: bytes, upto: int) -> bool | int:
        resume = upto
        for m in _WORD_TOKEN.finditer(window):
            if m.start() >= upto:
                resume = m.start()
                break
            if self._token(*m.groups()):
                return True
        if upto == len(window):  # the end of the part: fields left open count as they are
            return any(_DDE_FIELD.match(_unescape(bytes(c))) for c in self.codes)
        return resume

    def _token(self, kind: bytes | None, instr: bytes | None, simple: bytes | None) -> bool:
        codes = self.codes
        if simple is not None:
            return bool(_DDE_FIELD.match(_unescape(simple)))
        if instr is not None:
            if codes and len(codes[-1]) < _CODE_HEAD:  # the keyword is all that is read of a code
                codes[-1] = bytearray((bytes(codes[-1]) + instr).lstrip()[:_CODE_HEAD])
            return False
        if kind == b"begin":
            if len(codes) < 64:
                codes.append(bytearray())
            return False
        if codes:  # separate or end: the code of the innermost field is complete
            if _DDE_FIELD.match(_unescape(bytes(codes.pop()))):
                return True
            if kind == b"separate":
                codes.append(bytearray())  # its result runs to "end"; nothing in it is a code
        return False


def _dde_part(name: str) -> bool:
    if name.startswith("word/") and name.endswith(".xml"):
        return name.count("/") == 1 or name.startswith("word/glossary/")
    if name.startswith("xl/externallinks/") and name.count("/") == 2:
        return name.endswith((".xml", ".bin"))
    return name.startswith("xl/worksheets/") and name.count("/") == 2 and name.endswith(".xml")


def _link_dde(part: bytes, binary: bool) -> bool:
    if not binary:
        return bool(_DDE_LINK.search(part))
    rtype, pos = _varint(part, 0, 2)
    size, pos = _varint(part, pos, 4)
    return rtype == _BRT_BEGIN_SUP_BOOK and size >= 2 and struct.unpack("<H", part[pos:pos + 2])[0] == 1


def _varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """MS-XLSB 2.1.4: record type and size are 7-bit groups, low first, the high bit meaning "more"."""
    value = 0
    for i in range(limit):
        if pos >= len(data):
            return -1, pos
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    return value, pos


def _formula_dde(xml: bytes) -> bool:
    return any(formulas.dde_formula(_unescape(m.group(1))) for m in _FORMULA.finditer(xml))


def _unescape(text: bytes) -> bytes:
    text = _CHAR_REF.sub(_char, text)
    for entity, char in _XML_ENTITIES:
        text = text.replace(entity, char)
    return text


def _char(m: re.Match[bytes]) -> bytes:
    code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
    return chr(code).encode("utf-8", "replace") if 0 < code < 0x110000 else b"?"


def _short(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:120]


def _msoffcrypto() -> Any:
    import msoffcrypto

    return msoffcrypto


def _olevba() -> Any:
    # oletools 0.60 calls pyparsing's pre-3.0 names at import, which pyparsing 3.3
    # deprecates: the warnings say nothing about the mail, so they are not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from oletools import olevba
    return olevba
