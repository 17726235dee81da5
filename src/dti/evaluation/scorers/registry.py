"""The scorers, by metric name: each scorer module registers its class here (``@register("dinov2")``),
and :mod:`dti.evaluation.scorers` loads one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: metric name -> scorer class, filled as the scorer modules import.
SCORERS: dict[str, Any] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: the scorer class answers for metric ``name``."""

    def wrap(cls: type) -> type:
        if name in SCORERS and SCORERS[name] is not cls:
            raise RuntimeError(f"two scorers registered as {name}: {SCORERS[name].__name__} and {cls.__name__}")
        SCORERS[name] = cls
        return cls

    return wrap


def names() -> str:
    return ", ".join(SCORERS)
