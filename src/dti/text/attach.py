"""The one attach path: concept rows into a (tokenizer, text encoder) pair, for training and
generation alike, for every family, without touching the pipeline's weights.

- The placeholder tokens are added to the tokenizer (diffusers' multi-vector naming), and the
  tokenizer expands ``<tok>`` to all its parts itself, so every pipeline's own prompt encoding
  sees the whole word, with or without diffusers' ``maybe_convert_prompt``.
- The encoder's input embedding is wrapped once by :class:`ExtendedEmbedding`, which holds one
  block of rows per attached concept (several at once; each can be removed alone). New ids read
  their block, scaled exactly as the base embedding scales its own rows (Gemma multiplies by
  sqrt(width) inside its forward); every other id reads the frozen table. No table is resized
  (T5's has more rows than its tokenizer), copied or handed to an optimizer.
- CLIP encoders whose pooled output the pipeline uses pool at the real end token
  (:func:`pool_at_end_token`), as the base models were trained.
- While a concept is attached the tokenizer remembers the texts it tokenized (a training run
  draws its prompts from a few dozen templates every step, through the pipeline's own
  ``encode_prompt``): each text once per set of call options and vocabulary size, the batch padded
  by the tokenizer's own ``pad``, each set of options checked once against a direct call, the
  memory emptied whenever tokens are added or removed, every result a fresh copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dti.core.errors import DTIError
from dti.core.rows import TrainableRows
from dti.text.words import expand_prompt, placeholder_tokens


# ------------------------------------------------------------------ pooling
def _clip_text_models(text_encoder: nn.Module) -> list[nn.Module]:
    return [m for m in text_encoder.modules() if hasattr(m, "eos_token_id") and type(m).__name__.startswith("CLIPText")]


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


# ------------------------------------------------------------------ the embedding
@dataclass
class Block:
    """One attached concept in one encoder: its tokens, their first id, the rows they read."""

    token: str
    tokens: list[str]
    first_id: int
    rows: TrainableRows


class ExtendedEmbedding(nn.Module):
    """Input embedding: the frozen ``base`` table plus one block of rows per attached concept.

    Blocks are deliberately not registered as submodules: casting or freezing the text encoder
    (``.to(bfloat16)``, ``requires_grad_(False)``) must not reach the fp32 trainable rows.
    """

    def __init__(self, base: nn.Embedding) -> None:
        super().__init__()
        self.base = base
        object.__setattr__(self, "blocks", {})  # token -> Block, in attach order

    @property
    def weight(self) -> torch.Tensor:  # code that inspects the table (dtype, width) still works
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        blocks: dict[str, Block] = self.blocks
        if not blocks:
            return self.base(input_ids)
        masks = []
        any_new = torch.zeros_like(input_ids, dtype=torch.bool)
        for block in blocks.values():
            n = len(block.tokens)
            mask = (input_ids >= block.first_id) & (input_ids < block.first_id + n)
            masks.append((block, mask))
            any_new |= mask
        out = self.base(input_ids.masked_fill(any_new, 0))
        scale = getattr(self.base, "embed_scale", None)  # Gemma: rows enter the model times sqrt(width)
        for block, mask in masks:  # no host sync: the rows are gathered whether or not they occur
            n = len(block.tokens)
            picked = block.rows().to(device=out.device, dtype=out.dtype)[(input_ids - block.first_id).clamp(0, n - 1)]
            if isinstance(scale, torch.Tensor):
                picked = picked * scale.to(device=out.device, dtype=self.base.weight.dtype).to(out.dtype)
            elif scale is not None:
                picked = picked * scale
            out = torch.where(mask.unsqueeze(-1), picked, out)
        return out


# ------------------------------------------------------------------ the tokenizer
_EXPANDING: dict[type, type] = {}
CALL_MEMORY = 512  # prompts remembered per tokenizer: a run's templates, times the options it calls with
_PLAIN = (str, int, float, bool, type(None))
# Options of a call that act on each text alone, and those that act on the batch (padding).
_PER_TEXT = ("add_special_tokens", "truncation", "max_length", "return_attention_mask", "return_token_type_ids")
_PER_BATCH = ("padding", "max_length", "pad_to_multiple_of", "padding_side", "return_attention_mask", "return_tensors")


def _same(a: Any, b: Any) -> bool:
    if set(a.keys()) != set(b.keys()):
        return False
    for k in a.keys():
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _padded(tokenizer: Any, items: list[dict], flat: bool, kwargs: dict) -> Any:
    """Remembered texts as one batch, padded by the tokenizer's own ``pad`` as the direct call would pad them.
    ``flat``: one text as lists (not nested); otherwise a batch (one text as tensors is a batch of one)."""
    batch = {k: copy.deepcopy(items[0][k] if flat else [it[k] for it in items]) for k in items[0]}
    padding = {k: v for k, v in kwargs.items() if k in _PER_BATCH and k != "padding"}
    if kwargs.get("padding") in (True, "longest"):  # max_length only truncated each text; pad() would warn about it
        padding.pop("max_length", None)
    warned = tokenizer.__dict__.setdefault("deprecation_warnings", {})
    seen, warned["Asking-to-pad-a-fast-tokenizer"] = warned.get("Asking-to-pad-a-fast-tokenizer"), True  # pad() is the point here
    try:
        return tokenizer.pad(batch, padding=kwargs.get("padding", False), **padding)
    finally:
        if seen is None:
            warned.pop("Asking-to-pad-a-fast-tokenizer", None)


def _remembered_call(cls: type, tokenizer: Any, text: Any, args: tuple, kwargs: dict) -> Any:
    """``cls.__call__`` on the expanded text, each text tokenized once: rows padded to a fixed length
    are stacked, other batches padded by the tokenizer's own ``pad``. The first call with a given set of options is checked against a
    direct call; options whose result would differ (or are not plain values) always call through."""
    memory = tokenizer.__dict__.get("_dti_calls")
    single = isinstance(text, str)
    texts = [text] if single else text
    plain = (
        memory is None
        or args
        or not isinstance(texts, (list, tuple))
        or not texts
        or not all(isinstance(t, str) for t in texts)
        or any(k not in _PER_TEXT and k not in _PER_BATCH for k in kwargs)
        or not all(isinstance(v, _PLAIN) for v in kwargs.values())
    )
    options = (tuple(sorted(kwargs.items())), single, len(tokenizer), tokenizer.model_max_length)
    checked = tokenizer.__dict__.setdefault("_dti_checked", {})
    if plain or checked.get(options) is False:
        return cls.__call__(tokenizer, _expand(tokenizer, text), *args, **kwargs)
    fixed = kwargs.get("padding") == "max_length" and kwargs.get("return_tensors") == "pt"
    # padded to a fixed length, each text's row is the batch's row: remember it as a tensor and stack
    per_text = dict(kwargs) if fixed else {k: v for k, v in kwargs.items() if k in _PER_TEXT}
    items = []
    for t in texts:
        key = (t, options)
        if key not in memory:
            if len(memory) >= CALL_MEMORY:
                memory.pop(next(iter(memory)))
            memory[key] = dict(cls.__call__(tokenizer, _expand(tokenizer, t), **per_text))
        items.append(memory[key])
    if fixed:
        from transformers import BatchEncoding

        out = BatchEncoding({k: torch.cat([it[k] for it in items]) for k in items[0]})
    else:
        out = _padded(tokenizer, items, single and kwargs.get("return_tensors") is None, kwargs)
    if options not in checked:
        direct = cls.__call__(tokenizer, _expand(tokenizer, text), **kwargs)
        checked[options] = _same(out, direct)
        return direct
    return out


def _remembered_tokens(cls: type, tokenizer: Any, text: Any, args: tuple, kwargs: dict) -> list[str]:
    """``cls.tokenize`` on the expanded text, once per text (diffusers' ``maybe_convert_prompt`` tokenizes
    every prompt of every step to look for multi-vector words); a fresh list each time."""
    memory = tokenizer.__dict__.get("_dti_calls")
    if memory is None or args or not isinstance(text, str) or not all(isinstance(v, _PLAIN) for v in kwargs.values()):
        return cls.tokenize(tokenizer, _expand(tokenizer, text), *args, **kwargs)
    key = ("tokenize", text, tuple(sorted(kwargs.items())), len(tokenizer))
    if key not in memory:
        if len(memory) >= CALL_MEMORY:
            memory.pop(next(iter(memory)))
        memory[key] = cls.tokenize(tokenizer, _expand(tokenizer, text), **kwargs)
    return list(memory[key])


def _expand(tokenizer: Any, text: Any) -> Any:
    """Multi-vector words expanded; for a byte-level tokenizer the space before each placeholder joined to it
    (:func:`~dti.text.words.expand_prompt`)."""
    words = tokenizer.__dict__.get("_dti_words") or {}
    join = bool(tokenizer.__dict__.get("_dti_byte_level"))
    if isinstance(text, str):
        return expand_prompt(text, words, join)
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return [expand_prompt(t, words, join) for t in text]
    return text


def _forget_calls(tokenizer: Any) -> None:
    tokenizer.__dict__["_dti_calls"] = {}
    tokenizer.__dict__["_dti_checked"] = {}


def _expanding_class(cls: type) -> type:
    """``cls`` with multi-vector expansion in front of ``__call__``, ``tokenize`` and ``encode``."""
    if cls not in _EXPANDING:

        def __call__(self, text=None, *args, **kwargs):
            return _remembered_call(cls, self, text, args, kwargs)

        def tokenize(self, text, *args, **kwargs):
            return _remembered_tokens(cls, self, text, args, kwargs)

        def encode(self, text, *args, **kwargs):
            return cls.encode(self, _expand(self, text), *args, **kwargs)

        members = {
            "__call__": __call__,
            "tokenize": tokenize,
            "encode": encode,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        _EXPANDING[cls] = type(cls.__name__, (cls,), members)
    return _EXPANDING[cls]


def _add_tokens(tokenizer: Any, tokens: list[str], sentencepiece: bool) -> list[int]:
    if sentencepiece:
        from tokenizers import AddedToken

        # lstrip: the token absorbs the space before it, so "a <tok>" tokenizes like "a dog" (no lone "▁")
        added = tokenizer.add_tokens([AddedToken(t, lstrip=True, normalized=False) for t in tokens])
    else:
        added = tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if added != len(tokens) or ids != list(range(ids[0], ids[0] + len(tokens))):
        raise DTIError(f"could not add {tokens} as new tokens; choose another --token")
    return ids


@dataclass
class _EncoderState:
    """What dti changed on one (tokenizer, encoder) pair, to put back when the last block goes."""

    tokenizer_state: str
    tokenizer_class: type
    undo_pooling: Callable[[], None]
    sentencepiece: bool
    byte_level: bool = False
    #: every (parent, attribute, module) that held an embedding over the table's weight (T5's ``encoder.embed_tokens``
    #: beside ``shared``): ``set_input_embeddings`` of the table alone would leave them one object
    holders: list[tuple[nn.Module, str, nn.Module]] = field(default_factory=list)


def _embedding_holders(text_encoder: nn.Module, base: nn.Embedding) -> list[tuple[nn.Module, str, nn.Module]]:
    """Where ``text_encoder`` keeps an embedding over ``base``'s weight, each as (parent, attribute, module)."""
    out = []
    for parent in text_encoder.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Embedding) and child.weight is base.weight:
                out.append((parent, name, child))
    return out


