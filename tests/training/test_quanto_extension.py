"""optimum-quanto's C++ extension for `--quantize int4` on the CPU: built before the run, a build another
process runs is waited for, a lock a killed run left is one line naming the file (not a wait forever), a
failed build is one line naming the fix. A stand-in extension object keeps quanto's own build folder
untouched; the last test builds (or loads) the real one and checks what it computes."""

from __future__ import annotations

import os
import threading
import time

import pytest

from dti.core.errors import DTIError
from dti.training import quanto_extension


class Stand:
    """quanto's ``Extension`` as :func:`ready` sees it: a name, a build folder, a ``lib`` that builds."""

    def __init__(self, folder, fail=None):
        self.name, self.build_directory, self._lib, self.fail, self.builds = "quanto_cpp", str(folder), None, fail, 0

    @property
    def lib(self):
        if (self.fail is None) and os.path.exists(os.path.join(self.build_directory, "lock")):
            raise AssertionError("lib was asked for while the lock was there: quanto would wait forever")
        self.builds += 1
        if self.fail:
            raise RuntimeError(self.fail)
        self._lib = object()
        return self._lib


def test_a_first_build_is_said_and_done_before_the_run(tmp_path, capsys):
    ext = Stand(tmp_path)
    quanto_extension.ready(ext)
    assert ext.builds == 1 and ext._lib is not None
    assert "building optimum-quanto's C++ extension" in capsys.readouterr().err
    quanto_extension.ready(ext)  # loaded once per process
    assert ext.builds == 1


def test_a_built_extension_loads_without_a_word(tmp_path, capsys):
    (tmp_path / "quanto_cpp.so").write_bytes(b"")
    ext = Stand(tmp_path)
    quanto_extension.ready(ext)
    assert ext.builds == 1 and capsys.readouterr().err == ""


def test_a_build_another_process_runs_is_waited_for(tmp_path, capsys):
    lock = tmp_path / "lock"
    lock.write_bytes(b"")
    threading.Timer(0.5, lock.unlink).start()  # the other build ends
    ext = Stand(tmp_path)
    t0 = time.monotonic()
    quanto_extension.ready(ext, poll_s=0.05)
    assert time.monotonic() - t0 >= 0.4 and ext.builds == 1
    assert "waiting for another process" in capsys.readouterr().err


def test_a_lock_a_killed_run_left_is_one_line_naming_the_file(tmp_path):
    lock = tmp_path / "lock"
    lock.write_bytes(b"")
    old = time.time() - 20 * 60
    os.utime(lock, (old, old))
    ext = Stand(tmp_path)
    with pytest.raises(DTIError) as err:
        quanto_extension.ready(ext, poll_s=0.01)
    text = str(err.value)
    assert str(lock) in text and "delete" in text and "\n" not in text
    assert ext.builds == 0 and lock.exists()  # dti never deletes another tool's file itself


def test_a_failed_build_is_one_line_naming_the_fix(tmp_path):
    ext = Stand(tmp_path, fail="Error building extension 'quanto_cpp'\nc++: not found\nmore")
    with pytest.raises(DTIError) as err:
        quanto_extension.ready(ext)
    text = str(err.value)
    assert "Error building extension 'quanto_cpp'" in text and "g++" in text and "int8" in text and "\n" not in text


def test_the_real_extension_is_ready_and_unpacks_as_quanto_does():
    pytest.importorskip("optimum.quanto")
    import torch

    quanto_extension.ready()
    ext = quanto_extension.extension()
    assert ext._lib is not None
    packed = torch.randint(0, 256, (64,), dtype=torch.uint8)
    low_then_high = torch.cat([packed & 0x0F, packed >> 4])  # quanto's layout (its Python reference, restated)
    assert torch.equal(torch.ops.quanto.unpack(packed, 4), low_then_high)
