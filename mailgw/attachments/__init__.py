"""Attachment inspection decided from the bytes: what every file of a message is, not what it claims to be.

``inspect_message(raw, limits)`` walks the MIME tree (mime.py), finds the files,
tells their true type from the bytes (sniff.py), opens Office files encrypted
with the passwords Office applies silently and looks inside them for macros and
DDE fields (office.py, formulas.py for the text formats Excel opens), PDFs for
actions, signatures, encryption and damage (pdf.py), and archives and Office
documents for their members and embedded files, recursively and in memory
(archives.py, embedded.py), judges the names (names.py), and returns the facts
the policy engine reads. It never raises: past a limit, or where the structure
is ambiguous, it says so in the facts.

The facts (``Facts.attachments``, a :class:`~mailgw.message.facts.AttachmentFacts`; the policy pack reads these names)::

    {
      "count": int,                 # files found, archive members and files embedded in PDFs included
      "total_size": int,            # decoded bytes of the top-level files
      "ambiguous": bool,            # structure too ambiguous, or a limit reached: the policy decides
      "ambiguous_reason": str|None, # English for admins; several reasons joined with "; "
      "ambiguous_parts": [{         # the same, one entry per place, for the refusal's text
        "location": str,            # MIME part "2.1"; "" for the message as a whole (a limit, a failure)
        "name": str|None,           # the part's file name, if any
        "cause": str,               # a key of mime.CAUSES (its Vietnamese and English text)
      }],
      "signed_any": bool,           # some file carries a digital signature
      "files": [{
        "name": str|None,           # the first name (Content-Disposition first), decoded, NFC
        "names": [str],             # every distinct name seen, in either header, in every reading
        "location": str,            # MIME part "1.2"; members "1.2!dir/a.exe", nested "1.2!a.zip!b.exe"
        "in_archive": bool,         # inside an archive (or embedded in a PDF or an Office document)
        "depth": int,               # archive levels above it: 0 for a MIME part
        "size": int,                # bytes (for a member that was not read: its declared size)
        "sha256": str|None,         # hex; None only for a member that was not read (encrypted, over limits)
        "declared_type": str|None,  # the part's Content-Type (members: None)
        "true_type": str,           # from the bytes; "application/octet-stream" when unknown
        "extension": str|None,      # last extension of "name", lowercased, as Windows sees it
        "type_mismatch": bool,      # an extension or the declared type disagrees with the bytes
        "kind": "pdf"|"office"|"office_macro"|"executable"|"script"|"archive"|"image"|"text"|"calendar"|"other",
        "executable": bool, "script": bool, "macro": bool,   # by the bytes or by any name
        "double_extension": bool, "rtl_override": bool,      # in any name
        "encrypted": bool,          # could not be opened: an encrypted archive or member, a PDF or Office
                                    # file whose password (or certificate) mailgw does not have
        "encryption": "password"|"certificate"|"other"|None,  # how an Office file or PDF is encrypted,
                                    # opened or not ("other": a scheme mailgw cannot read)
        "encrypted_reason": str|None,  # why it stays closed (English, for admins)
        "decrypted": bool,          # encrypted, but with a password every reader has (Office's silent
                                    # ones, a PDF's empty user password): opened and inspected as itself
        "damaged": str|None,        # a PDF that cannot be read whole, and why
        "dde": bool,                # a DDE field (Word) or link/formula (Excel, CSV, DIF, SYLK)
        "pdf": {"javascript": bool, "launch": bool, "signatures": int, "signers": [str],
                "trusted": bool|None} | None,   # trusted: None when no trust store is configured
        "archive": {"members": int, "expanded": int, "ratio": float, "over_limits": bool,
                    "reason": str|None} | None,  # an archive, or a document with embedded files
        "signed": bool,             # a PDF signature, or a signed OOXML/ODF package
        "dangerous": [str],         # subset, in this order, of DANGEROUS below
      }]
    }

``dangerous`` holds only the reasons of the shipped pack's rule
``dangerous-attachment`` (policies/10-security.yaml): ``executable``, ``script``, ``macro``, ``dde``,
``double_extension``, ``rtl_override``, ``encrypted_archive``, ``archive_limits``,
``type_mismatch_executable`` (bytes of an executable or script under another
claim). A plain type mismatch, a PDF with JavaScript, an encrypted PDF are facts,
not reasons; an Office file that stays encrypted and a damaged file are refused
by rules of their own (encrypted-office, damaged-attachment). Inline text/plain
and text/html bodies are not files; iCalendar parts are (kind "calendar").
"""

from __future__ import annotations

from mailgw.attachments.inspect import DANGEROUS, inspect_message

__all__ = ["DANGEROUS", "inspect_message"]
