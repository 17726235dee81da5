"""DINOv2 image similarity, the paper's image metric: the CLS token of ``last_hidden_state`` (after
DINOv2's final LayerNorm, so equal to ``pooler_output``), cosine to every reference photo, averaged;
optional reference masks black out the background, as the paper's evaluation code does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dti.core.errors import DTIError
from dti.evaluation.scorers.hf import BATCH_SIZE, HFScorer, _load, load_references
from dti.evaluation.scorers.registry import register


@register("dinov2")
class Dinov2Scorer(HFScorer):
    """DINOv2 image similarity (the paper's): CLS cosine to every reference photo, optionally with masked references.

    ``masks``: a folder holding one mask per reference photo with the same file stem (white =
    subject). Masks are applied to references given as file paths (:meth:`image_similarity`
    accepts paths too) or loaded with :func:`load_references`; :meth:`use_masks` switches the
    folder per subject without reloading the model."""

    METRIC = "dinov2"
    DEFAULT = "facebook/dinov2-base"
    MODEL_NAME = "DINOv2"
    MODEL_TYPES = ("dinov2",)
    IMAGE_METRIC = "DINOv2"

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = BATCH_SIZE,
        masks: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(source, device, dtype, batch_size)
        self.masks: Path | None = None
        self.use_masks(masks)

    def use_masks(self, masks: str | os.PathLike | None) -> None:
        """Mask the references of the next calls with this folder (``None``: unmasked)."""
        if masks is not None and not Path(masks).is_dir():
            raise DTIError(f"mask folder {masks} does not exist; pass a folder holding one mask per reference photo (same file stem)")
        self.masks = None if masks is None else Path(masks)

    @property
    def masked(self) -> bool:
        return self.masks is not None

    def _load_model(self, where: str) -> Any:
        from transformers import Dinov2Model

        return _load(self.METRIC, "weights", Dinov2Model, where)

    def _embed_batch(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # last_hidden_state is after DINOv2's final LayerNorm: its CLS row is also pooler_output
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]

    def _notes(self) -> str:
        masks = f"references masked by {self.masks} (background black)" if self.masks else "references unmasked"
        return f"embedding: CLS token of last_hidden_state (layer-normed, = pooler_output), as the paper's code; {masks}"

    def _check_references(self, references: Sequence[Any]) -> list[Image.Image]:
        if self.masks is None or not references:
            return super()._check_references(references)
        if all(isinstance(r, (str, os.PathLike)) for r in references):
            return load_references(references, self.masks)
        names = [getattr(r, "filename", "") if isinstance(r, Image.Image) else "" for r in references]
        if not all(names):
            raise DTIError(f"{self.METRIC} masks need the reference photos' file names; pass the references as file paths")
        return load_references(names, self.masks)
