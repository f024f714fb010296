"""Files embedded in Office documents, listed like the members of an archive.

A document can carry any file as an OLE object; Word, Excel and PowerPoint
show it as an icon and open it with a double click, so a program inside a
document is as dangerous as one in a zip. Where they are:

- the Packager's ``\\x01Ole10Native`` stream (MS-OLEDS 2.3.6): a file with its
  name, in any storage of an OLE file (``ObjectPool/_N/`` in Word 97-2003,
  ``MBD.../`` in Excel 97-2003, or an OOXML package's ``embeddings/oleObject1.bin``);
  oletools' ``OleNativeStream`` reads its header;
- the ``Package`` stream of an embedded OOXML document, and the ``CONTENTS``
  stream other servers (a PDF reader) store their file in;
- the parts under ``embeddings/`` of an OOXML package (an embedded workbook,
  document or other file as it is) and ODF's ``Object N`` parts.

An OLE object that is itself a document (an embedded Word 97-2003 file) is
listed whole, so its own macros and embeddings are inspected in turn. Members
are read within the message's budget (count and bytes, as archive members):
past it the document is over its limits, like an archive.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from mailgw.attachments.archives import RATIO_FLOOR, Listing, Member
from mailgw.attachments.budget import Budget

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_STREAMS = 5000   # directory entries of one OLE file looked at
_OOXML_EMBEDDING = re.compile(r"[^/]+/embeddings/[^/]+\Z", re.IGNORECASE)
_ODF_OBJECT = re.compile(r"Object \d+\Z")
_CARRIERS = ("\x01ole10native", "package", "contents")


def members(data: bytes, zip_names: tuple[str, ...], budget: Budget, listing: Listing) -> Iterator[Member]:
    """The files embedded in the Office document ``data``; ``listing`` counts them. Raises OverLimit for time."""
    if data[:8] == _OLE_MAGIC:
        yield from _ole_members(data, budget, listing, whole=False)
    elif zip_names:
        yield from _package_members(data, zip_names, budget, listing)


def present(data: bytes, zip_names: tuple[str, ...]) -> bool:
    """Whether the document embeds anything (looked at without reading the objects)."""
    if data[:8] != _OLE_MAGIC:
        return any(_OOXML_EMBEDDING.match(n) or _ODF_OBJECT.match(n) for n in zip_names)
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            return any(len(p) > 1 and p[-1].lower() in _CARRIERS
                       for p in ole.listdir(streams=True, storages=False)[:_MAX_STREAMS])
    except Exception:
        return False


def _admit(size: int, budget: Budget, listing: Listing, what: str, member: bool = True) -> bool:
    """Count ``size`` bytes read out of the document (and, when ``member``, one more embedded file);
    False (and the listing over its limits) past the message's budget."""
    budget.check_time()
    if member and budget.members_left() <= 0:
        listing.over(f"more than {budget.limits.max_archive_members} files in the message's archives")
        return False
    if size > budget.bytes_left():
        listing.over(f"{what} of {size} bytes is past the {budget.limits.max_archive_total}-byte limit")
        return False
    budget.expanded += size
    listing.expanded += size
    if member:
        budget.members += 1
        listing.members += 1
    return True


def _ole_members(data: bytes, budget: Budget, listing: Listing, whole: bool) -> Iterator[Member]:
    """Objects in the OLE file ``data``; ``whole`` when it is itself an embedded object (an oleObject part)."""
    import olefile

    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception:
        return  # not readable as OLE: the sniffer said so already
    found: list[tuple[str, int]] = []
    with ole:
        for path in ole.listdir(streams=True, storages=False)[:_MAX_STREAMS]:
            leaf = path[-1].lower()
            if leaf in _CARRIERS and (len(path) > 1 or whole):
                found.append(("/".join(path), ole.get_size(path)))
        if whole and not found:
            return  # an oleObject part that is a whole document: listed by the caller
        for stream_path, size in found:
            if size > len(data):
                listing.over(f"embedded object {stream_path} claims more bytes than its document has")
                return
            if not _admit(size, budget, listing, f"embedded object {stream_path}"):
                return
            try:
                with ole.openstream(stream_path) as stream:
                    blob = stream.read(size)
            except Exception as exc:
                listing.over(f"damaged embedded object {stream_path}: {_short(exc)}")
                continue
            yield _member(stream_path, blob)


def _member(stream_path: str, blob: bytes) -> Member:
    """The file an object stream carries: the Packager's file with its own name, else the stream's bytes."""
    if not stream_path.lower().endswith("\x01ole10native"):
        return Member(stream_path.replace("\x01", ""), blob, len(blob))
    native = _native(blob)
    if native is None:
        return Member(stream_path.replace("\x01", ""), blob, len(blob))
    name, content = native
    return Member(name, content, len(content) if content is not None else 0)


def _native(blob: bytes) -> tuple[str, bytes | None] | None:
    """Name and content of an OLENativeStream (oletools' reader); the content is None for a link."""
    try:
        from oletools.oleobj import OleNativeStream

        native: Any = OleNativeStream(blob)
    except Exception:
        return None
    name = next((n for n in (native.filename, native.src_path, native.temp_path) if n), "") or "(embedded file)"
    name = re.split(r"[\\/]", name)[-1] or "(embedded file)"
    if native.is_link or native.data is None:
        return name, None
    return name, bytes(native.data)


def _package_members(data: bytes, zip_names: tuple[str, ...], budget: Budget, listing: Listing) -> Iterator[Member]:
    wanted = [n for n in zip_names if _OOXML_EMBEDDING.match(n) or _ODF_OBJECT.match(n)]
    if not wanted:
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:
        return
    with archive:
        for name in wanted:
            info = archive.getinfo(name)
            if info.flag_bits & 1:
                listing.encrypted = True
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= RATIO_FLOOR and ratio > budget.limits.max_archive_ratio:
                listing.over(f"embedded part {name} compression ratio {ratio:.0f} over {budget.limits.max_archive_ratio:g}")
                return
            if not _admit(info.file_size, budget, listing, f"embedded part {name}", member=False):
                return
            try:
                with archive.open(info) as f:
                    blob = f.read(info.file_size + 1)
            except Exception as exc:
                listing.over(f"damaged embedded part {name}: {_short(exc)}")
                continue
            if len(blob) > info.file_size:
                listing.over(f"embedded part {name} is larger than its directory says")
                continue
            if blob[:8] == _OLE_MAGIC:  # an OLE object: the files it carries, or the whole (a document)
                carried = list(_ole_members(blob, budget, listing, whole=True))
                if carried:
                    yield from carried
                    continue
            if not _admit(0, budget, listing, f"embedded part {name}"):
                return
            yield Member(name, blob, len(blob))


def _short(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:120]
