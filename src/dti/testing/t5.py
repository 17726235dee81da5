"""A T5 tokenizer and tiny T5 encoders built offline, for the tiny PixArt, SD3 and FLUX pipelines.

The tokenizer is the real ``T5Tokenizer`` class (``T5TokenizerFast`` is an alias in transformers 5)
over a Unigram vocabulary made directly from the corpus word counts: one ``"▁word"`` piece per
corpus word (log-frequency scores), printable ASCII characters and ``"▁"`` as low-scoring fallback
pieces so that any text tokenizes, ``<pad>``=0, ``</s>``=1, ``<unk>``=2 and the 100
``<extra_id_N>`` sentinels last (``<extra_id_0>`` the highest id), as in the real vocabulary.
A trained ``UnigramTrainer`` would split such a small corpus into near-single characters.

The encoders' embedding tables have more rows than the tokenizer has tokens, as real T5's
(32128 rows for 32100 tokens): code must never assume ``len(tokenizer) == vocab_size``.
"""

from __future__ import annotations

import math

from dti.testing.corpus import word_counts

T5_EXTRA_IDS = 100
T5_MAX_LENGTH = 512


def t5_vocab() -> list[tuple[str, float]]:
    """The ``(piece, score)`` list, in id order."""
    counts = word_counts()
    total = sum(counts.values())
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + word, math.log(n / total)) for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    fallback = min(score for _, score in pieces[3:]) - 10.0
    seen = {piece for piece, _ in pieces}
    for ch in ["▁", *(chr(c) for c in range(ord("!"), ord("~") + 1))]:
        if ch not in seen:
            pieces.append((ch, fallback))
            seen.add(ch)
    pieces += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    return pieces


def t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A ``T5TokenizerFast`` over the corpus words ("a photo of a dog" -> ▁a ▁photo ▁of ▁a ▁dog </s>)."""
    from transformers import T5TokenizerFast

    # Through the class: it sets the real T5 pre-tokenizer (WhitespaceSplit + Metaspace, prepend
    # "always"), the Metaspace decoder and the post-processor appending </s>, and rebuilds them the
    # same way when the saved tokenizer is loaded back.
    tok = T5TokenizerFast(vocab=t5_vocab(), extra_ids=T5_EXTRA_IDS, model_max_length=model_max_length)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    return tok


def t5_table_rows(tokenizer_length: int) -> int:
    """Embedding rows for a tokenizer of this length: the next multiple of 128 above it (32100 -> 32128)."""
    return -(-(tokenizer_length + 1) // 128) * 128


def t5_config_kwargs(d_model: int, tokenizer_length: int, num_heads: int = 4) -> dict:
    """A tiny T5 v1.1-style encoder's settings (gated-GELU, 2 layers, width ``d_model``), shared by T5 and UMT5."""
    return dict(
        vocab_size=t5_table_rows(tokenizer_length),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=num_heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def t5_encoder(d_model: int, tokenizer_length: int, num_heads: int = 4):
    """A tiny T5 v1.1-style ``T5EncoderModel`` (gated-GELU, untied head) of width ``d_model``, 2 layers."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**t5_config_kwargs(d_model, tokenizer_length, num_heads), tie_word_embeddings=False)
    return T5EncoderModel(config)
