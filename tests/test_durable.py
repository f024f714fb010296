"""mailgw.durable.replacing: a reader sees the old file or the new one, and nothing is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailgw.durable import replacing


def test_a_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    final = tmp_path / "state.json"
    final.write_bytes(b"old")
    with replacing(str(final)) as f:
        f.write(b"new ")
        assert final.read_bytes() == b"old"  # not yet: the bytes go to a temporary file first
        f.write(b"content")
    assert final.read_bytes() == b"new content"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "state.json"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(str(final)) as f:
        f.write(b"half")
        raise RuntimeError("disk gone")
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_temporary_file_never_follows_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not yours")
    (tmp_path / "tmp").mkdir()
    os.symlink(target, tmp_path / "tmp" / "m1")  # planted where the spool writes its temporary file
    with pytest.raises(OSError), replacing(str(tmp_path / "m1"), tmp=str(tmp_path / "tmp" / "m1")) as f:
        f.write(b"message")
    assert target.read_bytes() == b"not yours" and not (tmp_path / "m1").exists()
