"""Qwen-Image: one Qwen2.5-VL-7B encoder (a decoder-only, causal language model with a vision tower),
a 20B dual-stream MMDiT on packed 2x2 patches of a 16-channel (Wan 2.1-style, one-frame) VAE latent,
flow matching with a dynamically shifted schedule.

Prompts are encoded by the pipeline's own ``encode_prompt`` (``_get_qwen_prompt_embeds``), as they
are at generation: each prompt is put in the pipeline's chat template (a system prompt, then
``<|im_start|>user\\n``, the prompt, ``<|im_end|>\\n<|im_start|>assistant\\n``), tokenized with
padding to the longest, run through the language model with its attention mask, and the last hidden
layer is kept without the template's first ``prompt_template_encode_start_idx`` (34) tokens, padded
with zeros and a mask the transformer also receives, and cut to ``max_sequence_length`` (512,
``__call__``'s default). Nothing of the pipeline's inference encoding of the positive prompt is
changed: the placeholder is read in the context the denoiser sees at generation. The prefix that is
dropped comes before the prompt, so a placeholder of several tokens never shifts it.

Only the language model's input embedding learns the word (``get_input_embeddings`` of
``Qwen2_5_VLForConditionalGeneration`` is the language model's ``embed_tokens``); the pipeline
passes no images, so the vision tower never runs. The encoder is causal: prompt words before the
placeholder do not attend to it, only the words after it (and the template's closing tokens) do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.core.errors import DTIError
from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.flow import FlowMatchingAdapter


@register("QwenImagePipeline")
class QwenImageAdapter(FlowMatchingAdapter):
    family = "qwenimage"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    # Qwen2.5-VL-7B's language model is its own kind: no other family has its vocabulary or width (3584).
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "qwen25vl", byte_level=True),)
    denoiser_name = "transformer"
    # Uniform over the training sigmas, as FLUX (also a dynamically shifted scheduler, so the sigmas are
    # unshifted: FlowMatchingAdapter.train_shift): no paper setting for Qwen-Image.
    weighting_scheme = "none"
    # No paper setting: SANA's transformer-denoiser schedule (METHOD.md section 5): 500 steps, batch 4 as
    # 2 x 2 accumulation; kappa 5e-5, the paper's value for a large sentence encoder (Gemma-2, UMT5), which a
    # 7B language model is too. 512 px, not the native 1328/1024: the 20B transformer (41 GB in bf16) and the
    # 7B encoder (16.6 GB, run forward and backward every step) must fit one 80 GB GPU next to the
    # activations; 512 px is the size the paper trains its other large system (Wan) at.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=512, kappa=5e-5)
    #: max_sequence_length: QwenImagePipeline.__call__'s default, so generation needs no flag
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)  # 2x2 patches

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: the embeddings kept after the dropped prefix
        end with the template's closing tokens (``<|im_end|>\\n<|im_start|>assistant\\n``)."""
        tok = getattr(self.pipe, role.tokenizer)
        template = self.pipe.prompt_template_encode
        suffix = len(tok(template.format("a")).input_ids) - len(tok("a").input_ids) - self.pipe.prompt_template_encode_start_idx
        return max(1, int(self.options["max_sequence_length"]) - suffix)

    # ------------------------------------------------------------------ latents: one-frame videos
    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) -> the latent distribution of one-frame videos, (B, 16, 1, H/8, W/8)."""
        vae = self.pipe.vae
        dist = vae.encode(pixels.unsqueeze(2).to(vae.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of the pipeline's decode (``latents / (1 / std) + mean``), per channel."""
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        return (latents - mean) * inv_std

    # ------------------------------------------------------------------ conditioning and the denoiser
    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, mask = self.pipe.encode_prompt(
            list(prompts), device=self.device, max_sequence_length=int(self.options["max_sequence_length"])
        )
        return {"encoder_hidden_states": embeds, "encoder_hidden_states_mask": mask}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        """As the pipeline's loop: latents packed into 2x2 patches, time = sigma, the output unpacked."""
        pipe = self.pipe
        b, c, f, h, w = noisy.shape
        packed = pipe._pack_latents(noisy.reshape(b, c * f, h, w), b, c * f, h, w)
        if pipe.transformer.config.guidance_embeds:
            raise DTIError("this Qwen-Image transformer is guidance-distilled; dti trains the released (undistilled) Qwen-Image only")
        out = pipe.transformer(
            hidden_states=packed,
            timestep=timesteps.to(packed.dtype) / 1000,  # the pipeline casts to the latents' dtype, then divides
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
            **cond,
        )[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(out, h * scale, w * scale, scale)

    def generation_kwargs(self) -> dict[str, Any]:
        """Qwen-Image guides with true classifier-free guidance (``true_cfg_scale``, 4.0 by default), which the
        pipeline turns on only with a negative prompt: ``" "``, as its model card does (dti's ``--guidance``
        is the pipeline's ``guidance_scale``, which only guidance-distilled transformers read). A negative
        prompt given to ``dti generate`` replaces it."""
        return {"max_sequence_length": int(self.options["max_sequence_length"]), "negative_prompt": " "}
