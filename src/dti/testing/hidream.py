"""A tiny HiDream-I1 pipeline built from the real diffusers/transformers classes.

Random weights, real architecture: two ``CLIPTextModelWithProjection`` (CLIP-L and CLIP-G roles, width 32,
248 positions as HiDream's long CLIP encoders: the pipeline pads CLIP prompts to ``min(max_sequence_length,
218)`` tokens, 128 by default, more than CLIP's usual 77), the offline T5 of :mod:`dti.testing.t5`, a 3-layer
``LlamaForCausalLM`` (width 32) over a small byte-level BPE tokenizer (:func:`build_llama_tokenizer`) whose
embedding table has more rows than the tokenizer has tokens, a ``HiDreamImageTransformer2DModel`` with one
double-stream and one single-stream block (two routed experts, one active) reading Llama layers 0 and 2 (of
``hidden_states[1:]``), FLUX-style 16-channel ``AutoencoderKL`` with 2x downsampling, and a static-shift
flow-matching scheduler.

``HiDreamImagePipeline`` keeps the image area at ``(default_sample_size x vae_scale_factor)^2``: 256 px here
(``default_sample_size`` is fixed at 128 in its ``__init__``). dti renders at the requested size
(:meth:`dti.models.hidream.HiDreamAdapter.rendering`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from dti.testing.bpe import train_byte_level_bpe
from dti.testing.clip import _text_config, clip_tokenizer
from dti.testing.sd3 import _flow_vae
from dti.testing.t5 import t5_encoder, t5_tokenizer

HIDREAM_CLIP_WIDTHS = (32, 32)
HIDREAM_T5_WIDTH = 48
HIDREAM_LLAMA_WIDTH = 32
HIDREAM_LLAMA_LAYERS = 3
#: which of ``hidden_states[1:]`` the tiny transformer reads: one per block (1 double + 1 single), layer 1 unread
HIDREAM_LLAMA_READ = (0, 2)
HIDREAM_CLIP_POSITIONS = 248

#: Llama 3.1's special tokens (the first eleven of its 256, ids after the BPE vocabulary, as there)
LLAMA_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
#: Llama 3's pre-tokenizer split (tokenizer.json of Meta-Llama-3.1-8B-Instruct)
LLAMA_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def build_llama_tokenizer(folder: str | os.PathLike):
    """A small Llama-3-style byte-level BPE tokenizer, saved to ``folder`` and loaded back with ``AutoTokenizer``.

    Trained offline with the ``tokenizers`` library on the project's corpus (:mod:`dti.testing.corpus`), with
    enough merges that every corpus word is one piece, both as it starts a prompt (``dog``) and inside one
    (``Ġdog``, the leading-space byte marker). Llama 3's pre-tokenizer (its regex split, then byte-level
    without a prefix space), byte-level decoder and a post-processor that puts ``<|begin_of_text|>`` first
    and no end token; its special tokens follow the BPE vocabulary, as in Llama 3.1 (the real one has 128000
    BPE pieces and 256 specials). Wrapped as ``PreTrainedTokenizerFast`` (the class of the real one), with
    ``model_max_length`` 131072 as Llama 3.1's. "a photo of a dog" -> ``<|begin_of_text|> a Ġphoto Ġof Ġa Ġdog``.
    """
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = train_byte_level_bpe(LLAMA_SPLIT, normalize=False, ignore_merges=True)
    bpe.add_special_tokens(list(LLAMA_SPECIAL_TOKENS))
    bos = LLAMA_SPECIAL_TOKENS[0]
    bos_id = bpe.token_to_id(bos)
    bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=bos, eos_token="<|eot_id|>", model_max_length=131072, clean_up_tokenization_spaces=True
    )
    folder = Path(folder)
    tok.save_pretrained(folder)
    loaded = AutoTokenizer.from_pretrained(folder)
    assert loaded("a photo of a dog").input_ids == tok("a photo of a dog").input_ids, "the saved Llama tokenizer reads differently"
    assert loaded.convert_ids_to_tokens(loaded("a dog").input_ids) == [bos, "a", "Ġdog"]
    return loaded


def llama_table_rows(tokenizer_length: int) -> int:
    """Embedding rows for a tokenizer of this length: the next multiple of 64 above it, so that the table has
    rows no token reaches (as padded tables do; Llama 3.1's own 128256 rows match its tokenizer)."""
    return -(-(tokenizer_length + 1) // 64) * 64


def tiny_llama(tokenizer):
    """A 3-layer ``LlamaForCausalLM`` of width 32 for ``tokenizer`` (untied head, grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=llama_table_rows(len(tokenizer)),
        hidden_size=HIDREAM_LLAMA_WIDTH,
        intermediate_size=64,
        num_hidden_layers=HIDREAM_LLAMA_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _transformer():
    from diffusers import HiDreamImageTransformer2DModel

    w1, w2 = HIDREAM_CLIP_WIDTHS
    return HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[HIDREAM_T5_WIDTH, HIDREAM_LLAMA_WIDTH],  # [T5, Llama], as the real config
        text_emb_dim=w1 + w2,  # the two CLIP projections, concatenated
        num_routed_experts=2,
        num_activated_experts=1,
        axes_dims_rope=(4, 2, 2),  # sums to the head dim
        max_resolution=(128, 128),
        llama_layers=list(HIDREAM_LLAMA_READ),  # one per block, double then single
    )


def build_tiny_hidream(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``HiDreamImagePipeline`` to ``folder`` (loads with ``HiDreamImagePipeline.from_pretrained``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    folder = Path(folder)
    (w1, w2), clips = HIDREAM_CLIP_WIDTHS, []
    for width in (w1, w2):
        config = _text_config(width, width)
        config.max_position_embeddings = HIDREAM_CLIP_POSITIONS
        clips.append(CLIPTextModelWithProjection(config).eval())
    tokenizer_3 = t5_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_4 = build_llama_tokenizer(tmp)
    pipe = HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),  # HiDream-I1-Dev/Fast's kind, shift 3
        vae=_flow_vae(16, scaling_factor=0.3611, shift_factor=0.1159),  # FLUX's VAE factors, which HiDream uses
        text_encoder=clips[0],
        tokenizer=clip_tokenizer(),
        text_encoder_2=clips[1],
        tokenizer_2=clip_tokenizer(pad_token="!"),
        text_encoder_3=t5_encoder(HIDREAM_T5_WIDTH, len(tokenizer_3)).eval(),
        tokenizer_3=tokenizer_3,
        text_encoder_4=tiny_llama(tokenizer_4).eval(),
        tokenizer_4=tokenizer_4,
        transformer=_transformer().eval(),
    )
    pipe.save_pretrained(folder)
    return folder
