"""The flow-matching loss family (SD3, FLUX, SANA): ``x_t = (1 - s) x0 + s noise``, target
``noise - x0``, mean-squared error; each family brings its own timestep density and shift, as
its diffusers training example does, and says how its denoiser is called."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from dti.core.devices import to_device
from dti.models.base import Adapter, CropInfo

if TYPE_CHECKING:
    from dti.core.draws import SampleDraws


class FlowMatchingAdapter(Adapter):
    """Families trained with rectified flow; subclasses implement :meth:`predict`."""

    #: Timestep density, as diffusers' ``compute_density_for_timestep_sampling``: ``none``
    #: (uniform), ``logit_normal`` or ``mode``.
    weighting_scheme: ClassVar[str] = "none"
    logit_mean: ClassVar[float] = 0.0
    logit_std: ClassVar[float] = 1.0
    mode_scale: ClassVar[float] = 1.29
    num_train_timesteps: ClassVar[int] = 1000

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        from diffusers import FlowMatchEulerDiscreteScheduler

        # The training schedule: 1000 sigmas with the family's static shift, never set_timesteps'd.
        self.train_scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=self.train_shift())

    def train_shift(self) -> float:
        """The static shift of the training sigmas; a scheduler with dynamic (resolution-dependent)
        shifting trains unshifted, as diffusers' FLUX example does."""
        config = self.pipe.scheduler.config
        if config.get("use_dynamic_shifting", False):
            return 1.0
        return float(config.get("shift", None) or config.get("flow_shift", None) or 1.0)

    def sample_sigmas(self, draws: SampleDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas in [0, 1], the scheduler's timesteps = sigma x 1000), one per sample, each from
        the sample's own generator through diffusers' density."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        density = (self.weighting_scheme, 1, self.logit_mean, self.logit_std, self.mode_scale)
        u = torch.cat([compute_density_for_timestep_sampling(*density, generator=g) for g in draws.generators])
        indices = (u * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1)
        return self.train_scheduler.sigmas[indices].float(), self.train_scheduler.timesteps[indices].float()

    @abc.abstractmethod
    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the space the denoiser works in."""

    @abc.abstractmethod
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        """The denoiser's velocity for ``noisy`` at scheduler ``timesteps`` (sigma x 1000)."""

    def loss(
        self, latents: torch.Tensor, prompts: Sequence[str], crops: Sequence[CropInfo], draws: SampleDraws, reduction: str = "mean"
    ) -> torch.Tensor:
        x0 = self.scale_latents(latents.to(self.device, torch.float32))
        noise = to_device(draws.randn(x0.shape[1:]), x0.device)
        sigmas, timesteps = self.sample_sigmas(draws)
        s = to_device(sigmas, x0.device).view(-1, *([1] * (x0.ndim - 1)))
        noisy = (1.0 - s) * x0 + s * noise
        target = noise - x0
        pred = self.predict(noisy.to(self.denoiser.dtype), to_device(timesteps, x0.device), self.encode(prompts, crops))
        if reduction == "none":  # one loss per sample
            return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
