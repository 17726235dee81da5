"""The method contract: what a way of learning a word declares, behind one class.

A method is one module in :mod:`dti.methods` that defines a :class:`Method` subclass and registers
it with :func:`register`. It declares the rows it trains and how they start (:meth:`Method.rows`),
the optimizers it accepts, the settings it reads, its defaults, and any term it adds to the loss
(:meth:`Method.regularizer`). The trainer asks the method and never names one itself; the settings
a run gives that its method and optimizer do not read become one warning each
(:func:`dti.methods.ignored`).

A :class:`Variant` is a named column of a comparison: a method with some settings fixed (the
paper's ablations), or another variant's concept used differently when loaded (TI-rescaled).
`dti sweep --methods` takes variant names; every method is a variant of itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from dti.core.rows import TrainableRows
from dti.text.vocab import VocabStats, resolve_magnitude

#: name -> the registered method (one instance each), filled by :func:`register` as method modules import.
METHODS: dict[str, Method] = {}
#: name -> the variants a comparison may name, filled by :func:`register_variant`.
VARIANTS: dict[str, Variant] = {}


@dataclass
class EncoderStart:
    """What a method starts one text encoder's rows from."""

    name: str
    raw: torch.Tensor  # the initializer's vocabulary rows [n_vectors, width], float32 on the host
    stats: VocabStats  # the vocabulary's row norms
    contextual: Callable[[], torch.Tensor]  # the initializer's contextual embedding (CrossInit), computed when asked


class Method:
    """One way of learning a word (see the module doc). Subclasses set the class attributes and
    override what differs; settings reach them as the run's resolved config."""

    name: ClassVar[str]
    about: ClassVar[str]  # one line: what it is, for help pages and reports
    #: Optimizers the method trains with; the first is its default.
    optimizers: ClassVar[tuple[str, ...]] = ("adamw",)
    #: Whether the rows keep a fixed norm (the ``magnitude`` setting), recorded in the concept.
    fixed_norm: ClassVar[bool] = False
    default_magnitude: ClassVar[str | None] = None
    #: Settings of its own it reads (besides its optimizer's and the schedule): a given one it does
    #: not read is named in a warning.
    reads: ClassVar[tuple[str, ...]] = ()

    def default_kappa(self, family_kappa: float) -> float:
        """The vMF prior strength when the run gives none (only DTI has a prior)."""
        return 0.0

    def magnitude(self, config: Any, stats: VocabStats) -> float | None:
        """The fixed norm of this encoder's rows, or None for a free vector."""
        if not self.fixed_norm:
            return None
        return resolve_magnitude(config.magnitude if config.magnitude is not None else self.default_magnitude, stats)

    def rows(self, start: EncoderStart, config: Any, magnitude: float | None) -> TrainableRows:
        """The rows this encoder trains, as they start."""
        return TrainableRows(start.raw, "free")

    def optimizer(
        self, config: Any, rows: Mapping[str, TrainableRows], priors: Mapping[str, torch.Tensor], magnitudes: Mapping[str, float | None]
    ) -> torch.optim.Optimizer:
        """The optimizer over the trained encoders' rows (``priors``: their initializer directions, on the device)."""
        from dti.methods.optimizers import build

        return build(config, rows, priors, magnitudes)

    def regularizer(
        self, config: Any, rows: Mapping[str, TrainableRows], priors: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """A term added to the loss that the optimizer does not apply itself (``targets``: the rows as
        they started, on the device), or None."""
        return None


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: the method becomes known by its ``name``, and a variant of itself."""
    if cls.name in METHODS and type(METHODS[cls.name]) is not cls:
        raise RuntimeError(f"two methods registered as {cls.name}: {type(METHODS[cls.name]).__name__} and {cls.__name__}")
    METHODS[cls.name] = cls()
    register_variant(Variant(cls.name, {"method": cls.name}, cls.about))
    return cls


@dataclass(frozen=True)
class Variant:
    """A column of a comparison: the `dti train` settings that make it, or (``derived_from``) another
    variant's concept used differently when loaded (``rescale``), with no training of its own."""

    name: str
    settings: Mapping[str, Any]
    about: str
    derived_from: str | None = None
    rescale: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def register_variant(variant: Variant) -> Variant:
    if variant.name in VARIANTS and VARIANTS[variant.name] != variant:
        raise RuntimeError(f"two variants named {variant.name}")
    VARIANTS[variant.name] = variant
    return variant
