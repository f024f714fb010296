"""Real attachment bytes for the attachment tests, made here (files saved by Office itself are in
tests/data/attachments/, see tests/office_fixtures.py).

Everything is built with the library that owns the format where one can write
it (zipfile, tarfile, gzip, py7zr, pyzipper, pypdf, fpdf2, pyHanko, python-docx,
cryptography). Where none can, the format is written from its specification,
small but complete enough that the reading libraries accept it:

- ``cfb``: a Compound File Binary (MS-CFB v3, 512-byte sectors, FAT, mini
  stream); olefile reads it.
- ``vba_project``: a VBA project (MS-OVBA: ``PROJECT``, ``VBA/_VBA_PROJECT``,
  ``VBA/dir`` and a module stream, compressed as MS-OVBA 2.4.1 says, with
  literal tokens only); olevba extracts its source code.
- ``zipcrypto_zip``: traditional PKWARE encryption (APPNOTE 6.1), which
  zipfile can decrypt but not write.
- ``rar5``: a RAR 5 archive (stored or "compressed" members, an encryption
  record); rarfile lists it and reads stored members.
- executable headers: PE, ELF, Mach-O, and a Windows shortcut (MS-SHLLINK).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.header
import gzip
import io
import struct
import tarfile
import zipfile
import zlib

# --- Executables -----------------------------------------------------------


def pe_exe() -> bytes:
    """A PE32 executable's headers: DOS stub, "PE\\0\\0", COFF header, optional header, one section."""
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    optional = bytearray(0xE0)
    struct.pack_into("<HBB", optional, 0, 0x10B, 14, 0)  # PE32 magic, linker version
    struct.pack_into("<I", optional, 16, 0x1000)        # AddressOfEntryPoint
    section = b".text\x00\x00\x00" + struct.pack("<IIIIIIHHI", 0x10, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    body = bytes(dos) + b"PE\x00\x00" + coff + bytes(optional) + section
    return body + b"\x00" * (0x200 - len(body)) + b"\xc3" + b"\x00" * 0x1FF  # ret


def elf_exe() -> bytes:
    """An x86-64 ELF executable header."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    return header + b"\x00" * 64


def macho_exe() -> bytes:
    """A 64-bit Mach-O executable header."""
    return struct.pack("<IiiIIIII", 0xFEEDFACF, 0x01000007, 3, 2, 0, 0, 0, 0) + b"\x00" * 32


def lnk_shortcut(target: str = "C:\\Windows\\System32\\cmd.exe") -> bytes:
    """A Windows shortcut (MS-SHLLINK ShellLinkHeader, then a relative path string)."""
    clsid = bytes.fromhex("0114020000000000c000000000000046")
    flags = 0x00000008  # HasRelativePath
    header = struct.pack("<I16sII", 0x4C, clsid, flags, 0) + b"\x00" * 24 + struct.pack("<IIIHH", 0, 0, 1, 0, 0) + b"\x00" * 8
    text = target.encode("utf-16-le")
    return header + struct.pack("<H", len(target)) + text


# --- Compound File Binary and VBA -----------------------------------------

_FREE, _END, _FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
_NOSTREAM = 0xFFFFFFFF


def cfb(streams: dict[str, bytes], root_clsid: bytes = b"\x00" * 16) -> bytes:
    """A compound file holding ``streams`` (paths with "/" between storages)."""
    # Directory tree: storages and streams, siblings sorted as MS-CFB compares names.
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "children": [], "data": b""}]
    index: dict[str, int] = {"": 0}
    for path, data in streams.items():
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            if key in index:
                continue
            is_stream = depth == len(parts)
            entries.append({"name": parts[depth - 1], "type": 2 if is_stream else 1, "children": [],
                            "data": data if is_stream else b""})
            index[key] = len(entries) - 1
            entries[index["/".join(parts[:depth - 1])]]["children"].append(index[key])

    def order(i: int) -> tuple[int, str]:
        return (len(entries[i]["name"]), entries[i]["name"].upper())

    for e in entries:
        e["left"] = e["right"] = e["child"] = _NOSTREAM
    for e in entries:
        kids = sorted(e["children"], key=order)
        if kids:  # a chain to the right: a valid (if unbalanced) binary search tree
            e["child"] = kids[0]
            for a, b in zip(kids, kids[1:]):
                entries[a]["right"] = b

    mini = bytearray()
    minifat: list[int] = []
    big: list[tuple[int, bytes]] = []
    for i, e in enumerate(entries):
        data = e["data"]
        if e["type"] != 2 or not data:
            e["start"], e["size"] = (_END, 0) if e["type"] != 5 else (_END, 0)
            continue
        if len(data) < 4096:
            first = len(mini) // 64
            count = (len(data) + 63) // 64
            minifat.extend(list(range(first + 1, first + count)) + [_END])
            mini += data + b"\x00" * (count * 64 - len(data))
            e["start"], e["size"] = first, len(data)
        else:
            big.append((i, data))

    def sectors(n: int) -> int:
        return (n + 511) // 512

    dir_sectors = sectors(len(entries) * 128)
    minifat_sectors = sectors(len(minifat) * 4)
    mini_sectors = sectors(len(mini))
    big_sectors = sum(sectors(len(d)) for _, d in big)
    other = dir_sectors + minifat_sectors + mini_sectors + big_sectors
    fat_sectors = 1
    while fat_sectors * 128 < fat_sectors + other:
        fat_sectors += 1
    fat: list[int] = [_FATSECT] * fat_sectors
    pos = fat_sectors

    def chain(count: int) -> int:
        nonlocal pos
        start = pos
        for k in range(count):
            fat.append(pos + 1 if k < count - 1 else _END)
            pos += 1
        return start

    dir_start = chain(dir_sectors)
    minifat_start = chain(minifat_sectors) if minifat_sectors else _END
    mini_start = chain(mini_sectors) if mini_sectors else _END
    entries[0]["start"], entries[0]["size"] = mini_start, len(mini)
    big_blobs = []
    for i, data in big:
        entries[i]["start"], entries[i]["size"] = chain(sectors(len(data))), len(data)
        big_blobs.append(data + b"\x00" * (sectors(len(data)) * 512 - len(data)))
    fat += [_FREE] * (fat_sectors * 128 - len(fat))

    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 40, 0, fat_sectors, dir_start, 0, 4096,
                     minifat_start, minifat_sectors, _END, 0)
    difat = list(range(fat_sectors)) + [_FREE] * (109 - fat_sectors)
    struct.pack_into("<109I", header, 76, *difat)

    directory = bytearray()
    for i, e in enumerate(entries):
        name = e["name"].encode("utf-16-le") + b"\x00\x00"
        record = bytearray(128)
        record[0:len(name)] = name
        struct.pack_into("<HBB", record, 64, len(name), e["type"], 1)
        struct.pack_into("<III", record, 68, e["left"], e["right"], e["child"])
        if i == 0:
            record[80:96] = root_clsid
        struct.pack_into("<IQ", record, 116, e["start"], e["size"])
        directory += record
    directory += b"\x00" * (dir_sectors * 512 - len(directory))
    for k in range(len(entries), dir_sectors * 4):  # unused entries: no siblings, no child
        struct.pack_into("<III", directory, k * 128 + 68, _NOSTREAM, _NOSTREAM, _NOSTREAM)

    body = struct.pack(f"<{len(fat)}I", *fat)
    body += directory
    if minifat_sectors:
        mf = struct.pack(f"<{len(minifat)}I", *minifat)
        body += mf + b"\xff" * (minifat_sectors * 512 - len(mf))
    body += bytes(mini) + b"\x00" * (mini_sectors * 512 - len(mini))
    body += b"".join(big_blobs)
    return bytes(header) + body


def ovba_compress(data: bytes) -> bytes:
    """MS-OVBA 2.4.1 compression with literal tokens only (valid, if not small)."""
    out = bytearray(b"\x01")
    for start in range(0, max(len(data), 1), 4096):
        chunk = data[start:start + 4096]
        body = bytearray()
        for i in range(0, len(chunk), 8):
            body += b"\x00" + chunk[i:i + 8]  # flag byte 0: eight literal tokens
        header = 0xB000 | (len(body) + 2 - 3)  # compressed chunk, signature 0b011
        out += struct.pack("<H", header) + body
    return bytes(out)


def _rec(rid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", rid, len(payload)) + payload


def vba_project(module: str = "Module1", source: str | None = None, root: str = "") -> dict[str, bytes]:
    """The streams of a VBA project with one standard module (``root`` is the storage holding it)."""
    if source is None:
        source = ('Attribute VB_Name = "Module1"\r\nSub AutoOpen()\r\n'
                  '    Shell "cmd.exe /c whoami"\r\nEnd Sub\r\n')
    name = module.encode("ascii")
    uname = module.encode("utf-16-le")
    d = bytearray()
    d += _rec(0x0001, struct.pack("<I", 1))                      # PROJECTSYSKIND: 32-bit Windows
    d += _rec(0x0002, struct.pack("<I", 0x409))                  # PROJECTLCID
    d += _rec(0x0014, struct.pack("<I", 0x409))                  # PROJECTLCIDINVOKE
    d += _rec(0x0003, struct.pack("<H", 1252))                   # PROJECTCODEPAGE
    d += _rec(0x0004, b"VBAProject")                             # PROJECTNAME
    d += _rec(0x0005, b"") + _rec(0x0040, b"")                   # PROJECTDOCSTRING (+ unicode)
    d += _rec(0x0006, b"") + _rec(0x003D, b"")                   # PROJECTHELPFILEPATH (x2)
    d += _rec(0x0007, struct.pack("<I", 0))                      # PROJECTHELPCONTEXT
    d += _rec(0x0008, struct.pack("<I", 0))                      # PROJECTLIBFLAGS
    d += struct.pack("<HIIH", 0x0009, 4, 1, 0)                   # PROJECTVERSION (size field reserved = 4)
    d += _rec(0x000C, b"") + _rec(0x003C, b"")                   # PROJECTCONSTANTS (+ unicode)
    d += _rec(0x000F, struct.pack("<H", 1))                      # PROJECTMODULES: one module
    d += _rec(0x0013, struct.pack("<H", 0xFFFF))                 # PROJECTCOOKIE
    d += _rec(0x0019, name) + _rec(0x0047, uname)                # MODULENAME, MODULENAMEUNICODE
    d += _rec(0x001A, name) + _rec(0x0032, uname)                # MODULESTREAMNAME (+ unicode)
    d += _rec(0x001C, b"") + _rec(0x0048, b"")                   # MODULEDOCSTRING (+ unicode)
    d += _rec(0x0031, struct.pack("<I", 0))                      # MODULEOFFSET: source at 0
    d += _rec(0x001E, struct.pack("<I", 0))                      # MODULEHELPCONTEXT
    d += _rec(0x002C, struct.pack("<H", 0xFFFF))                 # MODULECOOKIE
    d += _rec(0x0021, b"")                                       # MODULETYPE: procedural
    d += _rec(0x002B, b"")                                       # module terminator
    d += _rec(0x0010, b"")                                       # dir terminator
    project = (f'ID="{{00000000-0000-0000-0000-000000000000}}"\r\nModule={module}\r\n'
               'Name="VBAProject"\r\nHelpContextID="0"\r\nVersionCompatible32="393222000"\r\n'
               'CMG="0000"\r\nDPB="0000"\r\nGC="0000"\r\n\r\n[Host Extender Info]\r\n'
               '&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000\r\n').encode("ascii")
    prefix = f"{root}/" if root else ""
    return {
        f"{prefix}PROJECT": project,
        f"{prefix}VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
        f"{prefix}VBA/dir": ovba_compress(bytes(d)),
        f"{prefix}VBA/{module}": ovba_compress(source.encode("cp1252")),
    }


def vba_project_bin(**kw: str) -> bytes:
    """``vbaProject.bin`` as Word 2007+ stores it in a package."""
    return cfb(vba_project(**kw))


def doc_with_macros() -> bytes:
    """A Word 97-2003 document (OLE, WordDocument stream) with a VBA project under Macros/."""
    streams = {"WordDocument": b"\xec\xa5" + b"\x00" * 4094, "1Table": b"\x00" * 512}
    streams.update(vba_project(root="Macros"))
    return cfb(streams)


# --- Office packages -------------------------------------------------------

_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOCX_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
_DOCM_MAIN = "application/vnd.ms-word.document.macroEnabled.main+xml"


def ooxml_word(*, macro_enabled: bool, vba: bytes | None, text: str = "Báo cáo tháng 11",
               vba_part: str = "vbaProject.bin") -> bytes:
    """A Word package: .docm when ``macro_enabled``, else .docx; with the VBA project at word/``vba_part``
    (Office finds it through the relationship, whatever its name) when ``vba``."""
    overrides = [f'<Override PartName="/word/document.xml" ContentType="{_DOCM_MAIN if macro_enabled else _DOCX_MAIN}"/>']
    doc_rels = ""
    if vba is not None:
        overrides.append(f'<Override PartName="/word/{vba_part}" ContentType="application/vnd.ms-office.vbaProject"/>')
        doc_rels = ('<Relationship Id="rId9" Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" '
                    f'Target="{vba_part}"/>')
    members = {
        "[Content_Types].xml": (f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{_CT_NS}">'
                                '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                                '<Default Extension="xml" ContentType="application/xml"/>'
                                + "".join(overrides) + "</Types>"),
        "_rels/.rels": (f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_REL_NS}">'
                        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
                        'Target="word/document.xml"/></Relationships>'),
        "word/document.xml": ('<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                              f'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>'),
        "word/_rels/document.xml.rels": f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_REL_NS}">{doc_rels}</Relationships>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content.encode("utf-8"))
        if vba is not None:
            z.writestr(f"word/{vba_part}", vba)
    return buf.getvalue()


def python_docx(text: str = "Số: 12/BC-STTTT") -> bytes:
    """A plain DOCX written by python-docx."""
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


# --- Archives --------------------------------------------------------------


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def _zipcrypto_keys(password: bytes) -> list[int]:
    keys = [0x12345678, 0x23456789, 0x34567890]
    for c in password:
        _update(keys, c)
    return keys


def _crc_byte(crc: int, b: int) -> int:
    return (binascii.crc32(bytes([b]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF


def _update(keys: list[int], c: int) -> None:
    keys[0] = _crc_byte(keys[0], c)
    keys[1] = (keys[1] + (keys[0] & 0xFF)) & 0xFFFFFFFF
    keys[1] = (keys[1] * 134775813 + 1) & 0xFFFFFFFF
    keys[2] = _crc_byte(keys[2], (keys[1] >> 24) & 0xFF)


def _zipcrypto(data: bytes, password: bytes, check: int) -> bytes:
    keys = _zipcrypto_keys(password)
    header = bytes(range(11)) + bytes([check])
    out = bytearray()
    for c in header + data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(c ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        _update(keys, c)
    return bytes(out)


def zipcrypto_zip(members: list[tuple[str, bytes]], password: bytes = b"123456") -> bytes:
    """A ZIP whose members are encrypted with traditional PKWARE encryption (stored, flag bit 0)."""
    local = bytearray()
    central = bytearray()
    for name, data in members:
        crc = zlib.crc32(data)
        enc = _zipcrypto(data, password, (crc >> 24) & 0xFF)
        fname = name.encode("utf-8")
        offset = len(local)
        flags = 0x0001 | 0x0800
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0x21, crc, len(enc), len(data), len(fname), 0)
        local += fname + enc
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0x21, crc, len(enc), len(data),
                               len(fname), 0, 0, 0, 0, 0, offset)
        central += fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    return bytes(local + central + end)


def aes_zip(members: list[tuple[str, bytes]], password: bytes = b"123456") -> bytes:
    """A ZIP with WinZip AES-256 encrypted members (pyzipper)."""
    import pyzipper

    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as z:
        z.setpassword(password)
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def zip_bomb(size: int = 64 * 1024 * 1024) -> bytes:
    """A small, highly compressible ZIP: ``size`` zero bytes deflate to about a thousandth of that."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("zeros.bin", "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            for _ in range(size // len(block)):
                f.write(block)
    return buf.getvalue()


def overlapping_zip() -> bytes:
    """A ZIP whose directory lists two names for the same local entry (Fifield's bomb shape)."""
    base = zip_bytes([("a.txt", b"x" * 4096)])
    eocd = base.rfind(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack("<HII", base[eocd + 10:eocd + 20])
    entry = base[cd_offset:cd_offset + cd_size]
    twin = entry.replace(b"a.txt", b"b.txt")
    end = bytearray(base[eocd:])
    struct.pack_into("<HHII", end, 8, count + 1, count + 1, cd_size * 2, cd_offset)
    return base[:cd_offset] + entry + twin + bytes(end)


def nested_zip(levels: int, inner: tuple[str, bytes]) -> bytes:
    """``inner`` inside ``levels`` zips, each named level<N>.zip inside the next."""
    data = zip_bytes([inner])
    for level in range(levels - 1, 0, -1):
        data = zip_bytes([(f"level{level}.zip", data)])
    return data


def tar_gz(members: list[tuple[str, bytes]], gz_name: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename=gz_name or "", mode="wb", fileobj=out, mtime=0) as g:
        g.write(buf.getvalue())
    return out.getvalue()


def sevenzip(members: list[tuple[str, bytes]], password: str | None = None, header_encryption: bool = False) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password, header_encryption=header_encryption) as z:
        for name, data in members:
            z.writestr(data, name)
    return buf.getvalue()


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _rar5_block(fields: bytes, data: bytes = b"") -> bytes:
    header = _vint(len(fields)) + fields
    return struct.pack("<I", zlib.crc32(header)) + header + data


def rar5(members: list[tuple[str, bytes]], *, compressed: bool = False, encrypted: bool = False) -> bytes:
    """A RAR 5 archive. Members are stored, or marked compressed (method 3), or carry an encryption record."""
    out = bytearray(b"Rar!\x1a\x07\x01\x00")
    out += _rar5_block(_vint(1) + _vint(0) + _vint(0))  # main archive header
    for name, data in members:
        fname = name.encode("utf-8")
        method = 3 if compressed else 0
        extra = b""
        if encrypted:
            record = _vint(0x01) + _vint(0) + _vint(0) + bytes([15]) + b"\x01" * 16 + b"\x02" * 16
            extra = _vint(len(record)) + record
        flags = 0x02 | (0x01 if extra else 0)  # data area present, extra area present
        fields = _vint(2) + _vint(flags)
        if extra:
            fields += _vint(len(extra))
        fields += _vint(len(data))
        fields += _vint(0x04)                            # file flags: data CRC32 present
        fields += _vint(len(data)) + _vint(0x20)         # unpacked size, attributes
        fields += struct.pack("<I", zlib.crc32(data))
        fields += _vint(method << 7) + _vint(0)          # compression info, host OS Windows
        fields += _vint(len(fname)) + fname + extra
        out += _rar5_block(fields, data)
    out += _rar5_block(_vint(5) + _vint(0) + _vint(0))  # end of archive
    return bytes(out)


def cab_header() -> bytes:
    """The first bytes of a Microsoft Cabinet file (no library reads CABs here)."""
    return b"MSCF\x00\x00\x00\x00" + struct.pack("<I", 200) + b"\x00" * 188


# --- PDF -------------------------------------------------------------------


def pdf_plain(text: str = "So: 12/BC-STTTT") -> bytes:
    from fpdf import FPDF

    doc = FPDF()
    doc.add_page()
    doc.set_font("helvetica", size=12)
    doc.cell(text=text)
    return bytes(doc.output())


def pdf_with_javascript() -> bytes:
    """A PDF that runs JavaScript when opened (an /OpenAction of type /JavaScript)."""
    import pypdf
    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    writer = pypdf.PdfWriter()
    writer.add_blank_page(200, 200)
    action = DictionaryObject({NameObject("/Type"): NameObject("/Action"), NameObject("/S"): NameObject("/JavaScript"),
                               NameObject("/JS"): TextStringObject("app.alert('xin chao');")})
    writer._root_object[NameObject("/OpenAction")] = writer._add_object(action)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_with_launch() -> bytes:
    import pypdf
    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    writer = pypdf.PdfWriter()
    writer.add_blank_page(200, 200)
    action = DictionaryObject({NameObject("/S"): NameObject("/Launch"),
                               NameObject("/F"): TextStringObject("cmd.exe")})
    writer._root_object[NameObject("/OpenAction")] = writer._add_object(action)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_with_embedded(name: str, data: bytes) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(200, 200)
    writer.add_attachment(name, data)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_encrypted(user_password: str, owner_password: str = "chu-so-huu") -> bytes:
    """pypdf's standard security handler (AES-256); an empty user password opens for every reader."""
    import pypdf

    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf_plain()))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_public_key() -> bytes:
    """A PDF encrypted for one recipient certificate (pyHanko: /Adobe.PubSec, adbe.pkcs7.s5, RSA key transport)."""
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.pdf_utils.writer import copy_into_new_writer

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Văn thư Sở Nội vụ")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(pdf_plain())))
    writer.encrypt_pubkey([asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))])
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_other_handler(name: bytes = b"FOPN_foweb") -> bytes:
    """A password-encrypted PDF whose encryption dictionary names a third-party security handler
    (the name FileOpen's DRM plug-in registers) instead of /Standard."""
    return pdf_encrypted("matkhau").replace(b"/Filter /Standard", b"/Filter /" + name, 1)


