"""Concept files of every tool, in and out.

Layouts (a text encoder is recognised by its width):

- ``dti``: our self-describing ``concept.safetensors`` (see :mod:`dti.concept`).
- ``diffusers``: one ``{token: [n, d]}`` file per encoder (``learned_embeds.safetensors``,
  ``learned_embeds_2.safetensors``; ``.bin`` too).
- ``sdxl`` single file ``{clip_l: [n, 768], clip_g: [n, 1280]}``: what A1111, ComfyUI, kohya and
  diffusers' advanced scripts use for SDXL.
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

#: Width -> (encoder kind, the model family it belongs to). Used to place foreign vectors.
ENCODER_KINDS: dict[int, str] = {
    768: "clip_l",  # CLIP ViT-L/14: SD 1.x, SDXL text_encoder
    1024: "openclip_h",  # OpenCLIP ViT-H/14: SD 2.x
    1280: "clip_g",  # OpenCLIP ViT-bigG/14: SDXL text_encoder_2
    2304: "gemma2_2b",  # Gemma-2-2B: SANA
    4096: "t5xxl",  # T5-XXL: SD3, FLUX
}
#: Encoder kind -> the pipeline component it sits in.
COMPONENT = {
    "clip_l": "text_encoder",
    "openclip_h": "text_encoder",
    "clip_g": "text_encoder_2",
    "gemma2_2b": "text_encoder",
    "t5xxl": "text_encoder_3",
}
#: Published mean row norms of the original vocabularies (METHOD.md section 2), for files
#: inspected without a model. Measured tables override these whenever a model is given.
REFERENCE_MEAN_NORM = {"clip_l": 0.387, "clip_g": 0.452, "gemma2_2b": 1.772}

FORMATS = ("dti", "diffusers", "a1111", "comfyui", "kohya")
SDXL_KEYS = ("clip_l", "clip_g")


def encoder_kind(width: int) -> str:
    return ENCODER_KINDS.get(int(width), f"width{int(width)}")


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


def _single(vectors: torch.Tensor, token: str, fmt: str, meta: dict[str, Any] | None = None) -> Concept:
    meta = dict(meta or {})
    name = meta.pop("encoder", None) or COMPONENT.get(encoder_kind(vectors.shape[-1]), "text_encoder")
    return Concept(token, {name: EncoderVectors(vectors)}, {"method": "unknown", **meta, "source_format": fmt})


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
    if all(k in data for k in SDXL_KEYS):
        encoders = {COMPONENT[k]: EncoderVectors(_as_matrix(data[k], path, k)) for k in SDXL_KEYS}
        counts = {e.n_vectors for e in encoders.values()}
        if len(counts) != 1:
            raise DTIError(f"{path}: clip_l and clip_g have different vector counts {sorted(counts)}; the file is inconsistent")
        extra = sorted(set(data) - set(SDXL_KEYS))
        if extra:
            raise DTIError(f"{path}: unexpected entries {extra} beside clip_l/clip_g; dti reads SD/SDXL embeddings only")
        return Concept(token or stored or default_token(path), encoders, {"method": "unknown", **carried, "source_format": "sdxl"})
    if "emb_params" in data:
        return _single(_as_matrix(data["emb_params"], path, "emb_params"), token or stored or default_token(path), "kohya", carried)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers {token: vectors}
        key, value = next(iter(tensors.items()))
        if metadata.get("encoder"):
            carried["encoder"] = metadata["encoder"]
        return _single(_as_matrix(value, path, key), token or key or stored or default_token(path), "diffusers", carried)
    raise DTIError(f"{path} is not a textual-inversion embedding dti knows (keys {sorted(map(str, data))[:6]}); see `dti convert --help`")


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
    meta = {**concept.meta, "magnitudes": magnitudes}
    return {"format": fmt, "name": concept.token, "written_by": "dti", "dti_meta": json.dumps(meta, default=str)}


def _restore_magnitudes(concept: Concept) -> Concept:
    """Fixed norms a dti-written foreign file carried in its metadata."""
    for name, m in (concept.meta.pop("magnitudes", None) or {}).items():
        if name in concept.encoders and m is not None:
            concept.encoders[name].magnitude = float(m)
    return concept


def write_diffusers(concept: Concept, folder: str | Path) -> dict[str, Path]:
    """One ``{token: [n_vectors, width]}`` file per encoder, for
    ``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)``."""
    folder = Path(folder)
    return {
        name: _save(folder / diffusers_filename(name), {concept.token: enc.vectors}, {**_metadata(concept, "diffusers"), "encoder": name})
        for name, enc in concept.encoders.items()
    }


def single_file_tensors(concept: Concept) -> dict[str, torch.Tensor]:
    """The single-file layout A1111 / ComfyUI / kohya read: ``clip_l``+``clip_g`` or ``emb_params``."""
    names = set(concept.encoders)
    if names == {COMPONENT[k] for k in SDXL_KEYS}:  # SDXL: named by component, whatever the widths
        return {k: concept.encoders[COMPONENT[k]].vectors for k in SDXL_KEYS}
    if len(names) == 1:
        return {"emb_params": next(iter(concept.encoders.values())).vectors}
    raise DTIError(f"no single-file layout holds encoders {sorted(names)}; write --to diffusers (one file per encoder) instead")


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
