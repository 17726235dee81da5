"""Files written together: all or none, even when the renames that would undo a failure fail too."""

import os
import shutil
from pathlib import Path

import pytest

from dti.core.errors import DTIError
from dti.core.files import atomic_write_all
from dti.testing.faults import fail_os_replace, patched


def _writer(text):
    return lambda tmp: Path(tmp).write_text(text)


def _old_pair(folder: Path) -> tuple[Path, Path]:
    a, b = folder / "a.png", folder / "b.png"
    a.write_text("old a")
    b.write_text("old b")
    return a, b


def test_every_later_rename_failing_still_keeps_the_old_files(tmp_path):
    """The first rename succeeds, every later one into the folder fails (also the put-back): the
    old first file comes back by copy and nothing of dti's is left beside them."""
    a, b = _old_pair(tmp_path)
    with fail_os_replace(after=1, match=str(tmp_path)), pytest.raises(DTIError) as err:
        atomic_write_all([(a, _writer("new a")), (b, _writer("new b"))])
    assert str(b) in str(err.value) and "No space left" in str(err.value)  # the file that failed, not a temp
    assert "dti-new" not in str(err.value) and ".tmp" not in str(err.value)
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_an_unrestorable_file_is_named_where_it_is_kept(tmp_path):
    """Renames and copies both failing after the first rename: the error says where the earlier
    file is, and that file is the earlier one."""
    a, b = _old_pair(tmp_path)
    with fail_os_replace(after=1, match=str(tmp_path)), patched(shutil, "copyfile", _raise_enospc), pytest.raises(DTIError) as err:
        atomic_write_all([(a, _writer("new a")), (b, _writer("new b"))])
    kept = tmp_path / ".a.png.dti-old"
    assert f"{kept} holds the earlier a.png" in str(err.value)
    assert kept.read_text() == "old a" and b.read_text() == "old b"


def test_a_copy_fallback_without_hard_links(tmp_path):
    """A file system without hard links (FAT, some network mounts): the second name is a copy."""
    a, b = _old_pair(tmp_path)
    with patched(os, "link", _raise_eperm), fail_os_replace(after=1, match=str(tmp_path)), pytest.raises(DTIError):
        atomic_write_all([(a, _writer("new a")), (b, _writer("new b"))])
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
    with patched(os, "link", _raise_eperm):
        atomic_write_all([(a, _writer("new a")), (b, _writer("new b"))])
    assert a.read_text() == "new a" and b.read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def _raise_enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _raise_eperm(*args, **kwargs):
    raise OSError(1, "Operation not permitted")
