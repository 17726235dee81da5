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
    """The rows the tokenizer's own vocabulary can reach: the table up to the tokenizer's size, without the
    rows of concepts attached since (their ids are the last) and without rows no token has (T5's table has 28
    more than its tokenizer, Qwen3's 267: padding to a multiple of 128). The tokenizer's own added tokens count,
    special or not (Qwen3's ``<think>``, Gemma's ``<unused*>``, Llama 3's 256 reserved tokens): they are the model's, with trained rows.
    Magnitudes and neighbours are measured on these."""
    from dti.text.attach import extended

    ext = extended(text_encoder)
    attached = sum(len(block.tokens) for block in ext.blocks.values()) if ext is not None else 0
    return text_encoder.get_input_embeddings().weight[: len(tokenizer) - attached]


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
