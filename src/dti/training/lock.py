"""One writer per run folder: an exclusive lock file that names its owner.

Two trainings into one folder would interleave their logs, configs and concepts. The lock is a
file created with ``O_EXCL`` holding the owner's pid and host; a lock whose process is gone (a
SIGKILL, a crash) is stale and taken over, so no manual cleanup is ever needed on one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from dti.core.errors import DTIError

LOCK_FILENAME = ".dti.lock"


class Locked(DTIError):
    """The folder's lock is held by another live process (a sweep's other worker skips such a run)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock; refused in one line while another live
    process holds it."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILENAME) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.held = False

    def owner(self) -> dict | None:
        """The current holder's ``{"pid", "host"}``, or None if unlocked or unreadable."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None

    def taken(self) -> bool:
        """Whether another live process holds the lock now (a stale one is not taken: it would be taken over)."""
        return not self.held and self.path.exists() and not self._stale()

    def _stale(self) -> bool:
        owner = self.owner()
        if owner is None:  # empty: being written this instant (unless old); otherwise garbage
            try:
                st = self.path.stat()
            except OSError:
                return True
            return st.st_size > 0 or time.time() - st.st_mtime > 10
        return owner.get("host") == socket.gethostname() and not _alive(owner["pid"])

    def acquire(self) -> None:
        """Take the lock, creating the folder; a refusal leaves no folder this call created behind."""
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DTIError(f"cannot create the output folder {self.folder}: {exc.strerror}; choose another --output") from None
        try:
            self._take()
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            raise

    def _take(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                owner = self.owner() or {}
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
                raise Locked(
                    f"another dti run ({who}) is writing to {self.folder}; wait for it to finish or choose another "
                    f"--output (if no run is active, delete {self.path})"
                ) from None
            except OSError as exc:  # a read-only or unwritable place
                raise DTIError(f"cannot write to the output folder {self.folder}: {exc.strerror}; choose another --output") from None
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            except OSError as exc:  # a full disk: leave no empty lock behind
                self.path.unlink(missing_ok=True)
                raise DTIError(f"could not write the lock {self.path}: {exc.strerror}; free space or choose another --output") from None
            self.held = True
            return
        raise DTIError(f"could not take the lock {self.path}; another run keeps replacing it")

    def wait(self, seconds: float = 60.0) -> None:
        """Take the lock, waiting while another live process holds it (a lock held for moments: a sweep's index)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.acquire()
                return
            except Locked:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def release(self) -> None:
        if self.held:
            owner = self.owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
