"""Blending two concepts: spherical interpolation of directions (METHOD.md section 7) or lerp.

Per encoder and per vector, ``slerp`` moves along the great circle between the two directions
and keeps the norm fixed (for DTI concepts of equal magnitude every blend has exactly that
norm). Plain TI vectors have no fixed norm: their norms are interpolated linearly, and the
notes say so. ``lerp`` is the straight line, for contrast: its norm sags between the ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dti.concepts.concept import Concept, EncoderVectors
from dti.core import sphere
from dti.core.errors import DTIError
from dti.text.words import check_token_text

MODES = ("slerp", "lerp")


@dataclass
class Blend:
    """Blended concepts at the requested weights, and what the caller should be told."""

    weights: list[float]
    concepts: list[Concept]
    notes: list[str] = field(default_factory=list)


def check_compatible(a: Concept, b: Concept) -> None:
    """Refuse pairs whose vectors live in different spaces, or that cannot be used at all."""
    a.check()
    b.check()
    if set(a.encoders) != set(b.encoders):
        raise DTIError(
            f"{a.token} has encoders {sorted(a.encoders)} but {b.token} has {sorted(b.encoders)}; blend concepts of one model family"
        )
    for name in a.encoders:
        wa, wb = a.encoders[name].width, b.encoders[name].width
        if wa != wb:
            raise DTIError(f"{name} widths differ ({a.token}: {wa}, {b.token}: {wb}); blend concepts of one base model")
    base_a, base_b = a.meta.get("base_model"), b.meta.get("base_model")
    if base_a and base_b and base_a != base_b:
        raise DTIError(f"{a.token} was trained on {base_a} and {b.token} on {base_b}; blend concepts of the same base model")
    if a.n_vectors != b.n_vectors:
        raise DTIError(
            f"{a.token} has {a.n_vectors} vector(s) and {b.token} has {b.n_vectors}; vectors are blended pairwise, "
            "so both need the same count (train with initializers of equal length)"
        )


def _blend_encoder(name: str, ea: EncoderVectors, eb: EncoderVectors, t: float, mode: str) -> EncoderVectors:
    if mode == "lerp":
        vectors = sphere.lerp(ea.vectors, eb.vectors, t)
        magnitude = None
    else:
        angles = sphere.angle(ea.vectors, eb.vectors)
        if bool((torch.pi - angles < sphere.SLERP_PARALLEL_EPS).any()):
            raise DTIError(f"{name}: the two directions are antipodal, so no unique great circle joins them; use --mode lerp")
        direction = sphere.slerp(ea.directions, eb.directions, t)
        norms = (1.0 - t) * ea.norms.double() + t * eb.norms.double()
        vectors = (direction.double() * norms.unsqueeze(-1)).float()
        magnitude = None
        if ea.magnitude is not None and eb.magnitude is not None:
            magnitude = (1.0 - t) * ea.magnitude + t * eb.magnitude
        if t in (0.0, 1.0):  # endpoints: the inputs, bit for bit
            return ea if t == 0.0 else eb
    return EncoderVectors(vectors, magnitude, None)


def blend(a: Concept, b: Concept, weights: list[float], mode: str = "slerp", token: str = "<blend>") -> Blend:
    """Concepts between ``a`` (weight 0) and ``b`` (weight 1), named ``token``."""
    if mode not in MODES:
        raise DTIError(f"--mode {mode!r} is not valid; use slerp or lerp")
    check_token_text(token)
    check_compatible(a, b)
    notes = []
    if mode == "slerp":
        free = [c.token for c in (a, b) if any(e.magnitude is None for e in c.encoders.values())]
        if free:
            notes.append(f"{', '.join(free)} has no fixed norm (plain TI): directions are slerped and norms interpolated linearly")
        for name in a.encoders:
            ma, mb = a.encoders[name].magnitude, b.encoders[name].magnitude
            if ma is not None and mb is not None and abs(ma - mb) > 1e-6:
                notes.append(f"{name}: magnitudes differ ({ma:.4f} vs {mb:.4f}); the norm is interpolated linearly")
    else:
        notes.append("lerp: straight-line blend; the norm dips between distinct directions")
    concepts = []
    for t in weights:
        if not 0.0 <= t <= 1.0:
            raise DTIError(f"blend weight {t} is outside [0, 1]")
        encoders = {name: _blend_encoder(name, a.encoders[name], b.encoders[name], t, mode) for name in a.encoders}
        meta = {
            "method": f"{mode}-blend",
            "blend_of": [a.token, b.token],
            "weight": t,
            "mode": mode,
            "base_model": a.meta.get("base_model") or b.meta.get("base_model"),
        }
        concepts.append(Concept(token, encoders, meta))
    return Blend(list(weights), concepts, notes)
