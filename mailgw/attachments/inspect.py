"""One message's attachment facts: every file, what it is by its bytes, what its names claim, and why it may be dangerous.

The facts (``Facts.attachments``) are what the policy reads; their schema is
documented in mailgw/attachments/__init__.py and must not change without the
policy pack changing with it.
"""

from __future__ import annotations

import email.message
import hashlib
from typing import Any

from mailgw.attachments import archives, embedded, formulas, mime, office, pdf
from mailgw.attachments import names as namefacts
from mailgw.attachments import sniff as types
from mailgw.attachments.budget import Budget, OverLimit
from mailgw.config.settings import AttachmentLimits

DANGEROUS = ("executable", "script", "macro", "dde", "double_extension", "rtl_override",
             "encrypted_archive", "archive_limits", "type_mismatch_executable")
_MAX_REASONS = 5


def inspect_message(raw: bytes, limits: AttachmentLimits | None = None,
                    parsed: email.message.Message | None = None, *, headers_checked: bool = False) -> dict[str, Any]:
    """The attachment facts of the message ``raw``; never raises.

    ``parsed``: the feed parser's tree of ``raw`` if one is at hand (Message.parsed_if_any), read instead of a second parse.
    ``headers_checked``: the caller knows ``mime.overlong_mime_header(raw)`` is None (Message.of_raw).
    """
    budget = Budget(limits or AttachmentLimits())
    files: list[dict[str, Any]] = []
    reasons: list[str] = []
    causes: list[str] = []  # of the message as a whole (limits, failures), in the order of ``reasons``
    walker = mime.Walker(raw, budget, parsed, headers_checked=headers_checked)
    try:
        for leaf in walker.leaves():
            sniffed = types.sniff(leaf.data)
            if leaf.maybe_body and (not leaf.data or sniffed.mime in ("text/plain", "text/html")):
                continue  # the message's own text
            _inspect(leaf.data, leaf.names, leaf.declared_type, leaf.location, 0, budget, files, sniffed)
    except OverLimit as over:
        reasons.append(over.reason)
        causes.append("limit")
    except RecursionError:
        reasons.append("structure nested too deeply to inspect")
        causes.append("limit")
    except MemoryError:
        reasons.append("out of memory while inspecting")
        causes.append("limit")
    except Exception as exc:  # a defect of ours or of a library: the policy decides, the message is not lost
        reasons.append(f"inspection failed: {type(exc).__name__}")
        causes.append("failed")
    parts = [{"location": a.location, "name": a.name, "cause": a.cause} for a in walker.parts]
    parts += [{"location": "", "name": None, "cause": c} for r, c in zip(reasons, causes) if r not in walker.ambiguities]
    reasons = walker.ambiguities + [r for r in reasons if r not in walker.ambiguities]
    return {
        "count": len(files),
        "total_size": sum(f["size"] for f in files if not f["in_archive"]),
        "ambiguous": bool(reasons),
        "ambiguous_reason": "; ".join(reasons[:_MAX_REASONS]) + ("; ..." if len(reasons) > _MAX_REASONS else "")
        if reasons else None,
        "ambiguous_parts": parts,
        "signed_any": any(f["signed"] for f in files),
        "files": files,
    }


