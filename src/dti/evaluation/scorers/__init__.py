"""The metrics a report scores with, one module each, registered by name: ``dinov2`` and ``siglip``
(the paper's image and text metrics), ``clip`` and ``dino`` (DreamBooth's), ``mini`` (dti-mini's judge).

Every scorer follows :class:`~dti.evaluation.protocol.Scorer` and names the weights it ran in its
:class:`~dti.evaluation.protocol.ScorerInfo`. A new metric is one module here plus its name in
:data:`MODULES`; the scorers suite (tests/evaluation) then runs over it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch

from dti.core.errors import DTIError
from dti.evaluation.protocol import Scorer
from dti.evaluation.scorers.registry import SCORERS, names, register

#: The scorer modules, in the order help and reports list them.
MODULES = ("dinov2", "siglip", "clip", "dino", "mini")
for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")

METRICS = SCORERS  # the metric names a report may use
_names = names

__all__ = ["METRICS", "MODULES", "SCORERS", "load_scorer", "parse_metric_models", "register"]


def load_scorer(name: str, source: str | os.PathLike | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Scorer:
    """The scorer ``name`` (a key of :data:`METRICS`) from ``source`` (a folder or hub id; ``None``: its default)."""
    if name not in METRICS:
        raise DTIError(f"unknown metric {name!r}; metrics: {_names()}")
    if name == "mini":
        return SCORERS[name](source)
    return METRICS[name](source, device=device, dtype=dtype)


def parse_metric_models(items: Sequence[str]) -> dict[str, str]:
    """``--metric-model NAME=PATH`` values -> ``{name: path}``; bad syntax, an unknown name or a name given twice is one line."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise DTIError(f"--metric-model {item!r} is not NAME=PATH (e.g. dinov2=/models/dinov2-base); names: {_names()}")
        if name not in METRICS:
            raise DTIError(f"--metric-model {item!r}: unknown metric {name!r}; names: {_names()}")
        if name in out:
            raise DTIError(f"--metric-model {name} given twice ({out[name]} and {path}); give each metric once")
        out[name] = path
    return out
