"""Textual Inversion (Gal et al. 2022) as the paper's baseline: a free vector, started at the
initializer's row and trained by AdamW; nothing holds its norm."""

from __future__ import annotations

from dti.methods.base import Method, register


@register
class TI(Method):
    name = "ti"
    about = "Textual Inversion: a free vector, AdamW"
