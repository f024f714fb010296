"""What a file is, from its bytes: a MIME type and a family the rest of the inspection acts on.

puremagic (pure Python, so it installs anywhere and a hostile file cannot corrupt
memory) answers for the long tail of formats. It is not trusted for the classes
the policy acts on, because it gets them wrong: it calls a plain ZIP a DOCX, a
PE file "application/octet-stream" and an ELF file nothing at all. So those are
decided first from their structure: executables (PE, ELF, Mach-O, Java, shortcuts,
installers, disk images, compiled help), the ZIP family (OOXML, ODF, JAR, APK,
MSIX, plain ZIP, read from the central directory), the OLE family (Word, Excel,
PowerPoint, MSI, encrypted OOXML, read with olefile; Word, Excel and PowerPoint
97-2003 files encrypted in place are told by their own flags), PDF, the archives,
and text (calendar, HTML, HTA, scripts with a ``#!`` line, and the text formats
Excel opens as a workbook or runs as a query: SYLK, DIF, web and database queries).
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import re
import struct
import zipfile
from typing import Any

OCTET = "application/octet-stream"

# Families: what the inspection does next with the file.
PDF, OFFICE, EXECUTABLE, SCRIPT, ARCHIVE, IMAGE, TEXT, CALENDAR, OTHER = (
    "pdf", "office", "executable", "script", "archive", "image", "text", "calendar", "other")

PE = "application/vnd.microsoft.portable-executable"
DOSEXEC = "application/x-dosexec"
ELF = "application/x-executable"
MACHO = "application/x-mach-binary"
JAVA_CLASS = "application/java-vm"
JAR = "application/java-archive"
APK = "application/vnd.android.package-archive"
MSIX = "application/msix"
LNK = "application/x-ms-shortcut"
MSI = "application/x-msi"
CHM = "application/vnd.ms-htmlhelp"
ISO = "application/x-iso9660-image"
UDF = "application/x-udf-image"
VHD = "application/x-vhd"
VHDX = "application/x-vhdx"
DMG = "application/x-apple-diskimage"
HTA = "application/hta"
SHELL = "text/x-script"
ZIP = "application/zip"
RAR = "application/vnd.rar"
SEVENZ = "application/x-7z-compressed"
GZIP = "application/gzip"
BZIP2 = "application/x-bzip2"
XZ = "application/x-xz"
TAR = "application/x-tar"
CAB = "application/vnd.ms-cab-compressed"
ZSTD = "application/zstd"
TNEF = "application/vnd.ms-tnef"
OLE = "application/x-ole-storage"
OLE_ENCRYPTED = "application/x-ole-encrypted-office"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
MSG = "application/vnd.ms-outlook"
RTF = "text/rtf"
# Text formats Excel reads by their first line, whatever the file is called: SYLK and
# DIF are workbooks (SYLK carries formulas and Excel 4 macro sheets); a web query
# (.iqy) or database query (.dqy) makes Excel fetch data on opening.
SYLK = "application/x-sylk"
DIF = "application/x-dif"
IQY = "text/x-ms-iqy"
DQY = "application/x-ms-dqy"

_OOXML = "application/vnd.openxmlformats-officedocument."
# Main part content type (in [Content_Types].xml) -> the package's MIME type.
_OOXML_MAIN = (
    ("application/vnd.ms-word.document.macroEnabled.main+xml", "application/vnd.ms-word.document.macroEnabled.12"),
    ("application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
     "application/vnd.ms-word.template.macroEnabled.12"),
    ("application/vnd.ms-excel.sheet.macroEnabled.main+xml", "application/vnd.ms-excel.sheet.macroEnabled.12"),
    ("application/vnd.ms-excel.template.macroEnabled.main+xml", "application/vnd.ms-excel.template.macroEnabled.12"),
    ("application/vnd.ms-excel.addin.macroEnabled.main+xml", "application/vnd.ms-excel.addin.macroEnabled.12"),
    ("application/vnd.ms-excel.sheet.binary.macroEnabled.main", "application/vnd.ms-excel.sheet.binary.macroEnabled.12"),
    ("application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",
     "application/vnd.ms-powerpoint.presentation.macroEnabled.12"),
    ("application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml",
     "application/vnd.ms-powerpoint.slideshow.macroEnabled.12"),
    ("application/vnd.ms-powerpoint.template.macroEnabled.main+xml",
     "application/vnd.ms-powerpoint.template.macroEnabled.12"),
    ("application/vnd.ms-powerpoint.addin.macroEnabled.main+xml", "application/vnd.ms-powerpoint.addin.macroEnabled.12"),
    (_OOXML + "wordprocessingml.document.main+xml", _OOXML + "wordprocessingml.document"),
    (_OOXML + "wordprocessingml.template.main+xml", _OOXML + "wordprocessingml.template"),
    (_OOXML + "spreadsheetml.sheet.main+xml", _OOXML + "spreadsheetml.sheet"),
    (_OOXML + "spreadsheetml.template.main+xml", _OOXML + "spreadsheetml.template"),
    (_OOXML + "presentationml.presentation.main+xml", _OOXML + "presentationml.presentation"),
    (_OOXML + "presentationml.slideshow.main+xml", _OOXML + "presentationml.slideshow"),
    (_OOXML + "presentationml.template.main+xml", _OOXML + "presentationml.template"),
)
MACRO_ENABLED_TYPES = frozenset(t for _, t in _OOXML_MAIN if "macroenabled" in t.lower())

_MSI_CLSIDS = {  # root storage CLSIDs of Windows Installer packages, patches and transforms
    "000C1084-0000-0000-C000-000000000046", "000C1086-0000-0000-C000-000000000046",
    "000C1082-0000-0000-C000-000000000046",
}
_LNK_HEADER = b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00F"
_CT_LIMIT = 256 * 1024  # [Content_Types].xml and ODF mimetype are small; a larger one is not read


@dataclasses.dataclass(frozen=True)
class Sniffed:
    """The true type of some bytes."""

    mime: str
    family: str
    zip_names: tuple[str, ...] = ()  # member names, when the bytes are a readable ZIP package
    encrypted: bool = False          # an encrypted Office file (OLE EncryptedPackage, or a 97-2003 file's flag)


def sniff(data: bytes) -> Sniffed:
    """The MIME type and family of ``data``, decided from the bytes alone; never raises."""
    try:
        return _sniff(data)
    except Exception:  # a damaged file: unknown, not an error
        return Sniffed(OCTET, OTHER)


def _sniff(data: bytes) -> Sniffed:
    if not data:
        return Sniffed(OCTET, OTHER)
    head = data[:16]
    # Magic at offset 0 first: a file that starts as an executable is one, whatever
    # else (a PDF header, a ZIP directory) it also carries further on.
    if head[:2] == b"MZ":
        return Sniffed(PE if _is_pe(data) else DOSEXEC, EXECUTABLE)
    if head[:4] == b"\x7fELF":
        return Sniffed(ELF, EXECUTABLE)
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe"):
        return Sniffed(MACHO, EXECUTABLE)
    if head[:4] == b"\xca\xfe\xba\xbe" and len(data) >= 8:
        # Both a universal Mach-O binary and a Java class start so: a class file's
        # version (bytes 6-7) is 45 or more, a fat binary's architecture count is small.
        count = struct.unpack(">I", data[4:8])[0]
        return Sniffed(MACHO if count < 40 else JAVA_CLASS, EXECUTABLE)
    if data[:20] == _LNK_HEADER:
        return Sniffed(LNK, EXECUTABLE)
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return _ole(data)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip(data)
    if head[:7] == b"Rar!\x1a\x07\x00" or head[:8] == b"Rar!\x1a\x07\x01\x00":
        return Sniffed(RAR, ARCHIVE)
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return Sniffed(SEVENZ, ARCHIVE)
    if head[:2] == b"\x1f\x8b":
        return Sniffed(GZIP, ARCHIVE)
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return Sniffed(BZIP2, ARCHIVE)
    if head[:6] == b"\xfd7zXZ\x00":
        return Sniffed(XZ, ARCHIVE)
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return Sniffed(ZSTD, ARCHIVE)
    if head[:4] == b"MSCF":
        return Sniffed(CAB, ARCHIVE)
    if head[:4] == b"\x78\x9f\x3e\x22":
        return Sniffed(TNEF, ARCHIVE)
    if data[257:262] == b"ustar":
        return Sniffed(TAR, ARCHIVE)
    if head[:4] == b"ITSF":
        return Sniffed(CHM, EXECUTABLE)
    if b"%PDF-" in data[:1024]:  # readers accept the header anywhere in the first kilobyte
        return Sniffed("application/pdf", PDF)
    if b"PK\x05\x06" in data[-65558:] and zipfile.is_zipfile(io.BytesIO(data)):
        # ZIP tools find the archive from its end, so bytes put in front do not hide it.
        return _zip(data)
    image = _disk_image(data)
    if image:
        return Sniffed(image, EXECUTABLE)
    if head[:5] == b"{\\rtf":
        return Sniffed(RTF, OFFICE)
    text = _text(data)
    if text is not None:
        return text
    return _puremagic(data)


def _is_pe(data: bytes) -> bool:
    if len(data) < 0x40:
        return False
    offset = struct.unpack("<I", data[0x3C:0x40])[0]
    return 0x40 <= offset <= len(data) - 4 and data[offset:offset + 4] == b"PE\x00\x00"


def _disk_image(data: bytes) -> str | None:
    for offset in (0x8001, 0x8801, 0x9001):
        marker = data[offset:offset + 5]
        if marker == b"CD001":
            return ISO
        if marker in (b"BEA01", b"NSR02", b"NSR03"):
            return UDF
    if data[:8] == b"vhdxfile":
        return VHDX
    if data[:8] == b"conectix" or (len(data) >= 512 and data[-512:-504] == b"conectix"):
        return VHD
    if len(data) >= 512 and data[-512:-508] == b"koly":
        return DMG
    return None


def _ole(data: bytes) -> Sniffed:
    import olefile

    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception:
        return Sniffed(OLE, OTHER)
    try:
        clsid = (ole.root.clsid or "").upper()
        if clsid in _MSI_CLSIDS:
            return Sniffed(MSI, EXECUTABLE)
        names = {"/".join(entry).lower() for entry in ole.listdir(streams=True, storages=True)}
        if "encryptedpackage" in names and "encryptioninfo" in names:
            return Sniffed(OLE_ENCRYPTED, OFFICE, encrypted=True)
        if "worddocument" in names:
            return Sniffed(DOC, OFFICE, encrypted=_word_encrypted(ole))
        if "workbook" in names or "book" in names:
            return Sniffed(XLS, OFFICE, encrypted=_excel_encrypted(ole, "workbook" if "workbook" in names else "book"))
        if "powerpoint document" in names:
            # MS-PPT 2.3.7: an encrypted presentation keeps its summary in EncryptedSummary
            return Sniffed(PPT, OFFICE, encrypted="encryptedsummary" in names)
        if any(n.startswith("__substg1.0_") for n in names):
            return Sniffed(MSG, OTHER)
        if "vba/dir" in names or any(n.endswith("/vba/dir") for n in names):
            return Sniffed(OLE, OFFICE)  # a bare VBA project (vbaProject.bin) or a macro storage
        return Sniffed(OLE, OTHER)
    finally:
        ole.close()


def _word_encrypted(ole: Any) -> bool:
    """MS-DOC 2.5.2 FibBase: fEncrypted (0x0100) or fObfuscated (0x8000) in the flags at offset 10."""
    with ole.openstream("WordDocument") as stream:
        head = stream.read(12)
    return len(head) == 12 and bool(struct.unpack("<H", head[10:12])[0] & 0x8100)


_BIFF_BOF, _BIFF_FILEPASS, _BIFF_EOF = 0x0809, 0x002F, 0x000A


def _excel_encrypted(ole: Any, stream_name: str) -> bool:
    """MS-XLS 2.4.117: a FilePass record in the globals substream (it follows the BOF record)."""
    with ole.openstream(stream_name) as stream:
        head = stream.read(4096)
    pos = 0
    for _ in range(16):  # FilePass comes right after BOF; a few records are looked at
        if pos + 4 > len(head):
            return False
        record, size = struct.unpack("<HH", head[pos:pos + 4])
        if record == _BIFF_FILEPASS:
            return True
        if record == _BIFF_EOF or (pos == 0 and record != _BIFF_BOF):
            return False
        pos += 4 + size
    return False


def _zip(data: bytes) -> Sniffed:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:
        return Sniffed(ZIP, ARCHIVE)
    with archive:
        infos = archive.infolist()
        names = tuple(i.filename for i in infos)
        lower = {n.lower(): i for n, i in zip(names, infos)}
        if "appxmanifest.xml" in lower or "appxmetadata/appxbundlemanifest.xml" in lower:
            return Sniffed(MSIX, EXECUTABLE, names)
        if "androidmanifest.xml" in lower and "classes.dex" in lower:
            return Sniffed(APK, EXECUTABLE, names)
        types = _small_member(archive, lower.get("[content_types].xml"))
        if types is not None:
            for main, mime in _OOXML_MAIN:
                if main.lower().encode() in types.lower():
                    return Sniffed(mime, OFFICE, names)
        mimetype = _small_member(archive, lower.get("mimetype"))
        if mimetype is not None:
            value = mimetype.strip().decode("ascii", "replace")
            if value.startswith("application/vnd.oasis.opendocument."):
                # ODF 1.2 part 3, 3.8: a password-protected document lists how each part is encrypted
                manifest = _small_member(archive, lower.get("meta-inf/manifest.xml"))
                return Sniffed(value, OFFICE, names, encrypted=bool(manifest and b"encryption-data" in manifest))
            if value == "application/epub+zip":
                return Sniffed(value, OTHER, names)
        if "meta-inf/manifest.mf" in lower and any(n.endswith(".class") for n in lower):
            return Sniffed(JAR, EXECUTABLE, names)
        return Sniffed(ZIP, ARCHIVE, names)


def _small_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> bytes | None:
    if info is None or info.file_size > _CT_LIMIT or info.flag_bits & 1:
        return None
    try:
        with archive.open(info) as f:
            return f.read(_CT_LIMIT)
    except Exception:
        return None


# Control bytes that text does not hold (tab, line breaks, form feed and escape it may).
# Found by deleting them and comparing lengths: a C loop, five times a regex search's speed.
_BINARY_CONTROLS = bytes([*range(0x00, 0x09), *range(0x0e, 0x1b), *range(0x1c, 0x20), 0x7f])
_HTML = re.compile(rb"<(!doctype\s+html|html|head|body|script|iframe|meta|frameset)\b", re.IGNORECASE)
_HTA = re.compile(rb"<hta:application\b", re.IGNORECASE)
_WSF = re.compile(rb"<(job|package)\b[^>]*>.*?<script\b", re.IGNORECASE | re.DOTALL)
# First lines Excel recognises (SYLK: an ID record; DIF: the TABLE header; queries: their type and version).
_SYLK = re.compile(rb"ID;[^\r\n]*\r?\n(?:[A-Z]{1,2}(?:;|\r?\n))")
_DIF = re.compile(rb"TABLE\r?\n0,1\r?\n\"")
_IQY = re.compile(rb"WEB[ \t]*\r?\n[ \t]*1[ \t]*\r?\n[ \t]*(?:https?|ftp|file)://", re.IGNORECASE)
_DQY = re.compile(rb"XLODBC[ \t]*\r?\n[ \t]*1[ \t]*\r?\n", re.IGNORECASE)


def _text(data: bytes) -> Sniffed | None:
    """Text types, when the head of the file is text (UTF-8, UTF-16 with a BOM, or an 8-bit charset)."""
    sample = data[:65536]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            sample = sample.decode("utf-16", "replace").encode("utf-8", "replace")
        except Exception:
            return None
    elif len(head := sample[:8192]) != len(head.translate(None, _BINARY_CONTROLS)):
        return None
    body = sample.lstrip(b"\xef\xbb\xbf \t\r\n")
    low = body[:4096].lower()
    if low.startswith(b"begin:vcalendar"):
        return Sniffed("text/calendar", CALENDAR)
    if _SYLK.match(body):
        return Sniffed(SYLK, OFFICE)
    if _DIF.match(body):
        return Sniffed(DIF, OFFICE)
    if _IQY.match(body):
        return Sniffed(IQY, SCRIPT)
    if _DQY.match(body):
        return Sniffed(DQY, SCRIPT)
    if _HTA.search(sample):
        return Sniffed(HTA, SCRIPT)
    if body.startswith(b"#!"):
        return Sniffed(SHELL, SCRIPT)
    if _WSF.search(sample[:16384]):
        return Sniffed(SHELL, SCRIPT)
    if low.startswith(b"<svg") or (low.startswith(b"<?xml") and b"<svg" in low):
        return Sniffed("image/svg+xml", IMAGE)
    if _HTML.search(body[:2048]):
        return Sniffed("text/html", TEXT)
    if low.startswith(b"<?xml"):
        return Sniffed("application/xml", TEXT)
    return Sniffed("text/plain", TEXT)


def _puremagic(data: bytes) -> Sniffed:
    import puremagic

    try:
        mime = puremagic.from_string(data[:1 << 20], mime=True)
    except Exception:
        return Sniffed(OCTET, OTHER)
    mime = (mime or "").lower()
    if not mime or "/" not in mime:
        return Sniffed(OCTET, OTHER)
    if mime.startswith("image/"):
        return Sniffed(mime, IMAGE)
    if mime.startswith("text/"):
        return Sniffed(mime, TEXT)
    return Sniffed(mime, OTHER)
