"""The paper's ablations (METHOD.md section 6) and TI-rescaled, as variants a sweep can name.

Each differs from DTI in exactly what the paper varies; everything else is the method's default for
the model family. TI-rescaled trains nothing: it is TI's concept rescaled to the vocabulary's mean
norm when loaded."""

from __future__ import annotations

from dti.methods.base import Variant, register_variant

for _variant in (
    Variant("ti-rescaled", {}, "TI's concept rescaled to the vocabulary's mean norm when loaded", derived_from="ti", rescale="mean"),
    Variant("adamw-fixed", {"method": "dti", "optimizer": "adamw"}, "ablation: AdamW on a vector of fixed (mean) norm"),
    Variant("dti-min", {"method": "dti", "magnitude": "min"}, "ablation: magnitude = the vocabulary's smallest norm"),
    # The paper's "magnitude 5.0" is an absolute norm (METHOD.md section 2: a float is the norm
    # itself), about 13x SDXL CLIP-L's mean of 0.387: the ablation of an inflated vector.
    Variant("dti-5", {"method": "dti", "magnitude": 5.0}, "ablation: magnitude = 5.0 (absolute norm)"),
    Variant("dti-kappa0", {"method": "dti", "kappa": 0.0}, "ablation: no vMF prior (kappa 0)"),
    Variant("dti-kappa5e-4", {"method": "dti", "kappa": 5e-4}, "ablation: a stronger vMF prior (kappa 5e-4)"),
):
    register_variant(_variant)