def _rebuild_tokens(tokenizer: Any, ext: ExtendedEmbedding, state: _EncoderState) -> None:
    """Tokenizer = its original vocabulary plus the tokens of the blocks still attached, in order."""
    from tokenizers import Tokenizer

    tokenizer._tokenizer = Tokenizer.from_str(state.tokenizer_state)
    tokenizer.__dict__["_dti_words"] = {}
    _forget_calls(tokenizer)
    for block in ext.blocks.values():
        ids = _add_tokens(tokenizer, block.tokens, state.sentencepiece)
        block.first_id = ids[0]
        tokenizer.__dict__["_dti_words"][block.token] = len(block.tokens)


@dataclass
class Attachment:
    """One concept attached to one encoder; :meth:`detach` takes it off (and, if it was the
    last, puts tokenizer, embedding and pooling back exactly as they were)."""

    tokenizer: Any
    text_encoder: nn.Module
    token: str
    tokens: list[str]
    rows: TrainableRows

    @property
    def token_ids(self) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(self.tokens)

    def detach(self) -> None:
        detach(self.tokenizer, self.text_encoder, self.token)


def extended(text_encoder: nn.Module) -> ExtendedEmbedding | None:
    emb = text_encoder.get_input_embeddings()
    return emb if isinstance(emb, ExtendedEmbedding) else None


