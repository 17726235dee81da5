"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, latent DDPM with epsilon or v targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import DDPMAdapter


@register("StableDiffusionPipeline")
class StableDiffusionAdapter(DDPMAdapter):
    family = "sd"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "clip_l", pooling="eos"),)
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=400, batch_size=4, kappa=1e-4)
    load_kwargs: ClassVar[dict[str, Any]] = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    @property
    def encoders(self):
        slots = super().encoders
        for slot in slots:  # SD 2.x: OpenCLIP ViT-H (1024 wide) in the same place
            if slot.text_encoder.get_input_embeddings().weight.shape[-1] == 1024:
                slot.role = EncoderRole("text_encoder", "tokenizer", "openclip_h", pooling="eos")
        return slots

    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        return {"encoder_hidden_states": embeds}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        return self.pipe.unet(noisy, timesteps, **cond).sample
