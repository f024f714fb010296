"""The one way the gateway replaces a file: durably and atomically.

A reader sees the old file or the new one, never half of one, and once
:func:`replacing` returns, the new file survives a power cut: its bytes are
fsync-ed before the rename, and the directory after it. The spool, its
delivery states, the exchange log's journal, Maildir delivery and the
auditors' exports all write through it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def replacing(final: str, *, tmp: str | None = None, mode: int = 0o600, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write; on a normal exit it replaces ``final``, durably.

    ``tmp`` is where the bytes go first (by default a new name beside ``final``;
    it must be on the same file system). It is created with ``mode`` and never
    follows a symbolic link. ``sync_dir=False`` leaves the directory's fsync to
    the caller, who renames several files and syncs once. On an exception the
    temporary file is removed and ``final`` is left as it was.
    """
    if tmp is None:
        head, name = os.path.split(final)
        tmp = os.path.join(head, f".{name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        unlink_if_present(tmp)
        raise
    if sync_dir:
        fsync_dir(os.path.dirname(final) or ".")


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
