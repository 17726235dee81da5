"""DINO (ViT-S/16) image similarity, DreamBooth's DINO metric: CLS token of ``last_hidden_state``."""

from __future__ import annotations

from typing import Any

import torch

from dti.evaluation.scorers.hf import HFScorer, _load
from dti.evaluation.scorers.registry import register


@register("dino")
class DinoScorer(HFScorer):
    """DreamBooth's DINO image metric: ViT-S/16 DINO (v1), CLS of ``last_hidden_state``, cosine."""

    METRIC = "dino"
    DEFAULT = "facebook/dino-vits16"
    MODEL_NAME = "DINO ViT"
    MODEL_TYPES = ("vit",)
    IMAGE_METRIC = "DINO"

    def _load_model(self, where: str) -> Any:
        from transformers import ViTModel

        # the DINO checkpoints carry no pooler; without this transformers would add a random one
        return _load(self.METRIC, "weights", ViTModel, where, add_pooling_layer=False)

    def _embed_batch(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]

    def _notes(self) -> str:
        return (
            "embedding: CLS token of last_hidden_state (after the final LayerNorm), DreamBooth's DINO metric; images by the saved processor"
        )
