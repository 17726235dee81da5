"""A tiny PixArt-Sigma pipeline: T5 encoder, DiT with learned sigma, 4-channel VAE, DPM-Solver++.

Random weights, real classes (``PixArtSigmaPipeline``). The T5 tokenizer is built offline (see
``dti.testing.t5``); the T5 embedding table has more rows than the tokenizer has tokens, as the
real one (32128 rows, 32100 tokens). Generate with ``clean_caption=False`` (cleaning needs extra
packages) and ``use_resolution_binning=False`` (with ``sample_size`` 32 binning would render at
256 px and resize).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.clip import _vae as clip_vae
from dti.testing.t5 import t5_encoder, t5_tokenizer

PIXART_T5_WIDTH = 32


def _vae():
    # PixArt-Sigma uses the SDXL VAE: 4 latent channels, scaling factor 0.13025.
    return clip_vae(scaling_factor=0.13025)


def _scheduler():
    from diffusers import DPMSolverMultistepScheduler

    # PixArt-Sigma-XL-2-1024-MS's scheduler_config.json.
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        timestep_spacing="linspace",
        steps_offset=0,
        use_karras_sigmas=False,
    )


def build_tiny_pixart(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``PixArtSigmaPipeline`` to ``folder`` (64 px, latent 32x32x4, 256 patches)."""
    from diffusers import PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        out_channels=8,  # learned sigma: noise prediction + variance, as the real model
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        caption_channels=PIXART_T5_WIDTH,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        num_embeds_ada_norm=1000,
        use_additional_conditions=False,
        attention_type="default",
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=tokenizer,
        text_encoder=t5_encoder(PIXART_T5_WIDTH, len(tokenizer)),
        vae=_vae(),
        transformer=transformer,
        scheduler=_scheduler(),
    )
    pipe.save_pretrained(folder)
    return folder
