"""Concept files other tools read: diffusers' per-encoder ``{token: [n, d]}`` files."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from dti.concept import Concept
from dti.fileio import atomic_write


def diffusers_filename(encoder: str) -> str:
    """``text_encoder`` -> ``learned_embeds.safetensors`` (diffusers' default name),
    ``text_encoder_2`` -> ``learned_embeds_2.safetensors``."""
    suffix = encoder.removeprefix("text_encoder")
    return f"learned_embeds{suffix}.safetensors"


def write_diffusers(concept: Concept, folder: str | Path) -> dict[str, Path]:
    """One ``{token: [n_vectors, width]}`` file per encoder, loadable by
    ``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)``."""
    folder = Path(folder)
    written = {}
    for name, enc in concept.encoders.items():
        tensors = {concept.token: enc.vectors.contiguous()}
        metadata = {"format": "diffusers-textual-inversion", "token": concept.token, "encoder": name, "written_by": "dti"}
        path = folder / diffusers_filename(name)
        written[name] = atomic_write(path, lambda tmp, t=tensors, m=metadata: save_file(t, tmp, metadata=m))
    return written
