"""mailgw.durable.replacing: a reader sees the old file or the new one, and nothing is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailgw.durable import creating, replacing


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


def test_a_new_file_is_created_whole_private_and_in_place(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    final, tmp = tmp_path / "m1", tmp_path / "tmp" / "m1"
    with creating(str(final), tmp=str(tmp)) as f:
        f.write(b"message ")
        assert not final.exists()  # readers see nothing until it is whole
        f.write(b"bytes")
    assert final.read_bytes() == b"message bytes" and not tmp.exists()
    assert stat.S_IMODE(final.stat().st_mode) == 0o600


def test_a_failed_creation_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    final, tmp = tmp_path / "m1", tmp_path / "tmp" / "m1"
    with pytest.raises(RuntimeError), creating(str(final), tmp=str(tmp)) as f:
        f.write(b"half")
        raise RuntimeError("disk gone")
    assert not final.exists() and not tmp.exists()


def test_a_creation_never_follows_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not yours")
    (tmp_path / "tmp").mkdir()
    os.symlink(target, tmp_path / "tmp" / "m1")
    with pytest.raises(OSError), creating(str(tmp_path / "m1"), tmp=str(tmp_path / "tmp" / "m1")) as f:
        f.write(b"message")
    assert target.read_bytes() == b"not yours" and not (tmp_path / "m1").exists()
