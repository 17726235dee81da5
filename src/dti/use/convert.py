"""``dti.convert`` and ``dti.rescale``: a concept from any format into another, its norms optionally
set to a vocabulary statistic (which repairs a plain-TI file's inflated norm).

Every output is planned and checked before a model or anything else loads; a single file named
after the token is the trigger word A1111 users type, so such a name must not be an ordinary word
of the model's tokenizers (checked when they are at hand).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dti.concepts import formats
from dti.concepts.concept import Concept
from dti.concepts.formats.single import KeyedFile
from dti.core.errors import DTIError
from dti.models import model_path
from dti.text.vocab import MAGNITUDES
from dti.text.words import check_token_text, check_trigger_word, file_stem
from dti.use.inspection import vocabulary_statistics
from dti.use.loading import match_encoders
from dti.use.pipelines import pipeline_of

#: The formats whose single file is named after the token (the trigger word).
SINGLE_FILE_FORMATS = KeyedFile.writes


def default_output(concept: Concept, to: str) -> Path:
    """Where a conversion goes when no output is named: after the token, in the current folder."""
    stem = file_stem(concept.token)
    return Path({"dti": f"{stem}.dti.safetensors", "diffusers": f"{stem}-diffusers"}.get(to, f"{stem}.safetensors"))


def convert(
    source: str | os.PathLike | Concept,
    to: str = "dti",
    out: str | os.PathLike | None = None,
    *,
    token: str | None = None,
    rescale: str | None = None,
    model: Any | None = None,
    precision: str = "auto",
    device: str = "auto",
    overwrite: bool = False,
) -> list[Path]:
    """Write ``source`` (a file or folder in any format dti reads, or a Concept) in format ``to``;
    returns the files written. ``token`` renames it; ``rescale`` (a vocabulary statistic) sets every
    vector's norm to it, measured on ``model`` (a loaded pipeline or a name) or, without one, taken
    from the concept's metadata or the published reference."""
    if token is not None:
        check_token_text(token)
    if to not in formats.FORMATS:
        raise DTIError(f"{{to}} {to!r} is not a known format; use one of {', '.join(formats.FORMATS)}", settings=["to"])
    if rescale is not None and rescale not in MAGNITUDES:
        raise DTIError(f"{{rescale}} {rescale!r} is not valid; use one of {', '.join(MAGNITUDES)}", settings=["rescale"])
    concept = source.renamed(token) if isinstance(source, Concept) and token else source
    concept = concept if isinstance(concept, Concept) else formats.read(concept, token)
    target = Path(out) if out is not None else default_output(concept, to)
    paths = formats.planned_paths(concept, to, target)  # every output is checked before a model or anything else loads
    formats.check_destination(paths, overwrite, formats.stale_paths(to, paths))
    name = model_path(model) if isinstance(model, (str, os.PathLike)) else None
    if to in SINGLE_FILE_FORMATS and (out is None or paths[0] != target):  # named after the token: what A1111 users type
        check_trigger_word(concept.token, formats.trigger_tokenizers(concept, name))
    if rescale:
        pipe = None
        if model is not None:
            pipe = pipeline_of(model, None, precision, device)[0]
            match_encoders(concept, pipe)  # each encoder's width against the model's, in one line
        stats = vocabulary_statistics(concept, pipe, rescale)
        concept = concept.rescaled({enc: s[rescale] for enc, s in stats.items()})
    return formats.write(concept, to, target, overwrite=overwrite)


def rescale(
    source: str | os.PathLike | Concept,
    out: str | os.PathLike | None = None,
    *,
    to: str = "dti",
    statistic: str = "mean",
    token: str | None = None,
    model: Any | None = None,
    precision: str = "auto",
    device: str = "auto",
    overwrite: bool = False,
) -> list[Path]:
    """Repair a plain-TI file: every vector set to the vocabulary's ``statistic`` norm (TI-rescaled),
    written in format ``to``. The same as ``convert(..., rescale=statistic)``."""
    return convert(source, to, out, token=token, rescale=statistic, model=model, precision=precision, device=device, overwrite=overwrite)
