"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, latent DDPM with epsilon or v targets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dti.models.base import Adapter, EncoderSlot, MicroConditioning


@contextlib.contextmanager
def _vae_precision(vae: torch.nn.Module) -> Iterator[None]:
    """Run an fp16 VAE that asks for it (``force_upcast``) in fp32, then put it back."""
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(torch.float16)


class StableDiffusionAdapter(Adapter):
    family = "sd"
    pipeline_class = "StableDiffusionPipeline"
    tokenizer_folders: ClassVar[dict[str, str]] = {"text_encoder": "tokenizer"}
    defaults: ClassVar[dict[str, Any]] = {"steps": 400, "batch_size": 4, "resolution": None, "kappa": 1e-4}

    @classmethod
    def load_pipeline(cls, model: str, dtype: torch.dtype) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_pretrained(
            model, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        from diffusers import DDPMScheduler

        # Training noise follows the DDPM forward process whatever sampler the pipeline ships.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    @property
    def encoders(self) -> list[EncoderSlot]:
        return [EncoderSlot("text_encoder", self.pipe.tokenizer, self.pipe.text_encoder)]

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.pipe.vae
        with _vae_precision(vae):
            dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return (latents - shift) * config.scaling_factor

    def condition(self, prompts: Sequence[str], micro: Sequence[MicroConditioning]) -> dict[str, Any]:
        """UNet keyword arguments from the pipeline's own prompt encoding (with gradients)."""
        embeds, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        return {"encoder_hidden_states": embeds}

    def loss(
        self,
        latents: torch.Tensor,
        prompts: Sequence[str],
        micro: Sequence[MicroConditioning],
        generator: torch.Generator,
    ) -> torch.Tensor:
        unet = self.pipe.unet
        x0 = self.scale_latents(latents.to(self.device, torch.float32))
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (x0.shape[0],), generator=generator).to(x0.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        elif kind == "sample":
            target = x0
        else:
            raise ValueError(f"unknown prediction_type {kind!r}")
        cond = self.condition(prompts, micro)
        pred = unet(noisy.to(unet.dtype), t, **cond).sample
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
