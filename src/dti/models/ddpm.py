"""The DDPM loss family (SD 1.x/2.x, SDXL, PixArt): noise by the DDPM forward process, an
epsilon / v / sample target, mean-squared error."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from dti.core.devices import to_device
from dti.models.base import Adapter, CropInfo

if TYPE_CHECKING:
    from dti.core.draws import SampleDraws


@contextlib.contextmanager
def vae_precision(vae: torch.nn.Module) -> Iterator[None]:
    """Run an fp16 VAE that asks for it (``force_upcast``) in fp32, then put it back."""
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(torch.float16)


class LatentVAEMixin:
    """A KL autoencoder (``AutoencoderKL``): latent distribution, scaling and shift factors."""

    pipe: Any

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        vae = self.pipe.vae
        with vae_precision(vae):
            dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return (latents - shift) * config.scaling_factor


class DDPMAdapter(LatentVAEMixin, Adapter):
    """Families trained with the DDPM objective; a subclass says how the denoiser is called."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        from diffusers import DDPMScheduler

        # Training noise follows the DDPM forward process whatever sampler the pipeline ships.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    @abc.abstractmethod
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        """The denoiser's prediction for ``noisy`` at integer ``timesteps``."""

    def loss(
        self, latents: torch.Tensor, prompts: Sequence[str], crops: Sequence[CropInfo], draws: SampleDraws, reduction: str = "mean"
    ) -> torch.Tensor:
        x0 = self.scale_latents(latents.to(self.device, torch.float32))
        noise = to_device(draws.randn(x0.shape[1:]), x0.device)
        t = to_device(draws.randint(self.noise_scheduler.config.num_train_timesteps), x0.device)
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
        pred = self.predict(noisy.to(self.denoiser.dtype), t, self.encode(prompts, crops))
        if reduction == "none":  # one loss per sample
            return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
