"""Chroma (Chroma1-HD / -Base): FLUX.1-schnell's packed-latent MMDiT, pruned (its modulations come from
a small "distilled guidance" network of the timestep alone, no pooled CLIP vector, no guidance input)
and conditioned on one encoder, T5-XXL (``text_encoder`` here), trained by flow matching.

Unlike FLUX, Chroma passes the tokenizer's attention mask to T5 and gives the transformer a text
mask that keeps the prompt and the first padding token. :meth:`ChromaAdapter.condition` takes
embeddings, text ids and that mask from the pipeline's own ``encode_prompt``, and
:meth:`ChromaAdapter.predict` extends the mask over the image tokens with the pipeline's own
``_prepare_attention_mask``, so training conditions the transformer exactly as generation does.

That mask is what diffusers 0.42 makes it: a float 0/1 tensor, which ``scaled_dot_product_attention``
adds to the attention logits, so the padding after the first pad token is weighted down (e^-1), not
excluded. dti keeps it as the pipeline has it: a word trained under another mask would be trained
for a model that generation does not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter


@register("ChromaPipeline")
class ChromaAdapter(LatentVAEMixin, FlowMatchingAdapter):
    family = "chroma"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "t5", sentencepiece=True),)
    denoiser_name = "transformer"
    # As FLUX (the same transformer lineage, VAE and dynamically shifted scheduler): uniform over the unshifted sigmas.
    weighting_scheme = "none"
    # No paper setting. Steps, batch and resolution as FLUX's: SANA's schedule (500 steps, batch 4, the paper's
    # only transformer setting) at 768 px (1024 native, 768 keeps a step of this ~8.9B transformer affordable).
    # kappa: Chroma's only encoder is a large sentence encoder (T5), so SANA's 5e-5 as PixArt's T5, not
    # the 1e-4 FLUX keeps for its CLIP encoder.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=4, resolution=768, kappa=5e-5)
    #: max_sequence_length: the pipeline's default (and maximum), 512 T5 tokens
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)  # 2x2 latent patches are packed into one token

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        return int(self.options["max_sequence_length"])

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, text_ids, mask, _, _, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"encoder_hidden_states": embeds, "txt_ids": text_ids, "attention_mask": mask}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        pipe, (b, c, h, w) = self.pipe, noisy.shape
        packed = pipe._pack_latents(noisy, b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
        # the text mask, extended over the image tokens as the pipeline's __call__ extends it
        mask = pipe._prepare_attention_mask(b, packed.shape[1], noisy.dtype, attention_mask=cond["attention_mask"])
        out = pipe.transformer(
            hidden_states=packed,
            timestep=timesteps / 1000,
            encoder_hidden_states=cond["encoder_hidden_states"],
            txt_ids=cond["txt_ids"],
            img_ids=img_ids,
            attention_mask=mask,
            return_dict=False,
        )[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(out, h * scale, w * scale, scale)

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}
