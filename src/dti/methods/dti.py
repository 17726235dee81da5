"""DTI (METHOD.md): each row is ``magnitude * direction``, the direction on the unit sphere trained by
Riemannian SGD with a von Mises-Fisher prior toward the initializer's direction, the magnitude fixed
at a vocabulary statistic (the mean by default).

With ``optimizer="adamw"`` it is the paper's ablation "AdamW at fixed norm": the rows are
``magnitude * normalize(raw)`` and the prior enters the loss as ``-kappa * mu . v``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from dti.core import sphere
from dti.core.rows import TrainableRows
from dti.methods.base import EncoderStart, Method, register


@register
class DTI(Method):
    name = "dti"
    about = "DTI: the direction on the sphere at a fixed in-distribution norm (the vocabulary's mean), Riemannian SGD, vMF prior"
    optimizers: ClassVar[tuple[str, ...]] = ("rsgd", "adamw")
    fixed_norm = True
    default_magnitude = "mean"
    reads: ClassVar[tuple[str, ...]] = ("kappa", "magnitude")

    def default_kappa(self, family_kappa: float) -> float:
        return family_kappa

    def rows(self, start: EncoderStart, config: Any, magnitude: float | None) -> TrainableRows:
        return TrainableRows(start.raw, "sphere" if config.optimizer == "rsgd" else "normalized", magnitude)

    def regularizer(
        self, config: Any, rows: Mapping[str, TrainableRows], priors: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        if config.optimizer != "adamw" or not config.kappa > 0:  # RiemannianSGD applies the prior itself
            return None
        terms = [-config.kappa * (priors[name] * sphere.normalize(r.param)).sum() for name, r in rows.items()]
        return torch.stack(terms).sum() if terms else None
