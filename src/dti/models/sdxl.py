"""Stable Diffusion XL: two CLIP encoders (penultimate states concatenated, pooled projection of
encoder 2) plus size/crop time ids. The token goes into both encoders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import EncoderSlot, MicroConditioning
from dti.models.sd import StableDiffusionAdapter


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    family = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    tokenizer_folders: ClassVar[dict[str, str]] = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
    defaults: ClassVar[dict[str, Any]] = {"steps": 400, "batch_size": 4, "resolution": 768, "kappa": 1e-4}

    @classmethod
    def load_pipeline(cls, model: str, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype)

    @property
    def encoders(self) -> list[EncoderSlot]:
        """Both CLIP encoders, or only ``text_encoder_2`` in single-encoder setups (refiner-like, dti-mini)."""
        slots = [
            EncoderSlot("text_encoder", self.pipe.tokenizer, self.pipe.text_encoder),
            EncoderSlot("text_encoder_2", self.pipe.tokenizer_2, self.pipe.text_encoder_2),
        ]
        return [s for s in slots if s.text_encoder is not None and s.tokenizer is not None]

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def time_ids(self, micro: Sequence[MicroConditioning], dtype: torch.dtype) -> torch.Tensor:
        projection = self.pipe.text_encoder_2.config.projection_dim
        rows = [
            self.pipe._get_add_time_ids(
                m.original_size, m.crop_top_left, m.target_size, dtype=dtype, text_encoder_projection_dim=projection
            )
            for m in micro
        ]
        return torch.cat(rows).to(self.device)

    def condition(self, prompts: Sequence[str], micro: Sequence[MicroConditioning]) -> dict[str, Any]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        added = {"text_embeds": pooled, "time_ids": self.time_ids(micro, embeds.dtype)}
        return {"encoder_hidden_states": embeds, "added_cond_kwargs": added}
