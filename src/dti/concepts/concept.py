"""Concept: one learned word, its vectors per text encoder, and what produced it.

A concept maps each text encoder it conditions (named as the pipeline names the component:
``text_encoder``, ``text_encoder_2``) to an ``[n_vectors, width]`` block of input-embedding
rows. A DTI concept also records its fixed magnitude, so the rows are ``magnitude * direction``;
a plain TI concept has ``magnitude=None``. Saved as one self-describing safetensors file.

Every file is checked as it is read: vectors must be finite, floating-point, non-zero
``[n_vectors, width]`` rows, and dti's metadata must be whole. A reader given a ``problems``
list records what is wrong there and goes on (``dti inspect`` shows a bad file); without one,
the first problem is a one-line :class:`DTIError`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dti.concepts.kinds import tool_keys
from dti.core import sphere
from dti.core.errors import DTIError
from dti.core.files import atomic_write

FORMAT_NAME = "dti.concept"
FORMAT_VERSION = "1"
CONCEPT_FILENAME = "concept.safetensors"

#: The fix named when a file's vectors cannot be used.
VECTOR_FIX = (
    "the concept is unusable (a diverged run or a damaged file); retrain it or use an earlier snapshot (`dti inspect` lists every problem)"
)
#: The fix named when a tensor is not a block of embedding rows at all.
SHAPE_FIX = "it is not a textual-inversion embedding dti can use; check the file"
#: The fix named when dti's own metadata is damaged.
METADATA_FIX = "restore it from a copy or write it again with dti"


def _report(problems: list[str] | None, where: str, text: str, fix: str) -> None:
    """Record ``text`` in ``problems``, or, without a list, raise it as one line with ``fix``."""
    if problems is None:
        raise DTIError(f"{where}: {text}; {fix}")
    problems.append(text)


def _rows(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:8]) + (", ..." if len(indices) > 8 else "")
    return f"row {shown}" if len(indices) == 1 else f"rows {shown}"


# Vocabulary rows have norms of about 0.3-1 and plain TI inflates them 5-50x; a row past this
# overflows an fp16/bf16 text encoder (the same bound as ``--magnitude``).
MAX_ROW_NORM = 1e4


def value_problems(label: str, vectors: torch.Tensor) -> list[str]:
    """What makes a float ``[n, d]`` block unusable: NaN, infinite values, all-zero rows, no rows."""
    if vectors.numel() == 0:
        return [f"{label} has no vectors (shape {list(vectors.shape)})"]
    out = []
    nan = torch.isnan(vectors).any(dim=-1)
    if bool(nan.any()):
        out.append(f"{label} {_rows(nan.nonzero().flatten().tolist())} contain{'s' if int(nan.sum()) == 1 else ''} NaN")
    inf = torch.isinf(vectors).any(dim=-1)
    if bool(inf.any()):
        out.append(f"{label} {_rows(inf.nonzero().flatten().tolist())} contain{'s' if int(inf.sum()) == 1 else ''} infinite values")
    zero = (vectors == 0).all(dim=-1)
    if bool(zero.any()):
        out.append(f"{label} {_rows(zero.nonzero().flatten().tolist())} {'is' if int(zero.sum()) == 1 else 'are'} all zeros")
    huge = vectors.double().norm(dim=-1) > MAX_ROW_NORM
    if bool(huge.any()) and not bool(inf.any()):
        norm = float(vectors.double().norm(dim=-1).max())
        verb = "has" if int(huge.sum()) == 1 else "have"
        out.append(f"{label} {_rows(huge.nonzero().flatten().tolist())} {verb} norm {norm:.3g}, past {MAX_ROW_NORM:g}")
    return out


def checked_vectors(value: Any, label: str, where: str | os.PathLike, problems: list[str] | None = None) -> torch.Tensor:
    """``value`` as a float32 ``[n_vectors, width]`` block, or a one-line refusal naming ``label``
    (an encoder or a file key) in ``where`` (the file). With ``problems``, every problem is recorded
    there instead and the block is returned as well as it can be read (for ``dti inspect``)."""
    where = str(where)
    if not isinstance(value, torch.Tensor):
        raise DTIError(f"{where}: {label} is a {type(value).__name__}, not a [n_vectors, width] tensor; {SHAPE_FIX}")
    if not value.is_floating_point():
        _report(problems, where, f"{label} holds {str(value.dtype).removeprefix('torch.')} values, not floating-point vectors", SHAPE_FIX)
    if value.ndim not in (1, 2):
        _report(problems, where, f"{label} is {value.ndim}-D (shape {list(value.shape)}), not a [n_vectors, width] tensor", SHAPE_FIX)
    tensor = value.detach().cpu()
    if tensor.is_complex():
        tensor = tensor.real
    tensor = tensor.to(torch.float32)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1, 1)
    elif tensor.numel() == 0:
        tensor = tensor.reshape(0, tensor.shape[-1])
    else:
        tensor = tensor.reshape(-1, tensor.shape[-1])
    for text in value_problems(label, tensor):
        _report(problems, where, text, VECTOR_FIX)
    return tensor


@dataclass
class EncoderVectors:
    """The rows one text encoder reads for the concept's token(s)."""

    vectors: torch.Tensor  # [n_vectors, width], float32: what the encoder actually receives
    magnitude: float | None = None  # fixed row norm (DTI); None for a free (TI) vector
    init: torch.Tensor | None = None  # [n_vectors, width] unit rows: initializer = prior mean
    kind: str | None = None  # clip_l, clip_g, openclip_h, t5, gemma2; None when a foreign file does not say
    trained: bool = True  # False: the initializer's rows, kept fixed (``--encoders`` left this encoder out)

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.ndim not in (1, 2):
            shape = list(self.vectors.shape) if isinstance(self.vectors, torch.Tensor) else type(self.vectors).__name__
            raise DTIError(f"EncoderVectors needs a [n_vectors, width] tensor, got {shape}; {SHAPE_FIX}")
        self.vectors = self.vectors.detach().to(torch.float32).cpu()
        if self.vectors.ndim == 1:
            self.vectors = self.vectors.unsqueeze(0)
        if self.init is not None:
            if not isinstance(self.init, torch.Tensor) or self.init.numel() != self.vectors.numel():
                raise DTIError(f"EncoderVectors' init must have the vectors' shape {list(self.vectors.shape)}")
            self.init = self.init.detach().to(torch.float32).cpu().reshape(self.vectors.shape)

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def directions(self) -> torch.Tensor:
        """Unit rows: the part of the vectors DTI trains."""
        return sphere.normalize(self.vectors)

    @property
    def norms(self) -> torch.Tensor:
        return self.vectors.norm(dim=-1)


