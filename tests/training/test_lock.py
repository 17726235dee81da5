"""The run lock: a refusal leaves no folder it created, and never removes one it did not."""

from __future__ import annotations

import json

import pytest

from dti.core.errors import DTIError
from dti.testing.faults import enospc, raising
from dti.training import lock as lock_module
from dti.training.lock import RunLock


def test_a_lock_that_cannot_be_written_leaves_no_new_folder(tmp_path):
    out = tmp_path / "new" / "run"
    with raising(lock_module.json, "dump", enospc()), pytest.raises(DTIError, match=r"could not write the lock .*free space"):
        RunLock(out).acquire()
    assert not out.exists()


def test_a_lock_that_cannot_be_written_keeps_a_folder_that_was_there(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with raising(lock_module.json, "dump", enospc()), pytest.raises(DTIError, match="could not write the lock"):
        RunLock(out).acquire()
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_held_lock_names_its_owner_and_is_released(tmp_path):
    out = tmp_path / "run"
    with RunLock(out) as held:
        assert json.loads(held.path.read_text())["pid"] > 0
        with pytest.raises(DTIError, match=r"another dti run \(pid \d+ on .*\) is writing to"):
            RunLock(out).acquire()
    assert out.is_dir() and not held.path.exists()
