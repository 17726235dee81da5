"""Stable Diffusion 3 / 3.5: CLIP-L and CLIP-G (penultimate states, pooled projections of both)
plus T5 (optional: pipelines are saved without it), an MMDiT trained by flow matching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter


@register("StableDiffusion3Pipeline")
class StableDiffusion3Adapter(LatentVAEMixin, FlowMatchingAdapter):
    family = "sd3"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (
        EncoderRole("text_encoder", "tokenizer", "clip_l", pooling="eos"),
        EncoderRole("text_encoder_2", "tokenizer_2", "clip_g", pooling="eos"),
        EncoderRole("text_encoder_3", "tokenizer_3", "t5", optional=True, sentencepiece=True),
    )
    denoiser_name = "transformer"
    # diffusers' SD3 training example samples timesteps logit-normally over the shifted sigmas.
    weighting_scheme = "logit_normal"
    # No paper setting: SANA's schedule (500 steps, batch 4) at SDXL's 768 px and kappa (CLIP encoders).
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=4, resolution=768, kappa=1e-4)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 256}

    @classmethod
    def load_pipeline(cls, model: str, dtype: torch.dtype, **options: Any) -> Any:
        """A pipeline saved without T5 lists it as ``[null, null]``, which ``from_pretrained``
        refuses unless told the component is absent."""
        from diffusers import StableDiffusion3Pipeline

        from dti.models import read_model_index

        index = read_model_index(model)
        absent = {name: None for name in ("text_encoder_3", "tokenizer_3") if not any(index.get(name) or [None])}
        return StableDiffusion3Pipeline.from_pretrained(model, dtype=dtype, **absent, **options)

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * self.pipe.patch_size)

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        return int(self.options["max_sequence_length"]) if role.kind == "t5" else super().max_length(role)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        return self.pipe.transformer(hidden_states=noisy, timestep=timesteps, return_dict=False, **cond)[0]

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}
