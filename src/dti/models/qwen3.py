"""What the families with a Qwen3 text encoder share (Z-Image, FLUX.2 klein): the encoder role, the prompt's
share of the token budget once the chat template is around it, and CrossInit through a decoder-only model.

Qwen3 is a decoder-only LLM: its byte-level BPE tokenizer writes the space before a word into the word's first
piece (``"Ġdog"``), so the placeholder takes the one space before it out of the text
(:class:`~dti.models.base.EncoderRole` ``byte_level``); its embedding table has more rows than the tokenizer
(Qwen3-4B: 151936 for 151669 tokens), so new words take ids past the tokenizer and never those padding rows; and
its attention is causal, so the tokens before the placeholder (the template's ``<|im_start|>user``, the prompt's
first words) never see it: only the placeholder and what follows it carry the concept.

This module registers no family.
"""

from __future__ import annotations

from typing import Any

import torch

from dti.models.base import EncoderRole, EncoderSlot

#: The one Qwen3 encoder of these pipelines. One kind whatever the size; its single-file key follows the width
#: (``qwen3_4b`` for 2560, ``qwen3_8b`` for 4096: :data:`dti.models.kinds.WIDTH_KEYS`).
QWEN3_ROLE = EncoderRole("text_encoder", "tokenizer", "qwen3", byte_level=True)


def chat_text(tokenizer: Any, prompt: str, enable_thinking: bool) -> str:
    """The text a pipeline tokenizes for ``prompt``: one user turn and the assistant's opening, as its own
    ``apply_chat_template`` call writes it."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking)


def prompt_budget(tokenizer: Any, max_sequence_length: int, enable_thinking: bool) -> int:
    """How many of ``max_sequence_length`` tokens the prompt itself may take: what the chat template leaves."""
    template = len(tokenizer(chat_text(tokenizer, "a", enable_thinking)).input_ids) - len(tokenizer("a").input_ids)
    return max(1, int(max_sequence_length) - template)


class Qwen3EncoderMixin:
    """CrossInit for a Qwen3 encoder, ``Qwen3Model`` or ``Qwen3ForCausalLM`` alike (the latter has no
    ``last_hidden_state``): the final hidden states at the initializer's positions, the initializer tokenized
    alone (Qwen's tokenizer adds no special tokens)."""

    @torch.no_grad()
    def contextual_init(self, slot: EncoderSlot, ids: list[int]) -> torch.Tensor:
        encoder = slot.text_encoder
        body = getattr(encoder, "model", encoder)  # Qwen3ForCausalLM -> its Qwen3Model: no logits over the vocabulary
        input_ids = torch.tensor([list(ids)], device=encoder.device)
        return body(input_ids=input_ids, use_cache=False).last_hidden_state[0].float()
