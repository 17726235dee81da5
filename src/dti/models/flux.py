"""FLUX.1 (dev / schnell): CLIP-L (pooled) and T5 (sequence), a packed-latent MMDiT trained by
flow matching with a guidance embedding. T5 is ``text_encoder_2`` here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter


@register("FluxPipeline")
class FluxAdapter(LatentVAEMixin, FlowMatchingAdapter):
    family = "flux"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (
        EncoderRole("text_encoder", "tokenizer", "clip_l", pooling="eos"),
        EncoderRole("text_encoder_2", "tokenizer_2", "t5", sentencepiece=True),
    )
    denoiser_name = "transformer"
    weighting_scheme = "none"  # diffusers' FLUX example: uniform over the unshifted sigmas
    # No paper setting: SANA's schedule (500 steps, batch 4) at SDXL's 768 px and kappa (a CLIP encoder).
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=4, resolution=768, kappa=1e-4)
    #: guidance: the distilled guidance value FLUX.1-dev is trained at (diffusers' example: 3.5)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512, "guidance": 3.5}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        return int(self.options["max_sequence_length"]) if role.kind == "t5" else super().max_length(role)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, max_sequence_length=int(self.options["max_sequence_length"])
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        pipe, (b, c, h, w) = self.pipe, noisy.shape
        packed = pipe._pack_latents(noisy, b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
        guidance = None
        if pipe.transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.options["guidance"]), device=noisy.device, dtype=torch.float32)
        out = pipe.transformer(
            hidden_states=packed, timestep=timesteps / 1000, guidance=guidance, img_ids=img_ids, return_dict=False, **cond
        )[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(out, h * scale, w * scale, scale)

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}
