"""A tiny Qwen3 text encoder from the real transformers classes, for the families that read one (Z-Image,
FLUX.2 klein), with the offline byte-level tokenizer of :mod:`dti.testing.bpe`.

Like the real Qwen3, the embedding table has more rows than the tokenizer (padded to a multiple of 128: the
4B model has 151936 rows for 151669 tokens), the input and output embeddings are tied (Qwen3-4B; the 8B is
untied), and attention is causal with grouped query heads and per-head q/k norms.
"""

from __future__ import annotations

from typing import Any

TINY_QWEN3_HIDDEN = 32


def tiny_qwen3_config(tokenizer_size: int, layers: int = 2, hidden: int = TINY_QWEN3_HIDDEN) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=-(-tokenizer_size // 128) * 128 + 128,  # rows no token has, as the real table's padding
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def tiny_qwen3(tokenizer_size: int, layers: int = 2, causal_lm: bool = False) -> Any:
    """A randomly initialised ``Qwen3Model`` (or ``Qwen3ForCausalLM``), in eval mode."""
    from transformers import Qwen3ForCausalLM, Qwen3Model

    cls = Qwen3ForCausalLM if causal_lm else Qwen3Model
    return cls(tiny_qwen3_config(tokenizer_size, layers)).eval()
