"""Which text encoder a block of vectors belongs to, and the keys a single file holds it under.

A concept names its blocks by pipeline component (``text_encoder``, ``text_encoder_2``); other tools
name them by encoder kind (``clip_l``, ``clip_g``, ``t5xxl``, ...). The registered families say which
component has which kind (:class:`~dti.models.base.EncoderRole`), and :data:`~dti.models.kinds.KIND_KEYS`
which keys each tool looks up for a kind. Functions here take a concept's blocks and metadata, not
the concept itself, so the concept's own file can use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dti.core.errors import DTIError
from dti.models.kinds import CLIP_WIDTHS, KIND_KEYS, ONE_CLIP_KEYS, READ_ONLY_KEYS, WIDTH_KEYS, kind_keys


class Block(Protocol):
    kind: str | None

    @property
    def width(self) -> int: ...


def _adapters() -> Mapping[str, Any]:
    from dti.models import ADAPTERS

    return ADAPTERS


def encoder_kind(enc: Block) -> str:
    """The encoder kind of a concept's block: recorded, or a full-size CLIP width, or ``width<d>``."""
    return enc.kind or CLIP_WIDTHS.get(enc.width, f"width{enc.width}")


#: Before encoder kinds were recorded, dti wrote SD / SDXL concepts only: their components' kinds.
LEGACY_KINDS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def inferred_kinds(encoders: Mapping[str, Block], meta: Mapping[str, Any]) -> dict[str, str | None]:
    """The kind of every block: recorded, else from the family the concept was trained for (its
    ``pipeline_class``), else from a full-size CLIP width, else as the SD / SDXL concepts dti wrote
    before kinds were recorded; None when nothing says."""
    roles = {}
    cls = _adapters().get(str(meta.get("pipeline_class")))
    if cls is not None:
        roles = {role.component: role.kind for role in cls.roles}
    several = len(encoders) > 1
    return {
        name: enc.kind or roles.get(name) or CLIP_WIDTHS.get(enc.width) or (LEGACY_KINDS.get(name) if several else None)
        for name, enc in encoders.items()
    }


def infer_kinds(concept: Any) -> Any:
    """Fill in the kind of every block of ``concept`` that does not record one (:func:`inferred_kinds`)."""
    for name, kind in inferred_kinds(concept.encoders, concept.meta).items():
        if concept.encoders[name].kind is None:
            concept.encoders[name].kind = kind
    return concept


def key_kinds() -> dict[str, str]:
    """Single-file key -> encoder kind, over every kind dti knows (the keys it writes and the older ones it reads)."""
    sized = {key: kind for kind, widths in WIDTH_KEYS.items() for keys in widths.values() for key in keys}
    return {**READ_ONLY_KEYS, **sized, **{key: kind for kind, keys in KIND_KEYS.items() for key in keys}}


def components_for_kinds(kinds: set[str]) -> dict[str, str] | None:
    """Encoder kind -> pipeline component, from the registered families whose encoders are
    exactly these kinds (optional encoders may be absent); None when no family or several
    disagreeing ones fit."""
    mappings = []
    for cls in _adapters().values():
        have = {role.kind: role.component for role in cls.roles}
        required = {role.kind for role in cls.roles if not role.optional}
        if kinds <= set(have) and required <= kinds:
            mappings.append({k: have[k] for k in kinds})
    if not mappings or any(m != mappings[0] for m in mappings):
        return None
    return mappings[0]


#: One-encoder layouts: the kinds a lone block's file is keyed by instead of ``emb_params``: every kind
#: but CLIP's (a lone CLIP encoder is SD 1.x/2.x, whose tools read ``emb_params``).
SOLE_KEYED = tuple(kind for kind in KIND_KEYS if kind not in CLIP_WIDTHS.values())


def single_file_keys(encoders: Mapping[str, Block], meta: Mapping[str, Any], tool: str = "default") -> dict[str, str]:
    """Single-file key -> the concept's component, in the layout other tools read, every key a tool
    looks up for each kind (:func:`~dti.models.kinds.kind_keys`: ``{clip_l, clip_g}`` for SDXL; for T5
    both ComfyUI's ``t5xxl`` and OneTrainer's ``t5``; for Qwen3 the key of its width,
    ``qwen3_4b`` or ``qwen3_8b``; ...). One CLIP encoder (SD 1.x/2.x) is one key,
    ``emb_params`` (A1111, ComfyUI, kohya, InvokeAI: A1111 refuses a one-encoder file of several keys),
    or ``emp_params`` for ``tool="onetrainer"``. Refused in one line when no single file can hold the blocks."""
    kinds = inferred_kinds(encoders, meta)
    if len(encoders) == 1:
        name, kind = next(iter(kinds.items()))
        if kind in SOLE_KEYED:
            return {key: name for key in kind_keys(kind, encoders[name].width)}
        return {ONE_CLIP_KEYS.get(tool, ONE_CLIP_KEYS["default"]): name}
    known = list(kinds.values())
    if None in known or len(set(known)) != len(known) or any(k not in KIND_KEYS for k in known):
        raise DTIError(f"no single-file layout holds encoders {sorted(encoders)}; write --to diffusers (one file per encoder) instead")
    return {key: name for name, kind in kinds.items() for key in kind_keys(str(kind), encoders[name].width)}


def tool_keys(encoders: Mapping[str, Block], meta: Mapping[str, Any]) -> dict[str, str]:
    """The keys under which dti's own concept file holds a second copy of the trained vectors, so
    that other tools reading it by their own rules get the trained rows (never the initializer's):

    - ComfyUI (``comfy/sd1_clip.py`` ``load_embed``): each text encoder looks up its
      ``embedding_key`` (``clip_l``; ``clip_g`` for SDXL's second encoder; ``t5xxl`` for T5; SD 2.x's
      OpenCLIP-H ``clip_h`` or, in older versions, ``clip_l``) and, when the file lacks it, takes
      the file's *first* tensor. safetensors stores float32 tensors in name order, so the
      one-encoder SD 1.x/2.x key ``emb_params`` comes before ``text_encoder.init`` and is what
      ComfyUI reads; SDXL, SD3 and FLUX files are read by their keys.
    - A1111 (``create_embedding_from_data``): ``clip_g`` + ``clip_l`` is an SDXL embedding, each
      encoder taking its key (extra keys are ignored); a one-encoder dti file has several keys and
      is refused ("multiple terms"): write ``dti convert --to a1111`` for A1111.
    - diffusers ``load_textual_inversion`` refuses any several-key file without ``string_to_param``.

    Empty when no single-file layout fits the concept's encoders."""
    try:
        return single_file_keys(encoders, meta)
    except DTIError:
        return {}