def pdf_truncated() -> bytes:
    """fpdf2's PDF cut in the middle, as a failed upload or a size limit leaves it."""
    data = pdf_plain()
    return data[:len(data) // 2]


def pdf_without_xref() -> bytes:
    """fpdf2's PDF up to its cross-reference table, with "obj" misspelt so that nothing can be rebuilt."""
    data = pdf_plain()
    return data[:data.find(b"xref")].replace(b" obj", b" jbo") + b"%%EOF\n"


class TestCA:
    """A test certificate authority and one signer certificate, made with cryptography."""

    def __init__(self, name: str = "Cục Chứng thực số thử nghiệm", signer: str = "Nguyễn Văn An"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sở Thông tin và Truyền thông"),
                             x509.NameAttribute(NameOID.COMMON_NAME, signer)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    def ca_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.ca_cert.public_bytes(Encoding.PEM)

    def sign_pdf(self, pdf: bytes, field: str = "ChuKySo1") -> bytes:
        """``pdf`` with an approval signature made by the signer certificate (pyHanko), as an incremental update."""
        from asn1crypto import keys as asn1_keys
        from asn1crypto import x509 as asn1_x509
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import signers
        from pyhanko_certvalidator.registry import SimpleCertificateStore

        signer = signers.SimpleSigner(
            signing_cert=asn1_x509.Certificate.load(self.cert.public_bytes(Encoding.DER)),
            signing_key=asn1_keys.PrivateKeyInfo.load(
                self.key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())),
            cert_registry=SimpleCertificateStore.from_certs(
                [asn1_x509.Certificate.load(self.ca_cert.public_bytes(Encoding.DER))]),
        )
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        out = signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name=field), signer=signer)
        return out.getvalue()


