"""Archives listed and unpacked in memory, within the bomb limits: zip, tar, gzip/bzip2/xz, 7z, rar.

Nothing is written to disk and no external program is started. Each archive
yields its members one at a time, so memory holds one member per nesting level.
Before anything is unpacked, the sizes the archive declares are checked against
the member count, the bytes left for the message and the compression ratio;
while unpacking, the bytes actually produced are counted again (declared sizes
can lie). A ZIP is also checked for the shapes of the non-recursive bomb
("A better zip bomb", Fifield 2019: entries overlapping the same data) and for
data its directory does not list (archives joined together, which some tools
read from the front and others from the back).

Past a limit, or when the content cannot be read (a damaged archive, an unknown
compression method, RAR compression without a decompressor, CAB, TNEF, zstd),
the archive is "over limits" with a reason: the policy cannot vouch for what it
did not see. Encrypted members are listed by name (and judged by name) but not
read. Libraries: zipfile, tarfile, zlib/bz2/lzma (standard library), py7zr
(which has its own header and extraction-size limits), rarfile (pure-Python
header parsing; it reads stored members itself and would need the unrar program
for compressed ones, which is never called here).
"""

from __future__ import annotations

import bisect
import bz2
import dataclasses
import io
import lzma
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from mailgw.attachments import sniff as types
from mailgw.attachments.budget import Budget, OverLimit

RATIO_FLOOR = 1 << 20  # archives that expand to less than this are not judged by their ratio
_CHUNK = 1 << 20
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_LOCAL_HEADER = re.compile(re.escape(b"PK\x03\x04"))


@dataclasses.dataclass
class Member:
    """One file inside an archive. ``data`` is None when it was not read (encrypted, or over a limit)."""

    name: str
    data: bytes | None
    size: int
    encrypted: bool = False


@dataclasses.dataclass
class Listing:
    """What the archive turned out to hold, filled in while its members are read."""

    compressed: int
    members: int = 0
    expanded: int = 0
    over_limits: bool = False
    reason: str | None = None
    encrypted: bool = False
    names_only: bool = False  # members are listed but no longer read

    def over(self, reason: str) -> None:
        if not self.over_limits:
            self.over_limits, self.reason = True, reason
        self.names_only = True

    @property
    def ratio(self) -> float:
        return round(self.expanded / self.compressed, 2) if self.compressed else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, "expanded": self.expanded, "ratio": self.ratio,
                "over_limits": self.over_limits, "reason": self.reason}


def members(data: bytes, mime: str, outer_name: str | None, budget: Budget, listing: Listing) -> Iterator[Member]:
    """The members of the archive ``data`` (of type ``mime``), updating ``listing``; raises OverLimit for time."""
    opener = _OPENERS.get(mime)
    if opener is None:
        listing.over(f"uninspectable: {_LABELS.get(mime, mime)} archives cannot be listed here")
        return
    yield from opener(data, outer_name, budget, listing)


def _admit(listing: Listing, budget: Budget, count: int, declared: int, what: str) -> int:
    """Check what an archive declares before unpacking; returns how many members may be listed."""
    allowed = budget.members_left()
    if count > allowed:
        listing.over(f"more than {budget.limits.max_archive_members} files in the message's archives")
    if declared > budget.bytes_left():
        listing.over(f"{what} expands to {declared} bytes, over the {budget.limits.max_archive_total}-byte limit")
    ratio = declared / max(listing.compressed, 1)
    if declared >= RATIO_FLOOR and ratio > budget.limits.max_archive_ratio:
        listing.over(f"{what} compression ratio {ratio:.0f} over {budget.limits.max_archive_ratio:g}")
    return min(count, allowed)


def _take(listing: Listing, budget: Budget, size: int, what: str) -> bool:
    """Count ``size`` unpacked bytes; False (and the archive over limits) past the message's total."""
    budget.check_time()
    if size > budget.bytes_left():
        listing.over(f"{what} expands past the {budget.limits.max_archive_total}-byte limit")
        return False
    budget.expanded += size
    return True


