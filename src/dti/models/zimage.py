"""Z-Image (Tongyi-MAI; ``ZImagePipeline``): one Qwen3 encoder (Qwen3-4B in the release) read at its
second-to-last hidden layer, an S3-DiT single-stream transformer on FLUX.1's 16-channel VAE latents (2x2
patches), flow matching with a static shift; Z-Image's time runs from 0 (noise) to 1 (image).

Prompts are encoded by the pipeline's own ``encode_prompt``, as at generation, so nothing differs from the
pipeline's inference encoding: Qwen3's chat template (one user turn, the assistant's opening, thinking
enabled, i.e. no empty ``<think>`` block), padded to ``max_sequence_length`` tokens (template included) and cut
back to the real tokens by the attention mask (a variable-length list per prompt, which the transformer takes
as is). The template's ``<|im_start|>user\\n`` precedes every prompt and, attention being causal, never sees the
placeholder; a placeholder at the start of a prompt follows the template's newline exactly where a word would.

Z-Image's transformer takes ``1 - sigma`` as its time and predicts ``x0 - noise``; the pipeline negates the
output before its Euler step, and :meth:`ZImageAdapter.predict` does the same, so the loss's target stays
``noise - x0`` over the scheduler's sigmas, as for every flow-matching family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter
from dti.models.qwen3 import QWEN3_ROLE, Qwen3EncoderMixin, prompt_budget


@register("ZImagePipeline")
class ZImageAdapter(Qwen3EncoderMixin, LatentVAEMixin, FlowMatchingAdapter):
    family = "zimage"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (QWEN3_ROLE,)
    denoiser_name = "transformer"
    # Uniform over the scheduler's (statically shifted) sigmas, as FLUX, SANA and Lumina 2: no paper setting for Z-Image.
    weighting_scheme = "none"
    # No paper setting. 500 steps as SANA's and Lumina 2's (METHOD.md section 5); batch 4 as 2 x 2 accumulation: a
    # 6B transformer, one micro-batch of 2 in memory as for Lumina 2; 1024 px, Z-Image's native size (its pipeline's
    # default); kappa 5e-5, the paper's value for its LLM encoder (Gemma-2), Qwen3 being one too.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    #: max_sequence_length: the pipeline's default, 512 Qwen3 tokens counting the chat template
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)  # the pipeline's own check: 2x2 patches of the latent

    def native_resolution(self) -> int:
        return 1024  # ZImagePipeline.__call__'s default height and width

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: what the chat template leaves."""
        return prompt_budget(getattr(self.pipe, role.tokenizer), int(self.options["max_sequence_length"]), enable_thinking=True)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, _ = self.pipe.encode_prompt(
            list(prompts),  # a fresh list: _encode_prompt writes the templated text back into it
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"cap_feats": embeds}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        # as ZImagePipeline.__call__: one (C, 1, H, W) latent per sample, time 1 - sigma, the output negated
        t = (1000 - timesteps) / 1000
        out = self.pipe.transformer(list(noisy.unsqueeze(2).unbind(0)), t, cond["cap_feats"], return_dict=False)[0]
        return -torch.stack(list(out), dim=0).squeeze(2)

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}
