"""Attach concepts to a pipeline for generation, and take them off again.

Loading goes through the same attach path as training (:mod:`dti.text.attach`) for every family, so
a concept conditions the pipeline exactly as it did while it was learned: several concepts at
once, each removable alone, nothing resized or edited in the model. Plain diffusers users can
still load dti's diffusers files with ``pipe.load_textual_inversion`` (SD, SDXL, FLUX).
"""

from __future__ import annotations

import os
import re
from typing import Any

from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats import read
from dti.core.errors import DTIError
from dti.core.rows import TrainableRows
from dti.models import EncoderSlot, adapter_for
from dti.text.attach import attached_tokens, detach
from dti.text.vocab import MAGNITUDES
from dti.text.words import check_token_text
from dti.use.inspection import vocabulary_statistics
from dti.use.lora import attach as attach_lora
from dti.use.lora import detach_from as detach_lora
from dti.use.lora import lora_file


def _as_concept(source: str | os.PathLike | Concept, token: str | None) -> Concept:
    """The concept to attach, with a usable token and usable vectors (a file is checked as it is read)."""
    if token is not None:
        check_token_text(token, "token")
    if not isinstance(source, (str, os.PathLike, Concept)):
        raise DTIError(f"dti.load takes a concept file, a run folder or a Concept, not a {type(source).__name__}")
    if isinstance(source, Concept):
        concept = source.renamed(token) if token else source
        concept.check()
    else:
        concept = read(source, token)
    if not token:
        try:
            check_token_text(concept.token, "token")
        except DTIError:
            raise DTIError(
                f"concept {concept.token!r} is named with spaces or is unnamed, so no prompt can use it; pass token='<my-word>'"
            ) from None
    return concept


def _describe(concept: Concept) -> str:
    return ", ".join(f"{n} ({e.kind or f'width {e.width}'})" for n, e in concept.encoders.items())


def match_encoders(concept: Concept, pipe: Any) -> dict[str, EncoderVectors]:
    """The concept's vectors for each of the pipeline's text encoders, or a one-line refusal.

    An encoder is matched by component name, else by kind (a T5 vector trained on FLUX's
    ``text_encoder_2`` fits SD3's ``text_encoder_3``), else, for a single-vector-set file that
    does not say its encoder, to a single-encoder pipeline. Widths must agree.
    """
    slots = adapter_for(pipe).encoders
    matched: dict[str, EncoderVectors] = {}
    used: set[str] = set()
    for slot in slots:
        enc = concept.encoders.get(slot.name)
        if enc is not None and enc.kind not in (None, slot.kind):
            enc = None
        name = slot.name if enc is not None else None
        if enc is None:
            same_kind = [n for n, e in concept.encoders.items() if e.kind == slot.kind and n not in used]
            if len(same_kind) == 1:
                name, enc = same_kind[0], concept.encoders[same_kind[0]]
        if enc is None and len(slots) == 1 and len(concept.encoders) == 1:
            name, enc = next(iter(concept.encoders.items()))
            if enc.kind not in (None, slot.kind):
                enc = None
        if enc is None or name is None:
            raise DTIError(
                f"concept {concept.token} has vectors for {_describe(concept)}, but {type(pipe).__name__} needs "
                f"{', '.join(f'{s.name} ({s.kind})' for s in slots)}; use a concept trained for this model family"
            )
        width = slot.text_encoder.get_input_embeddings().weight.shape[-1]
        if enc.width != width:
            raise DTIError(
                f"concept {concept.token} has width {enc.width} for {slot.name}, the model's is {width}; "
                "it was trained for another base model"
            )
        matched[slot.name] = enc
        used.add(name)
    extra = sorted(set(concept.encoders) - used)
    if extra:
        raise DTIError(
            f"concept {concept.token} has vectors for {_describe(concept)}, but {type(pipe).__name__} has no place for {', '.join(extra)}; "
            "use a concept trained for this model family"
        )
    return matched


def fixed_rows(vectors: Any) -> TrainableRows:
    rows = TrainableRows(vectors, "free")
    rows.param.requires_grad_(False)
    return rows


def lora_name(token: str) -> str:
    """The adapter name of a concept's LoRA in the pipeline's layers (PEFT names allow no dots)."""
    return "dti_" + re.sub(r"\W", "_", token)


def load(
    pipe: Any,
    source: str | os.PathLike | Concept,
    token: str | None = None,
    rescale: str | None = None,
    lora_scale: float = 1.0,
) -> Concept:
    """Attach a concept (file/folder in any format, or a Concept) to every text encoder of ``pipe``,
    and the LoRA learned with it (a run folder of ``--lora``) at strength ``lora_scale``.

    ``token`` renames it; ``rescale="mean"`` sets every vector to the vocabulary's mean norm
    (TI-rescaled). Returns the concept as attached. Several concepts can be loaded at once.
    """
    concept = _as_concept(source, token)
    matched = match_encoders(concept, pipe)
    adapter = adapter_for(pipe)
    if rescale:
        if rescale not in MAGNITUDES:
            raise DTIError(f"{{rescale}} {rescale!r} is not valid; use one of {', '.join(MAGNITUDES)}", settings=["rescale"])
        stats = vocabulary_statistics(concept, pipe, rescale)
        concept = concept.rescaled({name: s[rescale] for name, s in stats.items()})
        matched = match_encoders(concept, pipe)
    slots = adapter.encoders
    for slot in slots:
        if concept.token in attached_tokens(slot.text_encoder):
            raise DTIError(
                f"{concept.token} is already loaded (the same concept given twice?); unload it first, or load this one under "
                "another name with {token}",
                settings=["token"],
            )
        if concept.token in slot.tokenizer.get_vocab():
            raise DTIError(
                f"{concept.token} is a word of {slot.name}'s vocabulary, so loading it would change what that word means in every "
                f"prompt; load it under a made-up name with {{token}}, e.g. '<my-{concept.token.strip('<>')}>'",
                settings=["token"],
            )
    pooling = str(concept.meta.get("pooling") or "eos")
    done: list[EncoderSlot] = []
    try:
        for slot in slots:
            slot.attach(concept.token, fixed_rows(matched[slot.name].vectors), pooling)
            done.append(slot)
    except BaseException:
        for slot in done:
            detach(slot.tokenizer, slot.text_encoder, concept.token)
        raise
    lora = lora_file(source, concept)
    if lora is not None:
        try:
            attach_lora(pipe, lora, lora_name(concept.token), lora_scale)
        except BaseException:
            for slot in done:
                detach(slot.tokenizer, slot.text_encoder, concept.token)
            raise
    adapter.apply_options(concept.meta.get("family_options") or {})
    return concept


def loaded_tokens(pipe: Any) -> list[str]:
    """Tokens of the concepts attached to the pipeline, in load order."""
    return attached_tokens(adapter_for(pipe).encoders[0].text_encoder)


def unload(pipe: Any, token: str) -> None:
    """Remove one concept's token(s) from every text encoder of ``pipe``; the others stay."""
    slots = adapter_for(pipe).encoders
    if token not in loaded_tokens(pipe):
        raise DTIError(f"{token} is not loaded; loaded: {', '.join(loaded_tokens(pipe)) or 'none'}")
    for slot in slots:
        detach(slot.tokenizer, slot.text_encoder, token)
    detach_lora(pipe, lora_name(token))
    if not loaded_tokens(pipe):  # the last concept out takes its family choices with it
        adapter = adapter_for(pipe)
        adapter.options.clear()
        adapter.options.update(adapter.default_options)