def _count(listing: Listing, budget: Budget) -> None:
    listing.members += 1
    budget.members += 1


# ZIP


def _zip(data: bytes, outer_name: str | None, budget: Budget, listing: Listing) -> Iterator[Member]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except Exception as exc:
        listing.over(f"damaged zip: {_short(exc)}")
        return
    with archive:
        declared = sum(i.file_size for i in infos)
        listing.expanded = declared
        allowed = _admit(listing, budget, len(infos), declared, "zip")
        shape = _zip_shape(data, archive, infos, budget)
        if shape:
            listing.over(shape)
        for info in infos[:allowed]:
            budget.check_time()
            _count(listing, budget)
            name = info.filename
            if info.flag_bits & 1:
                listing.encrypted = True
                yield Member(name, None, info.file_size, encrypted=True)
                continue
            if info.compress_type not in _ZIP_METHODS:
                listing.over(f"uninspectable: {name} uses zip compression method {info.compress_type}")
                yield Member(name, None, info.file_size)
                continue
            if listing.names_only:
                yield Member(name, None, info.file_size)
                continue
            content = _read_zip_member(archive, info, listing, budget)
            yield Member(name, content, info.file_size if content is None else len(content))


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, listing: Listing, budget: Budget) -> bytes | None:
    out = bytearray()
    try:
        with archive.open(info) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                if not _take(listing, budget, len(chunk), "zip"):
                    return None
                out += chunk
    except OverLimit:
        raise
    except Exception as exc:
        listing.over(f"damaged zip member {info.filename}: {_short(exc)}")
        return None
    return bytes(out)