def _inspect(data: bytes | None, names: list[str], declared: str | None, location: str, depth: int,
             budget: Budget, out: list[dict[str, Any]], sniffed: types.Sniffed | None = None,
             size: int | None = None, encrypted: bool = False) -> None:
    """Append the facts of one file (and, after it, of every file inside it) to ``out``."""
    budget.check_time()
    if data is None:  # an archive member that was listed but not read
        sniffed = types.Sniffed(types.OCTET, types.OTHER)
    elif sniffed is None:
        sniffed = types.sniff(data)
    name = names[0] if names else None
    fact: dict[str, Any] = {
        "name": name,
        "names": list(names),
        "location": location,
        "in_archive": depth > 0,
        "depth": depth,
        "size": len(data) if data is not None else (size or 0),
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "declared_type": declared,
        "true_type": sniffed.mime,
        "extension": namefacts.extension(name),
        "type_mismatch": False,
        "kind": "other",
        "executable": False, "script": False, "macro": False,
        "double_extension": any(namefacts.double_extension(n) for n in names),
        "rtl_override": any(namefacts.rtl_override(n) for n in names),
        "encrypted": encrypted or sniffed.encrypted,
        "encryption": None,
        "encrypted_reason": None,
        "decrypted": False,
        "damaged": None,
        "dde": False,
        "pdf": None,
        "archive": None,
        "signed": False,
        "dangerous": [],
    }
    out.append(fact)
    try:
        family = sniffed.family
        if data is not None and family == types.OFFICE and sniffed.encrypted:
            data, sniffed = _decrypt(data, sniffed, fact, budget)
        if data is not None and family == types.PDF:
            _pdf(data, fact, location, depth, budget, out)
        if data is not None and family == types.OFFICE:
            _office(data, sniffed, fact, location, depth, budget, out)
        if data is not None and family == types.TEXT:
            fact["dde"] = formulas.dde(data, budget.check_time)  # a CSV (or any text) Excel opens
        if data is not None and family == types.ARCHIVE:
            _archive(data, sniffed, name, fact, location, depth, budget, out)
    finally:
        _judge(fact, sniffed, names, declared, read=data is not None)


def _decrypt(data: bytes, sniffed: types.Sniffed, fact: dict[str, Any],
             budget: Budget) -> tuple[bytes | None, types.Sniffed]:
    """An encrypted Office file, opened with Office's silent passwords when they open it.

    Opened, the decrypted bytes are inspected as the file (its macros, DDE fields,
    embedded files) and it is not ``encrypted``; closed, only its name and the
    storage around the encrypted stream can be judged, and it stays ``encrypted``.
    """
    opened = office.decrypt(data, sniffed, budget)
    fact["encryption"] = opened.encryption
    if opened.data is not None:
        inner = types.sniff(opened.data)
        # What a wrong key gives is noise; only an Office file that is not encrypted again counts as opened.
        if inner.family == types.OFFICE and not inner.encrypted:
            fact["decrypted"], fact["encrypted"], fact["true_type"] = True, False, inner.mime
            return opened.data, inner
        fact["encrypted_reason"] = "encrypted with a password mailgw does not know"
    else:
        fact["encrypted_reason"] = opened.reason
    fact["encrypted"] = True
    return data, sniffed


def _office(data: bytes, sniffed: types.Sniffed, fact: dict[str, Any], location: str, depth: int,
            budget: Budget, out: list[dict[str, Any]]) -> None:
    fact["macro"] = office.has_macros(data, sniffed, budget)
    fact["signed"] = office.signed_package(sniffed)
    if fact["encrypted"]:
        return  # the content is closed: a 97-2003 file's visible streams were judged for macros, no more
    fact["dde"] = office.dde(data, sniffed, budget)
    # Files embedded in the document (Word, Excel and PowerPoint open them from their icon) are
    # inspected like archive members, and listed the same way.
    listing = archives.Listing(compressed=len(data))
    try:
        if depth >= budget.limits.max_archive_depth:
            if embedded.present(data, sniffed.zip_names):
                listing.over(f"document nested deeper than {budget.limits.max_archive_depth} levels")
            return
        for member in embedded.members(data, sniffed.zip_names, budget, listing):
            member_name = namefacts.normalize(member.name)
            _inspect(member.data, [member_name], None, f"{location}!{member_name}", depth + 1, budget, out,
                     size=member.size)
    finally:
        if listing.members or listing.over_limits:
            fact["archive"] = listing.to_json()


