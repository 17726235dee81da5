"""The fault injectors of :mod:`dti.testing.faults` fail as they say, and leave nothing patched behind."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from dti.testing import faults


class Base:
    def hello(self) -> str:
        return "base"


class Child(Base):
    pass


def test_patched_restores_an_inherited_attribute():
    with faults.patched(Child, "hello", lambda self: "patched"):
        assert Child().hello() == "patched"
        assert Base().hello() == "base"
    assert "hello" not in Child.__dict__
    assert Child().hello() == "base"


def test_raising_raises_then_restores():
    with faults.raising(Base, "hello", faults.enospc("x")), pytest.raises(OSError) as info:
        Base().hello()
    assert info.value.errno == errno.ENOSPC
    assert Base().hello() == "base"


def test_fail_os_replace_after_n_matching_calls(tmp_path):
    for name in ("a", "b", "c", "other"):
        (tmp_path / name).write_text(name)
    with faults.fail_os_replace(after=1, match="/dst-") as count:
        os.replace(tmp_path / "a", tmp_path / "dst-a")
        with pytest.raises(OSError) as info:
            os.replace(tmp_path / "b", tmp_path / "dst-b")
        os.replace(tmp_path / "other", tmp_path / "moved")  # does not match: not counted, not failed
    assert info.value.errno == errno.ENOSPC and count == [2]
    assert (tmp_path / "dst-a").is_file() and not (tmp_path / "dst-b").exists() and (tmp_path / "moved").is_file()
    os.replace(tmp_path / "c", tmp_path / "dst-c")  # restored


def test_half_write_safetensors_reaches_dti_modules(tmp_path):
    import safetensors.torch as st

    import dti.concepts.concept as concept_module

    real = st.save_file
    with faults.half_write_safetensors(after=1) as count:
        assert concept_module.save_file is not real
        st.save_file({"x": torch.ones(4)}, str(tmp_path / "first.safetensors"))
        with pytest.raises(OSError):
            concept_module.save_file({"x": torch.ones(64)}, str(tmp_path / "second.safetensors"))
    assert count == [2] and st.save_file is real and concept_module.save_file is real
    assert st.load_file(str(tmp_path / "first.safetensors"))["x"].tolist() == [1.0] * 4
    whole = len(st.save({"x": torch.ones(64)}))
    assert (tmp_path / "second.safetensors").stat().st_size == whole // 2


def test_half_write_png_and_fail_torch_save(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (16, 16), (10, 20, 30))
    with faults.half_write_png(), pytest.raises(OSError):
        image.save(tmp_path / "a.png")
    assert 0 < (tmp_path / "a.png").stat().st_size
    with pytest.raises(OSError):
        Image.open(tmp_path / "a.png").load()
    image.save(tmp_path / "b.png")  # restored
    with faults.fail_torch_save(after=1):
        torch.save({"a": 1}, tmp_path / "one.pt")
        with pytest.raises(OSError):
            torch.save({"a": 2}, tmp_path / "two.pt")
    assert torch.load(tmp_path / "one.pt") == {"a": 1}
    with pytest.raises(Exception):  # noqa: B017 - any reader error: the file is truncated
        torch.load(tmp_path / "two.pt")


def test_fail_savefig(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with faults.fail_savefig(), pytest.raises(OSError):
        fig.savefig(tmp_path / "plot.png")
    fig.savefig(tmp_path / "ok.png")
    plt.close(fig)
    assert (tmp_path / "ok.png").stat().st_size > (tmp_path / "plot.png").stat().st_size


def test_nan_loss_patches_every_adapter_and_restores():
    from dti.models import ADAPTERS

    before = {name: cls.__dict__.get("loss") for name, cls in ADAPTERS.items()}
    with faults.nan_loss():
        assert all("loss" in cls.__dict__ for cls in ADAPTERS.values())
    assert {name: cls.__dict__.get("loss") for name, cls in ADAPTERS.items()} == before


def test_open_denied_only_for_that_name(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with faults.open_denied("a.png"):
        with pytest.raises(PermissionError):
            Image.open(tmp_path / "a.png")
        Image.open(tmp_path / "b.png").load()
    Image.open(tmp_path / "a.png").load()


def test_tmpfs_full_and_read_only(tmp_path):
    if not faults.can_mount(tmp_path / "probe"):
        pytest.skip("mounting a tmpfs is not allowed here")
    with faults.tmpfs(tmp_path / "full", 16, full=True) as mnt:
        with pytest.raises(OSError) as info:
            (mnt / "x").write_bytes(b"y" * 8192)
        assert info.value.errno == errno.ENOSPC
    with faults.tmpfs(tmp_path / "ro", 16, read_only=True) as mnt:
        with pytest.raises(OSError) as info:
            (mnt / "x").write_text("y")
        assert info.value.errno == errno.EROFS
    assert not faults.mounts_under(tmp_path)
