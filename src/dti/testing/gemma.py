"""A small offline Gemma-2-style tokenizer (byte-fallback BPE), as SANA's text encoder uses.

The real Gemma-2 vocabulary (256000 pieces) cannot be downloaded here, so this trains a BPE with
the ``tokenizers`` library on the project's corpus (:mod:`dti.testing.corpus`) plus SANA's default
"complex human instruction", with enough merges that every corpus word is one piece, and wraps it
in transformers' own ``GemmaTokenizerFast`` so that it follows the real tokenizer's conventions:

- ids ``<pad>`` = 0, ``<eos>`` = 1, ``<bos>`` = 2, ``<unk>`` = 3, ``<mask>`` = 4, then the 256
  byte-fallback pieces ``<0x00>`` .. ``<0xFF>`` (unknown characters become their UTF-8 bytes);
- spaces become ``"▁"`` in the normalizer and no prefix space is added, so the first word has no
  ``"▁"``: "a photo of a dog" -> ``<bos> a ▁photo ▁of ▁a ▁dog``;
- ``add_bos_token=True``, ``add_eos_token=False``, ``padding_side="right"`` (what SANA's code and
  diffusers' SANA converter set; the class default is "left").

New tokens: ``tokenizer.add_tokens(["<my-dog>"])`` gives ``... ▁a ▁ <my-dog>`` (a lone ``"▁"``
before the token, as real Gemma does). ``add_tokens([AddedToken("<my-dog>", lstrip=True,
normalized=False)])`` gives ``... ▁a <my-dog>``, as many ids as ``... ▁a ▁dog`` (see
:func:`placeholder_added_token`).
"""

from __future__ import annotations

import functools
import inspect
import json

from dti.testing.corpus import sentences, word_counts

GEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
GEMMA_BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
SPACE = "▁"


def sana_complex_human_instruction() -> list[str]:
    """The default ``complex_human_instruction`` of the installed ``SanaPipeline.__call__`` ([] without diffusers)."""
    try:
        from diffusers import SanaPipeline
    except ImportError:  # pragma: no cover - diffusers is a dependency
        return []
    default = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    return list(default) if isinstance(default, (list, tuple)) else []


def _training_lines() -> list[str]:
    # Sentences give the in-prompt "▁word" pieces, the bare words the prompt-initial "word" pieces.
    return [*sentences(), *word_counts(), *sana_complex_human_instruction()]


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", SPACE)
    # Training only: words start at "▁" (so no merge crosses a word boundary), digits stay single
    # (as in Gemma). The final tokenizer has Gemma's own pre-tokenizer; the merges give the same pieces.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(SPACE, behavior="merged_with_next"), pre_tokenizers.Digits(individual_digits=True)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000,  # never reached: merging goes on until every training word is one piece
        min_frequency=1,
        special_tokens=[*GEMMA_SPECIAL_TOKENS, *GEMMA_BYTE_TOKENS],
        initial_alphabet=["\n", SPACE],
        show_progress=False,
    )
    bpe.train_from_iterator(_training_lines(), trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = tuple(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = tuple((a, b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in model["merges"]))
    return vocab, merges


def gemma_tokenizer():
    """A fresh ``GemmaTokenizerFast`` with the small offline vocabulary (about 1100 pieces)."""
    from transformers import GemmaTokenizerFast

    vocab, merges = _vocab_and_merges()
    tok = GemmaTokenizerFast(
        vocab=dict(vocab),
        merges=list(merges),
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
    )
    assert tok.convert_tokens_to_ids(list(GEMMA_SPECIAL_TOKENS[:4])) == [0, 1, 2, 3], "Gemma special ids moved"
    return tok


def placeholder_added_token(token: str):
    """The ``AddedToken`` form that puts ``token`` in a word's place: no lone ``"▁"`` piece before it.

    ``lstrip=True`` swallows the space before the token; ``normalized=False`` is needed because
    Gemma's normalizer turns that space into ``"▁"`` before a normalized token would see it.
    Decoding then drops that space ("a photo of a<my-dog>"); the ids are what matter.
    """
    from tokenizers import AddedToken

    return AddedToken(token, lstrip=True, rstrip=False, single_word=False, normalized=False, special=False)
