"""A tiny FLUX.1-dev-like pipeline: CLIP (pooled) + T5 (sequence), MMDiT with guidance embedding.

Random weights, real classes (``FluxPipeline``), the real CLIP vocabulary. FLUX takes only CLIP's
pooled output (``pooled_projection_dim`` = CLIP width) and T5's last hidden states
(``joint_attention_dim`` = T5 width), packs 2x2 latent patches (``in_channels`` = 4 x 16) and
decodes with ``(latents / scaling_factor) + shift_factor``. Pass ``height``/``width`` (the default
is 128 x the VAE factor) and a small ``max_sequence_length`` (default 512, the pipeline's maximum).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.clip import _text_config, clip_tokenizer
from dti.testing.sd3 import _flow_vae
from dti.testing.t5 import t5_encoder, t5_tokenizer

FLUX_T5_WIDTH = 64
FLUX_T5_MAX_LENGTH = 256


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.1-dev's scheduler_config.json: the shift follows the image sequence length (mu).
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_tiny_flux(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``FluxPipeline`` to ``folder`` (64 px, latent 32x32x16 packed to 16x16x64)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    folder = Path(folder)
    clip_width = 32
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=FLUX_T5_WIDTH,
        pooled_projection_dim=clip_width,
        guidance_embeds=True,  # FLUX.1-dev: distilled guidance as an input
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
    )
    tokenizer_2 = t5_tokenizer(model_max_length=FLUX_T5_MAX_LENGTH)
    pipe = FluxPipeline(
        scheduler=_scheduler(),
        vae=_flow_vae(16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(_text_config(clip_width, clip_width)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder(FLUX_T5_WIDTH, len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(folder)
    return folder
