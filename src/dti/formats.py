"""Concept files of every tool, in and out.

Layouts (which key belongs to which pipeline component is asked of the registered adapters,
by encoder kind; a width is never enough, except a full-size CLIP width in a file that says nothing):

- ``dti``: our self-describing ``concept.safetensors`` (see :mod:`dti.concept`).
- ``diffusers``: one ``{token: [n, d]}`` file per encoder (``learned_embeds.safetensors``,
  ``learned_embeds_2.safetensors``; ``.bin`` too).
- single file keyed by encoder kind: ``{clip_l, clip_g}`` (SDXL: A1111, ComfyUI, kohya),
  ``{clip_l, t5xxl}`` (FLUX) and ``{clip_l, clip_g, t5xxl}`` (SD3) as ComfyUI names them;
  OneTrainer's ``t5`` / ``gemma`` are read too.
- ``kohya`` (SD 1.x/2.x) ``{emb_params: [n, d]}``: read by kohya, A1111 and ComfyUI.
- ``a1111`` ``.pt``: ``{string_to_param: {"*": [n, d]}, name, step, ...}``. Read only with
  ``torch.load(weights_only=True)``: a pickle that would build arbitrary objects is refused, never run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dti.concept import CONCEPT_FILENAME, FORMAT_NAME, Concept, EncoderVectors
from dti.errors import DTIError
from dti.fileio import atomic_write

#: Published mean row norms of the original vocabularies (METHOD.md section 2), for files
#: inspected without a model. Measured tables override these whenever a model is given.
REFERENCE_MEAN_NORM = {"clip_l": 0.387, "clip_g": 0.452, "gemma2": 1.772}

#: Full-size widths that identify a CLIP encoder in a foreign single-encoder file that does not
#: say which encoder it is for (A1111/kohya ``emb_params``). Never used for other kinds.
CLIP_WIDTHS = {768: "clip_l", 1024: "openclip_h", 1280: "clip_g"}

FORMATS = ("dti", "diffusers", "a1111", "comfyui", "kohya")


def _adapters():
    from dti.models import ADAPTERS

    return ADAPTERS


def encoder_kind(enc: EncoderVectors) -> str:
    """The encoder kind of a concept's block: recorded, or a full-size CLIP width, or ``width<d>``."""
    return enc.kind or CLIP_WIDTHS.get(enc.width, f"width{enc.width}")


#: Before encoder kinds were recorded, dti wrote SD / SDXL concepts only: their components' kinds.
_LEGACY_KINDS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def infer_kinds(concept: Concept) -> Concept:
    """Fill in the kind of every block that does not record one: from the family the concept was
    trained for (its ``pipeline_class``), else from a full-size CLIP width, else as the SD / SDXL
    concepts dti wrote before kinds were recorded."""
    roles = {}
    cls = _adapters().get(str(concept.meta.get("pipeline_class")))
    if cls is not None:
        roles = {role.component: role.kind for role in cls.roles}
    for name, enc in concept.encoders.items():
        if enc.kind is None:
            enc.kind = roles.get(name) or CLIP_WIDTHS.get(enc.width) or (_LEGACY_KINDS.get(name) if len(concept.encoders) > 1 else None)
    return concept


def key_kinds() -> dict[str, str]:
    """Single-file key -> encoder kind, over every kind the registered adapters use."""
    from dti.models.base import KIND_KEYS

    return {key: kind for kind, keys in KIND_KEYS.items() for key in keys}


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


def default_token(path: Path) -> str:
    """A1111/ComfyUI name an embedding after its file; we wrap that name in <...>."""
    stem = re.sub(r"[^\w.-]", "", path.name.split(".")[0]) or "concept"
    return f"<{stem}>"


# ------------------------------------------------------------------ reading
def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: what torch refuses to load
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DTIError(
            f"refused to load {path}: it is not a plain-tensor file ({reason}); pickles are never unpickled freely, "
            "convert it to .safetensors in an environment you trust"
        ) from None


