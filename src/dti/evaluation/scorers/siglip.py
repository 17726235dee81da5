"""SigLIP text similarity, the paper's text metric: ``sigmoid(exp(logit_scale) * cos + logit_bias)``
between an image and its prompt, the prompt ending in "." and padded to 64 tokens as the paper's code does."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from dti.evaluation.scorers.hf import SIGLIP_MAX_LENGTH, TextScorer
from dti.evaluation.scorers.registry import register


@register("siglip")
class SiglipScorer(TextScorer):
    """SigLIP text similarity (the paper's): ``sigmoid(exp(logit_scale) * cos + logit_bias)``, each
    image with its own prompt; image similarity: cosine of the image embeddings."""

    METRIC = "siglip"
    DEFAULT = "google/siglip-base-patch16-512"
    MODEL_NAME = "SigLIP"
    MODEL_CLASS = "SiglipModel"
    MODEL_TYPES = ("siglip",)
    IMAGE_METRIC = "SigLIP image cosine"
    TEXT_METRIC = "SigLIP"

    def prepare_prompt(self, prompt: str) -> str:
        """The paper's code reads the prompt as a sentence: a final "." unless it has one."""
        text = prompt.rstrip()
        return text if text.endswith(".") else text + "."

    def text_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids padded to 64, as SigLIP was trained; no attention mask (SigLIP attends to its
        padding, which is the end token, and pools the last position)."""
        enc = self.tokenizer(
            [self.prepare_prompt(p) for p in prompts],
            padding="max_length",
            max_length=SIGLIP_MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"]}

    def _scale(self) -> str:
        return "text: sigmoid probability in [0, 1]; image: cosine in [-1, 1]"

    def _notes(self) -> str:
        return (
            "text: sigmoid(exp(logit_scale) * cos + logit_bias) of the image and its prompt, the prompt ending in '.' "
            f"(appended unless present) and padded to {SIGLIP_MAX_LENGTH} tokens (padding='max_length'), as the paper's code; "
            "input_ids only, no attention mask; the real SiglipTokenizer lowercases and strips punctuation itself; "
            "image: cosine of the image embeddings (pooled head output)"
        )

    @torch.no_grad()
    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if not images and not prompts:
            return []
        cos = self._image_text_cosines(images, prompts)
        scale = self.model.logit_scale.float().exp().cpu()
        bias = self.model.logit_bias.float().cpu()
        return torch.sigmoid(cos * scale + bias).tolist()
