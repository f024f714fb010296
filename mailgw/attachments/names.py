"""What a file's name claims: its extension, and the tricks that hide it.

A name is judged as Windows would save it: trailing dots and spaces dropped,
case ignored, the last path component only. Every name a part carries is judged
(Content-Type ``name=`` and Content-Disposition ``filename=`` may disagree, and
different clients use different ones).
"""

from __future__ import annotations

import re
import unicodedata

EXECUTABLE_EXTENSIONS = frozenset("""
    exe com scr pif cpl msi msp mst msix msixbundle appx appxbundle appinstaller application
    dll sys ocx drv efi xll lnk url scf iso img vhd vhdx dmg udf chm hlp jar apk gadget reg inf
    msc msh xbap diagcab settingcontent-ms library-ms search-ms run appimage deb rpm pkg mpkg
    app dylib elf
""".split())

SCRIPT_EXTENSIONS = frozenset("""
    js jse mjs vbs vbe vb vba wsf wsh ws wsc sct ps1 ps1xml ps2 ps2xml psc1 psc2 psm1 psd1
    bat cmd hta sh bash zsh csh ksh py pyw pyc pl rb php applescript scpt command tcl
""".split())

MACRO_EXTENSIONS = frozenset("docm dotm xlsm xltm xlam xla pptm potm ppam ppsm sldm".split())

# Bidirectional controls that reorder how a name is shown: U+202E turns
# "baocao\u202efdp.exe" into "baocaoexe.pdf" on screen.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_PADDING = re.compile(r"[\s_\u00a0\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff]+")
_INNER_EXT = re.compile(r"[0-9A-Za-z]{1,5}")


def normalize(name: str) -> str:
    """A decoded name in NFC (Vietnamese names arrive in NFD from macOS)."""
    return unicodedata.normalize("NFC", name)


def basename(name: str) -> str:
    """The last path component, as Windows would save it (trailing dots and spaces dropped)."""
    base = re.split(r"[/\\]", name)[-1]
    return base.rstrip(". \t\r\n\u00a0")


def extension(name: str | None) -> str | None:
    """The last extension, lowercased, without the dot; None when there is none."""
    if not name:
        return None
    base = basename(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem.strip(". ") or not ext:
        return None
    ext = _PADDING.sub("", ext).lower()
    return ext or None


def double_extension(name: str) -> bool:
    """The name hides an executable or script behind a document-like extension.

    ``baocao.pdf.exe``, ``baocao.pdf      .exe``, ``baocao.docx_.js``: the last
    extension runs, the one before it (padding stripped) is what the reader sees.
    """
    base = basename(name)
    parts = base.split(".")
    if len(parts) < 3 or not parts[0].strip():
        return False
    last = _PADDING.sub("", parts[-1]).lower()
    if last not in EXECUTABLE_EXTENSIONS and last not in SCRIPT_EXTENSIONS:
        return False
    inner = _PADDING.sub("", parts[-2])
    return bool(_INNER_EXT.fullmatch(inner)) and any(c.isalpha() for c in inner)


def rtl_override(name: str) -> bool:
    """The name carries a bidirectional control character that reorders its display."""
    return any(c in _BIDI for c in name)


def is_executable(name: str) -> bool:
    return extension(name) in EXECUTABLE_EXTENSIONS


def is_script(name: str) -> bool:
    return extension(name) in SCRIPT_EXTENSIONS


def is_macro_enabled(name: str) -> bool:
    return extension(name) in MACRO_EXTENSIONS