def sign_pdf_twice(pdf: bytes) -> bytes:
    """The competent signer's signature, then the agency's (Decree 30 Art. 5: "[s2]" in VN-DOCUMENTS)."""
    once = TestCA(signer="Nguyễn Văn Giám Đốc").sign_pdf(pdf, field="ChuKyNguoiKy")
    return TestCA(signer="Sở Thông tin và Truyền thông tỉnh Bình Thuận").sign_pdf(once, field="ChuKyCoQuan")


# --- MIME ------------------------------------------------------------------


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def part(headers: str | list[str], body: bytes) -> bytes:
    """One MIME part: header lines (CRLF added), a blank line, the body."""
    lines = [headers] if isinstance(headers, str) else headers
    return "".join(h + "\r\n" for h in lines).encode("utf-8") + b"\r\n" + body


def attachment(data: bytes, *, ctype: str = "application/octet-stream", name: str | None = None,
               filename: str | None = None, disposition: str | None = "attachment",
               extra: list[str] | None = None) -> bytes:
    """A base64 part; ``name``/``filename`` are put in as given (quote or encode them yourself)."""
    content_type = ctype + (f'; name="{name}"' if name is not None else "")
    headers = [f"Content-Type: {content_type}", "Content-Transfer-Encoding: base64"]
    if disposition:
        headers.append(f"Content-Disposition: {disposition}" + (f'; filename="{filename}"' if filename is not None else ""))
    headers += extra or []
    return part(headers, b64(data))


