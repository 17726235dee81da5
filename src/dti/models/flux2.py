"""What the FLUX.2 families share (klein, dev): the packed-latent FLUX.2 MMDiT, FLUX.2's VAE (32 channels;
its latents patchified 2x2 to 128 channels and normalized by the VAE's batch-norm statistics before the
transformer sees them), the text encoder's hidden layers ``text_encoder_out_layers`` stacked side by side into
each token's conditioning, and flow matching on unshifted sigmas.

The latents are the pipeline's: patchified and batch-norm normalized as its ``_encode_vae_image`` does, packed
to a sequence with its own ``_pack_latents`` / ``_prepare_latent_ids`` and unpacked with
``_unpack_latents_with_ids``. The training sigmas are unshifted (the pipelines shift their sampling schedule by an
empirical ``mu`` of the image size), as diffusers' FLUX training examples train dynamically shifted models.

This module registers no family.
"""

from __future__ import annotations

from typing import Any

import torch

from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter


class Flux2Adapter(LatentVAEMixin, FlowMatchingAdapter):
    """The FLUX.2 transformer, VAE and stacked encoder layers; a family adds its encoder and its conditioning."""

    denoiser_name = "transformer"
    weighting_scheme = "none"  # uniform over the unshifted sigmas, as diffusers' FLUX examples: no paper setting for FLUX.2

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)  # 2x2 patches of the latent

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def _layers(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.options["text_encoder_out_layers"])

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> 2x2 patches (128 channels) normalized by the VAE's batch-norm statistics, as the
        pipeline's ``_encode_vae_image`` (and, inverted, its decoding)."""
        vae, pipe = self.pipe.vae, self.pipe
        x = pipe._patchify_latents(latents)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(x.device, x.dtype)
        return (x - mean) / std

    def guidance(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """The transformer's ``guidance`` input: None (klein has no guidance embedding)."""
        return None

    def unpack(self, out: torch.Tensor, ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The transformer's output sequence back to latents, by the pipeline's own ``_unpack_latents_with_ids``."""
        return self.pipe._unpack_latents_with_ids(out, ids, height, width)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        pipe, (b, _, h, w) = self.pipe, noisy.shape
        ids = pipe._prepare_latent_ids(noisy).to(noisy.device)
        out = pipe.transformer(
            hidden_states=pipe._pack_latents(noisy),
            timestep=timesteps / 1000,
            guidance=self.guidance(b, noisy.device),
            img_ids=ids,
            return_dict=False,
            **cond,
        )[0]
        return self.unpack(out, ids, h, w)
