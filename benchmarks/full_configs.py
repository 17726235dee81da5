"""Full-size architectures of the supported families, with RANDOM weights, built offline.

The dicts below restate the published ``config.json`` files (written from the released configs of
runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0,
stabilityai/stable-diffusion-3.5-medium, black-forest-labs/FLUX.1-dev,
PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers,
lodestones/Chroma1-HD, Alpha-VLLM/Lumina-Image-2.0, Qwen/Qwen-Image (as recalled; built: 20.4B + 8.29B)
Wan-AI/Wan2.1-T2V-1.3B-Diffusers /
Wan2.1-T2V-14B-Diffusers, Tongyi-MAI/Z-Image-Turbo, black-forest-labs/FLUX.2-klein-4B / -9B (as recalled: not
checked offline; built 3.88B / 9.08B) and HiDream-ai/HiDream-I1-Full, plus the text encoders they ship: CLIP
ViT-L/14, OpenCLIP ViT-bigG/14, T5 v1.1 XXL, Gemma-2-2B, UMT5-XXL, Qwen3-4B / -8B, Llama-3.1-8B-Instruct).
Z-Image's transformer is the diffusers class's defaults (its released config; 6.15B built). Chroma's and
Lumina 2's transformers are the diffusers classes' defaults, which are those models' configs; their parameter
counts are checked against the published 8.9B and 2.6B.
Only shapes matter for timing; :data:`PUBLISHED_MILLIONS` holds the published parameter counts and
:func:`parameter_counts` (meta device, no memory) checks the configs against them
(``python benchmarks/full_configs.py``).

Tokenizers come from :mod:`dti.testing`: the real CLIP vocabulary; T5, Gemma, Qwen3 and Llama tokenizers built
offline with small vocabularies (the models' embedding tables keep their real row counts, so the
table is larger than the tokenizer, as T5's already is). Prompts are padded to the families' real
sequence lengths (77 CLIP, 256/300/512 T5, 300 Gemma SANA, 256 Gemma Lumina 2, 512 UMT5), so the text-side
cost is the real one. Wan's UMT5 tokenizer is stood in for by the T5 one (the same class; the table keeps
UMT5's 256384 rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

# ------------------------------------------------------------------ text encoders
CLIP_L = dict(  # openai/clip-vit-large-patch14, text tower (SD 1.5 text_encoder, SDXL/SD3/FLUX text_encoder)
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
CLIP_G = dict(  # laion OpenCLIP ViT-bigG/14, text tower (SDXL / SD3 text_encoder_2, with projection)
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    projection_dim=1280,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
T5_XXL = dict(  # google/t5-v1_1-xxl encoder (SD3 text_encoder_3, FLUX text_encoder_2, PixArt text_encoder)
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    dropout_rate=0.1,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
UMT5_XXL = dict(  # google/umt5-xxl encoder (Wan 2.1's text_encoder, UMT5EncoderModel): T5-XXL's shape, 256k vocabulary
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    dropout_rate=0.1,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
GEMMA2_2B = dict(  # google/gemma-2-2b-it (SANA's text_encoder, loaded as Gemma2Model)
    vocab_size=256000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    attention_bias=False,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)

QWEN3_4B = dict(  # Qwen/Qwen3-4B (Z-Image's text_encoder as Qwen3Model, FLUX.2 klein 4B's as Qwen3ForCausalLM): tied embeddings
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
)
# Qwen/Qwen3-8B (FLUX.2 klein 9B's text_encoder): untied lm_head (622M more parameters, resident as weights)
QWEN3_8B = dict(QWEN3_4B, hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False)
LLAMA31_8B = dict(  # meta-llama/Llama-3.1-8B-Instruct (HiDream-I1's text_encoder_4, LlamaForCausalLM, untied)
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128009,
)
# HiDream-I1's CLIP encoders are the long-context (248-position) CLIP-L / CLIP-G with projection
HIDREAM_CLIP_L = dict(CLIP_L, max_position_embeddings=248)
HIDREAM_CLIP_G = dict(CLIP_G, max_position_embeddings=248)

# ------------------------------------------------------------------ autoencoders
_KL_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    norm_num_groups=32,
)
SD15_VAE = dict(_KL_VAE, latent_channels=4, sample_size=512, scaling_factor=0.18215)
SDXL_VAE = dict(_KL_VAE, latent_channels=4, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SD3_VAE = dict(
    _KL_VAE,
    latent_channels=16,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
FLUX_VAE = dict(SD3_VAE, scaling_factor=0.3611, shift_factor=0.1159)
DC_AE_F32C32 = dict(  # mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers (SANA 1.5)
    in_channels=3,
    latent_channels=32,
    attention_head_dim=32,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3],
    decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)
WAN21_VAE = dict(  # Wan 2.1's AutoencoderKLWan (1.3B and 14B ship the same); latents_mean / latents_std are the class defaults
    base_dim=96,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
)

FLUX2_VAE = dict(  # FLUX.2's AutoencoderKLFlux2 (klein ships the same): the diffusers class's defaults, 32 latent channels
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=32,
    norm_num_groups=32,
    patch_size=[2, 2],
)

# ------------------------------------------------------------------ denoisers
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[320, 640, 1280],
    layers_per_block=2,
    transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    flip_sin_to_cos=True,
    freq_shift=0,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
)
SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=list(range(13)),
    qk_norm="rms_norm",
)
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=[16, 56, 56],
)
CHROMA1_HD_TRANSFORMER = dict(  # FLUX.1-schnell pruned: no pooled projection, no guidance input, the approximator
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    axes_dims_rope=[16, 56, 56],
    approximator_num_channels=64,
    approximator_hidden_dim=5120,
    approximator_layers=5,
)
LUMINA2_TRANSFORMER = dict(  # Lumina-Image 2.0, the 2.6B unified next-DiT
    sample_size=128,
    patch_size=2,
    in_channels=16,
    hidden_size=2304,
    num_layers=26,
    num_refiner_layers=2,
    num_attention_heads=24,
    num_kv_heads=8,
    multiple_of=256,
    norm_eps=1e-5,
    axes_dim_rope=[32, 32, 32],
    axes_lens=[300, 512, 512],
    cap_feat_dim=2304,
)
# Qwen-Image's 20B MMDiT: the diffusers class's defaults are Qwen/Qwen-Image's transformer config
QWENIMAGE_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    guidance_embeds=False,
    axes_dims_rope=[16, 56, 56],
)
QWENIMAGE_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
# Qwen2.5-VL-7B-Instruct (Qwen-Image's text_encoder): the language model and the 32-block vision tower (never run)
QWEN25_VL_7B = dict(
    text_config=dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    ),
    vision_config=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
)
PIXART_SIGMA_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    num_attention_heads=16,
    attention_head_dim=72,
    cross_attention_dim=1152,
    caption_channels=4096,
    attention_bias=True,
    activation_fn="gelu-approximate",
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    num_embeds_ada_norm=1000,
    interpolation_scale=2,
    use_additional_conditions=False,
    attention_type="default",
)
SANA15_1600M_TRANSFORMER = dict(
    sample_size=32,
    patch_size=1,
    in_channels=32,
    out_channels=32,
    num_layers=20,
    num_attention_heads=70,
    attention_head_dim=32,
    num_cross_attention_heads=20,
    cross_attention_head_dim=112,
    cross_attention_dim=2240,
    caption_channels=2304,
    mlp_ratio=2.5,
    attention_bias=False,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    qk_norm="rms_norm_across_heads",
)

WAN21_13B_TRANSFORMER = dict(  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers: dim 12 x 128 = 1536, 30 layers
    patch_size=[1, 2, 2],
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN21_14B_TRANSFORMER = dict(WAN21_13B_TRANSFORMER, num_attention_heads=40, ffn_dim=13824, num_layers=40)  # dim 40 x 128 = 5120

# Z-Image (Tongyi-MAI/Z-Image-Turbo): the diffusers class's defaults, which are the released 6B S3-DiT
ZIMAGE_TRANSFORMER = dict(
    all_patch_size=[2],
    all_f_patch_size=[1],
    in_channels=16,
    dim=3840,
    n_layers=30,
    n_refiner_layers=2,
    n_heads=30,
    n_kv_heads=30,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=2560,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=[32, 48, 48],
    axes_lens=[1024, 512, 512],
)
# FLUX.2 klein: the diffusers class's defaults are FLUX.2 [dev] (32B); klein's depths and widths are as recalled (not checked
# offline): 4B = 5 double + 20 single blocks, 24 heads (width 3072); 9B = 8 double + 24 single, 32 heads (width 4096); both read
# 3 stacked Qwen3 layers (joint_attention_dim = 3 x the encoder's width) and have no guidance embedding (distilled / base).
FLUX2_KLEIN_4B_TRANSFORMER = dict(
    patch_size=1,
    in_channels=128,
    num_layers=5,
    num_single_layers=20,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3 * 2560,
    timestep_guidance_channels=256,
    mlp_ratio=3.0,
    axes_dims_rope=[32, 32, 32, 32],
    rope_theta=2000,
    guidance_embeds=False,
)
FLUX2_KLEIN_9B_TRANSFORMER = dict(
    FLUX2_KLEIN_4B_TRANSFORMER, num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=3 * 4096
)
# HiDream-I1 (HiDream-ai/HiDream-I1-Full): 16 double + 32 single blocks, width 2560, 4 routed experts (2 active) + a shared one;
# the class's defaults save caption_channels / llama_layers / axes, given as recalled (llama_layers: which of Llama's 32 hidden
# states each of the 48 blocks reads, as recalled: 0..31, then the last one; it moves no parameter).
HIDREAM_I1_TRANSFORMER = dict(
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=16,
    num_single_layers=32,
    attention_head_dim=128,
    num_attention_heads=20,
    caption_channels=[4096, 4096],  # [T5-XXL, Llama-3.1-8B]
    text_emb_dim=2048,  # CLIP-L's 768 + CLIP-G's 1280 pooled projections
    num_routed_experts=4,
    num_activated_experts=2,
    axes_dims_rope=[64, 32, 32],
    max_resolution=[128, 128],
    llama_layers=[*range(32), *[31] * 16],
)

# ------------------------------------------------------------------ schedulers
SD15_SCHEDULER = (
    "PNDMScheduler",
    dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        clip_sample=False,
    ),
)
SDXL_SCHEDULER = (
    "EulerDiscreteScheduler",
    dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        steps_offset=1,
        use_karras_sigmas=False,
    ),
)
SD3_SCHEDULER = ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0))
FLUX_SCHEDULER = (
    "FlowMatchEulerDiscreteScheduler",
    dict(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    ),
)
PIXART_SCHEDULER = (
    "DPMSolverMultistepScheduler",
    dict(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        timestep_spacing="linspace",
        steps_offset=0,
    ),
)
# Lumina-Image 2.0: a static shift (the value as recalled, unverified here; it changes no memory or time figure)
LUMINA2_SCHEDULER = ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=6.0))
# Qwen-Image: dynamic exponential shift (as recalled, unverified here; it changes no memory or time figure)
QWENIMAGE_SCHEDULER = (
    "FlowMatchEulerDiscreteScheduler",
    dict(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    ),
)
# Z-Image-Turbo: static shift 3.0; FLUX.2 klein: FLUX's dynamic shift; HiDream-I1-Full: static shift 3.0 (all as recalled,
# unverified here; they change no memory or time figure)
ZIMAGE_SCHEDULER = ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0))
FLUX2_SCHEDULER = FLUX_SCHEDULER
HIDREAM_SCHEDULER = ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0))
SANA_SCHEDULER = ("DPMSolverMultistepScheduler", dict(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"))
WAN_SCHEDULER = (
    "UniPCMultistepScheduler",
    dict(num_train_timesteps=1000, flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"),
)

#: family -> what its pipeline is made of: (component, library class, config).
FAMILIES: dict[str, dict[str, Any]] = {
    "sd": {
        "pipeline": "StableDiffusionPipeline",
        "unet": ("UNet2DConditionModel", SD15_UNET),
        "vae": ("AutoencoderKL", SD15_VAE),
        "text_encoder": ("CLIPTextModel", CLIP_L),
        "tokenizer": ("clip", {}),
        "scheduler": SD15_SCHEDULER,
        "extra": {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    },
    "sdxl": {
        "pipeline": "StableDiffusionXLPipeline",
        "unet": ("UNet2DConditionModel", SDXL_UNET),
        "vae": ("AutoencoderKL", SDXL_VAE),
        "text_encoder": ("CLIPTextModel", CLIP_L),
        "text_encoder_2": ("CLIPTextModelWithProjection", CLIP_G),
        "tokenizer": ("clip", {}),
        "tokenizer_2": ("clip", {"pad_token": "!"}),
        "scheduler": SDXL_SCHEDULER,
    },
    "sd3": {
        "pipeline": "StableDiffusion3Pipeline",
        "transformer": ("SD3Transformer2DModel", SD35_MEDIUM_TRANSFORMER),
        "vae": ("AutoencoderKL", SD3_VAE),
        "text_encoder": ("CLIPTextModelWithProjection", CLIP_L),
        "text_encoder_2": ("CLIPTextModelWithProjection", CLIP_G),
        "text_encoder_3": ("T5EncoderModel", T5_XXL),
        "tokenizer": ("clip", {}),
        "tokenizer_2": ("clip", {"pad_token": "!"}),
        "tokenizer_3": ("t5", {"model_max_length": 512}),
        "scheduler": SD3_SCHEDULER,
    },
    "flux": {
        "pipeline": "FluxPipeline",
        "transformer": ("FluxTransformer2DModel", FLUX_DEV_TRANSFORMER),
        "vae": ("AutoencoderKL", FLUX_VAE),
        "text_encoder": ("CLIPTextModel", CLIP_L),
        "text_encoder_2": ("T5EncoderModel", T5_XXL),
        "tokenizer": ("clip", {}),
        "tokenizer_2": ("t5", {"model_max_length": 512}),
        "scheduler": FLUX_SCHEDULER,
        "extra": {"image_encoder": None, "feature_extractor": None},
    },
    "pixart": {
        "pipeline": "PixArtSigmaPipeline",
        "transformer": ("PixArtTransformer2DModel", PIXART_SIGMA_TRANSFORMER),
        "vae": ("AutoencoderKL", SDXL_VAE),
        "text_encoder": ("T5EncoderModel", T5_XXL),
        "tokenizer": ("t5", {"model_max_length": 300}),
        "scheduler": PIXART_SCHEDULER,
    },
    "sana": {
        "pipeline": "SanaPipeline",
        "transformer": ("SanaTransformer2DModel", SANA15_1600M_TRANSFORMER),
        "vae": ("AutoencoderDC", DC_AE_F32C32),
        "text_encoder": ("Gemma2Model", GEMMA2_2B),
        "tokenizer": ("gemma", {}),
        "scheduler": SANA_SCHEDULER,
    },
    "wan": {  # Wan 2.1 T2V 1.3B
        "pipeline": "WanPipeline",
        "transformer": ("WanTransformer3DModel", WAN21_13B_TRANSFORMER),
        "vae": ("AutoencoderKLWan", WAN21_VAE),
        "text_encoder": ("UMT5EncoderModel", UMT5_XXL),
        "tokenizer": ("t5", {"model_max_length": 512}),
        "scheduler": WAN_SCHEDULER,
    },
    "chroma": {
        "pipeline": "ChromaPipeline",
        "transformer": ("ChromaTransformer2DModel", CHROMA1_HD_TRANSFORMER),
        "vae": ("AutoencoderKL", FLUX_VAE),
        "text_encoder": ("T5EncoderModel", T5_XXL),
        "tokenizer": ("t5", {"model_max_length": 512}),
        "scheduler": FLUX_SCHEDULER,
        "extra": {"image_encoder": None, "feature_extractor": None},
    },
    "lumina2": {
        "pipeline": "Lumina2Pipeline",
        "transformer": ("Lumina2Transformer2DModel", LUMINA2_TRANSFORMER),
        "vae": ("AutoencoderKL", FLUX_VAE),
        "text_encoder": ("Gemma2Model", GEMMA2_2B),
        "tokenizer": ("gemma", {}),
        "scheduler": LUMINA2_SCHEDULER,
    },
    "qwenimage": {
        "pipeline": "QwenImagePipeline",
        "transformer": ("QwenImageTransformer2DModel", QWENIMAGE_TRANSFORMER),
        "vae": ("AutoencoderKLQwenImage", QWENIMAGE_VAE),
        "text_encoder": ("Qwen2_5_VLForConditionalGeneration", QWEN25_VL_7B),
        "tokenizer": ("qwen", {}),
        "scheduler": QWENIMAGE_SCHEDULER,
    },
    "zimage": {
        "pipeline": "ZImagePipeline",
        "transformer": ("ZImageTransformer2DModel", ZIMAGE_TRANSFORMER),
        "vae": ("AutoencoderKL", FLUX_VAE),
        "text_encoder": ("Qwen3Model", QWEN3_4B),
        "tokenizer": ("qwen3", {}),
        "scheduler": ZIMAGE_SCHEDULER,
    },
    "flux2_klein": {  # FLUX.2 klein 4B
        "pipeline": "Flux2KleinPipeline",
        "transformer": ("Flux2Transformer2DModel", FLUX2_KLEIN_4B_TRANSFORMER),
        "vae": ("AutoencoderKLFlux2", FLUX2_VAE),
        "text_encoder": ("Qwen3ForCausalLM", QWEN3_4B),
        "tokenizer": ("qwen3", {}),
        "scheduler": FLUX2_SCHEDULER,
    },
    "hidream": {  # HiDream-I1 (Full / Dev / Fast share the architecture)
        "pipeline": "HiDreamImagePipeline",
        "transformer": ("HiDreamImageTransformer2DModel", HIDREAM_I1_TRANSFORMER),
        "vae": ("AutoencoderKL", FLUX_VAE),
        "text_encoder": ("CLIPTextModelWithProjection", HIDREAM_CLIP_L),
        "text_encoder_2": ("CLIPTextModelWithProjection", HIDREAM_CLIP_G),
        "text_encoder_3": ("T5EncoderModel", T5_XXL),
        "text_encoder_4": ("LlamaForCausalLM", LLAMA31_8B),
        "tokenizer": ("clip", {}),
        "tokenizer_2": ("clip", {"pad_token": "!"}),
        "tokenizer_3": ("t5", {"model_max_length": 512}),
        "tokenizer_4": ("llama", {}),
        "scheduler": HIDREAM_SCHEDULER,
    },
}
#: The same family at another size (``<family>-<variant>``: the adapter is the family's).
FAMILIES["wan-14b"] = dict(FAMILIES["wan"], transformer=("WanTransformer3DModel", WAN21_14B_TRANSFORMER))
FAMILIES["flux2_klein-9b"] = dict(
    FAMILIES["flux2_klein"],
    transformer=("Flux2Transformer2DModel", FLUX2_KLEIN_9B_TRANSFORMER),
    text_encoder=("Qwen3ForCausalLM", QWEN3_8B),
)

#: Published parameter counts in millions (model cards / papers, rounded), for :func:`parameter_counts`.
PUBLISHED_MILLIONS = {
    "sd": {"unet": 859.5, "vae": 83.7, "text_encoder": 123.1},
    "sdxl": {"unet": 2567.5, "vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7},
    # SD3.5 medium's "2.5B": 2243M parameters + the 226M-entry positional-embedding buffer (384 x 384 x 1536)
    "sd3": {"transformer": 2243.2, "text_encoder": 123.7, "text_encoder_2": 694.7, "text_encoder_3": 4762.3},
    "flux": {"transformer": 11901.4, "text_encoder": 123.1, "text_encoder_2": 4762.3},
    "pixart": {"transformer": 611.0, "text_encoder": 4762.3},
    "sana": {"transformer": 1600.0, "text_encoder": 2614.3},
    # Wan 2.1: the names say 1.3B / 14B; the released weights hold 1419M / 14289M (counted from the configs, as their file
    # sizes give: no rounder published count); Wan-VAE 127M (Wan report); UMT5-XXL's encoder ~5.7B
    "wan": {"transformer": 1419.0, "vae": 127.0, "text_encoder": 5700.0},
    "wan-14b": {"transformer": 14288.5, "vae": 127.0, "text_encoder": 5700.0},
    "chroma": {"transformer": 8900.0, "text_encoder": 4762.3},
    "lumina2": {"transformer": 2600.0, "text_encoder": 2614.3},
    # Qwen-Image: its "20B" MMDiT holds 20430M counted from its config; Qwen2.5-VL-7B-Instruct 8.29B with its vision tower
    "qwenimage": {"transformer": 20430.4, "vae": 127.0, "text_encoder": 8290.0},
    # Z-Image: "6B" S3-DiT; Qwen3-4B 4.02B (tied embeddings); FLUX.1's VAE
    "zimage": {"transformer": 6150.0, "vae": 83.8, "text_encoder": 4022.5},
    # FLUX.2 klein: "4B" / "9B" name the transformers (as recalled: ~3.9B / ~9.1B); Qwen3-4B 4.02B, Qwen3-8B 8.19B (untied head);
    # FLUX.2's VAE: 84.0M counted from the class defaults (no published count checked)
    "flux2_klein": {"transformer": 3900.0, "vae": 84.0, "text_encoder": 4022.5},
    "flux2_klein-9b": {"transformer": 9100.0, "vae": 84.0, "text_encoder": 8190.7},
    # HiDream-I1: "17B" sparse MoE (all experts counted; built 17106M); Llama-3.1-8B 8.03B; the 248-position CLIP-L / CLIP-G
    # (123.8M / 694.9M counted from the configs: 171 more positions than the 77-position towers); T5-XXL's encoder
    "hidream": {
        "transformer": 17000.0,
        "vae": 83.8,
        "text_encoder": 123.8,
        "text_encoder_2": 694.9,
        "text_encoder_3": 4762.3,
        "text_encoder_4": 8030.3,
    },
}


def _module(class_name: str, config: dict[str, Any]) -> torch.nn.Module:
    """A diffusers model through ``from_config``, a transformers model through its ``Config(...)``."""
    import diffusers
    import transformers

    if hasattr(diffusers, class_name):
        return getattr(diffusers, class_name).from_config(config)
    cls = getattr(transformers, class_name)
    return cls(cls.config_class(**config))


def _tokenizer(kind: str, kwargs: dict[str, Any]) -> Any:
    if kind == "clip":
        from dti.testing import clip_tokenizer

        return clip_tokenizer(**kwargs)
    if kind == "t5":
        from dti.testing.t5 import t5_tokenizer

        return t5_tokenizer(**kwargs)
    if kind == "qwen":  # trained on the pipeline's template, so its prefix is the 34 tokens the pipeline drops
        import tempfile

        from dti.testing.qwenimage import _prompt_template, build_qwen_tokenizer

        return build_qwen_tokenizer(tempfile.mkdtemp(prefix="dti-qwen-tok-"), _prompt_template())
    if kind == "qwen3":  # the offline byte-level tokenizer with Qwen3's chat template (Z-Image, FLUX.2 klein)
        from dti.testing.bpe import qwen3_tokenizer

        return qwen3_tokenizer()
    if kind == "llama":  # a small Llama-3-style byte-level BPE (HiDream-I1's Llama-3.1-8B; the table keeps 128256 rows)
        import tempfile

        from dti.testing.hidream import build_llama_tokenizer

        return build_llama_tokenizer(tempfile.mkdtemp(prefix="dti-llama-tok-"))
    from dti.testing.gemma import gemma_tokenizer

    return gemma_tokenizer()


def _scheduler(spec: tuple[str, dict[str, Any]]) -> Any:
    import diffusers

    return getattr(diffusers, spec[0]).from_config(spec[1])  # tolerates keys a class ignores, as loading does


@contextlib.contextmanager
def init_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype`` (no fp32 copy on the host first)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def components(family: str) -> list[str]:
    return [k for k in FAMILIES[family] if k not in ("pipeline", "extra")]


def pipeline_parts(
    spec: dict[str, Any], dtype: torch.dtype, device: str | torch.device, finish: Callable[[torch.nn.Module], Any] | None = None
) -> dict[str, Any]:
    """A family spec's pipeline components: tokenizers, scheduler, and each network built on ``device``
    in ``dtype``, frozen, in eval mode (then passed through ``finish``, when given)."""
    parts: dict[str, Any] = dict(spec.get("extra", {}))
    for name in (k for k in spec if k not in ("pipeline", "extra")):
        kind, config = spec[name]
        if name.startswith("tokenizer"):
            parts[name] = _tokenizer(kind, config)
        elif name == "scheduler":
            parts[name] = _scheduler(spec[name])
        else:
            with init_on(device, dtype):
                module = _module(kind, config).eval().requires_grad_(False)
            parts[name] = finish(module) if finish is not None else module
    return parts


def build_pipeline(family: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0) -> Any:
    """The family's diffusers pipeline at full size with random weights (seeded), on ``device`` in
    ``dtype``: ``dti.models.adapter_for(pipe)`` trains through it as through a loaded one."""
    import diffusers

    spec = FAMILIES[family]
    torch.manual_seed(seed)
    pipe = getattr(diffusers, spec["pipeline"])(**pipeline_parts(spec, dtype, device))
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # "modules that should be kept in float32: []" per model
    try:
        pipe.to(device, dtype)  # buffers made in fp32 whatever the default dtype (positional tables) follow too
    finally:
        diffusers.utils.logging.set_verbosity(level)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(family: str) -> dict[str, float]:
    """Millions of parameters per model component, built on the meta device (no memory, seconds)."""
    spec = FAMILIES[family]
    out = {}
    for name in components(family):
        kind, config = spec[name]
        if name.startswith(("tokenizer", "scheduler")):
            continue
        with torch.device("meta"):
            module = _module(kind, config)
        out[name] = round(sum(p.numel() for p in module.parameters()) / 1e6, 1)
    return out


if __name__ == "__main__":  # python benchmarks/full_configs.py: built vs published parameter counts
    for fam in FAMILIES:
        built = parameter_counts(fam)
        print(fam, ", ".join(f"{k} {v:.1f}M (published {PUBLISHED_MILLIONS[fam].get(k, '?')}M)" for k, v in built.items()))
