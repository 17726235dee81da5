"""Tiny Stable Diffusion / SDXL pipelines built from the real diffusers/transformers classes.

Random weights, real architecture, the real CLIP vocabulary (49408 tokens, from the
``openai-clip`` package's BPE file). They load with ``from_pretrained`` and exercise every code
path of training and generation offline and in seconds; they produce noise, not pictures.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import torch

from dti.core.errors import DTIError

CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte -> printable-character table (256 entries, in CLIP's vocabulary order)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_bpe_file() -> Path:
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise DTIError("the real CLIP vocabulary comes from the 'openai-clip' package; pip install openai-clip")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise DTIError(f"{path} is missing; reinstall the 'openai-clip' package")
    return path


def write_clip_tokenizer_files(folder: str | os.PathLike) -> Path:
    """Write CLIP's ``vocab.json`` + ``merges.txt`` (exactly Stable Diffusion's ids) to ``folder``."""
    lines = gzip.open(clip_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = _bytes_to_unicode()
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(pad_token: str | None = None):
    """A ``CLIPTokenizer`` with the real vocabulary (``pad_token='!'`` for SDXL's second one)."""
    from transformers import CLIPTokenizer

    kwargs = {"pad_token": pad_token} if pad_token else {}
    with tempfile.TemporaryDirectory() as folder:
        write_clip_tokenizer_files(folder)
        tok = CLIPTokenizer.from_pretrained(folder, model_max_length=77, **kwargs)
    assert len(tok) >= CLIP_VOCAB_SIZE, "tokenizer lost the CLIP vocabulary"
    return tok


def _text_config(hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    # eos_token_id=2 mirrors the released SD/SDXL configs (the legacy pooling rule).
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_act="quick_gelu",
    )


# What the tiny SD and SDXL UNets share: two levels, cross-attention on the lower one, 32x32 latents.
_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)


def _vae(**overrides):
    from diffusers import AutoencoderKL

    settings = dict(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32,
        sample_size=64,
    )
    return AutoencoderKL(**{**settings, **overrides})


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_tiny_sd(folder: str | os.PathLike, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Save a tiny ``StableDiffusionPipeline`` to ``folder`` (64 px, latent 32x32x4)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    folder = Path(folder)
    unet = UNet2DConditionModel(
        **_UNET,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sdxl(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``StableDiffusionXLPipeline`` (two CLIP encoders, text_time conditioning)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    folder = Path(folder)
    unet = UNet2DConditionModel(
        **_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=32,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=_scheduler(),
    )
    pipe.save_pretrained(folder)
    return folder
