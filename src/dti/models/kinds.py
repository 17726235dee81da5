"""Encoder kinds dti knows, and the keys other tools use for them in single-file embeddings.

A kind says what a text encoder is (``clip_l``, ``clip_g``, ``openclip_h``, ``t5``, ``umt5``, ``gemma2``,
``llama``, ``qwen3``, ``qwen25vl``, ``mistral3``);
each family declares its encoders' kinds (:class:`~dti.models.base.EncoderRole`), and the file
formats map kinds to the keys each tool looks up.
"""

from __future__ import annotations

#: Encoder kind -> every key the tools that read single-file embeddings look it up under (dti writes
#: them all: duplicating a vector is cheap, a key a tool misses is a word it silently drops). Read from
#: each tool's source (docs/formats.md): ComfyUI's ``embedding_key`` (``clip_l``, ``clip_g``, ``t5xxl``,
#: ``umt5xxl``, ``gemma2_2b``, ``llama``), OneTrainer's (``clip_l``, ``clip_g``, ``t5``, ``gemma``); A1111, InvokeAI and
#: kohya read ``clip_l`` / ``clip_g`` (SDXL) and a one-encoder file by any single key.
#: ``umt5`` (Wan's UMT5-XXL) is not ``t5``: the same width (4096) over another vocabulary, so a T5 vector
#: means nothing to it; only ComfyUI's ``umt5xxl`` is known (no other tool trains or loads Wan words).
#: ``qwen25vl`` (Qwen-Image's Qwen2.5-VL-7B language model, width 3584): ComfyUI's ``qwen25_7b``, the only key known.
#: ``mistral3`` (FLUX.2 dev's Mistral-Small-3.1 language model, width 5120): ComfyUI's ``mistral3_24b``, the only key known.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "clip_l": ("clip_l",),
    "clip_g": ("clip_g",),
    "openclip_h": ("clip_h",),
    "t5": ("t5xxl", "t5"),
    "umt5": ("umt5xxl",),
    "gemma2": ("gemma2_2b", "gemma"),
    # Qwen3 at a width no tool names (tiny test models, the 0.6B / 1.7B sizes): dti's own key, read by no other tool.
    # The sizes tools know take their keys from WIDTH_KEYS.
    "qwen3": ("qwen3",),
    # HiDream-I1's Llama-3.1-8B-Instruct: ComfyUI's key only; OneTrainer trains HiDream embeddings, but its key
    # for the Llama encoder is not verified here, so none is written for it.
    "llama": ("llama",),
    "qwen25vl": ("qwen25_7b",),
    "mistral3": ("mistral3_24b",),
}
#: Kinds whose keys depend on the encoder's width (one kind, several model sizes): kind -> width -> keys,
#: used instead of :data:`KIND_KEYS` at those widths. ComfyUI's ``embedding_key`` for Qwen3 is ``qwen3_4b`` for the
#: 2560-wide Qwen3-4B (Z-Image, FLUX.2 klein 4B) and ``qwen3_8b`` for the 4096-wide Qwen3-8B (FLUX.2 klein 9B).
WIDTH_KEYS: dict[str, dict[int, tuple[str, ...]]] = {"qwen3": {2560: ("qwen3_4b",), 4096: ("qwen3_8b",)}}


def kind_keys(kind: str, width: int | None = None) -> tuple[str, ...]:
    """Every key tools look an encoder of ``kind`` and ``width`` up under (:data:`WIDTH_KEYS`, else :data:`KIND_KEYS`)."""
    return WIDTH_KEYS.get(kind, {}).get(int(width or 0)) or KIND_KEYS[kind]


#: Keys read as a kind besides :data:`KIND_KEYS` (earlier writers' names), never written.
READ_ONLY_KEYS: dict[str, str] = {"gemma2": "gemma2"}
#: One CLIP encoder's key (SD 1.x/2.x): kohya's, which A1111, ComfyUI and InvokeAI read; OneTrainer spells it ``emp_params``.
ONE_CLIP_KEYS = {"default": "emb_params", "onetrainer": "emp_params"}

#: Published mean row norms of the original vocabularies (METHOD.md section 2), for files
#: inspected without a model. Measured tables override these whenever a model is given.
REFERENCE_MEAN_NORM = {"clip_l": 0.387, "clip_g": 0.452, "gemma2": 1.772}

#: Full-size widths that identify a CLIP encoder in a foreign single-encoder file that does not
#: say which encoder it is for (A1111/kohya ``emb_params``). Never used for other kinds.
CLIP_WIDTHS = {768: "clip_l", 1024: "openclip_h", 1280: "clip_g"}
