"""A real ``CLIPTokenizer`` (byte-pair encoding, CLIP's normalization and special tokens) whose
small vocabulary makes every word of the mini world exactly one token.

BPE needs a merge chain per word. Merges are added left to right (``s t`` -> ``st``, ``st a`` ->
``sta``, ...); when a merge learned for one word fires first inside another and leaves it split,
the merge that joins the pieces it actually produced is added, until every word is one token.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END = "</w>"


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word (lowest-rank adjacent pair first)."""
    parts = [*word[:-1], word[-1] + END]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        pair = (parts[i], parts[i + 1])
        merged, j = [], 0
        while j < len(parts):  # merge every occurrence of the pair, as CLIP does
            if j < len(parts) - 1 and (parts[j], parts[j + 1]) == pair:
                merged.append(parts[j] + parts[j + 1])
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


def build_vocabulary(words: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(tokens, merges) such that each of ``words`` encodes to a single token."""
    words = sorted({w.lower() for w in words if w})
    for w in words:
        if not w.isascii() or not all(ch.isalnum() or ch in "-'" for ch in w):
            raise ValueError(f"word {w!r}: only ascii letters, digits, - and ' are supported")
    chars = sorted({ch for w in words for ch in w})
    tokens = chars + [c + END for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}

    def add(a: str, b: str) -> None:
        if (a, b) not in ranks:
            ranks[(a, b)] = len(merges)
            merges.append((a, b))
            if a + b not in tokens:
                tokens.append(a + b)

    for w in words:  # the left-to-right chain of each word
        prefix = w[0]
        for k, ch in enumerate(w[1:], start=1):
            piece = ch + END if k == len(w) - 1 else ch
            add(prefix, piece)
            prefix += ch
    for _ in range(100):  # repair words that another word's merges split
        broken = [(w, parts) for w in words if len(parts := _bpe(w, ranks)) > 1]
        if not broken:
            break
        for _, parts in broken:
            add(parts[0], parts[1])
    else:  # pragma: no cover - the loop converges in a few rounds for any word list
        raise RuntimeError("BPE merge repair did not converge")
    return [*tokens, BOS, EOS], merges


def write_tokenizer_files(words: Iterable[str], folder: str | os.PathLike) -> Path:
    tokens, merges = build_vocabulary(words)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return folder


def mini_tokenizer(words: Iterable[str], max_length: int = 32):
    """A ``CLIPTokenizer`` over ``words`` (padding with the end token, like SD's first tokenizer)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(words, tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)
    for w in set(words):
        ids = tokenizer(w, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{w!r} is not a single token: {ids}"
    return tokenizer
