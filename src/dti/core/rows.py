"""The rows a placeholder reads while it trains, in the parameterization its method uses.

Pure torch: the method (:mod:`dti.methods`) picks the mode and the optimizer moves ``param``; the
attach path (:mod:`dti.text.attach`) reads the rows through :meth:`TrainableRows.forward`.
"""

from __future__ import annotations

import torch
from torch import nn

from dti.core import sphere


class TrainableRows(nn.Module):
    """The rows the new tokens read, in one of three parameterizations.

    - ``sphere``: ``magnitude * direction``; ``direction`` has unit rows kept so by
      RiemannianSGD (DTI).
    - ``normalized``: ``magnitude * normalize(raw)``; any optimizer (AdamW-with-fixed-norm
      ablation).
    - ``free``: the raw vector itself (plain TI).
    """

    MODES = ("sphere", "normalized", "free")

    def __init__(self, init: torch.Tensor, mode: str, magnitude: float | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {self.MODES}")
        if mode != "free" and magnitude is None:
            raise ValueError(f"mode {mode!r} needs a magnitude")
        self.mode = mode
        self.magnitude = magnitude
        start = init.detach().to(torch.float32).clone()
        if mode != "free":
            start = sphere.normalize(start)
        self.param = nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        if self.mode == "free":
            return self.param
        if self.mode == "normalized":
            return self.magnitude * sphere.normalize(self.param)
        return self.magnitude * self.param

    @torch.no_grad()
    def vectors(self) -> torch.Tensor:
        return self.forward().detach().clone()