@dataclass
class Concept:
    """A learned word: placeholder token, vectors per text encoder, provenance metadata."""

    token: str
    encoders: dict[str, EncoderVectors]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vectors(self) -> int:
        counts = {e.n_vectors for e in self.encoders.values()}
        assert len(counts) == 1, f"encoders disagree on the vector count: {counts}"
        return counts.pop()

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))

    @property
    def tokens(self) -> list[str]:
        """The placeholder tokens a tokenizer holds: diffusers' multi-vector naming."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.n_vectors)]

    def rescaled(self, magnitudes: dict[str, float]) -> Concept:
        """Every row set to the given norm per encoder (e.g. TI-rescaled: norm := vocab mean)."""
        missing = sorted(set(self.encoders) - set(magnitudes))
        if missing:
            raise DTIError(f"rescaled() needs a magnitude for every encoder; {', '.join(missing)} has none")
        encoders = {}
        for name, enc in self.encoders.items():
            m = float(magnitudes[name])
            if not (math.isfinite(m) and m > 0):
                raise DTIError(f"rescaled(): the magnitude for {name} must be a finite number > 0, got {m}")
            encoders[name] = replace(enc, vectors=m * enc.directions, magnitude=m)
        meta = dict(self.meta, rescaled_from=self.method)
        return Concept(self.token, encoders, meta)

    def renamed(self, token: str) -> Concept:
        return Concept(token, dict(self.encoders), dict(self.meta))

    def check(self, where: str = "concept") -> None:
        """Refuse, in one line, vectors no text encoder can use (NaN, infinite, all-zero or no rows)."""
        for name, enc in self.encoders.items():
            checked_vectors(enc.vectors, name, f"{where} {self.token}")
        counts = {e.n_vectors for e in self.encoders.values()}
        if len(counts) > 1:
            raise DTIError(f"{where} {self.token}: its encoders hold different vector counts {sorted(counts)}; {VECTOR_FIX}")

    # ----------------------------------------------------------------- persistence
    def serialize(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors and metadata of the concept file.

        Beside dti's own ``<encoder>.vectors`` / ``<encoder>.init``, the trained vectors are stored
        once more under the keys other tools look for (``emb_params``; ``clip_l`` / ``clip_g`` /
        ``t5xxl``; see :func:`dti.concepts.kinds.tool_keys`), so a tool that reads this file by its own
        rules picks the trained rows, never the initializer's: ComfyUI takes its encoder's key and
        otherwise the *first* tensor of the file (safetensors stores float32 tensors in name order,
        and ``emb_params`` sorts before ``text_encoder.*``); A1111 takes ``clip_g`` + ``clip_l`` and
        refuses other files with several keys. dti itself reads its own keys and checks the copies.
        """
        tensors: dict[str, torch.Tensor] = {}
        enc_meta: dict[str, Any] = {}
        for name, enc in self.encoders.items():
            tensors[f"{name}.vectors"] = enc.vectors.contiguous()
            if enc.init is not None:
                tensors[f"{name}.init"] = enc.init.contiguous()
            enc_meta[name] = {
                "magnitude": enc.magnitude,
                "width": enc.width,
                "n_vectors": enc.n_vectors,
                "kind": enc.kind,
                "trained": enc.trained,
            }
        copies = tool_keys(self.encoders, self.meta)
        for key, name in copies.items():
            tensors[key] = self.encoders[name].vectors.clone().contiguous()  # a copy: safetensors refuses shared storage
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "token": self.token,
            "encoders": json.dumps(enc_meta),
            "tool_keys": json.dumps(copies),
            "meta": json.dumps(self.meta, default=str),
        }
        return tensors, metadata

    def save(self, path: str | os.PathLike) -> Path:
        """Write the concept as one safetensors file (atomically); vectors no encoder can use (NaN,
        infinite, all-zero) are refused rather than written."""
        return atomic_write(path, self.writer())

    def writer(self) -> Callable[[str], None]:
        """What writes this concept's file at a temporary path, for files that must appear together
        (:func:`dti.core.files.atomic_write_all`); unusable vectors are refused now, before anything is written."""
        self.check()
        tensors, metadata = self.serialize()
        return lambda tmp: save_file(tensors, tmp, metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, problems: list[str] | None = None) -> Concept:
        """Read a file written by :meth:`save`; a folder means its ``concept.safetensors``.

        Damaged metadata or unusable vectors are a one-line :class:`DTIError`; with ``problems``,
        the problems that still leave something to show (bad values, a bad magnitude, a mismatched
        initializer) are recorded there instead.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise DTIError(f"Concept.load takes a path to a concept file or run folder, not a {type(path).__name__}")
        path = Path(path)
        if path.is_dir():
            path = path / CONCEPT_FILENAME
        if not path.is_file():
            raise DTIError(f"concept file not found: {path}; pass a dti concept file or a training output folder")
        if path.suffix.lower() in (".pt", ".bin", ".ckpt"):
            raise DTIError(
                f"{path} is a {path.suffix} embedding, not a dti concept file; read it with dti.concepts.formats.read or dti convert"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise DTIError(f"{path} is not a readable safetensors file ({exc}); pass a dti concept file") from None
        if metadata.get("format") != FORMAT_NAME:
            raise DTIError(f"{path} is not a dti concept file (no '{FORMAT_NAME}' metadata); convert it with `dti convert`")
        return _from_file(cls, path, metadata, tensors, problems)


def _damaged(path: Path, what: str) -> DTIError:
    return DTIError(f"{path} is a damaged dti concept file: {what}; {METADATA_FIX}")


def _json_field(path: Path, metadata: dict[str, str], key: str, kind: type, default: Any) -> Any:
    if key not in metadata:
        if default is None:
            raise _damaged(path, f"its metadata has no '{key}'")
        return default
    try:
        value = json.loads(metadata[key])
    except (json.JSONDecodeError, TypeError):
        raise _damaged(path, f"its '{key}' metadata is not valid JSON") from None
    if not isinstance(value, kind):
        raise _damaged(path, f"its '{key}' metadata is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _magnitude(path: Path, name: str, value: Any, problems: list[str] | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    _report(problems, str(path), f"{name} magnitude {value!r} is not a positive finite number or null", METADATA_FIX)
    return None


def _from_file(cls: type[Concept], path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor], problems: list[str] | None):
    version = metadata.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise DTIError(f"{path} was written by another dti (concept format {version!r}; this dti reads {FORMAT_VERSION!r}); upgrade dti")
    token = metadata.get("token")
    if not isinstance(token, str) or not token:
        raise _damaged(path, "its metadata names no token")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        if problems is None:
            raise _damaged(path, f"its token {token!r} holds white space (no prompt could name it)")
        problems.append(f"the token {token!r} holds white space (no prompt could name it); rename it with `dti convert --token`")
    enc_meta = _json_field(path, metadata, "encoders", dict, None)
    if not enc_meta:
        raise _damaged(path, "its metadata lists no encoders")
    copies = _json_field(path, metadata, "tool_keys", dict, {})
    meta = _json_field(path, metadata, "meta", dict, {})
    known: set[str] = set()
    encoders: dict[str, EncoderVectors] = {}
    for name, info in enc_meta.items():
        if not isinstance(info, dict):
            raise _damaged(path, f"the metadata of encoder {name!r} is a {type(info).__name__}, not an object")
        key = f"{name}.vectors"
        if key not in tensors:
            raise _damaged(path, f"its metadata lists encoder {name!r} but the tensor '{key}' is missing")
        vectors = checked_vectors(tensors[key], name, path, problems)
        for field_name, actual in (("width", int(vectors.shape[-1])), ("n_vectors", int(vectors.shape[0]))):
            stated = info.get(field_name, actual)
            if stated != actual or isinstance(stated, bool):
                raise _damaged(path, f"its metadata gives {name} {field_name} {stated!r} but the tensor has {actual}")
        kind = info.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise _damaged(path, f"the kind of {name} is a {type(kind).__name__}, not a string")
        trained = info.get("trained", True)
        if not isinstance(trained, bool):
            raise _damaged(path, f"'trained' of {name} is {trained!r}, not true or false")
        init = tensors.get(f"{name}.init")
        if init is not None:
            if tuple(init.shape) != tuple(vectors.shape):
                text = f"{name} initializer has shape {list(init.shape)}, its vectors {list(vectors.shape)}"
                _report(problems, str(path), text, METADATA_FIX)
                init = None
            elif not init.is_floating_point() or not bool(torch.isfinite(init).all()):
                _report(problems, str(path), f"{name} initializer is not finite floating-point rows", METADATA_FIX)
                init = None
        known.update({key, f"{name}.init"})
        encoders[str(name)] = EncoderVectors(
            vectors=vectors,
            magnitude=_magnitude(path, name, info.get("magnitude"), problems),
            init=init,
            kind=kind,
            trained=trained,
        )
    for key, name in copies.items():
        if not isinstance(name, str) or name not in encoders or key not in tensors:
            raise _damaged(path, f"its metadata names a copy '{key}' of {name!r} that the file does not hold")
        copy = tensors[key]
        if tuple(copy.shape) != tuple(encoders[name].vectors.shape) or not torch.allclose(
            copy.to(torch.float32), encoders[name].vectors, rtol=0.0, atol=0.0, equal_nan=True
        ):
            _report(problems, str(path), f"the copy '{key}' other tools read differs from {name}'s vectors", METADATA_FIX)
        known.add(key)
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise _damaged(path, f"it holds tensors its metadata does not list ({', '.join(unknown[:4])})")
    counts = {e.n_vectors for e in encoders.values()}
    if len(counts) > 1:
        _report(problems, str(path), f"its encoders hold different vector counts {sorted(counts)}", METADATA_FIX)
    return cls(token, encoders, meta)
