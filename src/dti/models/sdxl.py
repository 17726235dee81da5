"""Stable Diffusion XL: two CLIP encoders (penultimate states concatenated, pooled projection of
encoder 2) plus size/crop time ids. The token goes into both encoders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import DDPMAdapter


@register("StableDiffusionXLPipeline")
class StableDiffusionXLAdapter(DDPMAdapter):
    family = "sdxl"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    # Both CLIP encoders, or only text_encoder_2 in single-encoder setups (refiner-like, dti-mini).
    roles: ClassVar[tuple[EncoderRole, ...]] = (
        EncoderRole("text_encoder", "tokenizer", "clip_l", pooling="eos", optional=True),
        EncoderRole("text_encoder_2", "tokenizer_2", "clip_g", pooling="eos"),
    )
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=400, batch_size=4, resolution=768, kappa=1e-4)

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def time_ids(self, crops: Sequence[CropInfo], dtype: torch.dtype) -> torch.Tensor:
        projection = self.pipe.text_encoder_2.config.projection_dim
        rows = [
            self.pipe._get_add_time_ids(
                c.original_size, c.crop_top_left, c.target_size, dtype=dtype, text_encoder_projection_dim=projection
            )
            for c in crops
        ]
        return torch.cat(rows).to(self.device)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        added = {"text_embeds": pooled, "time_ids": self.time_ids(crops, embeds.dtype)}
        return {"encoder_hidden_states": embeds, "added_cond_kwargs": added}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        return self.pipe.unet(noisy, timesteps, **cond).sample
