"""Words and rows: vocabulary statistics, placeholder names, initializer ids, prompt expansion,
and the trainable rows a placeholder reads. Attaching them to an encoder is :mod:`dti.text.attach`.

Multi-vector words use diffusers' naming (``<tok>``, ``<tok>_1``, ...); a prompt naming ``<tok>``
is expanded to all its parts by :func:`expand_prompt`, which is idempotent, so it composes with
diffusers' own expansion in the pipelines that have one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from dti.core import sphere
from dti.core.errors import DTIError

MAGNITUDE_CHOICES = ("mean", "min", "max")


# ------------------------------------------------------------------ vocabulary statistics
@dataclass(frozen=True)
class VocabStats:
    """Row-norm statistics of an input-embedding table (exactly-zero rows skipped)."""

    min: float
    mean: float
    max: float
    rows: int

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "mean": self.mean, "max": self.max, "rows": self.rows}


def vocab_stats(table: torch.Tensor) -> VocabStats:
    """Norm statistics over all rows of ``table``, special tokens included, zero rows skipped."""
    norms = table.detach().to(torch.float32).norm(dim=-1)
    norms = norms[norms > 0]
    return VocabStats(float(norms.min()), float(norms.mean()), float(norms.max()), int(norms.numel()))


def vocabulary_rows(tokenizer, text_encoder: nn.Module) -> torch.Tensor:
    """The rows the tokenizer's own vocabulary can reach: the table without rows of tokens added
    since (ids at the end) and without rows no token has (T5's table has 28 more than its
    tokenizer). Magnitudes and neighbours are measured on these."""
    added = [t for t in tokenizer.added_tokens_encoder if t not in tokenizer.all_special_tokens]
    return text_encoder.get_input_embeddings().weight[: len(tokenizer) - len(added)]


def resolve_magnitude(spec: str | float, stats: VocabStats) -> float:
    """``mean`` / ``min`` / ``max`` of the vocabulary norms, or a positive number."""
    if isinstance(spec, str) and spec in MAGNITUDE_CHOICES:
        return float(getattr(stats, spec))
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise DTIError(f"--magnitude {spec!r} is not valid; use mean, min, max or a positive number") from None
    if not value > 0:
        raise DTIError(f"--magnitude {spec!r} must be positive; use mean, min, max or a positive number")
    return value


# ------------------------------------------------------------------ token names and ids
def placeholder_tokens(token: str, n_vectors: int) -> list[str]:
    """diffusers' naming of a multi-vector token: ``tok``, ``tok_1``, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, n_vectors)]


def check_placeholder(tokenizer, token: str, where: str = "the tokenizer") -> None:
    """Refuse a placeholder that is not one new word for ``tokenizer``."""
    if not token or any(ch.isspace() for ch in token):
        raise DTIError(f"--token {token!r} must be a single word without spaces, e.g. '<my-dog>'")
    vocab = tokenizer.get_vocab()
    if token in vocab or f"{token}</w>" in vocab:
        raise DTIError(f"--token {token!r} is already in the vocabulary of {where}; choose a new word such as '<my-{token.strip('<>')}>'")
    if f"{token}_1" in vocab:
        raise DTIError(f"--token {token!r} clashes with the existing token '{token}_1' in {where}; choose another name")


def word_pieces(tokenizer, word: str) -> list[str]:
    """The pieces ``word`` becomes *inside a prompt* ("a dog" -> "▁dog" for SentencePiece
    tokenizers, where the bare word may split differently), by tokenizing "a word" and
    dropping the pieces of "a"."""
    lead = tokenizer.tokenize("a")
    pieces = tokenizer.tokenize(f"a {word}")
    if pieces[: len(lead)] == lead:
        return pieces[len(lead) :]
    return tokenizer.tokenize(word)


def initializer_ids(tokenizer, text: str, where: str = "the tokenizer") -> list[int]:
    """Vocabulary ids of the initializer, one per word ("stuffed animal" -> two vectors).

    Each word must be a single vocabulary entry as it appears in a prompt: a word the tokenizer
    splits into sub-word pieces, or maps to the unknown token, has no meaningful embedding to
    start from.
    """
    words = text.split() if text else []
    if not words:
        raise DTIError("--init is missing; give the subject's class word, e.g. --init dog")
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_encoder.values()) - special
    ids = []
    for word in words:
        pieces = word_pieces(tokenizer, word)
        piece_ids = tokenizer.convert_tokens_to_ids(pieces)
        if len(pieces) != 1 or piece_ids[0] in special or piece_ids[0] in added or piece_ids[0] == tokenizer.unk_token_id:
            shown = " + ".join(pieces) if pieces else "nothing"
            raise DTIError(
                f"--init word {word!r} is not in the vocabulary of {where} (it tokenizes to {shown}); "
                "use a common class word such as 'dog', 'toy' or 'stuffed animal'"
            )
        ids.extend(piece_ids)
    return ids


# ------------------------------------------------------------------ trainable rows
class TrainableRows(nn.Module):
    """The rows the new tokens read, in one of three parameterizations.

    - ``sphere``: ``magnitude * direction``; ``direction`` has unit rows kept so by
      RiemannianSGD (DTI).
    - ``normalized``: ``magnitude * normalize(raw)``; any optimizer (AdamW-with-fixed-norm
      ablation).
    - ``free``: the raw vector itself (plain TI).
    """

    MODES = ("sphere", "normalized", "free")

    def __init__(self, init: torch.Tensor, mode: str, magnitude: float | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {self.MODES}")
        if mode != "free" and magnitude is None:
            raise ValueError(f"mode {mode!r} needs a magnitude")
        self.mode = mode
        self.magnitude = magnitude
        start = init.detach().to(torch.float32).clone()
        if mode != "free":
            start = sphere.normalize(start)
        self.param = nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        if self.mode == "free":
            return self.param
        if self.mode == "normalized":
            return self.magnitude * sphere.normalize(self.param)
        return self.magnitude * self.param

    @torch.no_grad()
    def vectors(self) -> torch.Tensor:
        return self.forward().detach().clone()


# ------------------------------------------------------------------ prompt expansion
def _expansion_pattern(token: str, n_vectors: int) -> re.Pattern[str]:
    parts = placeholder_tokens(token, n_vectors)
    expanded = r"\s+".join(re.escape(p) for p in parts)
    # an already expanded run, or the bare token not followed by a part suffix ("_1")
    return re.compile(f"{expanded}|{re.escape(token)}(?!_\\d)")


def expand_prompt(prompt: str, words: dict[str, int]) -> str:
    """``<tok>`` -> ``<tok> <tok>_1 ...`` for every multi-vector word in ``words`` (token ->
    vector count). Idempotent: an expanded prompt is returned unchanged."""
    for token, n in words.items():
        if n > 1 and token in prompt:
            full = " ".join(placeholder_tokens(token, n))
            prompt = _expansion_pattern(token, n).sub(lambda _m, full=full: full, prompt)
    return prompt
