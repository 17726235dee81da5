"""Writes that never leave a half-written file: temp file in the same folder, then rename.

Files get the permissions any program would give them (``0o666`` less the umask), not the
``0o600`` of a bare temp file, so a WebUI running as another user can read an exported concept.
An OS error while writing (full disk, no permission) becomes one :class:`DTIError` line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError


def current_umask() -> int:
    """The process umask. Linux reports it in /proc without changing it (no window in which another
    thread creates files with umask 0); elsewhere it is set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _write_error(path: Path, exc: OSError) -> DTIError:
    """One line for an OS error while writing ``path``, with the fix that matches the cause."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return DTIError(f"could not write {path}: {parent} is a file, not a folder; choose another --out")
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        fix = "free space or choose another --out"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "fix the folder's permissions or choose another --out"
    else:
        fix = "choose another --out"
    return DTIError(f"could not write {path}: {_reason(exc)}; {fix}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(items: Sequence[tuple[str | os.PathLike, Callable[[str], None]]]) -> list[Path]:
    """Several files that appear together: each ``write(tmp_path)`` fills a temp file next to its
    target, and only when every write succeeded are they all renamed into place. On failure the temp
    files and the folders this call created are removed, and earlier files at the targets are kept."""
    targets = [Path(p) for p, _ in items]
    new_folders = sorted(
        {q for t in targets for q in (t.parent, *t.parent.parents) if not q.exists()}, key=lambda q: len(q.parts), reverse=True
    )
    staged: list[str] = []
    current = targets[0] if targets else Path()
    try:
        mask = 0o666 & ~current_umask()
        for current, (_, write) in zip(targets, items):
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{current.name}.", suffix=".tmp", dir=current.parent)
            os.close(fd)
            staged.append(tmp)
            write(tmp)
            with contextlib.suppress(OSError):  # a file system without modes (FAT) keeps its own
                os.chmod(tmp, mask)
        if len(targets) == 1:
            os.replace(staged[0], targets[0])
        else:  # several files: all or none (replace_together)
            replace_together(staged, targets)
    except BaseException as exc:
        for tmp in staged:  # the ones already renamed are gone from here
            _remove(tmp)
        for folder in new_folders:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise _write_error(current, exc) from None
        raise
    return targets


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """A second name for ``src`` at ``dst`` (a hard link; a copy where the file system has none),
    made without renaming anything, so a later failed rename cannot take it away."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:
        try:
            shutil.copy2(src, dst)
        except BaseException:
            _remove(str(dst))
            raise


def replace_together(staged: Sequence[str], targets: Sequence[Path]) -> None:
    """Rename every staged file onto its target, or none. An existing target first gets a second
    name beside it (:func:`link_or_copy`) and stays where it is until its own rename, which is
    atomic: a target whose rename fails still holds its earlier file. When any rename fails, the
    targets already replaced get their earlier files back (renamed, or copied where renames keep
    failing); if even that fails, the error says where each earlier file is kept."""
    kept: list[tuple[Path, Path | None]] = []  # (target, its earlier file's second name)
    placed: list[tuple[Path, Path | None]] = []
    current = targets[0] if targets else Path()
    try:
        for current in targets:
            target, keep = current, None
            if target.exists():
                keep = target.with_name(f".{target.name}.dti-old")
                link_or_copy(target, keep)
            kept.append((target, keep))
        for tmp, (target, keep) in zip(staged, kept):
            current = target
            os.replace(tmp, target)
            placed.append((target, keep))
    except BaseException as exc:
        unrestored = [(target, keep) for target, keep in placed if not _put_back(target, keep)]
        for _, keep in kept:  # the second names no longer needed (a put-back one is already gone)
            if keep is not None and all(keep != k for _, k in unrestored):
                _remove(str(keep))
        if unrestored:
            lost = "; ".join(f"{keep} holds the earlier {target.name}" for target, keep in unrestored)
            reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
            raise DTIError(f"could not write {current}: {reason}, nor put the earlier files back: {lost}; move them back by hand") from None
        if isinstance(exc, OSError):
            raise _write_error(current, exc) from None
        raise
    for _, keep in kept:
        if keep is not None:
            _remove(str(keep))


def _put_back(target: Path, keep: Path | None) -> bool:
    """Undo one replaced target: its earlier file back (renamed, else copied over it in place), or
    the new file removed where there was none. False if the earlier file could not be put back."""
    if keep is None:
        _remove(str(target))
        return True
    try:
        os.replace(keep, target)
        return True
    except OSError:
        pass
    try:
        shutil.copyfile(keep, target)
    except OSError:
        return False
    _remove(str(keep))
    return True


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write pretty-printed JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _image_writer(image: Any, path: Path, pil_kwargs: dict[str, Any]) -> Callable[[str], None]:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise DTIError(f"cannot write an image as {path.name!r}: unknown image suffix; use .png, .jpg or .webp")
    return lambda tmp: image.save(tmp, format=fmt, **pil_kwargs)


def save_image(image: Any, path: str | os.PathLike, **pil_kwargs: Any) -> Path:
    """Atomically write a PIL image; the format comes from the suffix (``.png``, ``.jpg``, ``.webp``, ...),
    ``pil_kwargs`` go to ``Image.save`` (e.g. ``pnginfo=``, ``quality=``)."""
    path = Path(path)
    return atomic_write(path, _image_writer(image, path, pil_kwargs))


def save_images(items: Sequence[tuple[Any, str | os.PathLike, dict[str, Any]]]) -> list[Path]:
    """``(image, path, pil_kwargs)`` triples written together (see :func:`atomic_write_all`): a full
    disk leaves none of them, and none of the earlier files replaced."""
    return atomic_write_all([(Path(path), _image_writer(image, Path(path), kwargs)) for image, path, kwargs in items])


def check_writable(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, in one line, an output folder that cannot be created or written: a file, a path under
    a file, a read-only or missing-permission place. Leaves nothing behind: folders it had to create
    for the test are removed again (the writes create them for real)."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file" if parent == folder else f"is under {parent}, which is a file"
                raise DTIError(f"{flag} {folder} {where}, not a folder; choose another {flag}")
            break
    created = []
    try:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
        fd, tmp = tempfile.mkstemp(prefix=".dti-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise DTIError(f"{flag} {folder} is not writable: {_reason(exc)}; choose another {flag} or fix its permissions") from None
    finally:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()
