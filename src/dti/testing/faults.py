"""Fault injectors: the failures a user's machine produces (a full disk, a rename that fails, a file
half written, a diverged loss, a photo that cannot be opened), made on demand and undone afterwards.

Each is a small context manager (or a function making an exception) with no test-framework
dependency, so the tests, the acceptance suite and a user's own scripts can use them alike::

    from dti.testing.faults import fail_os_replace

    with fail_os_replace(after=1, match="learned_embeds_2"):
        dti.convert(...)  # the second file's rename fails with ENOSPC

The patches are process-wide (they replace attributes of modules and classes), so use them from one
thread at a time. The tmpfs helpers mount real small file systems; they need ``mount`` rights (root,
or a user namespace) and report ``False`` where those are missing.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

_MISSING = object()


# ---------------------------------------------------------------------------------------- basics
def enospc(path: str | os.PathLike | None = "") -> OSError:
    """The ``OSError`` a full disk raises while writing ``path`` (errno ``ENOSPC``)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def eacces(path: str | os.PathLike | None = "") -> PermissionError:
    """The ``PermissionError`` an unreadable or unwritable ``path`` raises (errno ``EACCES``)."""
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[Any]:
    """``obj.name`` is ``value`` inside the block and what it was afterwards (an attribute that was only
    inherited, from a class's base, is removed again rather than left as a copy). Yields ``value``."""
    has_dict = hasattr(obj, "__dict__")
    own = obj.__dict__.get(name, _MISSING) if has_dict else _MISSING
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield value
    finally:
        if has_dict and own is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(obj, name)
        else:
            setattr(obj, name, old)


@contextlib.contextmanager
def patched_all(targets: Iterable[tuple[Any, str]], value: Any) -> Iterator[Any]:
    """:func:`patched` for several ``(obj, name)`` pairs at once (each pair patched once)."""
    seen: set[tuple[int, str]] = set()
    with contextlib.ExitStack() as stack:
        for obj, name in targets:
            if (id(obj), name) not in seen:
                seen.add((id(obj), name))
                stack.enter_context(patched(obj, name, value))
        yield value


@contextlib.contextmanager
def raising(obj: Any, name: str, exc: BaseException) -> Iterator[None]:
    """Calling ``obj.name(...)`` raises ``exc`` inside the block (e.g. ``raising(RunFolder,
    "append_log", enospc("train_log.jsonl"))``, or a ``KeyboardInterrupt`` at a chosen place)."""

    def fake(*args: Any, **kwargs: Any) -> Any:
        raise exc

    with patched(obj, name, fake):
        yield


def _modules_holding(value: Any, prefix: str = "dti.") -> list[tuple[Any, str]]:
    """Every loaded module under ``prefix`` with a global bound to ``value`` (a ``from x import f``), as
    ``(module, name)`` pairs: patching the source alone would not reach those copies."""
    found = []
    for mod_name, module in list(sys.modules.items()):
        if module is None or not mod_name.startswith(prefix):
            continue
        for name, obj in list(getattr(module, "__dict__", {}).items()):
            if obj is value:
                found.append((module, name))
    return found


