"""Ways of learning a word: one module per method, each registered by name (:mod:`dti.methods.base`).

- ``dti``: the direction on the sphere at a fixed norm, Riemannian SGD, vMF prior (the paper).
- ``ti``: Textual Inversion, a free vector with AdamW.
- ``crossinit``: a free vector from the class word's contextual embedding, AdamW.
- ``ti-renorm``: TI rescaled to the vocabulary's median norm after every step (OneTrainer's option).

:mod:`dti.methods.ablations` adds the paper's ablations and TI-rescaled as variants. A new method is
one module here plus its name in :data:`MODULES`; the methods suite (tests/methods) then runs over it.
This module also answers, for a run's settings, what its method refuses (:func:`check`) and which
settings it gave that nothing reads (:func:`ignored`).
"""

from __future__ import annotations

import importlib
from typing import Any

from dti.core.errors import DTIError, Line
from dti.methods.base import METHODS, VARIANTS, EncoderStart, Method, Variant, register, register_variant
from dti.methods.optimizers import BASE_LR, OPTIMIZERS

#: The method modules, in the order help pages and sweeps list them.
MODULES = ("dti", "ti", "crossinit", "ti_renorm", "ablations")
for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "BASE_LR",
    "METHODS",
    "MODULES",
    "OPTIMIZERS",
    "VARIANTS",
    "EncoderStart",
    "Method",
    "Variant",
    "check",
    "get",
    "ignored",
    "register",
    "register_variant",
]

#: The method settings, each read by a method or an optimizer (a given one nothing reads is a warning).
METHOD_SETTINGS = ("kappa", "beta", "eps", "adam_betas", "weight_decay", "crossinit_lambda")


def get(name: str) -> Method:
    """The method registered as ``name``, or a one-line refusal naming the known ones."""
    if name not in METHODS:
        raise DTIError(f"{{method}} {name!r} is not known; use one of {', '.join(METHODS)}", settings=["method"])
    return METHODS[name]


def check(config: Any) -> None:
    """Refuse settings the run's method cannot take: an optimizer it does not train with, a fixed norm
    for a free vector."""
    method = get(config.method)
    if config.optimizer is not None and config.optimizer not in method.optimizers:
        takes = " or ".join(method.optimizers)
        raise DTIError(
            f"{{optimizer}} {config.optimizer} does not go with {{method}} {method.name}, which trains with {takes}"
            + ("; rsgd trains directions on the sphere and needs {method} dti" if config.optimizer == "rsgd" else ""),
            settings=["optimizer", "method"],
        )
    if config.magnitude is not None and not method.fixed_norm:
        fixed = ", ".join(m.name for m in METHODS.values() if m.fixed_norm)
        raise DTIError(
            f"{{magnitude}} fixes the norm of a fixed-norm method ({fixed}); {{method}} {method.name} trains a free vector",
            settings=["magnitude", "method"],
        )


def ignored(config: Any, defaults: Any) -> list[Line]:
    """One line per method setting the run gave (it differs from ``defaults``, a default config) that
    neither its method nor its optimizer reads, e.g. ``kappa`` with ``ti``: a warning, not a refusal,
    since a settings file shared across methods is a normal thing to have. Each is a
    :class:`~dti.core.errors.Line`: ``str()`` names the settings as the caller speaks."""
    method = get(config.method)
    optimizer = config.optimizer or method.optimizers[0]
    read = set(method.reads) | set(OPTIMIZERS.get(optimizer, ()))
    if optimizer != "rsgd" and method.name == "dti":
        read.discard("beta")
        read.discard("eps")
    out = []
    for name in METHOD_SETTINGS:
        value, default = getattr(config, name), getattr(defaults, name)
        if name in read or value is None or value == default or (isinstance(value, (list, tuple)) and tuple(value) == tuple(default or ())):
            continue
        out.append(Line("{" + name + "} " + _why(name, method, optimizer), settings=[name, "method", "optimizer"]))
    return out


def _why(name: str, method: Method, optimizer: str) -> str:
    if name == "kappa":
        return f"has no effect with {{method}} {method.name} (it is DTI's von Mises-Fisher prior)"
    if name in ("beta", "eps"):
        return f"has no effect without RiemannianSGD ({{optimizer}} rsgd with {{method}} dti); {method.name} trains with {optimizer}"
    if name in OPTIMIZERS["adamw"]:
        return f"is AdamW's; RiemannianSGD ({{method}} {method.name}) ignores it (or pass {{optimizer}} adamw)"
    return f"has no effect with {{method}} {method.name}"
