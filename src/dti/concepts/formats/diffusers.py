"""diffusers' layout: one ``{token: [n, d]}`` file per encoder, ``learned_embeds.safetensors`` for
``text_encoder``, ``learned_embeds_2.safetensors`` for ``text_encoder_2`` (``.bin`` too), as
``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)`` loads them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats.base import Format, Job, RawFile, file_token, matrix, metadata, problem, save_job, single
from dti.core.errors import DTIError


def filename(encoder: str) -> str:
    """``text_encoder`` -> ``learned_embeds.safetensors`` (diffusers' default name),
    ``text_encoder_2`` -> ``learned_embeds_2.safetensors``."""
    suffix = encoder.removeprefix("text_encoder")
    return f"learned_embeds{suffix}.safetensors"


def component(path: Path) -> str:
    """``learned_embeds_2.safetensors`` is the second encoder's file, ``_3`` the third's."""
    match = re.match(r"learned_embeds(_\d+)?", path.name)
    return f"text_encoder{match.group(1) or ''}" if match else "text_encoder"


class DiffusersFile(Format):
    name = "diffusers"
    writes = ("diffusers",)

    def sniff(self, raw: RawFile) -> bool:
        return len([v for v in raw.data.values() if isinstance(v, torch.Tensor)]) == 1

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        key, value = next((k, v) for k, v in raw.data.items() if isinstance(v, torch.Tensor))
        carried = dict(raw.carried)
        if isinstance(raw.metadata.get("encoder"), str) and raw.metadata["encoder"]:
            carried["encoder"] = raw.metadata["encoder"]
        vectors = matrix(value, raw.path, str(key), problems)
        name = file_token(raw, token, str(key) or raw.stored_name, problems)
        return single(vectors, name, "diffusers", carried, component(raw.path))

    def paths(self, concept: Concept, fmt: str, out: Path) -> list[Path]:
        if out.suffix:
            raise DTIError(
                f"{{to}} diffusers writes one file per encoder; give a folder for {{out}}, not {out.name}", settings=["to", "out"]
            )
        return [out / filename(name) for name in concept.encoders]

    def jobs(self, concept: Concept, fmt: str, paths: list[Path]) -> list[Job]:
        return [
            (path, save_job({concept.token: enc.vectors}, {**metadata(concept, "diffusers"), "encoder": name}))
            for path, (name, enc) in zip(paths, concept.encoders.items())
        ]


def stale(paths: list[Path]) -> list[Path]:
    """Files beside the planned ones that would change what the folder reads as: another encoder's
    ``learned_embeds_<n>`` (an SD concept written over an SDXL one)."""
    if not paths or not paths[0].parent.is_dir():
        return []
    folder = paths[0].parent
    found = [*folder.glob("learned_embeds*.safetensors"), *folder.glob("learned_embeds*.bin")]
    return sorted(p for p in found if p not in paths)


def read_folder(path: Path, read_file: Any, token: str | None, problems: list[str] | None) -> Concept:
    """A folder of diffusers per-encoder files as one concept (``read_file`` reads each)."""
    files = sorted(path.glob("learned_embeds*.safetensors")) or sorted(path.glob("learned_embeds*.bin"))
    if not files:
        raise DTIError(f"{path} holds no concept.safetensors or learned_embeds files; pass a concept file or run folder")
    parts = [read_file(f, problems=problems) for f in files]
    names = {p.token for p in parts}
    if len(names) != 1:
        raise DTIError(f"{path}: the per-encoder files name different tokens {sorted(names)}; pass one file")
    encoders: dict[str, EncoderVectors] = {}
    for part in parts:
        for name, enc in part.encoders.items():
            if name in encoders:
                raise DTIError(f"{path}: two files hold vectors for {name}; remove one")
            encoders[name] = enc
    counts = {e.n_vectors for e in encoders.values()}
    if len(counts) > 1:
        problem(problems, path, f"the per-encoder files hold different vector counts {sorted(counts)}; the folder is inconsistent")
    meta: dict[str, Any] = {}
    for part in parts:
        meta.update(part.meta)
    return Concept(token or names.pop(), encoders, {**meta, "source_format": "diffusers"})
