"""A tiny Qwen-Image pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: a 2-layer ``Qwen2_5_VLForConditionalGeneration`` (text width 32,
multimodal rope sections summing to half the head size, a one-block vision tower of width 16 that
the pipeline never runs), a one-block ``QwenImageTransformer2DModel`` (2x2 patches packed into 64
channels, rope axes summing to the head size), an ``AutoencoderKLQwenImage`` with Qwen-Image's 16
latent channels and its (Wan 2.1) latent statistics at base width 8, Qwen-Image's dynamically shifted
flow-matching scheduler, and an offline byte-level BPE tokenizer (:func:`build_qwen_tokenizer`).

The tokenizer is trained on the pipeline's own prompt template as well as the project's corpus, so
the template's prefix (system prompt and ``<|im_start|>user\\n``) is exactly the 34 tokens the
pipeline drops (``prompt_template_encode_start_idx``, a constant of the pipeline, not of the saved
model), as with the real Qwen2 vocabulary. The embedding table has more rows than the tokenizer, as
the real one (152064 rows for 151665 tokens).

``default_sample_size`` 128 (latent side) x 8 = 1024 px native, as the real model; generation at
64 px is an 8x8 latent, 16 image tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dti.testing.bpe import train_byte_level_bpe

QWEN_TEXT_WIDTH = 32
#: Qwen2's special tokens, in the real vocabulary's order after its 151643 BPE pieces; the real
#: tokenizer also has ``<tool_call>``, ``<|fim_prefix|>``, ... (non-special), not needed here.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Qwen2.5's chat template, cut to what text prompts use (no tools, no images).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_qwen_tokenizer(folder: str | os.PathLike, template: str):
    """A small byte-level BPE ``Qwen2Tokenizer`` saved to ``folder`` and loaded back with ``AutoTokenizer``.

    Trained offline (``tokenizers``) on the project's corpus plus the text of ``template`` (a prompt
    template with ``{}`` where the prompt goes, its special tokens cut out) until every training word
    is one piece, with Qwen2's pre-tokenizer (its split regex, then byte-level, no prefix space): "a
    photo of a dog" -> ``a Ġphoto Ġof Ġa Ġdog``. The special tokens follow the BPE pieces in Qwen2's
    order; ``<|endoftext|>`` pads. Self-contained, to be folded into a shared builder of byte-level BPEs.
    """
    import re

    from transformers import AutoTokenizer, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pieces = [p for p in re.split("|".join(re.escape(t) for t in QWEN_SPECIAL_TOKENS), template.replace("{}", "\n")) if p]
    bpe = train_byte_level_bpe(PRETOKENIZE_REGEX, pieces)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        model_max_length=32768,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    folder = Path(folder)
    tok.save_pretrained(folder)
    loaded = AutoTokenizer.from_pretrained(folder)
    probe = template.format("a photo of a dog")
    assert loaded(probe).input_ids == tok(probe).input_ids, "the reloaded Qwen2 tokenizer tokenizes differently"
    return loaded


def _text_encoder(vocab_rows: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_rows,
            hidden_size=QWEN_TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,  # head size 8
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]},  # sums to 8 / 2
            bos_token_id=None,
            eos_token_id=None,
        ),
        vision_config=dict(  # never run: the pipeline passes no images
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=QWEN_TEXT_WIDTH,
            fullatt_block_indexes=[0],
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _transformer():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,  # 16 latent channels x 2x2 packing
        out_channels=16,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=QWEN_TEXT_WIDTH,
        axes_dims_rope=(4, 6, 6),  # sums to the head size
    )


def _vae():
    from diffusers import AutoencoderKLQwenImage

    # Qwen-Image's layout (z_dim 16, dim_mult 1/2/4/4: 8x spatial) at base width 8 instead of 96;
    # latents_mean / latents_std are the class defaults, Qwen-Image's real statistics.
    return AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # Qwen/Qwen-Image's scheduler_config.json as recalled (not checked here): dynamic exponential time shift
    # from 0.5 (256 image tokens) to 0.9 (8192), terminal sigma 0.02.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )


def build_tiny_qwenimage(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``QwenImagePipeline`` to ``folder`` (loads with ``QwenImagePipeline.from_pretrained``)."""
    from diffusers import QwenImagePipeline

    torch.manual_seed(seed)
    folder = Path(folder)
    template = _prompt_template()
    tokenizer = build_qwen_tokenizer(folder / "tokenizer", template)
    rows = -(-(len(tokenizer) + 1) // 64) * 64  # padded past the tokenizer, as the real table is
    pipe = QwenImagePipeline(
        scheduler=_scheduler(),
        vae=_vae().eval(),
        text_encoder=_text_encoder(rows).eval(),
        tokenizer=tokenizer,
        transformer=_transformer().eval(),
    )
    pipe.save_pretrained(folder)
    return folder


def _prompt_template() -> str:
    """``QwenImagePipeline``'s ``prompt_template_encode``, read from a pipeline of no modules."""
    from diffusers import QwenImagePipeline

    # set in __init__, not saved in the pipeline's config
    return QwenImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None).prompt_template_encode
