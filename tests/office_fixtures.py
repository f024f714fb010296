"""Office files that hide what they carry: encrypted, formula-bearing, with embedded objects.

Most of them are real files saved by Microsoft Office, from the test corpus that
oletools ships in its source distribution (tests/data/attachments/oletools/,
see SOURCES.md there). The rest are made here from those real files with the
tool that owns each step, and say so:

- ``encrypt``: msoffcrypto-tool's own OOXML encryption (ECMA-376 agile, what
  Office 2010 and later write), with Excel's silent password "VelvetSweatshop"
  or with a password nobody told mailgw;
- ``real_vba_project``: the ``vbaProject.bin`` that Excel saved in
  autostart-encrypt-standardpassword.xlsb (an auto-run VBA macro), taken out
  after msoffcrypto-tool decrypts that file, to be put into other real packages;
- the SYLK variants start from Excel's own SYLK file and change only the lines
  named; DIF and web-query files are written from their documented layouts
  (Excel's DIF import, Microsoft's .iqy format), too small to need a tool;
- ``ole_package``: the Packager's ``\\x01Ole10Native`` stream as MS-OLEDS 2.3.6
  lays it out (what oletools' OleNativeStream reads), put into a compound file
  with tests/attachment_fixtures.cfb, inside a python-docx document.
"""

from __future__ import annotations

import io
import pathlib
import struct
import zipfile

from tests import attachment_fixtures as fx

CORPUS = pathlib.Path(__file__).parent / "data" / "attachments" / "oletools"
VELVET = "VelvetSweatshop"        # Excel opens a workbook encrypted with it without asking (MS-OFFCRYPTO 2.4.2.3)
OTHER_PASSWORD = "Hop-dong-2026!"  # any password the gateway is not told


def real(name: str) -> bytes:
    """A file of oletools' test corpus, as Office saved it."""
    return (CORPUS / name).read_bytes()


def decrypt(data: bytes, password: str = VELVET) -> bytes:
    import msoffcrypto

    office = msoffcrypto.OfficeFile(io.BytesIO(data))
    office.load_key(password=password)
    out = io.BytesIO()
    office.decrypt(out)
    return out.getvalue()


def encrypt(package: bytes, password: str) -> bytes:
    """An OOXML package encrypted as Office 2010+ does (agile), by msoffcrypto-tool."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(package)).encrypt(password, out)
    return out.getvalue()


def real_xlsb_with_vba() -> bytes:
    """Excel's .xlsb with an auto-run VBA macro, decrypted from the VelvetSweatshop copy it saved."""
    return decrypt(real("autostart-encrypt-standardpassword.xlsb"))


def real_vba_project() -> bytes:
    with zipfile.ZipFile(io.BytesIO(real_xlsb_with_vba())) as z:
        return z.read("xl/vbaProject.bin")


def with_part(package: bytes, name: str, data: bytes) -> bytes:
    """``package`` with one more part (Office finds a VBA project by its part whatever the package says)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(name, data)
    return out.getvalue()


def xlsx_with_vba() -> bytes:
    """Excel's clean .xlsx (embedded-simple-2007.xlsx) carrying Excel's real VBA project as xl/vbaProject.bin."""
    return with_part(real("embedded-simple-2007.xlsx"), "xl/vbaProject.bin", real_vba_project())


def docx_with_vba() -> bytes:
    """Word's clean .docx (harmless-clean.docx) carrying Excel's real VBA project as word/vbaProject.bin."""
    return with_part(real("harmless-clean.docx"), "word/vbaProject.bin", real_vba_project())


def odt_encrypted() -> bytes:
    """Writer's .odt (embedded-simple-2007.odt) as a password-protected one is stored (ODF 1.2 part 3,
    3.8): content.xml and styles.xml replaced by encrypted-looking bytes, and their manifest entries
    given the <manifest:encryption-data> LibreOffice writes (AES-256-CBC, PBKDF2, SHA-256 checksum)."""
    import os

    data = real("embedded-simple-2007.odt")
    encryption = ('<manifest:encryption-data manifest:checksum-type="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0#'
                  'sha256-1k" manifest:checksum="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="><manifest:algorithm '
                  'manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc" manifest:initialisation-vector='
                  '"AAAAAAAAAAAAAAAAAAAAAA=="/><manifest:key-derivation manifest:key-derivation-name="PBKDF2" '
                  'manifest:key-size="32" manifest:iteration-count="100000" manifest:salt="AAAAAAAAAAAAAAAAAAAAAA=="/>'
                  '</manifest:encryption-data>')
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            part = src.read(info)
            if info.filename in ("content.xml", "styles.xml"):
                part = os.urandom(len(part))
            elif info.filename == "META-INF/manifest.xml":
                for name in ("content.xml", "styles.xml"):
                    entry = f'manifest:full-path="{name}" manifest:media-type="text/xml"/>'.encode()
                    part = part.replace(entry, entry[:-2] + b">" + encryption.encode() + b"</manifest:file-entry>")
            dst.writestr(info, part)
    return out.getvalue()


# --- Text formats Excel opens ---------------------------------------------------

_SYLK_MACRO_LINES = (b"O;L;E;D;V0;K47;G100 0.001", b"NN;NAuto_Open;ER1C1",
                     b'C;Y1;X1;KFALSE;EALERT("This is a sample Excel 4 macro")', b"C;Y2;KTRUE;EHALT()")


def _sylk_lines() -> list[bytes]:
    return real("excel4_sample_macro.slk").split(b"\r\n")


def sylk_clean() -> bytes:
    """Excel's SYLK file without its macro sheet, auto-open name and macro cells; one value cell instead."""
    lines = [line for line in _sylk_lines() if line not in _SYLK_MACRO_LINES]
    end = lines.index(b"E")
    lines[end:end] = [b"O;L;D;V0;K47;G100 0.001", b'C;Y1;X1;K"Bao cao thang 11"']
    return b"\r\n".join(lines)


