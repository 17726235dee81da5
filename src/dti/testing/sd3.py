"""A tiny Stable Diffusion 3 pipeline: two CLIP encoders with projection, optional T5, MMDiT, flow matching.

Random weights, real classes (``StableDiffusion3Pipeline``), the real CLIP vocabulary. SD3 takes
the penultimate hidden states of both CLIP encoders, concatenates them (32 + 32), pads them with
zeros to the T5 width (96) and appends the T5 states along the sequence; the pooled embedding is
the two CLIP projections concatenated (32 + 32 = ``pooled_projection_dim``). Without T5
(``with_t5=False``, as pipelines saved without it) the T5 part is zeros of ``joint_attention_dim``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.clip import _text_config, clip_tokenizer
from dti.testing.t5 import t5_encoder, t5_tokenizer

SD3_CLIP_WIDTHS = (32, 32)
SD3_T5_WIDTH = 96


def _flow_vae(latent_channels: int, scaling_factor: float, shift_factor: float):
    """The VAE of the flow-matching families: 16 latent channels, shift and scale, no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_sd3(folder: str | os.PathLike, seed: int = 0, with_t5: bool = True) -> Path:
    """Save a tiny ``StableDiffusion3Pipeline`` to ``folder`` (64 px, latent 32x32x16, 256 patches)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    folder = Path(folder)
    (w1, w2), t5_width = SD3_CLIP_WIDTHS, SD3_T5_WIDTH
    assert t5_width >= w1 + w2, "SD3 pads the concatenated CLIP states to the T5 width"
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=t5_width,
        caption_projection_dim=32,  # = heads x head dim
        pooled_projection_dim=w1 + w2,
        pos_embed_max_size=32,
    )
    tokenizer_3 = t5_tokenizer() if with_t5 else None
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_flow_vae(16, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=CLIPTextModelWithProjection(_text_config(w1, w1)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(w2, w2)),
        tokenizer_2=clip_tokenizer(pad_token="!"),  # SD3's CLIP-G tokenizer pads with "!" (id 0), as SDXL's
        text_encoder_3=t5_encoder(t5_width, len(tokenizer_3)) if with_t5 else None,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(folder)
    return folder
