"""Lumina-Image 2.0: one Gemma-2 2B encoder (its embedding scales rows by sqrt(width) inside its
forward, as SANA's; the pipeline takes the second-to-last hidden layer), a unified next-DiT on FLUX's
16-channel VAE latents (patches of 2x2), flow matching with Lumina's own time direction.

Prompts are encoded by the pipeline's own ``encode_prompt``, as they are at generation: the
pipeline's system prompt, ``" <Prompt Start> "`` and then the prompt, padded to
``max_sequence_length`` tokens (system prompt included) with an attention mask the transformer
also receives. Nothing of the pipeline's encoding is changed or dropped: the placeholder is read in
the context the denoiser sees at generation.

Lumina's time runs the other way (0 is noise, 1 the image) and its transformer predicts
``x0 - noise``; the pipeline feeds it ``1 - t / 1000`` and negates its output before the Euler step.
:meth:`Lumina2Adapter.predict` does the same, so the loss's target stays ``noise - x0`` over the
scheduler's sigmas, as for every flow-matching family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter

#: what ``Lumina2Pipeline.encode_prompt`` puts between its system prompt and the prompt
PROMPT_START = " <Prompt Start> "


@register("Lumina2Pipeline")
class Lumina2Adapter(LatentVAEMixin, FlowMatchingAdapter):
    family = "lumina2"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "gemma2", sentencepiece=True),)
    denoiser_name = "transformer"
    # Uniform over the scheduler's (statically shifted) sigmas, as FLUX and SANA: no paper setting for Lumina 2.
    weighting_scheme = "none"
    # No paper setting: SANA's (METHOD.md section 5), the encoder being the same Gemma-2 2B. 500 steps; batch 4
    # as 2 x 2 accumulation (one micro-batch of 2 in memory: 14.1 GiB estimated with --gradient-checkpointing,
    # 45.4 without, benchmarks/results/memory-2026-12-07-chroma-lumina2.md); 1024 px, SANA's and Lumina 2's
    # native size; kappa 5e-5, the paper's value for Gemma-2.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    #: max_sequence_length: the pipeline's default, 256 Gemma tokens counting the system prompt
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 256}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size)

    def native_resolution(self) -> int:
        return int(self.pipe.default_image_size)

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: what the system prompt leaves (the count of a
        prompt by itself includes ``<bos>``, the count of the whole text has it once)."""
        tok = getattr(self.pipe, role.tokenizer)
        prefix = len(tok(self.pipe.system_prompt + PROMPT_START + "a").input_ids) - len(tok("a").input_ids)
        return max(1, int(self.options["max_sequence_length"]) - prefix)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            device=self.device,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        # as the pipeline's __call__: Lumina's time is 1 - sigma, and its output is x0 - noise
        t = 1 - timesteps / self.pipe.scheduler.config.num_train_timesteps
        out = self.pipe.transformer(hidden_states=noisy, timestep=t, return_dict=False, **cond)[0]
        return -out

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}
