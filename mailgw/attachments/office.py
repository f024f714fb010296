"""Office macros: VBA projects in OLE and OOXML files (oletools), Excel 4 macro sheets, ODF Basic.

A file counts as carrying macros when its format is macro-enabled (the package
declares a ``macroEnabled`` main part), or a VBA project is found in it: in an
OLE document (Word/Excel/PowerPoint 97-2003) or in any OLE member of an OOXML
package (``word/vbaProject.bin`` even in a package that calls itself .docx),
or it has Excel 4 macro sheets, or an ODF package carries Basic or script
modules. olevba is given only OLE bytes that this module has read within its
limits: its own ZIP handling reads whole members, which a bomb would exploit.
Signed OOXML/ODF packages are recognised too (their signature parts).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from typing import Any

from mailgw.attachments import sniff as types
from mailgw.attachments.budget import Budget

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_OLE_MEMBER = 32 * 1024 * 1024
_MAX_MEMBERS = 5000  # package parts looked at for OLE content


def has_macros(data: bytes, sniffed: types.Sniffed, budget: Budget) -> bool:
    """Whether the Office file ``data`` carries macros; never raises except OverLimit."""
    if sniffed.mime in types.MACRO_ENABLED_TYPES:
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
        for info in archive.infolist()[:_MAX_MEMBERS]:
            budget.check_time()
            if info.is_dir() or info.flag_bits & 1 or info.file_size < 512 or info.file_size > _MAX_OLE_MEMBER:
                continue
            if info.file_size > budget.bytes_left():
                continue
            try:
                with archive.open(info) as f:
                    if f.read(8) != _OLE_MAGIC:
                        continue
                    blob = _OLE_MAGIC + f.read(_MAX_OLE_MEMBER)
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


def _olevba() -> Any:
    # oletools 0.60 calls pyparsing's pre-3.0 names at import, which pyparsing 3.3
    # deprecates: the warnings say nothing about the mail, so they are not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from oletools import olevba
    return olevba