def text_part(text: str = "Kính gửi các đơn vị.\r\n", subtype: str = "plain") -> bytes:
    return part([f"Content-Type: text/{subtype}; charset=utf-8", "Content-Transfer-Encoding: 8bit"],
                text.encode("utf-8"))


def multipart(parts: list[bytes], subtype: str = "mixed", boundary: str = "b1", close: bool = True,
              extra_params: str = "") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    if close:
        body += b"--" + boundary.encode() + b"--\r\n"
    return part(f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra_params}', body)


def rfc822(inner: bytes) -> bytes:
    return part("Content-Type: message/rfc822", inner)


def message(body: bytes, subject: str = "Báo cáo tháng 11", sender: str = "vanthu.sotttt@binhthuan.gov.vn",
            to: str = "vanthu.snv@binhthuan.gov.vn") -> bytes:
    """A whole message whose MIME body (headers included) is ``body``."""
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {_encoded(subject)}\r\n"
            f"Date: Sat, 21 Nov 2026 09:00:00 +0700\r\nMessage-ID: <{zlib.crc32(body)}@test>\r\nMIME-Version: 1.0\r\n")
    return head.encode("ascii") + body


def mail(*attachments: bytes, text: str = "Kính gửi các đơn vị.\r\n") -> bytes:
    """A multipart/mixed message: a text body, then ``attachments``."""
    return message(multipart([text_part(text), *attachments]))


def _encoded(subject: str) -> str:
    """A Subject value, RFC 2047-encoded and folded with CRLF (a bare LF is refused at the edge)."""
    return email.header.Header(subject, "utf-8").encode(linesep="\r\n")