def attached_tokens(text_encoder: nn.Module) -> list[str]:
    """Tokens of the concepts attached to ``text_encoder``, in attach order."""
    ext = extended(text_encoder)
    return list(ext.blocks) if ext is not None else []


def attach(
    tokenizer: Any,
    text_encoder: nn.Module,
    token: str,
    rows: TrainableRows,
    *,
    pooling: str = "eos",
    sentencepiece: bool = False,
    byte_level: bool = False,
) -> Attachment:
    """Add ``token`` (one part per row of ``rows``) to ``tokenizer`` and route its ids to ``rows``.
    ``sentencepiece``: the token absorbs the white space before it (its ``lstrip``); ``byte_level``: the one
    space before it is taken out of every text the tokenizer is given (see :class:`~dti.models.base.EncoderRole`)."""
    if not hasattr(tokenizer, "_tokenizer"):
        raise DTIError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; dti needs one")
    ext = extended(text_encoder)
    if ext is not None and token in ext.blocks:
        raise DTIError(f"{token} is already attached; unload it first or pass another token")
    tokens = placeholder_tokens(token, int(rows.param.shape[0]))
    vocab = tokenizer.get_vocab()
    clash = [t for t in tokens if t in vocab]
    if clash:
        raise DTIError(f"{clash[0]} is already a token of this tokenizer (another concept?); unload it or pass another token")
    first = ext is None
    if first:
        base = text_encoder.get_input_embeddings()
        assert isinstance(base, nn.Embedding), f"unexpected input embedding {type(base).__name__}"
        state = _EncoderState(tokenizer._tokenizer.to_str(), type(tokenizer), lambda: None, sentencepiece, byte_level)
        state.holders = _embedding_holders(text_encoder, base)
    else:
        state = ext.__dict__["_dti_state"]
    try:
        ids = _add_tokens(tokenizer, tokens, state.sentencepiece)
    except DTIError:
        if first:
            from tokenizers import Tokenizer

            tokenizer._tokenizer = Tokenizer.from_str(state.tokenizer_state)
        raise
    if first:
        ext = ExtendedEmbedding(base)
        ext.__dict__["_dti_state"] = state
        text_encoder.set_input_embeddings(ext)
        tokenizer.__class__ = _expanding_class(state.tokenizer_class)
        tokenizer.__dict__["_dti_words"] = {}
        if state.byte_level:
            tokenizer.__dict__["_dti_byte_level"] = True
        if pooling == "eos":
            state.undo_pooling = pool_at_end_token(text_encoder, tokenizer.eos_token_id)
    assert ext is not None
    ext.blocks[token] = Block(token, tokens, ids[0], rows)
    tokenizer.__dict__["_dti_words"][token] = len(tokens)
    _forget_calls(tokenizer)
    return Attachment(tokenizer, text_encoder, token, tokens, rows)


def detach(tokenizer: Any, text_encoder: nn.Module, token: str) -> None:
    """Take ``token`` off the pair; the last one out restores everything as it was."""
    ext = extended(text_encoder)
    if ext is None or token not in ext.blocks:
        raise DTIError(f"{token} is not attached; attached: {', '.join(attached_tokens(text_encoder)) or 'none'}")
    state: _EncoderState = ext.__dict__["_dti_state"]
    del ext.blocks[token]
    if ext.blocks:
        _rebuild_tokens(tokenizer, ext, state)
        return
    from tokenizers import Tokenizer

    text_encoder.set_input_embeddings(ext.base)
    for parent, name, module in state.holders:
        setattr(parent, name, module)
    tokenizer._tokenizer = Tokenizer.from_str(state.tokenizer_state)
    tokenizer.__class__ = state.tokenizer_class
    tokenizer.__dict__.pop("_dti_words", None)
    tokenizer.__dict__.pop("_dti_byte_level", None)
    tokenizer.__dict__.pop("_dti_calls", None)
    tokenizer.__dict__.pop("_dti_checked", None)
    state.undo_pooling()
