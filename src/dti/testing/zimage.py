"""A tiny Z-Image pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: a 2-layer ``Qwen3Model`` (width 32; the pipeline reads its second-to-last
hidden layer) with the offline byte-level Qwen tokenizer and Qwen3's chat template (:mod:`dti.testing.bpe`), a
``ZImageTransformer2DModel`` with one refiner and one main layer (2x2 patches, rope axes summing to the head
size), a 4-level ``AutoencoderKL`` with FLUX.1's 16 channels and factors (Z-Image uses FLUX.1's VAE) and a
static-shift flow-matching scheduler.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.bpe import qwen3_tokenizer
from dti.testing.lumina2 import _vae
from dti.testing.qwen3 import TINY_QWEN3_HIDDEN, tiny_qwen3

ZIMAGE_SHIFT = 3.0  # Z-Image-Turbo's scheduler: static shift 3.0, no dynamic shifting (as recalled, not checked here)


def _transformer():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        axes_dims=[4, 6, 6],  # sums to the head dim (32 / 2)
        axes_lens=[256, 64, 64],
        cap_feat_dim=TINY_QWEN3_HIDDEN,
    )


def build_tiny_zimage(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``ZImagePipeline`` to ``folder`` (loads with ``ZImagePipeline.from_pretrained``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = qwen3_tokenizer()
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=ZIMAGE_SHIFT),
        vae=_vae().eval(),
        text_encoder=tiny_qwen3(len(tokenizer)),
        tokenizer=tokenizer,
        transformer=_transformer().eval(),
    )
    pipe.save_pretrained(folder)
    return folder
