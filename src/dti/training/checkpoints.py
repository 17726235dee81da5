"""Resumable checkpoints of a training run: ``checkpoints/step-NNNNNN.pt``, the last K kept.

A checkpoint is the trainer's ``state_dict()`` (rows, optimizer state, loss scaler, step, logs)
plus the resolved config and a fingerprint of the photos. Nothing random is stored: every draw
is a function of (seed, sample index) (:mod:`dti.core.draws`). Files are written atomically and read
with ``torch.load(weights_only=True)``, so a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dti.core.errors import DTIError
from dti.core.files import atomic_write

_NAME = re.compile(r"^step-(\d{6})\.pt$")


def path_for(folder: Path, step: int) -> Path:
    return folder / f"step-{step:06d}.pt"


def steps(folder: Path) -> list[int]:
    """Steps with a checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = (_NAME.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def write_state(path: Path, state: dict[str, Any]) -> Path:
    """A state dict (tensors, numbers, strings, lists, dicts) written atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_state(path: Path) -> dict[str, Any]:
    """A state written by :func:`write_state`; ``weights_only`` so that a file can never run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write the checkpoint of ``step`` and remove all but the last ``keep``."""
    path = write_state(path_for(folder, step), state)
    for old in steps(folder)[:-keep]:
        path_for(folder, old).unlink(missing_ok=True)
    return path


def load_latest(folder: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest readable checkpoint as (step, state), or None; an unreadable one (a disk that filled
    up under an older dti) is skipped for the one before it, with a warning that says which."""
    from dti.core.errors import warn

    found = list(reversed(steps(folder)))
    for i, step in enumerate(found):
        path = path_for(folder, step)
        try:
            state = read_state(path)
        except Exception as exc:  # corrupt or foreign: say so and fall back
            fallback = f"using the one of step {found[i + 1]} before it" if i + 1 < len(found) else "no earlier checkpoint is left"
            warn(f"checkpoint {path} is unreadable ({type(exc).__name__}); {fallback}")
            continue
        if not isinstance(state, dict):
            fallback = f"using the one of step {found[i + 1]} before it" if i + 1 < len(found) else "no earlier checkpoint is left"
            warn(f"checkpoint {path} is not a checkpoint dti wrote; {fallback}")
            continue
        return step, state
    return None


def photos_fingerprint(paths: Sequence[Path]) -> str:
    """Names and bytes of the photos: a resumed run must see the photos the run started with."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_same_photos(saved: str | None, now: str, folder: str) -> None:
    if saved is not None and saved != now:
        raise DTIError(
            f"the photos in {folder} changed since this run started; restore them, or start a new run "
            "(a resumed run must see the same photos)"
        )
