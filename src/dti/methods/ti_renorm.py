"""ti-renorm: OneTrainer's "preserve embedding norm", the norm control users have today.

A free vector started at the initializer's row and trained by AdamW, like TI; after every step each
row is set back to a fixed norm, the vocabulary's median by default (OneTrainer rescales to the
median norm of the embedding table). Unlike DTI the optimizer never sees the sphere: AdamW moves the
vector in the full space and the rescale projects it back, so the step's size and direction depend
on the coordinates' scale, and there is no prior."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from dti.core.rows import TrainableRows
from dti.methods.base import Method, register
from dti.methods.optimizers import build


@register
class TIRenorm(Method):
    name = "ti-renorm"
    about = "TI with OneTrainer's norm rescale: AdamW, then each row set back to the vocabulary's median norm after every step"
    fixed_norm = True
    default_magnitude = "median"
    reads: ClassVar[tuple[str, ...]] = ("magnitude",)

    def optimizer(
        self, config: Any, rows: Mapping[str, TrainableRows], priors: Mapping[str, torch.Tensor], magnitudes: Mapping[str, float | None]
    ) -> torch.optim.Optimizer:
        return build(config, rows, priors, magnitudes, renorm=True)
