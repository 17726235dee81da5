"""Helpers of the app's tests: a workspace, dti-mini photos, and (for the browser tests) a served app."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mini_photos(folder: Path, subject: str = "ruby", n: int = 4) -> Path:
    """Photos of a dti-mini subject, as the demo renders them."""
    from dti.mini import world

    found = next(s for s in world.SUBJECTS if s.name == subject)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(world.reference_images(found, n)):
        image.save(folder / f"{subject}-{i}.png")
    return folder


@pytest.fixture
def workspace(tmp_path: Path):
    from dti.ui.workspace import Workspace

    return Workspace(tmp_path / "ws").create()
