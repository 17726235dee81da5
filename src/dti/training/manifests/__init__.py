"""Manifests that ship with dti: ``dti sweep dreambooth --data-root DIR`` names one by its name.

A packaged manifest lists subjects and their classes but not where the photos are (the dataset
is not ours to ship), so it has no ``root``: its photo folders are relative to ``--data-root``.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
PACKAGED = {"dreambooth": FOLDER / "dreambooth.toml"}  # the 30 subjects of DreamBooth (Ruiz et al. 2023)


def packaged_manifest(name: str) -> Path | None:
    """The packaged manifest called ``name``, or None when no manifest has that name."""
    return PACKAGED.get(name)
