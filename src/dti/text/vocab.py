"""A vocabulary's row norms: the statistics a fixed-norm method takes its magnitude from.

METHOD.md section 2: the magnitude of a DTI vector is a statistic of the encoder's original
input-embedding table (exactly-zero rows skipped, special tokens included), measured over the rows
its tokenizer can emit. :data:`MAGNITUDES` names the statistics a run may choose; this module is the
one place that knows them, checks a choice (:func:`magnitude_problem`) and resolves it
(:func:`resolve_magnitude`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dti.core.errors import DTIError

#: The vocabulary statistics a magnitude may name (or a positive number).
MAGNITUDES = ("mean", "median", "min", "max")
# Vocabulary rows have norms of about 0.3-2 (CLIP ~0.4, Gemma-2 1.8 before its input scale, T5 larger);
# 1e3 is far outside, and a norm of 1e30 overflows fp16 (max 65504) and bf16 activations in the encoder. A concept
# file's rows may reach concepts.concept.MAX_ROW_NORM (1e4, plain TI's inflated norms): 10x room over this bound,
# so a word trained at any allowed magnitude is never refused as it is read back.
MAX_MAGNITUDE = 1e3


@dataclass(frozen=True)
class VocabStats:
    """Row-norm statistics of an input-embedding table (exactly-zero rows skipped)."""

    min: float
    mean: float
    max: float
    rows: int
    median: float | None = None  # None in statistics recorded before dti measured it

    def as_dict(self) -> dict[str, float]:
        out = {"min": self.min, "mean": self.mean, "max": self.max, "rows": self.rows}
        if self.median is not None:
            out["median"] = self.median
        return out


def vocab_stats(table: torch.Tensor) -> VocabStats:
    """Norm statistics over all rows of ``table``, special tokens included, zero rows skipped."""
    norms = table.detach().to(torch.float32).norm(dim=-1)
    norms = norms[norms > 0]
    return VocabStats(float(norms.min()), float(norms.mean()), float(norms.max()), int(norms.numel()), float(norms.median()))


def vocabulary_rows(tokenizer: Any, text_encoder: nn.Module) -> torch.Tensor:
    """The rows the tokenizer's own vocabulary can reach: the table without rows of tokens added
    since (ids at the end) and without rows no token has (T5's table has 28 more than its
    tokenizer). Magnitudes and neighbours are measured on these.

    Special tokens count as vocabulary whether or not the tokenizer names them (Llama 3's 256 special
    tokens are added tokens flagged special, but only BOS and EOS are among ``all_special_tokens``):
    only added tokens that are not special (the placeholders dti adds) are left out."""
    named = set(tokenizer.all_special_tokens)
    added = [t for t in tokenizer.added_tokens_decoder.values() if not t.special and str(t) not in named]
    return text_encoder.get_input_embeddings().weight[: len(tokenizer) - len(added)]


def magnitude_problem(spec: Any) -> str | None:
    """What is wrong with a magnitude setting (read after its name), or None: it must be one of
    :data:`MAGNITUDES` or a finite number in (0, :data:`MAX_MAGNITUDE`]."""
    if isinstance(spec, str) and spec in MAGNITUDES:
        return None
    try:
        value = float(spec)
    except (TypeError, ValueError):
        return f"{spec!r} is not valid; use {', '.join(MAGNITUDES)} or a positive number"
    if isinstance(spec, bool) or not (math.isfinite(value) and 0 < value <= MAX_MAGNITUDE):
        return f"{spec} must be a finite number in (0, {MAX_MAGNITUDE:g}]; vocabulary norms are ~0.4-2, or use mean"
    return None


def resolve_magnitude(spec: str | float, stats: VocabStats) -> float:
    """The norm ``spec`` names for a vocabulary with ``stats``: one of its statistics, or the number itself."""
    found = magnitude_problem(spec)
    if found:
        raise DTIError("{magnitude} " + found, settings=["magnitude"])
    if isinstance(spec, str) and spec in MAGNITUDES:
        value = getattr(stats, spec)
        if value is None:
            raise DTIError(f"this vocabulary's {spec} norm was not measured; use mean, min or max")
        return float(value)
    return float(spec)
