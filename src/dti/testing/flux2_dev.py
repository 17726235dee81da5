"""A tiny FLUX.2 dev pipeline built from the real diffusers/transformers classes.

Random weights, real architecture:

- a ``Mistral3ForConditionalGeneration`` (Mistral-Small-3.1's class) whose language model is a 31-layer Mistral of
  width 32 (the pipeline stacks its hidden layers 10, 20 and 30, so it needs more than 30 layers; the real one has
  40) and whose vision tower is a one-layer Pixtral of width 16: the pipeline never gives it an image, but the
  class needs one. The embedding table has more rows than the tokenizer (padded to a multiple of 128), so the
  norm statistics are seen to skip rows no token has; the real table has exactly its tokenizer's 131072 rows;
- a ``PixtralProcessor`` (what the pipeline's ``AutoProcessor`` loads) around the offline byte-level BPE of
  :mod:`dti.testing.bpe` with Mistral's (Tekken's) special tokens and split regex and a Mistral-Small-3.1 chat
  template (``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]``). The tokenizer class is Qwen's byte-level
  one (the real file's Tekken tokenizer is a plain ``tokenizer.json``, which cannot be trained here); the special
  tokens sit at the end of the vocabulary (Tekken puts its 1000 control tokens first): ids differ, pieces do not.
  transformers' ``PixtralProcessor`` module imports torchvision; where torchvision is missing (this project's test
  machines) the pipeline's ``tokenizer`` is that tokenizer alone, with the same chat template;
- a ``Flux2Transformer2DModel`` with one double and one single block and FLUX.2 dev's guidance embedding (it reads
  3 x the encoder's width: the stacked layers), FLUX.2's 4-level ``AutoencoderKLFlux2`` (as klein's builder) and a
  dynamically shifted flow-matching scheduler.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dti.testing.flux2_klein import tiny_flux2_transformer, tiny_flux2_vae

DEV_LAYERS = (10, 20, 30)  # Flux2Pipeline's default text_encoder_out_layers
TINY_MISTRAL_HIDDEN = 32

#: Tekken's split regex (Mistral-Small-3.1's ``tokenizer.json`` pre-tokenizer; the Llama 3 / o200k family).
TEKKEN_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Mistral-Small-3.1's control tokens that the pipeline's prompts or the Pixtral processor use.
MISTRAL_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
)
#: Mistral-Small-3.1's chat template for what the pipeline sends (a system turn, then user turns whose content is
#: a list of text / image blocks): ``<s>[SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT][INST]{prompt}[/INST]``, the prompt
#: right after ``[INST]`` with no space or newline. Assistant turns end with ``</s>``.
MISTRAL3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = namespace(v='') %}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{%- set text.v = text.v + block['text'] %}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{%- set text.v = text.v + '[IMG]' %}{%- endif %}"
    "{%- endfor %}{%- set text = text.v %}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- text + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def mistral3_tokenizer():
    """The offline byte-level tokenizer with Mistral's control tokens: ``<s>`` / ``</s>``, ``<pad>`` pads (right)."""
    from dti.testing.bpe import byte_level_tokenizer

    return byte_level_tokenizer(
        special_tokens=MISTRAL_SPECIAL_TOKENS,
        added_tokens=(),
        chat_template=MISTRAL3_CHAT_TEMPLATE,
        split_regex=TEKKEN_SPLIT_REGEX,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",
        model_max_length=131072,
    )


def has_pixtral_processor() -> bool:
    """Whether transformers' ``PixtralProcessor`` can load here: its module imports torchvision."""
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def mistral3_processor():
    """The pipeline's ``tokenizer`` component: a ``PixtralProcessor`` (tiny image processor, the tokenizer above,
    the chat template on the processor) where torchvision is installed, else the tokenizer alone, with the same
    chat template (the pipeline calls only ``apply_chat_template``, which both answer alike for text)."""
    tokenizer = mistral3_tokenizer()
    if not has_pixtral_processor():
        return tokenizer
    from transformers import PixtralImageProcessor, PixtralProcessor

    image_processor = PixtralImageProcessor(size={"longest_edge": 64}, patch_size=16)
    return PixtralProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=16, spatial_merge_size=2, chat_template=MISTRAL3_CHAT_TEMPLATE
    )


def tiny_mistral3(tokenizer, layers: int = 31, hidden: int = TINY_MISTRAL_HIDDEN):
    """A randomly initialised ``Mistral3ForConditionalGeneration``: a tiny Mistral language model and a tiny
    Pixtral vision tower (never run by the pipeline), in eval mode."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    text = MistralConfig(
        vocab_size=-(-len(tokenizer) // 128) * 128 + 128,  # rows no token has
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        rope_theta=1_000_000_000.0,
        sliding_window=None,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = PixtralVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1, head_dim=16, patch_size=16, image_size=64
    )
    config = Mistral3Config(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        tie_word_embeddings=False,
    )
    return Mistral3ForConditionalGeneration(config).eval()


def build_tiny_flux2_dev(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``Flux2Pipeline`` to ``folder`` (loads with ``Flux2Pipeline.from_pretrained``; its tokenizer folder
    with ``AutoProcessor``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    torch.manual_seed(seed)
    folder = Path(folder)
    processor = mistral3_processor()
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        vae=tiny_flux2_vae().eval(),
        text_encoder=tiny_mistral3(getattr(processor, "tokenizer", processor)),
        tokenizer=processor,
        transformer=tiny_flux2_transformer(len(DEV_LAYERS) * TINY_MISTRAL_HIDDEN, guidance_embeds=True).eval(),  # dev is guidance-distilled
    )
    pipe.save_pretrained(folder)
    return folder