def _pdf(data: bytes, fact: dict[str, Any], location: str, depth: int, budget: Budget,
         out: list[dict[str, Any]]) -> None:
    facts = pdf.inspect(data, budget)
    fact["pdf"] = facts.to_json()
    fact["signed"] = facts.signatures > 0
    fact["encrypted"] = fact["encrypted"] or facts.encrypted
    fact["encryption"], fact["encrypted_reason"] = facts.encryption, facts.encrypted_reason
    fact["decrypted"], fact["damaged"] = facts.decrypted, facts.damaged
    # Files embedded in the PDF (readers offer to open them) are inspected like archive members.
    for embedded_name, content in facts.embedded:
        if depth >= budget.limits.max_archive_depth or budget.members_left() <= 0 or len(content) > budget.bytes_left():
            break
        budget.members += 1
        budget.expanded += len(content)
        _inspect(content, [namefacts.normalize(embedded_name)], None, f"{location}!{embedded_name}",
                 depth + 1, budget, out)


def _archive(data: bytes, sniffed: types.Sniffed, name: str | None, fact: dict[str, Any], location: str,
             depth: int, budget: Budget, out: list[dict[str, Any]]) -> None:
    listing = archives.Listing(compressed=len(data))
    try:
        if depth >= budget.limits.max_archive_depth:
            listing.over(f"archive nested deeper than {budget.limits.max_archive_depth} levels")
            return
        for member in archives.members(data, sniffed.mime, name, budget, listing):
            member_name = namefacts.normalize(member.name)
            _inspect(member.data, [member_name], None, f"{location}!{member_name}", depth + 1, budget, out,
                     size=member.size, encrypted=member.encrypted)
    finally:
        fact["archive"] = listing.to_json()
        fact["encrypted"] = fact["encrypted"] or listing.encrypted


_EXECUTABLE_TYPES = frozenset({
    "application/x-msdownload", "application/x-msdos-program", "application/x-dosexec",
    "application/vnd.microsoft.portable-executable", "application/x-executable", "application/x-msi",
    "application/x-ms-installer", "application/x-ms-shortcut", "application/java-archive",
    "application/x-sharedlib", "application/x-mach-binary", "application/vnd.android.package-archive",
})
_SCRIPT_TYPES = frozenset({
    "application/javascript", "application/x-javascript", "text/javascript", "application/ecmascript",
    "text/vbscript", "text/vbs", "application/x-vbscript", "application/x-sh", "application/x-shellscript",
    "text/x-shellscript", "application/hta", "application/x-powershell", "application/x-bat",
    "application/bat", "application/x-msdos-batch", "text/x-python", "application/x-python-code",
})


def _judge(fact: dict[str, Any], sniffed: types.Sniffed, names: list[str], declared: str | None,
           read: bool = True) -> None:
    """Kind, executable/script/macro, type mismatch and the dangerous reasons, from bytes and names.

    ``read`` is False for an archive member that was listed but not unpacked: its
    name is judged, and its bytes, unknown, contradict nothing.
    """
    family = sniffed.family
    by_name_exe = any(namefacts.is_executable(n) for n in names)
    by_name_script = any(namefacts.is_script(n) for n in names)
    by_name_macro = any(namefacts.is_macro_enabled(n) for n in names)
    fact["executable"] = family == types.EXECUTABLE or by_name_exe
    fact["script"] = family == types.SCRIPT or by_name_script
    fact["macro"] = bool(fact["macro"]) or by_name_macro or "macroenabled" in (declared or "")
    if family == types.PDF:
        kind = "pdf"
    elif family == types.OFFICE:
        kind = "office_macro" if fact["macro"] else "office"
    elif family in (types.EXECUTABLE, types.SCRIPT, types.ARCHIVE, types.IMAGE, types.CALENDAR):
        kind = family
    elif by_name_exe:
        kind = "executable"
    elif by_name_script:
        kind = "script"
    elif by_name_macro:
        kind = "office_macro"
    elif family == types.TEXT:
        kind = "calendar" if declared == "text/calendar" else "text"
    else:
        kind = "other"
    fact["kind"] = kind
    mismatch = read and _mismatch(sniffed, names, declared)
    fact["type_mismatch"] = mismatch
    reasons: list[str] = []
    if fact["executable"]:
        reasons.append("executable")
    if fact["script"]:
        reasons.append("script")
    if fact["macro"]:
        reasons.append("macro")
    if fact["dde"]:
        reasons.append("dde")
    if fact["double_extension"]:
        reasons.append("double_extension")
    if fact["rtl_override"]:
        reasons.append("rtl_override")
    archive = fact["archive"]
    if kind == "archive" and fact["encrypted"]:
        reasons.append("encrypted_archive")
    if archive and archive["over_limits"]:
        reasons.append("archive_limits")
    if mismatch and family in (types.EXECUTABLE, types.SCRIPT):
        reasons.append("type_mismatch_executable")
    fact["dangerous"] = reasons


