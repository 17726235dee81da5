"""Attach a trainable word to a (tokenizer, text encoder) pair without touching its weights.

The placeholder tokens are added to the tokenizer with diffusers' multi-vector naming
(``<tok>``, ``<tok>_1``, ...), and the encoder's input embedding is wrapped: ids of the new
tokens read their rows from a small fp32 block (the only trainable tensor), every other id reads
the frozen original table. Nothing is copied into an optimizer and the table stays bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dti import sphere
from dti.errors import DTIError

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


def initializer_ids(tokenizer, text: str, where: str = "the tokenizer") -> list[int]:
    """Vocabulary ids of the initializer, one per word ("stuffed animal" -> two vectors).

    Each word must be a single vocabulary entry: a word the tokenizer splits into sub-word
    pieces, or maps to the unknown token, has no meaningful embedding to start from.
    """
    words = text.split() if text else []
    if not words:
        raise DTIError("--init is missing; give the subject's class word, e.g. --init dog")
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_encoder.values()) - special
    ids = []
    for word in words:
        pieces = tokenizer.tokenize(word)
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


class ExtendedEmbedding(nn.Module):
    """Input embedding: frozen ``base`` table, plus ids ``first_id ..`` read from ``rows``.

    ``rows`` is deliberately not registered as a submodule: casting or freezing the text
    encoder (``.to(bfloat16)``, ``requires_grad_(False)``) must not reach the fp32 trainable rows.
    """

    def __init__(self, base: nn.Embedding, first_id: int, rows: TrainableRows) -> None:
        super().__init__()
        self.base = base
        self.first_id = first_id
        object.__setattr__(self, "rows", rows)

    @property
    def weight(self) -> torch.Tensor:  # code that inspects the table (dtype, width) still works
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        extra = self.rows()
        n = extra.shape[0]
        new = (input_ids >= self.first_id) & (input_ids < self.first_id + n)
        out = self.base(input_ids.masked_fill(new, 0))
        if bool(new.any()):
            picked = extra.to(device=out.device)[(input_ids - self.first_id).clamp(0, n - 1)]
            out = torch.where(new.unsqueeze(-1), picked.to(out.dtype), out)
        return out


# ------------------------------------------------------------------ pooling
def _clip_text_models(text_encoder: nn.Module) -> list[nn.Module]:
    from transformers import CLIPTextModel

    return [m for m in text_encoder.modules() if isinstance(m, CLIPTextModel)]


def pool_at_end_token(text_encoder: nn.Module, eos_token_id: int) -> Callable[[], None]:
    """Make CLIP pool at the end token even when added tokens have higher ids.

    CLIP configs with the legacy ``eos_token_id=2`` pool at the *highest* token id, which is
    the placeholder once one is added: the pooled (SDXL: global) conditioning would then see only
    the words before the placeholder. Pointing the model at the real end token restores the base
    model's behaviour; for prompts of vocabulary words it changes nothing. Returns an undo.
    """
    changed = []
    for model in _clip_text_models(text_encoder):
        if model.eos_token_id == 2 and eos_token_id != 2:
            changed.append(model)
            model.eos_token_id = eos_token_id

    def undo() -> None:
        for model in changed:
            model.eos_token_id = 2

    return undo


# ------------------------------------------------------------------ attach / detach
@dataclass
class Attachment:
    """A live attachment; :meth:`detach` puts tokenizer and encoder back as they were."""

    tokenizer: object
    text_encoder: nn.Module
    tokens: list[str]
    token_ids: list[int]
    base: nn.Embedding
    rows: TrainableRows
    _tokenizer_state: str
    _undo_pooling: Callable[[], None]

    def detach(self) -> None:
        from tokenizers import Tokenizer

        self.text_encoder.set_input_embeddings(self.base)
        self.tokenizer._tokenizer = Tokenizer.from_str(self._tokenizer_state)
        self._undo_pooling()


def attach(tokenizer, text_encoder: nn.Module, tokens: list[str], rows: TrainableRows, pooling: str = "eos") -> Attachment:
    """Add ``tokens`` to ``tokenizer`` and route their ids to ``rows`` in ``text_encoder``."""
    if not hasattr(tokenizer, "_tokenizer"):
        raise DTIError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; dti needs one")
    base = text_encoder.get_input_embeddings()
    assert isinstance(base, nn.Embedding), f"unexpected input embedding {type(base).__name__}"
    state = tokenizer._tokenizer.to_str()
    added = tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if added != len(tokens) or ids != list(range(ids[0], ids[0] + len(tokens))):
        from tokenizers import Tokenizer

        tokenizer._tokenizer = Tokenizer.from_str(state)
        raise DTIError(f"could not add {tokens} as new tokens; choose another --token")
    text_encoder.set_input_embeddings(ExtendedEmbedding(base, ids[0], rows))
    undo = pool_at_end_token(text_encoder, tokenizer.eos_token_id) if pooling == "eos" else (lambda: None)
    return Attachment(tokenizer, text_encoder, list(tokens), ids, base, rows, state, undo)