def _zip_shape(data: bytes, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], budget: Budget) -> str | None:
    """Entries that overlap, or local entries the central directory does not list."""
    spans: list[tuple[int, int]] = []
    for info in infos:
        start = info.header_offset
        head = data[start:start + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return f"zip entry {info.filename} does not start where the directory says"
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        spans.append((start, start + 30 + name_len + extra_len + info.compress_size))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            return "zip entries overlap (the shape of a zip bomb)"
    starts = [s for s, _ in spans]
    directory = getattr(archive, "start_dir", len(data))
    for n, m in enumerate(_LOCAL_HEADER.finditer(data, 0, directory)):
        if n % 4096 == 0:
            budget.check_time()
        pos = m.start()
        i = bisect.bisect_right(starts, pos) - 1
        if i < 0 or pos >= spans[i][1]:
            return "zip holds data its directory does not list (hidden or joined archives)"
    return None


# TAR


def _tar(data: bytes, outer_name: str | None, budget: Budget, listing: Listing) -> Iterator[Member]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except Exception as exc:
        listing.over(f"damaged tar: {_short(exc)}")
        return
    with archive:
        while True:
            budget.check_time()
            try:
                info = archive.next()
            except Exception as exc:
                listing.over(f"damaged tar: {_short(exc)}")
                return
            if info is None:
                return
            if not info.isreg():
                continue
            if budget.members_left() <= 0:
                listing.over(f"more than {budget.limits.max_archive_members} files in the message's archives")
                return
            _count(listing, budget)
            listing.expanded += info.size
            if info.size > budget.bytes_left():
                listing.over(f"tar expands past the {budget.limits.max_archive_total}-byte limit")
            if listing.expanded >= RATIO_FLOOR and listing.ratio > budget.limits.max_archive_ratio:
                listing.over(f"tar compression ratio over {budget.limits.max_archive_ratio:g}")  # sparse members
            if listing.names_only:
                yield Member(info.name, None, info.size)
                continue
            try:
                f = archive.extractfile(info)
                content = f.read(info.size) if f else b""
            except Exception as exc:
                listing.over(f"damaged tar member {info.name}: {_short(exc)}")
                yield Member(info.name, None, info.size)
                continue
            budget.expanded += len(content)
            yield Member(info.name, content, len(content))


# Single-stream compressors: one member, the decompressed stream.


def _stream(data: bytes, outer_name: str | None, budget: Budget, listing: Listing, kind: str) -> Iterator[Member]:
    name = _stream_name(data, outer_name, kind)
    if budget.members_left() <= 0:
        listing.over(f"more than {budget.limits.max_archive_members} files in the message's archives")
        return
    _count(listing, budget)
    out = bytearray()
    try:
        for chunk in _decompress(data, kind):
            listing.expanded += len(chunk)
            if listing.expanded >= RATIO_FLOOR and listing.ratio > budget.limits.max_archive_ratio:
                listing.over(f"{kind} compression ratio over {budget.limits.max_archive_ratio:g}")
                break
            if not _take(listing, budget, len(chunk), kind):
                break
            out += chunk
    except OverLimit:
        raise
    except Exception as exc:
        listing.over(f"damaged {kind}: {_short(exc)}")
    if listing.over_limits:
        yield Member(name, None, listing.expanded)
    else:
        yield Member(name, bytes(out), len(out))


def _decompress(data: bytes, kind: str) -> Iterator[bytes]:
    """Chunks of at most 1 MiB; concatenated streams (pigz, pbzip2) are followed."""
    pending = data
    while pending:
        if kind == "gzip":
            d: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = d.decompress(pending, _CHUNK)
            yield chunk
            while d.unconsumed_tail and not d.eof:
                yield d.decompress(d.unconsumed_tail, _CHUNK)
            if not d.eof:
                raise EOFError("truncated gzip stream")
            pending = d.unused_data
            if not pending.startswith(b"\x1f\x8b"):
                return  # trailing bytes that are not another member: gzip itself ignores them
        else:
            d = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
            yield d.decompress(pending, _CHUNK)
            while not d.eof and not d.needs_input:
                yield d.decompress(b"", _CHUNK)
            if not d.eof:
                raise EOFError(f"truncated {kind} stream")
            pending = d.unused_data
            magic = b"BZh" if kind == "bzip2" else b"\xfd7zXZ\x00"
            if not pending.startswith(magic):
                return


def _stream_name(data: bytes, outer_name: str | None, kind: str) -> str:
    if kind == "gzip" and len(data) > 10 and data[3] & 0x08:  # FNAME: the name the sender's gzip stored
        pos = 10
        if data[3] & 0x04:  # FEXTRA comes first
            pos += 2 + int.from_bytes(data[10:12], "little")
        end = data.find(b"\x00", pos, pos + 1024)
        if end > pos:
            return data[pos:end].decode("latin-1")
    base = (outer_name or "").rsplit("/", 1)[-1]
    low = base.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".tbz2", ".tar"), (".txz", ".tar"),
                                (".gz", ""), (".bz2", ""), (".xz", "")):
        if low.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + replacement
    return f"({kind} content)"


# 7z


class _Sink:
    """A py7zr writer that keeps a member in memory and stops at the message's limits.

    A solid 7z archive unpacks every member before the first can be inspected, so
    the members of one 7z together are held to ``max_decoded_size`` as well.
    """

    def __init__(self, listing: Listing, budget: Budget, held: list[int]):
        self.listing, self.budget, self.held = listing, budget, held
        self.buffer = bytearray()

    def write(self, s: bytes | bytearray) -> int:
        self.held[0] += len(s)
        if self.held[0] > self.budget.limits.max_decoded_size:
            self.listing.over(f"7z holds more than {self.budget.limits.max_decoded_size} bytes in memory")
            raise _SevenZipStop()
        if not _take(self.listing, self.budget, len(s), "7z"):
            raise _SevenZipStop()
        self.buffer += s
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buffer)

    def close(self) -> None:
        return None


class _SevenZipStop(Exception):
    pass