def sylk_exec() -> bytes:
    """Excel's SYLK file whose macro cell runs EXEC("calc.exe") instead of ALERT (and no Auto_Open name)."""
    lines = [line for line in _sylk_lines() if not line.startswith(b"NN;")]
    at = lines.index(_SYLK_MACRO_LINES[2])
    lines[at] = b'C;Y1;X1;K0;EEXEC("calc.exe")'
    return b"\r\n".join(lines)


def sylk_dde() -> bytes:
    """Excel's clean SYLK file with a cell whose expression is a DDE link to cmd."""
    lines = sylk_clean().split(b"\r\n")
    end = lines.index(b"E")
    lines[end:end] = [b"C;Y2;X1;K0;ECMD|' /C calc.exe'!A0"]
    return b"\r\n".join(lines)


def dif(value: str) -> bytes:
    """A one-cell DIF file (header TABLE/VECTORS/TUPLES/DATA, then a string cell: "1,0" and its value)."""
    rows = ["TABLE", "0,1", '"EXCEL"', "VECTORS", "0,1", '""', "TUPLES", "0,1", '""', "DATA", "0,0", '""',
            "-1,0", "BOT", "1,0", f'"{value}"', "-1,0", "EOD", ""]
    return "\r\n".join(rows).encode("ascii")


def iqy(url: str = "https://tailieu.example/baocao.dat") -> bytes:
    """An Excel web query: "WEB", the version 1, the address Excel fetches when the file is opened."""
    return f"WEB\r\n1\r\n{url}\r\n".encode("ascii")


# --- Embedded objects ----------------------------------------------------------


def ole10native(name: str, data: bytes) -> bytes:
    """MS-OLEDS 2.3.6 OLENativeStream as the Packager writes it: size, type 2, file name, source path,
    two reserved words, temporary path, data size, data."""
    source = f"C:\\Users\\vanthu\\Desktop\\{name}".encode("cp1252") + b"\x00"
    temp = f"C:\\Users\\vanthu\\AppData\\Local\\Temp\\{name}".encode("cp1252") + b"\x00"
    body = (struct.pack("<H", 2) + name.encode("cp1252") + b"\x00" + source + struct.pack("<II", 0x00030000, 0)
            + temp + struct.pack("<I", len(data)) + data)
    return struct.pack("<I", len(body)) + body


def ole_package(name: str, data: bytes) -> bytes:
    """An embedded Packager object: a compound file with the \\x01Ole10Native stream (word/embeddings/oleObject1.bin)."""
    return fx.cfb({"\x01Ole10Native": ole10native(name, data)})


def docx_with_embedded(name: str, data: bytes) -> bytes:
    """A python-docx document carrying ``name`` as a Packager object in word/embeddings/oleObject1.bin."""
    return with_part(fx.python_docx(), "word/embeddings/oleObject1.bin", ole_package(name, data))


def spin_count(encrypted: bytes, rounds: int) -> bytes:
    """An agile-encrypted file whose password hashing asks for ``rounds`` (seven digits) rounds.

    olefile rewrites a stream only at its own size: the XML declaration's CRLF becomes LF to make
    room for the seventh digit of the count Office writes (100000).
    """
    import olefile

    assert 1_000_000 <= rounds <= 9_999_999
    with olefile.OleFileIO(io.BytesIO(encrypted)) as ole:
        info = ole.openstream("EncryptionInfo").read()
    changed = info.replace(b'spinCount="100000"', f'spinCount="{rounds}"'.encode()).replace(b"?>\r\n", b"?>\n", 1)
    assert len(changed) == len(info) and changed != info
    buf = io.BytesIO(encrypted)
    with olefile.OleFileIO(buf, write_mode=True) as ole:
        ole.write_stream("EncryptionInfo", changed)
    return buf.getvalue()
