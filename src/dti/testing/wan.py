"""A tiny Wan 2.1 text-to-video pipeline: UMT5 encoder, 3-D VAE, video DiT, flow matching.

Random weights, real classes (``WanPipeline``, ``UMT5EncoderModel``, ``AutoencoderKLWan``,
``WanTransformer3DModel``). The tokenizer is the offline T5 tokenizer of :mod:`dti.testing.t5`:
Wan's real tokenizer (google/umt5-xxl's) is the same ``T5Tokenizer`` class over its own, much larger
multilingual SentencePiece vocabulary, and loads through ``AutoTokenizer`` as this one does. The
UMT5 table has more rows than the tokenizer has tokens, as the real one.

UMT5 differs from T5 v1.1 in that every layer has its own relative-position bias (T5: the first
layer only); the input embedding is a plain, unscaled ``nn.Embedding`` in both. The VAE keeps
Wan 2.1's real ``latents_mean`` / ``latents_std`` (16 channels, the class defaults) and its 8x
spatial / 4x temporal compression, at small widths; one frame encodes to one latent frame. The
scheduler is Wan 2.1's (UniPC over flow sigmas, ``flow_shift`` 3.0).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.t5 import t5_config_kwargs, t5_tokenizer

WAN_UMT5_WIDTH = 32


def umt5_encoder(d_model: int, tokenizer_length: int, num_heads: int = 4):
    """A tiny ``UMT5EncoderModel`` (gated-GELU, per-layer relative attention bias) of width ``d_model``, 2 layers."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(**t5_config_kwargs(d_model, tokenizer_length, num_heads))
    return UMT5EncoderModel(config)


def _scheduler():
    from diffusers import UniPCMultistepScheduler

    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers' scheduler_config.json (flow_shift 3.0: the 480p setting).
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        timestep_spacing="linspace",
        final_sigmas_type="zero",
    )


def _vae():
    from diffusers import AutoencoderKLWan

    # Wan 2.1's layout (z_dim 16, dim_mult 1/2/4/4: 8x spatial, temporal downsampling in the last two
    # stages: 4x) at base width 8 instead of 96; latents_mean / latents_std are the class defaults,
    # which are Wan 2.1's real statistics.
    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])


def build_tiny_wan(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``WanPipeline`` to ``folder`` (64 px image: latent 16 x 1 x 8 x 8, 4 x 4 patches)."""
    from diffusers import WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = t5_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # rope: 4 (time) + 4 (height) + 4 (width)
        in_channels=16,
        out_channels=16,
        text_dim=WAN_UMT5_WIDTH,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=umt5_encoder(WAN_UMT5_WIDTH, len(tokenizer)),
        vae=_vae(),
        scheduler=_scheduler(),
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder
