"""The optimizers a method may train with, each with the settings it reads and its base learning rate.

- ``rsgd``: :class:`~dti.core.optim.RiemannianSGD` on unit rows, with the vMF prior of each encoder's
  initializer direction (METHOD.md section 4); reads ``kappa``, ``beta``, ``eps``.
- ``adamw``: torch's AdamW on the rows (``capturable`` on CUDA, so a skipped step is undone on the
  device); reads ``adam_betas`` and ``weight_decay``. Rows of a fixed-norm method that trains free
  vectors with AdamW (``ti-renorm``) are set back to their norm after every step
  (:class:`~dti.core.optim.RenormAdamW`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dti.core.optim import RenormAdamW, RiemannianSGD
from dti.core.rows import TrainableRows

#: Optimizer name -> the settings it reads.
OPTIMIZERS: dict[str, tuple[str, ...]] = {"rsgd": ("kappa", "beta", "eps"), "adamw": ("adam_betas", "weight_decay")}
#: METHOD.md section 5: per-sample learning rates; with ``scale_lr`` they are multiplied by the
#: effective batch (batch_size * grad_accum), as the reference launchers do.
BASE_LR = {"rsgd": 0.01, "adamw": 0.005}


def build(
    config: Any,
    rows: Mapping[str, TrainableRows],
    priors: Mapping[str, torch.Tensor],
    magnitudes: Mapping[str, float | None],
    renorm: bool = False,
) -> torch.optim.Optimizer:
    """``config.optimizer`` over the trained rows' parameters at the run's effective learning rate;
    ``renorm``: AdamW that sets each row back to its encoder's magnitude after every step."""
    lr = config.effective_lr
    if config.optimizer == "rsgd":
        groups = [{"params": [r.param], "prior": priors[name].to(r.param.device)} for name, r in rows.items()]
        return RiemannianSGD(groups, lr=lr, kappa=config.kappa, beta=config.beta, eps=config.eps)
    params = [r.param for r in rows.values()]
    # capturable: the step counter stays on the GPU, so a skipped step is undone there (guarded_step)
    capturable = bool(params) and params[0].device.type == "cuda"
    kwargs = dict(lr=lr, betas=tuple(config.adam_betas), weight_decay=config.weight_decay, capturable=capturable)
    if renorm:
        groups = [{"params": [r.param], "norm": magnitudes[name]} for name, r in rows.items()]
        return RenormAdamW(groups, **kwargs)
    return torch.optim.AdamW(params, **kwargs)