# Type mismatch: does a name's extension, or the declared Content-Type, claim
# something other than what the bytes are? Unknown extensions and generic types
# (application/octet-stream) claim nothing.

_W, _X, _P = "application/vnd.openxmlformats-officedocument.wordprocessingml", \
    "application/vnd.openxmlformats-officedocument.spreadsheetml", \
    "application/vnd.openxmlformats-officedocument.presentationml"
_ODF = "application/vnd.oasis.opendocument."
_ZIP_FAMILY = frozenset({types.ZIP, types.JAR, types.APK, types.MSIX, "application/epub+zip"})
_EXTENSIONS: dict[str, frozenset[str]] = {
    "pdf": frozenset({"application/pdf"}),
    "doc": frozenset({types.DOC, types.RTF, types.OLE_ENCRYPTED}),
    "dot": frozenset({types.DOC, types.RTF}),
    "docx": frozenset({_W + ".document", types.OLE_ENCRYPTED}),
    "docm": frozenset({"application/vnd.ms-word.document.macroEnabled.12", types.OLE_ENCRYPTED}),
    "dotx": frozenset({_W + ".template"}),
    "dotm": frozenset({"application/vnd.ms-word.template.macroEnabled.12"}),
    "xls": frozenset({types.XLS, types.OLE_ENCRYPTED}),
    "xlsx": frozenset({_X + ".sheet", types.OLE_ENCRYPTED}),
    "xlsm": frozenset({"application/vnd.ms-excel.sheet.macroEnabled.12", types.OLE_ENCRYPTED}),
    "xlsb": frozenset({"application/vnd.ms-excel.sheet.binary.macroEnabled.12", types.OLE_ENCRYPTED}),
    "xltx": frozenset({_X + ".template"}),
    "ppt": frozenset({types.PPT, types.OLE_ENCRYPTED}),
    "pptx": frozenset({_P + ".presentation", types.OLE_ENCRYPTED}),
    "pptm": frozenset({"application/vnd.ms-powerpoint.presentation.macroEnabled.12", types.OLE_ENCRYPTED}),
    "ppsx": frozenset({_P + ".slideshow"}),
    "odt": frozenset({_ODF + "text"}),
    "ods": frozenset({_ODF + "spreadsheet"}),
    "odp": frozenset({_ODF + "presentation"}),
    "rtf": frozenset({types.RTF}),
    "zip": _ZIP_FAMILY,
    "rar": frozenset({types.RAR}),
    "7z": frozenset({types.SEVENZ}),
    "gz": frozenset({types.GZIP}), "tgz": frozenset({types.GZIP}),
    "bz2": frozenset({types.BZIP2}), "xz": frozenset({types.XZ}), "tar": frozenset({types.TAR}),
    "cab": frozenset({types.CAB}),
    "jpg": frozenset({"image/jpeg"}), "jpeg": frozenset({"image/jpeg"}), "png": frozenset({"image/png"}),
    "gif": frozenset({"image/gif"}), "tif": frozenset({"image/tiff"}), "tiff": frozenset({"image/tiff"}),
    "bmp": frozenset({"image/bmp", "image/x-ms-bmp", "image/x-bmp"}), "webp": frozenset({"image/webp"}),
    "svg": frozenset({"image/svg+xml"}),
    "ics": frozenset({"text/calendar"}),
    "exe": frozenset({types.PE, types.DOSEXEC}), "dll": frozenset({types.PE}), "scr": frozenset({types.PE}),
    "com": frozenset({types.PE, types.DOSEXEC}), "cpl": frozenset({types.PE}), "sys": frozenset({types.PE}),
    "msi": frozenset({types.MSI}), "lnk": frozenset({types.LNK}), "iso": frozenset({types.ISO, types.UDF}),
    "vhd": frozenset({types.VHD}), "vhdx": frozenset({types.VHDX}), "dmg": frozenset({types.DMG}),
    "chm": frozenset({types.CHM}), "jar": frozenset({types.JAR}), "apk": frozenset({types.APK}),
    "msix": frozenset({types.MSIX}), "appx": frozenset({types.MSIX}),
    "hta": frozenset({types.HTA, "text/html"}),
    "slk": frozenset({types.SYLK}), "dif": frozenset({types.DIF}),
    "iqy": frozenset({types.IQY}), "dqy": frozenset({types.DQY}),
}
_TEXT_EXTENSIONS = frozenset({"txt", "csv", "log", "md", "htm", "html", "xml", "json", "eml", "tsv"})
_DECLARED_FAMILIES: tuple[tuple[str, str], ...] = (
    ("application/pdf", types.PDF),
    ("application/msword", types.OFFICE), ("application/vnd.ms-", types.OFFICE),
    ("application/vnd.openxmlformats-officedocument.", types.OFFICE), (_ODF, types.OFFICE),
    ("application/rtf", types.OFFICE), ("text/rtf", types.OFFICE),
    ("image/", types.IMAGE), ("text/calendar", types.CALENDAR),
    ("application/zip", types.ARCHIVE), ("application/x-zip", types.ARCHIVE),
    ("application/x-rar", types.ARCHIVE), ("application/vnd.rar", types.ARCHIVE),
    ("application/x-7z", types.ARCHIVE), ("application/gzip", types.ARCHIVE), ("application/x-gzip", types.ARCHIVE),
    ("application/x-tar", types.ARCHIVE), ("application/x-bzip", types.ARCHIVE), ("application/x-xz", types.ARCHIVE),
)
# Families the bytes may be when a declared family is claimed (a DOCX is also a ZIP; text may be a script).
_COMPATIBLE = {
    types.ARCHIVE: {types.ARCHIVE, types.OFFICE},
    types.TEXT: {types.TEXT, types.SCRIPT, types.CALENDAR},
    types.OFFICE: {types.OFFICE},
}


def _mismatch(sniffed: types.Sniffed, names: list[str], declared: str | None) -> bool:
    for n in names:
        ext = namefacts.extension(n)
        if ext is None:
            continue
        if ext in _EXTENSIONS:
            if sniffed.mime not in _EXTENSIONS[ext]:
                return True
        elif ext in namefacts.SCRIPT_EXTENSIONS:
            if sniffed.family not in (types.TEXT, types.SCRIPT):
                return True
        elif ext in _TEXT_EXTENSIONS:  # a script's bytes under a text name are a mismatch too
            if sniffed.family not in (types.TEXT, types.CALENDAR):
                return True
    family = _declared_family(declared)
    if family is not None and sniffed.family not in _COMPATIBLE.get(family, {family}):
        return True
    return False


def _declared_family(declared: str | None) -> str | None:
    if not declared:
        return None
    if declared in _EXECUTABLE_TYPES:
        return types.EXECUTABLE
    if declared in _SCRIPT_TYPES:
        return types.SCRIPT
    if declared.startswith("text/") and declared not in ("text/calendar", "text/rtf"):
        return types.TEXT
    for prefix, family in _DECLARED_FAMILIES:
        if declared.startswith(prefix):
            return family
    return None
