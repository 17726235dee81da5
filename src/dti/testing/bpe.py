"""A small offline byte-level BPE tokenizer with a chat template, as decoder-only (LLM) text encoders use.

The real vocabularies (Qwen's 151k pieces, Llama 3's 128k) cannot be downloaded here, so this trains a
byte-level BPE with the ``tokenizers`` library on the project's corpus (:mod:`dti.testing.corpus`), with
enough merges that every corpus word is one piece, and wraps it in a real transformers tokenizer class
(``Qwen2Tokenizer`` by default) so that it follows the real tokenizer's conventions:

- GPT-2 byte-level pieces: a space before a word is the word's first byte (``"Ġdog"``); a prompt's first
  word has none (``"dog"``), and a newline is ``"Ċ"``. Every byte is a piece, so nothing is unknown;
- the split regex of the family's own tokenizer (Qwen's ``PRETOKENIZE_REGEX`` by default), NFC normalization;
- the ordinary pieces first, then the special tokens (Qwen: ``<|endoftext|>``, ``<|im_start|>``,
  ``<|im_end|>``), then the family's non-special added tokens (Qwen3: ``<think>``, ``</think>``), at the
  end of the vocabulary as in the real files;
- a chat template (a Jinja string on the tokenizer, read by ``apply_chat_template``): :data:`QWEN3_CHAT_TEMPLATE`,
  the user / system / assistant turns of Qwen3's own template and its ``enable_thinking`` switch.

Other LLM families reuse :func:`byte_level_tokenizer` with their own special tokens, split regex, class
and template. New tokens: ``add_tokens(["<my-dog>"])`` makes the word one id; the space before it stays a
lone ``"Ġ"`` piece unless it is dropped from the text (which is what dti's attach path does for byte-level
encoders, so that "a <my-dog>" tokenizes like "a dog").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from dti.testing.corpus import sentences, word_counts

#: Qwen2 / Qwen2.5 / Qwen3's split regex (transformers ``tokenization_qwen2.PRETOKENIZE_REGEX``).
QWEN_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
#: Qwen3's special tokens that a prompt's chat template uses, in their order of the real vocabulary.
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Qwen3's non-special added tokens that its chat template writes (``enable_thinking=False``).
QWEN3_ADDED_TOKENS = ("<think>", "</think>")

#: Qwen3's chat template for text turns (the real one also renders tools and reasoning history, which
#: no pipeline's prompt uses): ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message, then, with
#: ``add_generation_prompt``, ``<|im_start|>assistant\n`` and, when ``enable_thinking`` is false, an
#: empty thinking block ``<think>\n\n</think>\n\n``. No default system prompt (Qwen2.5's template has one).
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def train_byte_level_bpe(split_regex: str, extra_lines: Sequence[str] = (), *, normalize: bool = True, ignore_merges: bool = False):
    """A ``tokenizers`` byte-level BPE trained on the project's corpus (plus ``extra_lines``) until every training
    word is one piece, both as a prompt's first word (``dog``) and inside one (``Ġdog``): the family's split regex,
    then byte-level pieces without a prefix space, all 256 bytes in the alphabet (nothing is unknown), NFC
    normalization unless ``normalize`` is false (Llama 3 has none). The one trainer of every tiny LLM tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalize:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split_regex), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,  # never reached: merging goes on until every training word is one piece
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*sentences(), *word_counts(), *extra_lines], trainer)
    return bpe


@functools.lru_cache(maxsize=4)
def _vocab_and_merges(split_regex: str) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    # the chat templates' role words and blank lines are pieces too
    model = json.loads(train_byte_level_bpe(split_regex, ["user", "assistant", "system", "\n\n"]).to_str())["model"]
    vocab = tuple(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = tuple((a, b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in model["merges"]))
    return vocab, merges


def byte_level_tokenizer(
    *,
    special_tokens: Sequence[str] = QWEN_SPECIAL_TOKENS,
    added_tokens: Sequence[str] = QWEN3_ADDED_TOKENS,
    chat_template: str = QWEN3_CHAT_TEMPLATE,
    split_regex: str = QWEN_SPLIT_REGEX,
    tokenizer_class: str = "Qwen2Tokenizer",
    **kwargs: Any,
):
    """A fresh byte-level BPE tokenizer of ``tokenizer_class`` (a transformers class that takes ``vocab=`` and
    ``merges=``) over the small offline vocabulary (about 700 pieces), then ``special_tokens`` (special) and
    ``added_tokens`` (not special) at the end of the vocabulary, with ``chat_template`` set. ``kwargs`` go to the
    class (Qwen: ``eos_token``, ``pad_token``; both default to ``<|endoftext|>`` there)."""
    import transformers
    from tokenizers import AddedToken

    vocab, merges = _vocab_and_merges(split_regex)
    cls = getattr(transformers, tokenizer_class)
    # the special and added tokens take the ids after the pieces (as in the real files), whatever order the
    # class registers its own special tokens in
    ids = {**dict(vocab), **{t: len(vocab) + i for i, t in enumerate([*special_tokens, *added_tokens])}}
    tok = cls(vocab=ids, merges=list(merges), **kwargs)
    extra = [t for t in special_tokens if t not in (tok.eos_token, tok.pad_token, tok.bos_token, tok.unk_token)]
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in extra]})
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    tok.chat_template = chat_template
    order = tok.convert_tokens_to_ids([*special_tokens, *added_tokens])
    assert order == list(range(len(vocab), len(vocab) + len(order))), f"special tokens not at the end of the vocabulary: {order}"
    return tok


def qwen3_tokenizer():
    """A ``Qwen2Tokenizer`` as Qwen3's (its class in transformers 5): ``<|im_end|>`` ends a turn (the eos token),
    ``<|endoftext|>`` pads, right padding, Qwen3's chat template (:data:`QWEN3_CHAT_TEMPLATE`)."""
    return byte_level_tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="right", model_max_length=131072)
