"""The format contract, and what every reader shares: the raw file, dti's carried metadata, one-line
problems.

A format is one module in :mod:`dti.concepts.formats` that registers a :class:`Format`: ``sniff``
says whether a file's contents are its layout, ``read`` makes a :class:`~dti.concepts.concept.Concept`
of them, ``paths`` plans every file a write makes (before anything is written) and ``jobs`` writes
them. Readers are asked in registration order; a write names its format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dti.concepts.concept import Concept, EncoderVectors, checked_vectors
from dti.concepts.formats.pickles import torch_load
from dti.core.errors import DTIError
from dti.models.kinds import CLIP_WIDTHS

#: The fix for damaged dti metadata in a foreign-format file.
METADATA_FIX_FOREIGN = "write the file again with `dti convert`, or pass the original"

Job = tuple[Path, Callable[[str], None]]


@dataclass
class RawFile:
    """One embedding file as read: its entries (tensors, or A1111's nested dict), its safetensors
    metadata, and the provenance dti wrote into it (``dti_meta``), checked."""

    path: Path
    data: dict[str, Any]
    metadata: dict[str, str]
    carried: dict[str, Any] = field(default_factory=dict)

    @property
    def stored_name(self) -> str | None:
        return self.metadata.get("name") or self.metadata.get("token")


class Format:
    """One layout of concept files (see the module doc). A read-only layout plans no paths."""

    name: ClassVar[str]
    #: The names ``write`` takes for it (``a1111``, ``comfyui`` and ``kohya`` share one layout).
    writes: ClassVar[tuple[str, ...]] = ()

    def sniff(self, raw: RawFile) -> bool:
        return False

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        raise NotImplementedError

    def paths(self, concept: Concept, fmt: str, out: Path) -> list[Path]:
        raise NotImplementedError

    def jobs(self, concept: Concept, fmt: str, paths: list[Path]) -> list[Job]:
        raise NotImplementedError


def read_raw(path: Path, problems: list[str] | None) -> RawFile:
    """Entries and metadata of one file: safetensors read as they are, pickles only through
    torch's safe loader."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            data: dict[str, Any] = dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise DTIError(f"{path} is not a readable safetensors file ({exc}); check the file") from None
    elif suffix in (".pt", ".bin", ".ckpt", ".pth"):
        loaded = torch_load(path)
        if isinstance(loaded, torch.Tensor):
            loaded = {"": loaded}
        if not isinstance(loaded, dict):
            raise DTIError(f"{path} holds a {type(loaded).__name__}, not an embedding dict; check the file")
        data, metadata = loaded, {}
    else:
        raise DTIError(f"{path} has an unknown extension {suffix!r}; dti reads .safetensors, .pt and .bin embeddings")
    carried_text = data["dti_meta"] if isinstance(data.get("dti_meta"), str) else metadata.get("dti_meta")
    return RawFile(path, data, metadata, carried_meta(carried_text, path, problems))


def problem(problems: list[str] | None, path: Path, text: str, settings: tuple[str, ...] = ()) -> None:
    """Record ``text`` (which names its fix) or raise it as one line."""
    if problems is None:
        raise DTIError(f"{path}: {text}", settings=settings)
    problems.append(text.split("; ")[0])


def carried_meta(text: Any, path: Path, problems: list[str] | None) -> dict[str, Any]:
    """Provenance dti wrote into a foreign-format file (so conversions keep it), checked."""
    if text is None:
        return {}
    damaged = f"its dti_meta metadata is damaged ({{}}); {METADATA_FIX_FOREIGN}"
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        problem(problems, path, damaged.format("not a JSON object"))
        return {}
    if "encoder" in meta and not (isinstance(meta["encoder"], str) and meta["encoder"]):
        problem(problems, path, damaged.format(f"encoder {meta.pop('encoder')!r} is not a component name"))
    kinds = meta.get("encoder_kinds", {})
    if not isinstance(kinds, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in kinds.items()):
        problem(problems, path, damaged.format("encoder_kinds is not a map of names to kinds"))
        meta.pop("encoder_kinds")
    magnitudes = meta.get("magnitudes", {})
    if not isinstance(magnitudes, dict):
        problem(problems, path, damaged.format("magnitudes is not a map of names to numbers"))
        meta.pop("magnitudes")
    else:
        for name, m in list(magnitudes.items()):
            good = m is None or (isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0)
            if not good:
                problem(problems, path, damaged.format(f"the magnitude of {name} is {m!r}, not a positive finite number or null"))
                magnitudes[name] = None
    return meta


def matrix(value: Any, path: Path, key: str, problems: list[str] | None = None) -> torch.Tensor:
    """An entry as a ``[n_vectors, width]`` block, checked (:func:`~dti.concepts.concept.checked_vectors`)."""
    return checked_vectors(value, f"entry {key!r}", path, problems)


def default_token(path: Path) -> str:
    """A1111/ComfyUI name an embedding after its file; we wrap that name in <...>."""
    stem = re.sub(r"[^\w.-]", "", path.name.split(".")[0]) or "concept"
    return f"<{stem}>"


def file_token(raw: RawFile, token: str | None, stored: Any, problems: list[str] | None) -> str:
    """The token of a foreign file: the one asked for, else the name the file stores (when it is one
    word; a name no prompt could type is a problem of the file), else one made of the file's name."""
    from dti.text.words import token_problem

    if token:
        return token
    if isinstance(stored, str) and stored:
        if not token_problem(stored):
            return stored
        said = f"the token the file names, {stored[:40]!r}, is not one word a prompt could type; pass a made-up word as {{token}}"
        problem(problems, raw.path, said, ("token",))
    return default_token(raw.path)


def single(vectors: torch.Tensor, token: str, fmt: str, meta: dict[str, Any] | None = None, name: str | None = None) -> Concept:
    """A one-encoder concept. Its component and kind come from dti's metadata when the file has
    it; otherwise it is ``text_encoder`` of unknown kind (a full-size CLIP width names the kind),
    and loading places it by the model's encoders."""
    meta = dict(meta or {})
    name = meta.pop("encoder", None) or name or "text_encoder"
    kind = (meta.get("encoder_kinds") or {}).get(name) or CLIP_WIDTHS.get(int(vectors.shape[-1]))
    return Concept(token, {name: EncoderVectors(vectors, kind=kind)}, {"method": "unknown", **meta, "source_format": fmt})


def metadata(concept: Concept, fmt: str) -> dict[str, str]:
    """What dti writes into a foreign-format file: its format, the token, and the provenance that a
    conversion back keeps (norms, kinds, which encoder a one-encoder file is for)."""
    magnitudes = {name: enc.magnitude for name, enc in concept.encoders.items()}
    kinds = {name: enc.kind for name, enc in concept.encoders.items() if enc.kind}
    meta = {**concept.meta, "magnitudes": magnitudes, "encoder_kinds": kinds}
    if len(concept.encoders) == 1:  # a one-encoder layout has no key that says which encoder it is
        meta["encoder"] = next(iter(concept.encoders))
    return {"format": fmt, "name": concept.token, "written_by": "dti", "dti_meta": json.dumps(meta, default=str)}


def save_job(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Callable[[str], None]:
    """Writing ``tensors`` (each its own contiguous storage) with ``meta`` as one safetensors file."""
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    return lambda tmp: save_file(tensors, tmp, metadata=meta)
