"""The pipeline a verb runs on: loaded by name, or the one the caller already holds.

A concept records the base model it was trained on; when a verb is given no model it loads that
one and, if it cannot, says that the name came from the concept.
"""

from __future__ import annotations

import os
from typing import Any

from dti.core.devices import resolve_device, resolve_dtype
from dti.core.errors import DTIError
from dti.models import load_adapter


def load_pipeline(
    model: str | os.PathLike | None, recorded: str | None = None, precision: str = "auto", device: str = "auto"
) -> tuple[Any, str]:
    """(pipeline, its name) for ``model``, or else for ``recorded`` (the base model a concept names)."""
    name = str(model) if model else recorded
    if not name:
        raise DTIError("{model} is missing and the concept does not name its base model; pass {model}", settings=["model"])
    dev = resolve_device(device)
    try:
        return load_adapter(name, resolve_dtype(precision, dev), dev, quiet=True).pipe, name
    except DTIError as exc:
        if model:
            raise
        raise DTIError(
            f"the concept was trained on {name!r}, which could not be loaded ({exc}); pass {{model}} to choose the model",
            settings=["model"],
        ) from None


def pipeline_of(model: Any, recorded: str | None = None, precision: str = "auto", device: str = "auto") -> tuple[Any, str]:
    """A loaded pipeline as given (with its name), or :func:`load_pipeline` of a model name."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        return model, str(name)
    return load_pipeline(model, recorded, precision, device)
