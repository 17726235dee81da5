"""Concept: one learned word, its vectors per text encoder, and what produced it.

A concept maps each text encoder it conditions (named as the pipeline names the component:
``text_encoder``, ``text_encoder_2``) to an ``[n_vectors, width]`` block of input-embedding
rows. A DTI concept also records its fixed magnitude, so the rows are ``magnitude * direction``;
a plain TI concept has ``magnitude=None``. Saved as one self-describing safetensors file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dti import sphere
from dti.errors import DTIError
from dti.fileio import atomic_write

FORMAT_NAME = "dti.concept"
FORMAT_VERSION = "1"
CONCEPT_FILENAME = "concept.safetensors"


@dataclass
class EncoderVectors:
    """The rows one text encoder reads for the concept's token(s)."""

    vectors: torch.Tensor  # [n_vectors, width], float32: what the encoder actually receives
    magnitude: float | None = None  # fixed row norm (DTI); None for a free (TI) vector
    init: torch.Tensor | None = None  # [n_vectors, width] unit rows: initializer = prior mean
    kind: str | None = None  # clip_l, clip_g, openclip_h, t5, gemma2; None when a foreign file does not say
    trained: bool = True  # False: the initializer's rows, kept fixed (``--encoders`` left this encoder out)

    def __post_init__(self) -> None:
        self.vectors = self.vectors.detach().to(torch.float32).cpu()
        if self.vectors.ndim == 1:
            self.vectors = self.vectors.unsqueeze(0)
        if self.init is not None:
            self.init = self.init.detach().to(torch.float32).cpu().reshape(self.vectors.shape)

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def directions(self) -> torch.Tensor:
        """Unit rows: the part of the vectors DTI trains."""
        return sphere.normalize(self.vectors)

    @property
    def norms(self) -> torch.Tensor:
        return self.vectors.norm(dim=-1)


@dataclass
class Concept:
    """A learned word: placeholder token, vectors per text encoder, provenance metadata."""

    token: str
    encoders: dict[str, EncoderVectors]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vectors(self) -> int:
        counts = {e.n_vectors for e in self.encoders.values()}
        assert len(counts) == 1, f"encoders disagree on the vector count: {counts}"
        return counts.pop()

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))

    @property
    def tokens(self) -> list[str]:
        """The placeholder tokens a tokenizer holds: diffusers' multi-vector naming."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.n_vectors)]

    def rescaled(self, magnitudes: dict[str, float]) -> Concept:
        """Every row set to the given norm per encoder (e.g. TI-rescaled: norm := vocab mean)."""
        encoders = {}
        for name, enc in self.encoders.items():
            m = float(magnitudes[name])
            encoders[name] = replace(enc, vectors=m * enc.directions, magnitude=m)
        meta = dict(self.meta, rescaled_from=self.method)
        return Concept(self.token, encoders, meta)

    def renamed(self, token: str) -> Concept:
        return Concept(token, dict(self.encoders), dict(self.meta))

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the concept as one safetensors file (atomically)."""
        tensors: dict[str, torch.Tensor] = {}
        enc_meta: dict[str, Any] = {}
        for name, enc in self.encoders.items():
            tensors[f"{name}.vectors"] = enc.vectors.contiguous()
            if enc.init is not None:
                tensors[f"{name}.init"] = enc.init.contiguous()
            enc_meta[name] = {
                "magnitude": enc.magnitude,
                "width": enc.width,
                "n_vectors": enc.n_vectors,
                "kind": enc.kind,
                "trained": enc.trained,
            }
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "token": self.token,
            "encoders": json.dumps(enc_meta),
            "meta": json.dumps(self.meta, default=str),
        }
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Concept:
        """Read a file written by :meth:`save`; a folder means its ``concept.safetensors``."""
        path = Path(path)
        if path.is_dir():
            path = path / CONCEPT_FILENAME
        if not path.is_file():
            raise DTIError(f"concept file not found: {path}; pass a dti concept file or a training output folder")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DTIError(f"{path} is not a readable safetensors file ({exc}); pass a dti concept file") from exc
        if metadata.get("format") != FORMAT_NAME:
            raise DTIError(f"{path} is not a dti concept file (no '{FORMAT_NAME}' metadata); convert it with `dti convert`")
        enc_meta = json.loads(metadata["encoders"])
        encoders = {
            name: EncoderVectors(
                vectors=tensors[f"{name}.vectors"],
                magnitude=info.get("magnitude"),
                init=tensors.get(f"{name}.init"),
                kind=info.get("kind"),
                trained=bool(info.get("trained", True)),
            )
            for name, info in enc_meta.items()
        }
        return cls(metadata["token"], encoders, json.loads(metadata.get("meta", "{}")))
