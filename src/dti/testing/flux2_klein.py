"""A tiny FLUX.2 klein pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: a 28-layer ``Qwen3ForCausalLM`` of width 32 (the pipeline stacks its hidden
layers 9, 18 and 27, so it needs more than 27 layers; the real Qwen3-4B has 36) with the offline byte-level Qwen
tokenizer and Qwen3's chat template (:mod:`dti.testing.bpe`), a ``Flux2Transformer2DModel`` with one double and
one single block and no guidance embedding (klein's transformer reads 3 x the encoder's width: the stacked
layers), a 4-level ``AutoencoderKLFlux2`` (32 channels, 2x2 patches to 128, batch-norm statistics set away from
0 / 1 so that the normalization shows), and a dynamically shifted flow-matching scheduler.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.bpe import qwen3_tokenizer
from dti.testing.qwen3 import TINY_QWEN3_HIDDEN, tiny_qwen3

KLEIN_LAYERS = (9, 18, 27)  # Flux2KleinPipeline's default text_encoder_out_layers


def tiny_flux2_transformer(joint_attention_dim: int, guidance_embeds: bool):
    """A tiny ``Flux2Transformer2DModel`` (FLUX.2 klein and dev share it): ``joint_attention_dim`` is the
    stacked encoder layers' width; dev (guidance-distilled) takes a guidance input, klein none."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        axes_dims_rope=(4, 4, 4, 4),  # sums to the head dim
        guidance_embeds=guidance_embeds,
    )


def tiny_flux2_vae():
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(
        block_out_channels=(16, 16, 32, 32),  # 4 levels: 8x downsampling
        latent_channels=32,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=64,
    )
    with torch.no_grad():
        vae.bn.running_mean.uniform_(-0.5, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    return vae


def build_tiny_flux2_klein(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``Flux2KleinPipeline`` to ``folder`` (loads with ``Flux2KleinPipeline.from_pretrained``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = qwen3_tokenizer()
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        vae=tiny_flux2_vae().eval(),
        text_encoder=tiny_qwen3(len(tokenizer), layers=28, causal_lm=True),
        tokenizer=tokenizer,
        transformer=tiny_flux2_transformer(len(KLEIN_LAYERS) * TINY_QWEN3_HIDDEN, guidance_embeds=False).eval(),
    )
    pipe.save_pretrained(folder)
    return folder
