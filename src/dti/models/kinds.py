"""Encoder kinds dti knows, and the keys other tools use for them in single-file embeddings.

A kind says what a text encoder is (``clip_l``, ``clip_g``, ``openclip_h``, ``t5``, ``gemma2``);
each family declares its encoders' kinds (:class:`~dti.models.base.EncoderRole`), and the file
formats map kinds to the keys each tool looks up.
"""

from __future__ import annotations

#: Encoder kinds dti knows, with the keys other tools use for them in single-file embeddings.
#: The first key is the one dti writes (ComfyUI / A1111 / kohya naming); the others are read.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "clip_l": ("clip_l",),
    "clip_g": ("clip_g",),
    "openclip_h": ("clip_h",),
    "t5": ("t5xxl", "t5"),
    "gemma2": ("gemma", "gemma2"),
}

#: Published mean row norms of the original vocabularies (METHOD.md section 2), for files
#: inspected without a model. Measured tables override these whenever a model is given.
REFERENCE_MEAN_NORM = {"clip_l": 0.387, "clip_g": 0.452, "gemma2": 1.772}

#: Full-size widths that identify a CLIP encoder in a foreign single-encoder file that does not
#: say which encoder it is for (A1111/kohya ``emb_params``). Never used for other kinds.
CLIP_WIDTHS = {768: "clip_l", 1024: "openclip_h", 1280: "clip_g"}
