"""FLUX.2 klein (``Flux2KleinPipeline``): one Qwen3 encoder (``Qwen3ForCausalLM``: Qwen3-4B, 2560 wide, for klein
4B; Qwen3-8B, 4096 wide, for klein 9B) whose hidden layers ``text_encoder_out_layers`` (default 9, 18 and 27)
are stacked side by side into each token's conditioning (3 x the width), a packed-latent FLUX.2 MMDiT without a
guidance embedding, and FLUX.2's VAE (32 channels; its latents are patchified 2x2 to 128 channels and
normalized by the VAE's batch-norm statistics before the transformer sees them), trained by flow matching.

Prompts are encoded by the pipeline's own ``encode_prompt``, as at generation, so nothing differs from the
pipeline's inference encoding: Qwen3's chat template (one user turn, the assistant's opening and, thinking
disabled, an empty ``<think>`` block), padded to ``max_sequence_length`` tokens (template included). The
transformer gets every position, padding included and with no mask: the padding tokens come after the prompt
and, attention being causal, read it (the placeholder included), while the template's ``<|im_start|>user\\n``
and the words before the placeholder never see it.

The latents are the pipeline's: patchified and batch-norm normalized as its ``_encode_vae_image`` does, packed
to a sequence with its own ``_pack_latents`` / ``_prepare_latent_ids`` and unpacked with
``_unpack_latents_with_ids``. The training sigmas are unshifted (the pipeline shifts its sampling schedule by an
empirical ``mu`` of the image size), as diffusers' FLUX training examples train dynamically shifted models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter
from dti.models.qwen3 import QWEN3_ROLE, Qwen3EncoderMixin, prompt_budget


@register("Flux2KleinPipeline")
class Flux2KleinAdapter(Qwen3EncoderMixin, LatentVAEMixin, FlowMatchingAdapter):
    family = "flux2_klein"
    roles: ClassVar[tuple[EncoderRole, ...]] = (QWEN3_ROLE,)
    denoiser_name = "transformer"
    weighting_scheme = "none"  # uniform over the unshifted sigmas, as diffusers' FLUX examples: no paper setting for FLUX.2
    # No paper setting. 500 steps as SANA's and Lumina 2's (METHOD.md section 5); batch 4 as 2 x 2 accumulation (a 4B or
    # 9B transformer: one micro-batch of 2 in memory, as Lumina 2 and Z-Image); 1024 px, the pipeline's default size;
    # kappa 5e-5, the paper's value for its LLM encoder (Gemma-2), Qwen3 being one too.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    #: the pipeline's defaults: 512 Qwen3 tokens counting the chat template; the hidden layers it stacks
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512, "text_encoder_out_layers": [9, 18, 27]}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)  # 2x2 patches of the latent

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: what the chat template leaves."""
        return prompt_budget(getattr(self.pipe, role.tokenizer), int(self.options["max_sequence_length"]), enable_thinking=False)

    def _layers(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.options["text_encoder_out_layers"])

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, text_ids = self.pipe.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            max_sequence_length=int(self.options["max_sequence_length"]),
            text_encoder_out_layers=self._layers(),
        )
        return {"encoder_hidden_states": embeds, "txt_ids": text_ids}

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> 2x2 patches (128 channels) normalized by the VAE's batch-norm statistics, as the
        pipeline's ``_encode_vae_image`` (and, inverted, its decoding)."""
        vae, pipe = self.pipe.vae, self.pipe
        x = pipe._patchify_latents(latents)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(x.device, x.dtype)
        return (x - mean) / std

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        pipe, (_, _, h, w) = self.pipe, noisy.shape
        ids = pipe._prepare_latent_ids(noisy).to(noisy.device)
        out = pipe.transformer(
            hidden_states=pipe._pack_latents(noisy), timestep=timesteps / 1000, guidance=None, img_ids=ids, return_dict=False, **cond
        )[0]
        return pipe._unpack_latents_with_ids(out, ids, h, w)

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"]), "text_encoder_out_layers": self._layers()}
