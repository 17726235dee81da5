"""PixArt-Sigma: T5 (300 tokens, attention mask), a DiT with learned variance trained by DDPM
(epsilon). Its pipeline lower-cases prompts; caption cleaning is left off (it needs extra
packages and would mangle ``<token>`` placeholders)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import DDPMAdapter
from dti.models.dit import MaskedPromptMixin, epsilon_half


@register("PixArtSigmaPipeline")
class PixArtSigmaAdapter(MaskedPromptMixin, DDPMAdapter):
    family = "pixart"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "t5", sentencepiece=True),)
    denoiser_name = "transformer"
    lowercases_prompts = True
    # No paper setting: SANA's (500 steps, batch 4, kappa 5e-5 for a large sentence encoder), native resolution.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=4, kappa=5e-5)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 300}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size)

    def native_resolution(self) -> int:
        return int(self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        transformer = self.pipe.transformer
        added = {"resolution": None, "aspect_ratio": None}
        out = transformer(noisy, timestep=timesteps, added_cond_kwargs=added, return_dict=False, **cond)[0]
        return epsilon_half(out, transformer, noisy.shape[1])
