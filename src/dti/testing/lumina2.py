"""A tiny Lumina-Image 2.0 pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: the 2-layer ``Gemma2Model`` of the tiny SANA (width 32, its
input embedding scaled by sqrt(32) in its forward; the pipeline reads its second-to-last hidden
layer), a ``Lumina2Transformer2DModel`` with one refiner and one joint layer (2x2 patches, rope axes
summing to the head size), a 4-level ``AutoencoderKL`` with FLUX's 16 channels and factors (the
pipeline assumes a VAE factor of 8; the VAE really downsamples by 8), a static-shift flow-matching
scheduler and the offline Gemma tokenizer of :mod:`dti.testing.gemma`.

``sample_size`` 128 (latent side) x 8 = 1024 px native, as the real model; generation at 64 px is an
8x8 latent, 16 image tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.gemma import gemma_tokenizer
from dti.testing.sana import TINY_GEMMA_HIDDEN, tiny_gemma2_config

LUMINA2_SHIFT = 6.0  # Lumina-Image-2.0: a static shift, no dynamic shifting (the value as recalled, not checked here)


def _transformer():
    from diffusers import Lumina2Transformer2DModel

    return Lumina2Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        hidden_size=32,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),  # sums to the head dim (32 / 2)
        cap_feat_dim=TINY_GEMMA_HIDDEN,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # 4 levels: 8x downsampling, which Lumina2Pipeline assumes (vae_scale_factor = 8)
        block_out_channels=[16, 16, 32, 32],
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=0.3611,  # FLUX's VAE, which Lumina 2 uses
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_lumina2(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``Lumina2Pipeline`` to ``folder`` (loads with ``Lumina2Pipeline.from_pretrained``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline
    from transformers import Gemma2Model

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = gemma_tokenizer()
    pipe = Lumina2Pipeline(
        transformer=_transformer().eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=LUMINA2_SHIFT),
        vae=_vae().eval(),
        text_encoder=Gemma2Model(tiny_gemma2_config(len(tokenizer))).eval(),
        tokenizer=tokenizer,
    )
    pipe.save_pretrained(folder)
    return folder