def _sevenzip(data: bytes, outer_name: str | None, budget: Budget, listing: Listing) -> Iterator[Member]:
    import py7zr
    import py7zr.io

    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except py7zr.PasswordRequired:
        listing.encrypted = True  # even the names are encrypted
        return
    except Exception as exc:
        listing.over(f"damaged 7z: {_short(exc)}")
        return
    with archive:
        try:
            infos = [i for i in archive.list() if not i.is_directory]
            encrypted = archive.needs_password()
        except Exception as exc:
            listing.over(f"damaged 7z: {_short(exc)}")
            return
        declared = sum(i.uncompressed or 0 for i in infos)
        listing.expanded = declared
        allowed = _admit(listing, budget, len(infos), declared, "7z")
        if encrypted:
            listing.encrypted = True
        sinks: dict[str, _Sink] = {}
        held = [0]
        if not encrypted and not listing.names_only:

            class Factory(py7zr.io.WriterFactory):
                def create(self, filename: str) -> Any:
                    sink = _Sink(listing, budget, held)
                    sinks[filename] = sink
                    return sink

            try:
                archive.extractall(factory=Factory())
            except _SevenZipStop:
                sinks.clear()
            except OverLimit:
                raise
            except Exception as exc:
                listing.over(f"damaged 7z: {_short(exc)}")
                sinks.clear()
        for info in infos[:allowed]:
            _count(listing, budget)
            sink = _find_sink(sinks, info.filename)
            if encrypted:
                yield Member(info.filename, None, info.uncompressed or 0, encrypted=True)
            elif sink is None:
                yield Member(info.filename, None, info.uncompressed or 0)
            else:
                content = bytes(sink.buffer)
                yield Member(info.filename, content, len(content))


def _find_sink(sinks: dict[str, _Sink], filename: str) -> _Sink | None:
    """py7zr names a writer by its sanitized output path; match it back to the member."""
    if filename in sinks:
        return sinks[filename]
    for key, sink in sinks.items():
        if key.endswith("/" + filename) or key == filename.lstrip("/"):
            return sink
    return None


# RAR


def _rar(data: bytes, outer_name: str | None, budget: Budget, listing: Listing) -> Iterator[Member]:
    import rarfile

    try:
        archive = rarfile.RarFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
        header_locked = archive.needs_password() and not infos
    except rarfile.PasswordRequired:
        listing.encrypted = True
        return
    except Exception as exc:
        listing.over(f"damaged rar: {_short(exc)}")
        return
    with archive:
        if header_locked:
            listing.encrypted = True
            return
        yield from _rar_members(archive, infos, budget, listing)


def _rar_members(archive: Any, infos: list[Any], budget: Budget, listing: Listing) -> Iterator[Member]:
    import rarfile

    declared = sum(i.file_size or 0 for i in infos)
    listing.expanded = declared
    allowed = _admit(listing, budget, len(infos), declared, "rar")
    for info in infos[:allowed]:
        budget.check_time()
        _count(listing, budget)
        name = info.filename
        if info.needs_password():
            listing.encrypted = True
            yield Member(name, None, info.file_size or 0, encrypted=True)
            continue
        if info.compress_type != rarfile.RAR_M0:
            listing.over("uninspectable: RAR members are compressed and no RAR decompressor is available here")
            yield Member(name, None, info.file_size or 0)
            continue
        if listing.names_only or not _take(listing, budget, info.file_size or 0, "rar"):
            yield Member(name, None, info.file_size or 0)
            continue
        try:
            content = archive.read(info)
        except Exception as exc:
            listing.over(f"damaged rar member {name}: {_short(exc)}")
            yield Member(name, None, info.file_size or 0)
            continue
        yield Member(name, content, len(content))


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]


_OPENERS = {
    types.ZIP: _zip,
    types.TAR: _tar,
    types.GZIP: lambda data, name, budget, listing: _stream(data, name, budget, listing, "gzip"),
    types.BZIP2: lambda data, name, budget, listing: _stream(data, name, budget, listing, "bzip2"),
    types.XZ: lambda data, name, budget, listing: _stream(data, name, budget, listing, "xz"),
    types.SEVENZ: _sevenzip,
    types.RAR: _rar,
}
_LABELS = {types.CAB: "CAB", types.TNEF: "TNEF (winmail.dat)", types.ZSTD: "zstd"}
