"""Wan 2.1 text-to-video: one UMT5-XXL encoder, a 3-D causal VAE with per-channel latent statistics,
a video DiT trained by flow matching. dti treats an image as a one-frame video: a photo encodes to a
latent with a time axis of 1, and generation asks for one frame and returns it as the image.

Prompts go through the pipeline's own ``encode_prompt`` (``_get_t5_prompt_embeds``) in training and
generation alike, so the word conditions the transformer identically in both. Nothing differs from the
pipeline's inference encoding of the positive prompt: the prompt is cleaned as the pipeline cleans it
(ftfy, HTML unescaping, white space), padded to ``max_sequence_length`` (512, ``__call__``'s default,
not ``encode_prompt``'s 226), encoded with the attention mask, and the hidden states past each prompt's
last token are zeroed, which is how Wan masks the text for the transformer (it takes no mask). The
zeroed positions carry no gradient; the word's gradient flows through the kept ones. The embeddings are
cast to the transformer's dtype before the call, as ``__call__`` does.

Only Wan 2.1 layouts train: a Wan 2.2 pipeline (two transformers split at a boundary timestep, or
per-token timesteps) is refused before a step runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dti.core.errors import DTIError
from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.flow import FlowMatchingAdapter

if TYPE_CHECKING:
    from dti.core.draws import SampleDraws

#: The paper's Wan setting (its third system): 512 px, 500 steps, batch 2 x 2 accumulation steps,
#: lr 0.01 x batch (left to the method: 0.01 x 4 = 0.04, as for SANA), kappa 5e-5 (a large sentence encoder).
WAN_DEFAULTS = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=512, kappa=5e-5)


@register("WanPipeline")
class WanAdapter(FlowMatchingAdapter):
    family = "wan"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    # UMT5 is its own kind, not "t5": another vocabulary (256k multilingual pieces) at the same width
    # (4096) as T5-XXL, so a T5 vector (FLUX, SD3, PixArt) must never load into it; ComfyUI keys it umt5xxl.
    roles: ClassVar[tuple[EncoderRole, ...]] = (EncoderRole("text_encoder", "tokenizer", "umt5", sentencepiece=True),)
    denoiser_name = "transformer"
    # Uniform over the shifted training sigmas; the shift is the shipped scheduler's flow_shift (3.0).
    weighting_scheme = "none"
    defaults: ClassVar[FamilyDefaults] = WAN_DEFAULTS
    #: max_sequence_length: WanPipeline.__call__'s default (Wan's text length), so generation needs no flag
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial * self.pipe.transformer.config.patch_size[1])

    def native_resolution(self) -> int:
        """Wan has no square native size (480 x 832 / 720 x 1280 videos): images are made at the size the
        paper trains at, so a concept renders at the size it learned."""
        return int(WAN_DEFAULTS.resolution or 512)

    def max_length(self, role: EncoderRole) -> int:
        return int(self.options["max_sequence_length"])

    @classmethod
    def token_problem(cls, token: str) -> str | None:
        """The pipeline cleans every prompt (ftfy, HTML unescaping) before tokenizing: a token the
        cleaning changes would never reach the tokenizer."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        text = f"a {token} b"
        if prompt_clean(text) != text:
            return f"WanPipeline cleans every prompt (ftfy, HTML entities), which turns it into {prompt_clean(token)!r}"
        return None

    # ------------------------------------------------------------------ latents: one-frame videos
    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) -> the latent distribution of one-frame videos, (B, 16, 1, H/8, W/8)."""
        vae = self.pipe.vae
        dist = vae.encode(pixels.unsqueeze(2).to(vae.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of the pipeline's decode (``latents / (1 / std) + mean``): ``(x - mean) * (1 / std)``
        per channel, with the same tensors the pipeline builds from ``latents_mean`` / ``latents_std``."""
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        return (latents - mean) * inv_std

    # ------------------------------------------------------------------ conditioning and the denoiser
    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
            device=self.device,
        )
        return {"encoder_hidden_states": embeds}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        transformer = self.pipe.transformer
        embeds = cond["encoder_hidden_states"].to(transformer.dtype)
        return transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=embeds, return_dict=False)[0]

    def loss(
        self, latents: torch.Tensor, prompts: Sequence[str], crops: Sequence[CropInfo], draws: SampleDraws, reduction: str = "mean"
    ) -> torch.Tensor:
        self.check_trainable()
        return super().loss(latents, prompts, crops, draws, reduction)

    def check_trainable(self) -> None:
        """Refuse the Wan 2.2 layouts this adapter does not train (their words would learn from the wrong denoiser)."""
        pipe = self.pipe
        if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("boundary_ratio") is not None:
            raise DTIError("this WanPipeline has two transformers (Wan 2.2 A14B); dti trains Wan 2.1 T2V pipelines only")
        if pipe.config.get("expand_timesteps"):
            raise DTIError("this WanPipeline takes per-token timesteps (Wan 2.2 TI2V); dti trains Wan 2.1 T2V pipelines only")

    # ------------------------------------------------------------------ generation: one frame
    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"]), "num_frames": 1, "output_type": "pil"}

    def output_image(self, output: Any) -> Any:
        """The pipeline returns videos (``frames``: one list of PIL frames per prompt): the one frame asked for."""
        return output.frames[0][0]
