"""dti-mini: a small text-to-image model made of the same classes as the big ones.

- ``CLIPTokenizer`` over the mini world's words (:mod:`dti.mini.tokenizer`);
- ``CLIPTextModelWithProjection``: pre-norm transformer, learned absolute positions;
- ``UNet2DConditionModel`` on 16x16x4 latents with cross-attention and SDXL's ``text_time``
  conditioning (pooled text embedding + size/crop ids);
- ``AutoencoderKL`` with one 2x downsampling (32x32 RGB <-> 16x16x4);
- assembled as a ``StableDiffusionXLPipeline`` with a single text encoder (``text_encoder_2``,
  as SDXL's refiner): the UNet reads the *penultimate* hidden states with no final LayerNorm,
  the conditioning path through which the paper says inflated norms hurt most.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Where the trained model ships, inside the package (so a wheel carries it).
PACKAGED = Path(__file__).resolve().parent / "dti-mini"
#: ``--model dti-mini`` resolves to the packaged folder.
ALIAS = "dti-mini"


INIT_ONLY = ("text_embed_init_std",)


@dataclass
class MiniConfig:
    """Architecture of dti-mini (saved in the model card so a run can be rebuilt)."""

    image_size: int = 32
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64)
    text_hidden: int = 96
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 384
    max_length: int = 40
    unet_channels: tuple[int, ...] = (48, 96, 128)
    unet_layers_per_block: int = 1
    unet_head_count: int = 4
    time_embed_dim: int = 8
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    #: Init std of the text encoder's token and position embeddings. CLIP's 0.02 hands the UNet
    #: near-identical tiny keys; its cross-attention then settles on the mean of the caption and
    #: never learns to look at position words (the step-7000 model: position use ~0). At 1.0
    #: positions are picked up in ~150 steps. Only affects initialization.
    text_embed_init_std: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def architecture(self) -> dict[str, Any]:
        """What decides the weights' shapes and meaning (not how they were initialized)."""
        return {k: v for k, v in self.as_dict().items() if k not in INIT_ONLY}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("vae_channels", "unet_channels"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniConfig:
        data = dict(data)
        for key in ("vae_channels", "unet_channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def build_tokenizer(config: MiniConfig):
    from dti.mini import world
    from dti.mini.tokenizer import mini_tokenizer

    return mini_tokenizer(world.vocabulary(), max_length=config.max_length)


def build_text_encoder(config: MiniConfig, tokenizer) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_length,
        projection_dim=config.text_hidden,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModelWithProjection(text)
    embeddings = model.text_model.embeddings
    with torch.no_grad():
        for table in (embeddings.token_embedding, embeddings.position_embedding):
            table.weight.normal_(0.0, config.text_embed_init_std)
    return model


def build_vae(config: MiniConfig) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=config.latent_channels,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        norm_num_groups=16,
        sample_size=config.image_size,
        mid_block_add_attention=False,
    )


def latent_size(config: MiniConfig) -> int:
    return config.image_size // 2 ** (len(config.vae_channels) - 1)


def build_unet(config: MiniConfig) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    n = len(config.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_size(config),
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        cross_attention_dim=config.text_hidden,
        attention_head_dim=config.unet_head_count,
        norm_num_groups=16,
        addition_embed_type="text_time",
        addition_time_embed_dim=config.time_embed_dim,
        projection_class_embeddings_input_dim=6 * config.time_embed_dim + config.text_hidden,
    )


def build_scheduler(config: MiniConfig):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        timestep_spacing="trailing",
    )


def assemble(vae, text_encoder, tokenizer, unet, scheduler):
    """The SDXL pipeline with one text encoder; uncond = the encoded empty prompt (as trained)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolve_model(model: str) -> str:
    """``dti-mini`` -> the packaged model folder; anything else unchanged."""
    return str(PACKAGED) if model == ALIAS else model


def load_pipeline(path: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """dti-mini as a diffusers pipeline (default: the packaged weights)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(path or PACKAGED), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
