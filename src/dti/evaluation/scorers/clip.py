"""CLIP image and text similarity, DreamBooth's CLIP-I / CLIP-T: raw cosines of the projected embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from dti.evaluation.scorers.hf import TextScorer
from dti.evaluation.scorers.registry import register


@register("clip")
class ClipScorer(TextScorer):
    """DreamBooth's CLIP-I (image-image cosine, mean over references) and CLIP-T (raw image-text
    cosine, no logit scale) on the projected embeddings."""

    METRIC = "clip"
    DEFAULT = "openai/clip-vit-base-patch32"
    MODEL_NAME = "CLIP"
    MODEL_CLASS = "CLIPModel"
    MODEL_TYPES = ("clip",)
    IMAGE_METRIC = "CLIP-I"
    TEXT_METRIC = "CLIP-T"

    def text_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        max_length = min(int(self.tokenizer.model_max_length), int(self.model.config.text_config.max_position_embeddings))
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _notes(self) -> str:
        return (
            "CLIP-I: cosine of projected image embeddings, mean over references; "
            "CLIP-T: raw cosine image-prompt (no logit scale), DreamBooth's protocol"
        )

    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if not images and not prompts:
            return []
        return self._image_text_cosines(images, prompts).tolist()
