"""RiemannianSGD: each row of a parameter lives on the unit sphere (METHOD.md section 4).

Per row ``v`` and step ``t``:

1. ``g = grad - kappa * mu``           (von Mises-Fisher prior, added before anything else)
2. ``g = g - (g . v) v``               (tangent projection)
3. ``s = beta s + (1 - beta) |g|^2``;  ``g = g / (sqrt(s / (1 - beta^t)) + eps)``
4. ``v = v - lr g``
5. ``v = v / |v|``                     (retraction)

With ``beta = 0`` every step has length ``lr`` (radians, to first order) whatever the gradient
scale, which is why ``kappa`` acts relative to the data gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from dti.core import sphere


class RiemannianSGD(torch.optim.Optimizer):
    """SGD on the product of unit spheres formed by the rows of each parameter.

    A param group may carry ``prior``: a tensor shaped like its single parameter whose rows are
    the prior means ``mu``; with ``kappa > 0`` each row is pulled toward its ``mu``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        kappa: float = 0.0,
        beta: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be > 0")
        if not kappa >= 0.0:
            raise ValueError(f"invalid kappa {kappa}: must be >= 0")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"invalid beta {beta}: must be in [0, 1)")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps {eps}: must be >= 0")
        defaults = dict(lr=lr, kappa=kappa, beta=beta, eps=eps, prior=None)
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        for p in group["params"]:
            norms = p.detach().norm(dim=-1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
                raise ValueError("RiemannianSGD needs unit-norm rows; normalize the parameter first")
        prior = group["prior"]
        if prior is not None:
            if len(group["params"]) != 1 or prior.shape != group["params"][0].shape:
                raise ValueError("a group's prior must match the shape of its single parameter")
            group["prior"] = sphere.normalize(prior.detach().to(group["params"][0]))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, kappa, beta, eps = group["lr"], group["kappa"], group["beta"], group["eps"]
            prior = group["prior"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["sq_norm_avg"] = torch.zeros((*p.shape[:-1], 1), dtype=p.dtype, device=p.device)
                state["step"] = step_count(state["step"], p.device) + 1
                g = p.grad
                if kappa > 0.0 and prior is not None:
                    g = g - kappa * prior
                g = sphere.project_tangent(p, g)
                # Not in place: state_dict() hands out references, and a loaded copy must not alias.
                avg = beta * state["sq_norm_avg"] + (1.0 - beta) * g.square().sum(dim=-1, keepdim=True)
                state["sq_norm_avg"] = avg
                scale = (avg / (1.0 - beta ** state["step"])).sqrt() + eps
                moved = (g != 0).any(dim=-1, keepdim=True)
                # Rows with no update keep their exact bits (a re-normalization would nudge them).
                p.copy_(torch.where(moved, sphere.retract(p - lr * g / scale), p))
        return loss


class RenormAdamW(torch.optim.AdamW):
    """AdamW, then every row of each group's parameters set back to the group's ``norm``.

    OneTrainer's "preserve embedding norm" (``ti-renorm``): a free vector trained by AdamW and
    rescaled to a fixed norm (the vocabulary's median) after every step. Each param group carries
    its ``norm``; AdamW's own state is untouched by the rescale."""

    def __init__(self, params: Iterable[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            norm = group.get("norm")
            if norm is None or not norm > 0:
                raise ValueError(f"every param group of RenormAdamW needs a positive norm, got {norm}")

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.copy_(sphere.normalize(p) * group["norm"])
        return loss


def step_count(value: torch.Tensor | int | float, device: torch.device) -> torch.Tensor:
    """A step counter as a 0-dim tensor on the parameter's device (float64, so ``beta ** t`` is what
    the Python float would be; float32 on MPS), so that :func:`guarded_step` can hold it back
    without a host sync. An older checkpoint's int is converted."""
    dtype = torch.float32 if device.type == "mps" else torch.float64
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.tensor(float(value), dtype=dtype, device=device)


def guarded_step(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    allowed: torch.Tensor,
    usable: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``optimizer.step()`` kept only where ``allowed`` (a 0-dim bool tensor) holds and every updated
    parameter is ``usable``; otherwise the parameters and every tensor of the optimizer's state are
    put back exactly. Decided on the device: nothing here waits for it. Returns whether the step
    was kept (0-dim bool, on the device).

    The optimizer's state must be all tensors (RiemannianSGD's is; torch's AdamW needs
    ``capturable=True`` on CUDA so its step counter lives on the device), and a state created by
    this step is put back as zeros, which is what both optimizers start from."""
    params = list(params)
    with torch.no_grad():
        old_params = [p.detach().clone() for p in params]
        old_state = [{k: v.clone() for k, v in optimizer.state[p].items()} if p in optimizer.state else {} for p in params]
        optimizer.step()
        kept = allowed.clone()
        for p in params:
            kept = kept & usable(p)
        for p, old in zip(params, old_params):
            p.copy_(torch.where(kept, p, old))
        for p, old in zip(params, old_state):
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    kind = type(value).__name__
                    raise TypeError(f"guarded_step needs tensor optimizer state; {type(optimizer).__name__}'s {key!r} is {kind}")
                before = old.get(key)
                before = torch.zeros_like(value) if before is None else before.to(value.device)
                state[key] = torch.where(kept.to(value.device), value, before)
    return kept