# ---------------------------------------------------------------------------------------- writes
@contextlib.contextmanager
def fail_os_replace(after: int = 0, match: str = "", exc: Callable[[str], OSError] = enospc) -> Iterator[list[int]]:
    """``os.replace(src, dst)`` fails with ``exc(dst)`` (ENOSPC by default) for every destination
    containing ``match`` after the first ``after`` such renames succeeded. Yields a one-item list
    counting the matching calls."""
    real = os.replace
    count = [0]

    def fake(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if match in str(dst):
            count[0] += 1
            if count[0] > after:
                raise exc(str(dst))
        real(src, dst, *args, **kwargs)

    with patched(os, "replace", fake):
        yield count


@contextlib.contextmanager
def half_write_safetensors(after: int = 0) -> Iterator[list[int]]:
    """``safetensors.torch.save_file`` writes the first half of its bytes, then fails with ENOSPC (a disk
    that filled up mid-write), from the call after the first ``after``. Reaches every ``dti`` module
    that imported ``save_file`` by name. Yields a one-item list counting the calls."""
    import safetensors.torch as st

    real = st.save_file
    count = [0]

    def fake(tensors: dict[str, Any], filename: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
        count[0] += 1
        if count[0] <= after:
            return real(tensors, filename, metadata=metadata)
        data = st.save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
        raise enospc(filename)

    with patched_all([(st, "save_file"), *_modules_holding(real)], fake):
        yield count


@contextlib.contextmanager
def half_write_png(after: int = 0) -> Iterator[list[int]]:
    """``PIL.Image.Image.save`` writes a third of the encoded image, then fails with ENOSPC, from the call
    after the first ``after``. Yields a one-item list counting the calls."""
    from PIL import Image

    real = Image.Image.save
    count = [0]

    def fake(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        count[0] += 1
        if count[0] <= after:
            return real(self, fp, format=format, **params)
        buf = io.BytesIO()
        real(self, buf, format=format or "PNG", **params)
        data = buf.getvalue()
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "wb") as f:
                f.write(data[: len(data) // 3])
        else:
            fp.write(data[: len(data) // 3])
        raise enospc(fp if isinstance(fp, (str, os.PathLike)) else getattr(fp, "name", ""))

    with patched(Image.Image, "save", fake):
        yield count


@contextlib.contextmanager
def fail_savefig() -> Iterator[None]:
    """``matplotlib.figure.Figure.savefig`` writes the start of a PNG, then fails with ENOSPC."""
    import matplotlib.figure

    def fake(self: Any, fname: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half")
        raise enospc(fname)

    with patched(matplotlib.figure.Figure, "savefig", fake):
        yield


@contextlib.contextmanager
def fail_torch_save(after: int = 0) -> Iterator[list[int]]:
    """``torch.save`` writes a truncated zip header, then fails with ENOSPC, from the call after the first
    ``after`` (e.g. ``after=1``: the second checkpoint). Yields a one-item list counting the calls."""
    import torch

    real = torch.save
    count = [0]

    def fake(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        if count[0] <= after:
            return real(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 truncated")
        raise enospc(f)

    with patched_all([(torch, "save"), *_modules_holding(real)], fake):
        yield count


# ---------------------------------------------------------------------------------------- training
@contextlib.contextmanager
def nan_loss(pipeline_classes: Iterable[str] | None = None) -> Iterator[None]:
    """Every training loss is NaN (a diverged run): the ``loss`` of each adapter registered for
    ``pipeline_classes`` (default: every registered family) is multiplied by NaN."""
    from dti.models import ADAPTERS

    names = list(ADAPTERS) if pipeline_classes is None else list(pipeline_classes)
    with contextlib.ExitStack() as stack:
        for name in names:
            cls = ADAPTERS[name]
            real = cls.loss

            def fake(self: Any, *args: Any, _real: Callable[..., Any] = real, **kwargs: Any) -> Any:
                return _real(self, *args, **kwargs) * float("nan")

            stack.enter_context(patched(cls, "loss", fake))
        yield


# ---------------------------------------------------------------------------------------- reading
@contextlib.contextmanager
def open_denied(name: str) -> Iterator[None]:
    """``PIL.Image.open`` raises ``PermissionError`` for files named ``name`` (what a user who may not read
    a photo gets; root reads anything, so ``chmod 000`` cannot show it)."""
    from PIL import Image

    real = Image.open

    def fake(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        if isinstance(fp, (str, os.PathLike)) and Path(fp).name == name:
            raise eacces(fp)
        return real(fp, *args, **kwargs)

    with patched(Image, "open", fake):
        yield


# ---------------------------------------------------------------------------------------- small disks
def can_mount(probe: str | os.PathLike) -> bool:
    """Whether this process may mount a tmpfs (tried on the folder ``probe``, created if missing)."""
    probe = Path(probe)
    probe.mkdir(parents=True, exist_ok=True)
    if not mount_tmpfs(probe, 16):
        return False
    unmount(probe)
    return True


def mount_tmpfs(path: str | os.PathLike, size_k: int) -> bool:
    """Mount a tmpfs of ``size_k`` KiB on ``path`` (created if missing); ``False`` where mounting is not
    allowed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(path)], capture_output=True)
    except OSError:
        return False
    return proc.returncode == 0


def remount_readonly(path: str | os.PathLike) -> bool:
    """Make the file system mounted on ``path`` read-only (a tmpfs from :func:`mount_tmpfs`)."""
    try:
        return subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


def unmount(path: str | os.PathLike) -> None:
    """Unmount ``path`` (lazily: files still open there do not block it)."""
    with contextlib.suppress(OSError):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def mounts_under(root: str | os.PathLike) -> list[Path]:
    """The mount points at or under ``root`` (from ``/proc/mounts``; empty where it cannot be read)."""
    root = str(Path(root))
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [Path(p) for p in points if p == root or p.startswith(root.rstrip("/") + "/")]


def fill_disk(path: str | os.PathLike) -> None:
    """Fill the file system holding the folder ``path`` until not one byte more fits (for a small tmpfs;
    on a real disk this writes until it is full)."""
    for name, chunk in (("filler.bin", 4096), ("filler2.bin", 1)):
        fd = os.open(Path(path) / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def tmpfs(path: str | os.PathLike, size_k: int, full: bool = False, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_k`` KiB mounted on ``path`` for the block: ``full`` fills it, ``read_only``
    remounts it read-only. Raises ``OSError`` where mounting is not allowed (see :func:`can_mount`)."""
    path = Path(path)
    if not mount_tmpfs(path, size_k):
        raise OSError(errno.EPERM, f"cannot mount a tmpfs on {path}")
    try:
        if full:
            fill_disk(path)
        if read_only and not remount_readonly(path):
            raise OSError(errno.EPERM, f"cannot remount {path} read-only")
        yield path
    finally:
        unmount(path)


__all__ = [
    "can_mount",
    "eacces",
    "enospc",
    "fail_os_replace",
    "fail_savefig",
    "fail_torch_save",
    "fill_disk",
    "half_write_png",
    "half_write_safetensors",
    "mount_tmpfs",
    "mounts_under",
    "nan_loss",
    "open_denied",
    "patched",
    "patched_all",
    "raising",
    "remount_readonly",
    "tmpfs",
    "unmount",
]
