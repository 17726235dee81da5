"""A tiny SANA 1.5 pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: a 2-layer ``Gemma2Model`` text encoder (width 32; its input
embedding is ``Gemma2TextScaledWordEmbedding``, which multiplies by sqrt(32) in its forward), a
2-layer ``SanaTransformer2DModel`` with SANA 1.5's q/k RMS norms, a 6-level ``AutoencoderDC``
(32x spatial compression like the real DC-AE, 8 latent channels, no latent distribution), SANA's
flow DPM-Solver scheduler and the offline Gemma tokenizer of :mod:`dti.testing.gemma`.

``sample_size`` 16 (latent side) x 32 = 512 px native, so resolution binning works (it maps any
request to the 512 px bins and resizes back). Generation at 64 or 128 px is cheap either way:
with ``use_resolution_binning=False`` the latent is 2x2 or 4x4; with binning it is 16x16.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.gemma import gemma_tokenizer

TINY_GEMMA_HIDDEN = 32
TINY_LATENT_CHANNELS = 8
DC_AE_SCALING_FACTOR = 0.41407  # the real DC-AE f32c32's


def tiny_gemma2_config(vocab_size: int):
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=TINY_GEMMA_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=8192,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )


def _transformer():
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(
        in_channels=TINY_LATENT_CHANNELS,
        out_channels=TINY_LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=16,
        cross_attention_dim=32,
        caption_channels=TINY_GEMMA_HIDDEN,
        mlp_ratio=2.5,
        attention_bias=False,
        sample_size=16,
        patch_size=1,
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        qk_norm="rms_norm_across_heads",  # SANA 1.5 (and Sprint) have it, SANA 1.0 not
    )


def _vae():
    from diffusers import AutoencoderDC

    levels = 6  # vae_scale_factor = 2 ** (levels - 1) = 32, as in the real DC-AE
    return AutoencoderDC(
        in_channels=3,
        latent_channels=TINY_LATENT_CHANNELS,
        attention_head_dim=8,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(4, 8, 8, 16, 16, 32),
        decoder_block_out_channels=(4, 8, 8, 16, 16, 32),
        encoder_layers_per_block=(1,) * levels,
        decoder_layers_per_block=(1,) * levels,
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=DC_AE_SCALING_FACTOR,
    )


def sana_scheduler():
    """What SANA (1.0 and 1.5) diffusers checkpoints ship: flow DPM-Solver++, flow_shift 3 at 1024 px."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")


def build_tiny_sana(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``SanaPipeline`` to ``folder`` (loads with ``SanaPipeline.from_pretrained``)."""
    from diffusers import SanaPipeline
    from transformers import Gemma2Model

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = gemma_tokenizer()
    pipe = SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=Gemma2Model(tiny_gemma2_config(len(tokenizer))).eval(),
        vae=_vae().eval(),
        transformer=_transformer().eval(),
        scheduler=sana_scheduler(),
    )
    pipe.save_pretrained(folder)
    return folder
