"""A1111's ``.pt`` embedding: ``{string_to_param: {"*": [n, d]}, name, step, ...}``, one encoder.

Read only through torch's safe loader (:mod:`dti.concepts.formats.pickles`); written for A1111 when
asked for ``--to a1111 --out NAME.pt`` (a one-encoder, SD 1.x/2.x concept).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from dti.concepts.concept import Concept
from dti.concepts.formats.base import Format, Job, RawFile, file_token, matrix, metadata, single
from dti.core.errors import DTIError


class A1111Pickle(Format):
    name = "a1111-pt"

    def sniff(self, raw: RawFile) -> bool:
        return "string_to_param" in raw.data

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        params = raw.data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            count = len(params) if isinstance(params, Mapping) else "?"
            raise DTIError(f"{raw.path}: A1111 embedding with {count} terms; expected one")
        vectors = matrix(next(iter(params.values())), raw.path, "string_to_param", problems)
        name = file_token(raw, token, raw.data.get("name"), problems)
        step = raw.data.get("step")
        return single(vectors, name, "a1111", {"step": step if isinstance(step, (int, float, type(None))) else str(step), **raw.carried})

    def paths(self, concept: Concept, fmt: str, out: Path) -> list[Path]:
        if fmt != "a1111" or len(concept.encoders) != 1:
            raise DTIError("only --to a1111 for a single-encoder (SD 1.x/2.x) concept can be written as .pt; use .safetensors")
        return [out]

    def jobs(self, concept: Concept, fmt: str, paths: list[Path]) -> list[Job]:
        vectors = next(iter(concept.encoders.values())).vectors.contiguous()
        step = concept.meta.get("step")
        data = {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": concept.token,
            "step": int(step or 0) if isinstance(step, (int, float, type(None))) else 0,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "dti_meta": metadata(concept, fmt)["dti_meta"],  # A1111 ignores extra keys
        }
        return [(paths[0], lambda tmp: torch.save(data, tmp))]