def _read_raw(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors (or the nested A1111 dict) and safetensors metadata of one file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return dict(load_file(str(path))), metadata
        except (SafetensorError, OSError, ValueError) as exc:
            raise DTIError(f"{path} is not a readable safetensors file ({exc}); check the file") from None
    if suffix in (".pt", ".bin", ".ckpt", ".pth"):
        data = _torch_load(path)
        if isinstance(data, torch.Tensor):
            return {"": data}, {}
        if not isinstance(data, dict):
            raise DTIError(f"{path} holds a {type(data).__name__}, not an embedding dict; check the file")
        return data, {}
    raise DTIError(f"{path} has an unknown extension {suffix!r}; dti reads .safetensors, .pt and .bin embeddings")


def _as_matrix(value: Any, path: Path, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2):
        raise DTIError(f"{path}: entry {key!r} is not a [n_vectors, width] tensor; check the file")
    return value.detach().to(torch.float32).reshape(-1, value.shape[-1])


def _single(vectors: torch.Tensor, token: str, fmt: str, meta: dict[str, Any] | None = None, name: str | None = None) -> Concept:
    """A one-encoder concept. Its component and kind come from dti's metadata when the file has
    it; otherwise it is ``text_encoder`` of unknown kind (a full-size CLIP width names the kind),
    and loading places it by the model's encoders."""
    meta = dict(meta or {})
    name = meta.pop("encoder", None) or name or "text_encoder"
    kind = (meta.get("encoder_kinds") or {}).get(name) or CLIP_WIDTHS.get(int(vectors.shape[-1]))
    return Concept(token, {name: EncoderVectors(vectors, kind=kind)}, {"method": "unknown", **meta, "source_format": fmt})


def _carried_meta(metadata: dict[str, str]) -> dict[str, Any]:
    """Provenance dti wrote into a foreign-format file (so conversions keep it)."""
    try:
        meta = json.loads(metadata.get("dti_meta", "{}"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def read_file(path: str | Path, token: str | None = None) -> Concept:
    """Any supported concept file -> Concept. ``token`` overrides the name stored in the file."""
    path = Path(path)
    if not path.is_file():
        raise DTIError(f"concept file not found: {path}; check the path")
    data, metadata = _read_raw(path)
    if metadata.get("format") == FORMAT_NAME:
        concept = Concept.load(path)
        return concept.renamed(token) if token else concept
    stored = metadata.get("name") or metadata.get("token")
    carried = _carried_meta(metadata)
    if isinstance(data.get("dti_meta"), str):
        carried = _carried_meta({"dti_meta": data["dti_meta"]})
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise DTIError(f"{path}: A1111 embedding with {len(params) if isinstance(params, Mapping) else '?'} terms; expected one")
        vectors = _as_matrix(next(iter(params.values())), path, "string_to_param")
        name = token or (data["name"] if isinstance(data.get("name"), str) and data["name"] else default_token(path))
        return _single(vectors, name, "a1111", {"step": data.get("step"), **carried})
    by_key = key_kinds()
    keyed = [k for k in data if k in by_key]
    if keyed:  # {clip_l, clip_g}, {clip_l, t5xxl}, {clip_l, clip_g, t5xxl}, OneTrainer's t5 / gemma
        kinds = [by_key[k] for k in keyed]
        if len(set(kinds)) != len(kinds):
            raise DTIError(f"{path}: entries {sorted(keyed)} name the same encoder twice; the file is inconsistent")
        extra = sorted(set(map(str, data)) - set(keyed) - {"dti_meta"})
        if extra:
            raise DTIError(f"{path}: unexpected entries {extra} beside {sorted(keyed)}; the file is inconsistent")
        components = components_for_kinds(set(kinds))
        if components is None:
            raise DTIError(f"{path}: no supported model family has exactly the encoders {sorted(keyed)}; check the file")
        encoders = {components[by_key[k]]: EncoderVectors(_as_matrix(data[k], path, k), kind=by_key[k]) for k in keyed}
        counts = {e.n_vectors for e in encoders.values()}
        if len(counts) != 1:
            raise DTIError(f"{path}: {', '.join(sorted(keyed))} have different vector counts {sorted(counts)}; the file is inconsistent")
        carried.pop("encoder_kinds", None)
        return Concept(token or stored or default_token(path), encoders, {"method": "unknown", **carried, "source_format": "single-file"})
    if "emb_params" in data:
        return _single(_as_matrix(data["emb_params"], path, "emb_params"), token or stored or default_token(path), "kohya", carried)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers {token: vectors}
        key, value = next(iter(tensors.items()))
        if metadata.get("encoder"):
            carried["encoder"] = metadata["encoder"]
        name = _diffusers_component(path)
        return _single(_as_matrix(value, path, key), token or key or stored or default_token(path), "diffusers", carried, name)
    raise DTIError(f"{path} is not a textual-inversion embedding dti knows (keys {sorted(map(str, data))[:6]}); see `dti convert --help`")


def _diffusers_component(path: Path) -> str:
    """``learned_embeds_2.safetensors`` is the second encoder's file, ``_3`` the third's."""
    match = re.match(r"learned_embeds(_\d+)?", path.name)
    return f"text_encoder{match.group(1) or ''}" if match else "text_encoder"


def read_folder(path: Path, token: str | None = None) -> Concept:
    """A dti run folder (``concept.safetensors``) or a folder of diffusers per-encoder files."""
    if (path / CONCEPT_FILENAME).is_file():
        concept = Concept.load(path / CONCEPT_FILENAME)
        return concept.renamed(token) if token else concept
    files = sorted(path.glob("learned_embeds*.safetensors")) or sorted(path.glob("learned_embeds*.bin"))
    if not files:
        raise DTIError(f"{path} holds no concept.safetensors or learned_embeds files; pass a concept file or run folder")
    parts = [read_file(f) for f in files]
    names = {p.token for p in parts}
    if len(names) != 1:
        raise DTIError(f"{path}: the per-encoder files name different tokens {sorted(names)}; pass one file")
    encoders: dict[str, EncoderVectors] = {}
    for part in parts:
        for name, enc in part.encoders.items():
            if name in encoders:
                raise DTIError(f"{path}: two files hold vectors for {name}; remove one")
            encoders[name] = enc
    meta: dict[str, Any] = {}
    for part in parts:
        meta.update(part.meta)
    return Concept(token or names.pop(), encoders, {**meta, "source_format": "diffusers"})


def read(path: str | Path, token: str | None = None) -> Concept:
    """A concept from a file or folder in any supported format."""
    path = Path(path)
    if path.is_dir():
        return _restore_magnitudes(read_folder(path, token))
    return _restore_magnitudes(read_file(path, token))


# ------------------------------------------------------------------ writing
def diffusers_filename(encoder: str) -> str:
    """``text_encoder`` -> ``learned_embeds.safetensors`` (diffusers' default name),
    ``text_encoder_2`` -> ``learned_embeds_2.safetensors``."""
    suffix = encoder.removeprefix("text_encoder")
    return f"learned_embeds{suffix}.safetensors"


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _metadata(concept: Concept, fmt: str) -> dict[str, str]:
    magnitudes = {name: enc.magnitude for name, enc in concept.encoders.items()}
    kinds = {name: enc.kind for name, enc in concept.encoders.items() if enc.kind}
    meta = {**concept.meta, "magnitudes": magnitudes, "encoder_kinds": kinds}
    if len(concept.encoders) == 1:  # a one-encoder layout has no key that says which encoder it is
        meta["encoder"] = next(iter(concept.encoders))
    return {"format": fmt, "name": concept.token, "written_by": "dti", "dti_meta": json.dumps(meta, default=str)}


def _restore_magnitudes(concept: Concept) -> Concept:
    """Fixed norms a dti-written foreign file carried in its metadata."""
    for name, m in (concept.meta.pop("magnitudes", None) or {}).items():
        if name in concept.encoders and m is not None:
            concept.encoders[name].magnitude = float(m)
    for name, kind in (concept.meta.pop("encoder_kinds", None) or {}).items():
        if name in concept.encoders and kind:
            concept.encoders[name].kind = str(kind)
    return infer_kinds(concept)


def write_diffusers(concept: Concept, folder: str | Path) -> dict[str, Path]:
    """One ``{token: [n_vectors, width]}`` file per encoder, for
    ``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)``."""
    folder = Path(folder)
    return {
        name: _save(folder / diffusers_filename(name), {concept.token: enc.vectors}, {**_metadata(concept, "diffusers"), "encoder": name})
        for name, enc in concept.encoders.items()
    }


def single_file_tensors(concept: Concept) -> dict[str, torch.Tensor]:
    """The single-file layout other tools read: ``{clip_l, clip_g}`` (SDXL), ``{clip_l, t5xxl}``
    (FLUX), ``{clip_l, clip_g, t5xxl}`` (SD3) as ComfyUI names them; one CLIP encoder as
    ``emb_params`` (A1111 / kohya / ComfyUI, SD 1.x/2.x); one T5 or Gemma as OneTrainer's ``t5`` /
    ``gemma``."""
    from dti.models.base import KIND_KEYS

    encoders = list(infer_kinds(concept).encoders.values())
    if len(encoders) == 1:
        kind = encoder_kind(encoders[0])
        if kind == "t5":
            return {"t5": encoders[0].vectors}
        if kind == "gemma2":
            return {"gemma": encoders[0].vectors}
        return {"emb_params": encoders[0].vectors}
    kinds = [enc.kind for enc in encoders]
    if None in kinds or len(set(kinds)) != len(kinds) or any(k not in KIND_KEYS for k in kinds):
        raise DTIError(
            f"no single-file layout holds encoders {sorted(concept.encoders)}; write --to diffusers (one file per encoder) instead"
        )
    return {KIND_KEYS[enc.kind][0]: enc.vectors for enc in encoders if enc.kind}


def file_stem(token: str) -> str:
    """What A1111/ComfyUI users type: the token without brackets or characters they drop."""
    return re.sub(r"[^\w.-]", "", token) or "concept"


def write(concept: Concept, fmt: str, out: str | Path) -> list[Path]:
    """Write ``concept`` in format ``fmt`` to ``out`` (a file, or a folder for diffusers)."""
    out = Path(out)
    if fmt == "dti":
        return [concept.save(out / CONCEPT_FILENAME if out.suffix != ".safetensors" else out)]
    if fmt == "diffusers":
        if out.suffix:
            raise DTIError(f"--to diffusers writes one file per encoder; give a folder for --out, not {out.name}")
        return list(write_diffusers(concept, out).values())
    if fmt in ("a1111", "comfyui", "kohya"):
        if out.suffix.lower() == ".pt":
            if fmt != "a1111" or len(concept.encoders) != 1:
                raise DTIError("only --to a1111 for a single-encoder (SD 1.x/2.x) concept can be written as .pt; use .safetensors")
            vectors = next(iter(concept.encoders.values())).vectors.contiguous()
            data = {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": vectors},
                "name": concept.token,
                "step": int(concept.meta.get("step") or 0),
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "dti_meta": _metadata(concept, fmt)["dti_meta"],  # A1111 ignores extra keys
            }
            return [atomic_write(out, lambda tmp: torch.save(data, tmp))]
        if out.suffix.lower() != ".safetensors":
            out = out / f"{file_stem(concept.token)}.safetensors"
        return [_save(out, single_file_tensors(concept), _metadata(concept, fmt))]
    raise DTIError(f"--to {fmt!r} is not a known format; use one of {', '.join(FORMATS)}")
