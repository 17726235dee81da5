"""Tensor math on the unit sphere, row-wise along the last dimension.

DTI keeps every learned vector as ``magnitude * direction`` with the direction on the unit
sphere; this module holds the geometry that the optimizer, concepts and interpolation share.
Pure torch, no nn and no Hugging Face.
"""

from __future__ import annotations

import torch

#: Below this angle (radians) two directions count as identical for slerp.
SLERP_PARALLEL_EPS = 1e-6


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each row to unit L2 norm (rows of norm < eps are divided by eps)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def project_tangent(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Remove from ``g`` its component along the unit rows ``v``: the tangent part at ``v``."""
    return g - (g * v).sum(dim=-1, keepdim=True) * v


def retract(v: torch.Tensor) -> torch.Tensor:
    """Map a point moved off the sphere back onto it (metric projection = normalization)."""
    return normalize(v)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle in radians between the directions of matching rows of ``a`` and ``b``.

    ``2 atan2(|a - b|, |a + b|)`` of the unit rows: accurate near 0 and pi, where arccos of
    the dot product loses half its digits.
    """
    ua, ub = normalize(a.double()), normalize(b.double())
    out = 2.0 * torch.atan2((ua - ub).norm(dim=-1), (ua + ub).norm(dim=-1))
    return out.to(a.dtype if a.is_floating_point() else torch.float32)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of unit rows ``a`` -> ``b`` at weight ``t`` in [0, 1].

    Rows that coincide return ``a``. Antipodal rows have no unique geodesic; they raise,
    because any choice of path would be arbitrary and silently misleading.
    """
    if t == 0.0:  # exact endpoints: the inputs themselves, bit for bit
        return a.clone()
    if t == 1.0:
        return b.clone()
    dtype = a.dtype
    a = normalize(a.double())
    b = normalize(b.double())
    w = angle(a, b).unsqueeze(-1)
    if bool((torch.pi - w < SLERP_PARALLEL_EPS).any()):
        raise ValueError("slerp between antipodal directions is undefined (no unique great circle)")
    sin_w = torch.sin(w)
    parallel = w < SLERP_PARALLEL_EPS
    safe = torch.where(parallel, torch.ones_like(sin_w), sin_w)
    out = (torch.sin((1.0 - t) * w) * a + torch.sin(t * w) * b) / safe
    out = torch.where(parallel, a, out)
    return normalize(out).to(dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Straight-line interpolation of rows (the Euclidean blend, for contrast with slerp)."""
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    return ((1.0 - t) * a.double() + t * b.double()).to(a.dtype)
