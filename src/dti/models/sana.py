"""SANA / SANA 1.5: one Gemma-2 encoder (its embedding scales rows by sqrt(width) inside its
forward), a linear DiT on DC-AE latents (deterministic, 32x downsampling), flow matching.

The pipeline lower-cases prompts and, at generation, prepends a long "complex human
instruction" by default; the paper's code trains without it. dti trains and generates without it
by default (``instruction`` option, recorded in the concept), so both condition identically."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, EncoderRole, FamilyDefaults, register
from dti.models.dit import MaskedPromptMixin, epsilon_half
from dti.models.flow import FlowMatchingAdapter


@register("SanaPipeline")
class SanaAdapter(MaskedPromptMixin, FlowMatchingAdapter):
    family = "sana"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "gemma2", sentencepiece=True),)
    denoiser_name = "transformer"
    lowercases_prompts = True
    # METHOD.md section 5: 500 steps, batch 4 as 2 x 2 accumulation, 1024 px, lr 0.01 x 4, kappa 5e-5.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 300, "instruction": False}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def native_resolution(self) -> int:
        return int(self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor)

    def train_shift(self) -> float:
        """Unshifted: diffusers' SANA example and the paper's code load the shipped DPM-Solver config
        as ``FlowMatchEulerDiscreteScheduler``, which has no ``flow_shift``, so they train at shift 1."""
        return 1.0

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        vae = self.pipe.vae
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent.float(), None

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.pipe.vae.config.scaling_factor

    def instruction(self) -> list[str] | None:
        """The pipeline's own default complex human instruction when the option is on, else None."""
        if not self.options.get("instruction"):
            return None
        return list(inspect.signature(type(self.pipe).__call__).parameters["complex_human_instruction"].default)

    def prompt_kwargs(self) -> dict[str, Any]:
        return {"complex_human_instruction": self.instruction()}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        transformer = self.pipe.transformer
        t = timesteps * transformer.config.timestep_scale
        out = transformer(noisy, timestep=t, return_dict=False, **cond)[0]
        return epsilon_half(out, transformer, noisy.shape[1])
