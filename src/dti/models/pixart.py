"""PixArt-Sigma: T5 (300 tokens, attention mask), a DiT with learned variance trained by DDPM
(epsilon). Its pipeline lower-cases prompts; caption cleaning is left off (it needs extra
packages and would mangle ``<token>`` placeholders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import DDPMAdapter


@register("PixArtSigmaPipeline")
class PixArtSigmaAdapter(DDPMAdapter):
    family = "pixart"
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

    def max_length(self, role: EncoderRole) -> int:
        return int(self.options["max_sequence_length"])

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            device=self.device,
            clean_caption=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        transformer = self.pipe.transformer
        added = {"resolution": None, "aspect_ratio": None}
        out = transformer(noisy, timestep=timesteps, added_cond_kwargs=added, return_dict=False, **cond)[0]
        if transformer.config.out_channels // 2 == noisy.shape[1]:  # learned variance: keep the epsilon half
            out = out.chunk(2, dim=1)[0]
        return out

    def generation_kwargs(self) -> dict[str, Any]:
        return {"clean_caption": False, "use_resolution_binning": False, "max_sequence_length": int(self.options["max_sequence_length"])}
