"""A tiny Chroma pipeline: T5 (the only encoder) and FLUX's packed-latent MMDiT as Chroma prunes it.

Random weights, real classes (``ChromaPipeline``, ``ChromaTransformer2DModel``, ``T5EncoderModel``),
the offline T5 tokenizer of :mod:`dti.testing.t5`. The transformer takes T5's hidden states
(``joint_attention_dim`` = T5 width) and no pooled vector; its modulations come from the small
"distilled guidance" approximator of the timestep. Latents are packed 2x2 (``in_channels`` = 4 x 16)
and decoded with ``(latents / scaling_factor) + shift_factor`` (FLUX's VAE factors); the scheduler is
FLUX's (dynamic shifting). Pass ``height``/``width`` (the default is 128 x the VAE factor) and a small
``max_sequence_length`` (default 512, the pipeline's maximum).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.flux import _scheduler
from dti.testing.sd3 import _flow_vae
from dti.testing.t5 import t5_encoder, t5_tokenizer

CHROMA_T5_WIDTH = 64


def build_tiny_chroma(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``ChromaPipeline`` to ``folder`` (64 px, latent 32x32x16 packed to 16x16x64)."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(seed)
    folder = Path(folder)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4 * 16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=CHROMA_T5_WIDTH,
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )
    tokenizer = t5_tokenizer()
    pipe = ChromaPipeline(
        scheduler=_scheduler(),
        vae=_flow_vae(16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=t5_encoder(CHROMA_T5_WIDTH, len(tokenizer)),
        tokenizer=tokenizer,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(folder)
    return folder
