"""Attach concepts to a pipeline for generation, and take them off again.

Loading goes through diffusers' own ``load_textual_inversion`` (once per text encoder), so a
concept behaves exactly as it does for a diffusers user, and other diffusers-loaded embeddings
can sit beside it. On top, dti makes CLIP pool at the end token (see
:func:`dti.tokens.pool_at_end_token`), which is how concepts are trained.
"""

from __future__ import annotations

import os
from typing import Any

from dti.concept import Concept
from dti.errors import DTIError
from dti.formats import encoder_kind, read
from dti.inspection import vocabulary_statistics
from dti.models import adapter_for
from dti.tokens import pool_at_end_token


def _as_concept(source: str | os.PathLike | Concept, token: str | None) -> Concept:
    if isinstance(source, Concept):
        return source.renamed(token) if token else source
    return read(source, token)


def match_encoders(concept: Concept, pipe: Any) -> None:
    """Refuse a concept whose encoders or widths do not fit the pipeline's text encoders."""
    slots = {slot.name: slot for slot in adapter_for(pipe).encoders}
    missing = sorted(set(slots) - set(concept.encoders))
    extra = sorted(set(concept.encoders) - set(slots))
    if missing or extra:
        have = ", ".join(f"{n} ({encoder_kind(e.width)})" for n, e in concept.encoders.items())
        raise DTIError(
            f"concept {concept.token} has vectors for {have}, but {type(pipe).__name__} needs {', '.join(sorted(slots))}; "
            "use a concept trained for this model family"
        )
    for name, slot in slots.items():
        width = slot.text_encoder.get_input_embeddings().weight.shape[-1]
        if concept.encoders[name].width != width:
            raise DTIError(
                f"concept {concept.token} has width {concept.encoders[name].width} for {name}, the model's is {width}; "
                "it was trained for another base model"
            )


def _added(tokenizer: Any) -> list[str]:
    special = set(tokenizer.all_special_tokens)
    return [t for t in tokenizer.added_tokens_encoder if t not in special]


def load(pipe: Any, source: str | os.PathLike | Concept, token: str | None = None, rescale: str | None = None) -> Concept:
    """Attach a concept (file/folder in any format, or a Concept) to every text encoder of ``pipe``.

    ``token`` renames it; ``rescale="mean"`` sets every vector to the vocabulary's mean norm
    (TI-rescaled). Returns the concept as attached.
    """
    concept = _as_concept(source, token)
    match_encoders(concept, pipe)
    if rescale:
        if rescale not in ("mean", "min", "max"):
            raise DTIError(f"rescale={rescale!r} is not valid; use mean, min or max")
        stats = vocabulary_statistics(concept, pipe, rescale)
        concept = concept.rescaled({name: s[rescale] for name, s in stats.items()})
    slots = adapter_for(pipe).encoders
    for slot in slots:
        if concept.token in slot.tokenizer.get_vocab():
            raise DTIError(f"{concept.token} is already loaded in {slot.name}; unload it first or pass another token")
    import transformers.utils.logging as tlog

    verbosity = tlog.get_verbosity()
    tlog.set_verbosity_error()  # resize_token_embeddings narrates its mean-resizing at every load
    try:
        for slot in slots:
            vectors = concept.encoders[slot.name].vectors
            dtype = slot.text_encoder.get_input_embeddings().weight.dtype
            pipe.load_textual_inversion(vectors.to(dtype), token=concept.token, tokenizer=slot.tokenizer, text_encoder=slot.text_encoder)
            pool_at_end_token(slot.text_encoder, slot.tokenizer.eos_token_id)
    finally:
        tlog.set_verbosity(verbosity)
    return concept


def loaded_tokens(pipe: Any) -> list[str]:
    """Tokens added to the pipeline's (first) tokenizer, multi-vector parts folded."""
    tokenizer = adapter_for(pipe).encoders[0].tokenizer
    added = _added(tokenizer)
    return [t for t in added if not any(t.startswith(f"{base}_") and t[len(base) + 1 :].isdigit() for base in added if base != t)]


def unload(pipe: Any, token: str) -> None:
    """Remove a concept's token(s) from every text encoder of ``pipe``."""
    for slot in adapter_for(pipe).encoders:
        added = _added(slot.tokenizer)
        parts = [t for t in added if t == token or (t.startswith(f"{token}_") and t[len(token) + 1 :].isdigit())]
        if not parts:
            raise DTIError(f"{token} is not loaded in {slot.name}; loaded: {', '.join(loaded_tokens(pipe)) or 'none'}")
        pipe.unload_textual_inversion(tokens=parts, tokenizer=slot.tokenizer, text_encoder=slot.text_encoder)
