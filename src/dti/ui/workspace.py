"""A workspace: the one folder the app reads, writes and serves.

``photos/<name>/`` the subjects' photos (copied in, so a job never depends on a file elsewhere),
``runs/<name>/`` dti run folders, ``models/<name>/`` local diffusers folders, ``evaluations/<name>/``
reports, ``blends/`` the Play page's strips, and ``.ui/`` the app's own state (the queue, the worker
lock, job logs, Gradio's cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dti.core.errors import DTIError

PHOTOS, RUNS, MODELS, EVALUATIONS, BLENDS, STATE = "photos", "runs", "models", "evaluations", "blends", ".ui"


class Workspace:
    """Paths of one workspace folder; every path handed out lies inside it."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    def create(self) -> Workspace:
        """Make the folder and its parts (refused in one line where it cannot be written)."""
        if self.root.exists() and not self.root.is_dir():
            raise DTIError(f"--workspace {self.root} is a file; name a folder")
        try:
            for part in (PHOTOS, RUNS, MODELS, EVALUATIONS, BLENDS, STATE, f"{STATE}/logs", f"{STATE}/cache"):
                (self.root / part).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DTIError(f"cannot create the workspace {self.root}: {exc.strerror}; choose another --workspace") from None
        return self

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def queue_file(self) -> Path:
        return self.state / "queue.json"

    @property
    def cache(self) -> Path:
        return self.state / "cache"

    def log(self, job_id: str) -> Path:
        return self.state / "logs" / f"{job_id}.log"

    def inside(self, path: str | os.PathLike) -> Path:
        """``path`` (relative to the workspace, or absolute) resolved, refused unless it lies inside the
        workspace: a link or ``..`` never leads out."""
        given = Path(path)
        resolved = (given if given.is_absolute() else self.root / given).resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise DTIError(f"{path} lies outside the workspace {self.root}; only files inside it are shown")
        return resolved

    def relative(self, path: str | os.PathLike) -> str:
        return self.inside(path).relative_to(self.root).as_posix()

    def models(self) -> list[str]:
        """Local diffusers folders in ``models/`` (relative paths, as the train command takes them)."""
        folder = self.root / MODELS
        found = sorted(p for p in folder.iterdir() if (p / "model_index.json").is_file()) if folder.is_dir() else []
        return [f"{MODELS}/{p.name}" for p in found]

    def runs(self, finished: bool | None = None) -> list[str]:
        """Run folders in ``runs/`` (relative); ``finished``: only those with (True) or without (False) a concept."""
        folder = self.root / RUNS
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.iterdir()):
            if not (p / "config.json").is_file() and not (p / "concept.safetensors").is_file():
                continue
            done = (p / "concept.safetensors").is_file()
            if finished is None or finished == done:
                out.append(f"{RUNS}/{p.name}")
        return out

    def free_name(self, base: str, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
        """A folder name after ``base`` used by no photo folder, run folder or queued job (``taken``)."""
        stem = slug(base)
        name, n = stem, 2
        while name in taken or (self.root / RUNS / name).exists() or (self.root / PHOTOS / name).exists():
            name, n = f"{stem}-{n}", n + 1
        return name


def slug(text: str) -> str:
    """A folder name from a token: ``<my-dog>`` -> ``my-dog``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_").lower()
    return cleaned[:60] or "word"
