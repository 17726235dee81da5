"""CrossInit (Pang et al. 2024) as the paper compares it: a free vector started at the class word's
contextual embedding (the encoder's last hidden state at the initializer), trained by AdamW with an
MSE pull toward that start (``crossinit_lambda``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from dti.core.rows import TrainableRows
from dti.methods.base import EncoderStart, Method, register


@register
class CrossInit(Method):
    name = "crossinit"
    about = "CrossInit: a free vector started at the class word's contextual embedding, AdamW"
    reads: ClassVar[tuple[str, ...]] = ("crossinit_lambda",)

    def rows(self, start: EncoderStart, config: Any, magnitude: float | None) -> TrainableRows:
        return TrainableRows(start.contextual(), "free")

    def regularizer(
        self, config: Any, rows: Mapping[str, TrainableRows], priors: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        if not config.crossinit_lambda > 0:
            return None
        terms = [config.crossinit_lambda * torch.nn.functional.mse_loss(r.param, targets[name]) for name, r in rows.items()]
        return torch.stack(terms).sum() if terms else None
