"""Concept files of every tool, in and out.

Layouts (which key belongs to which pipeline component is asked of the registered adapters,
by encoder kind; a width is never enough, except a full-size CLIP width in a file that says nothing):

- ``dti``: our self-describing ``concept.safetensors`` (see :mod:`dti.concepts.concept`).
- ``diffusers``: one ``{token: [n, d]}`` file per encoder (``learned_embeds.safetensors``,
  ``learned_embeds_2.safetensors``; ``.bin`` too).
- single file keyed by encoder kind: ``{clip_l, clip_g}`` (SDXL: A1111, ComfyUI, kohya),
  ``{clip_l, t5xxl}`` (FLUX) and ``{clip_l, clip_g, t5xxl}`` (SD3) as ComfyUI names them;
  OneTrainer's ``t5`` / ``gemma`` are read too.
- ``kohya`` (SD 1.x/2.x) ``{emb_params: [n, d]}``: read by kohya, A1111 and ComfyUI.
- ``a1111`` ``.pt``: ``{string_to_param: {"*": [n, d]}, name, step, ...}``. Read only with
  ``torch.load(weights_only=True)``: a pickle that would build arbitrary objects is refused, never run.

Every reader checks what it reads (see :func:`dti.concepts.concept.checked_vectors`); given a ``problems``
list it records the problems there and goes on, for ``dti inspect``. Writing computes every path
first (:func:`planned_paths`), refuses existing files unless told to overwrite, and replaces old
files only once every new one is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickletools
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dti.concepts.concept import CONCEPT_FILENAME, FORMAT_NAME, Concept, EncoderVectors, checked_vectors
from dti.core.errors import DTIError
from dti.core.files import atomic_write
from dti.models.kinds import CLIP_WIDTHS, KIND_KEYS
from dti.text.words import file_stem

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
#: Modules whose globals a plain tensor file names (torch's rebuild functions, OrderedDict); any other is refused by name.
_TENSOR_MODULES = {"torch", "collections"}


def _resolves(name: str) -> bool:
    """Whether ``module.attr`` names an existing object in an already imported module (nothing is imported)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:i]))
        if obj is None:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The globals the pickles at the start of ``data`` name, read without running them
    (:mod:`pickletools` only parses), and whether the bytes parsed as whole pickles."""
    stream = io.BytesIO(data)
    names: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # recent pushes, strings kept: what STACK_GLOBAL pops
    try:
        for _ in range(5):  # torch's legacy layout: five pickles, then raw storage bytes
            if stream.tell() >= len(data):
                break
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    if len(pushed) >= 2 and all(isinstance(x, str) for x in pushed[-2:]):
                        names.append(f"{pushed[-2]}.{pushed[-1]}")
                    else:
                        names.append("an unnamed global")
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif "UNICODE" in op.name or "STRING" in op.name:
                    pushed.append(arg if isinstance(arg, str) else None)
                else:
                    pushed.append(None)
                del pushed[:-8]
    except Exception:  # ValueError and friends: not a whole pickle
        return names, False
    return names, True


def _shown(name: str) -> str:
    module, _, attr = name.rpartition(".")
    return f"{name} (os.{attr})" if module in ("posix", "nt") else name


def _pt_error(path: Path, exc: BaseException) -> DTIError:
    """Tell a damaged file from a pickle that torch's safe loader refused (naming what it calls)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return DTIError(f"could not read {path}: {err.strerror or err}; check the file's permissions")
    if not data:
        return DTIError(f"{path} is not a readable .pt file (it is empty); download or export it again")
    text = str(exc)
    damaged = f"{path} is not a readable .pt file (damaged or truncated: {{}}); download or export it again"
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
            return DTIError(damaged.format("a broken zip archive"))
        if bad is not None:
            return DTIError(damaged.format(f"a broken entry {bad} in its zip archive"))
        names = re.findall(r"GLOBAL ([\w.]+)", text)
        whole = True
    else:
        found, whole = _pickle_globals(data)
        names = [*re.findall(r"GLOBAL ([\w.]+)", text), *found]
    foreign = [n for n in names if n.split(".")[0] not in _TENSOR_MODULES]
    if foreign:
        return DTIError(
            f"refused to load {path}: its pickle calls {_shown(foreign[0])}, which is not a tensor; pickles are never "
            "unpickled freely, so convert it to .safetensors in an environment you trust"
        )
    if not whole:
        return DTIError(damaged.format("neither a zip archive nor a whole pickle"))
    if any(not _resolves(n) for n in names) or not names:
        return DTIError(damaged.format(type(exc).__name__ if not names else "it names torch objects that do not exist"))
    return DTIError(
        f"refused to load {path}: its pickle builds {names[0]}, which torch's safe loader does not allow; "
        "convert it to .safetensors in an environment you trust"
    )


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the file is judged below
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError: damaged, or refused
        raise _pt_error(path, exc) from None


def _read_raw(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors (or the nested A1111 dict) and safetensors metadata of one file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return dict(load_file(str(path))), metadata
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise DTIError(f"{path} is not a readable safetensors file ({exc}); check the file") from None
    if suffix in (".pt", ".bin", ".ckpt", ".pth"):
        data = _torch_load(path)
        if isinstance(data, torch.Tensor):
            return {"": data}, {}
        if not isinstance(data, dict):
            raise DTIError(f"{path} holds a {type(data).__name__}, not an embedding dict; check the file")
        return data, {}
    raise DTIError(f"{path} has an unknown extension {suffix!r}; dti reads .safetensors, .pt and .bin embeddings")


def _as_matrix(value: Any, path: Path, key: str, problems: list[str] | None = None) -> torch.Tensor:
    return checked_vectors(value, f"entry {key!r}", path, problems)


def _single(vectors: torch.Tensor, token: str, fmt: str, meta: dict[str, Any] | None = None, name: str | None = None) -> Concept:
    """A one-encoder concept. Its component and kind come from dti's metadata when the file has
    it; otherwise it is ``text_encoder`` of unknown kind (a full-size CLIP width names the kind),
    and loading places it by the model's encoders."""
    meta = dict(meta or {})
    name = meta.pop("encoder", None) or name or "text_encoder"
    kind = (meta.get("encoder_kinds") or {}).get(name) or CLIP_WIDTHS.get(int(vectors.shape[-1]))
    return Concept(token, {name: EncoderVectors(vectors, kind=kind)}, {"method": "unknown", **meta, "source_format": fmt})


def _carried_meta(text: Any, path: Path, problems: list[str] | None) -> dict[str, Any]:
    """Provenance dti wrote into a foreign-format file (so conversions keep it), checked."""
    if text is None:
        return {}
    damaged = f"its dti_meta metadata is damaged ({{}}); {METADATA_FIX_FOREIGN}"
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        _problem(problems, path, damaged.format("not a JSON object"))
        return {}
    if "encoder" in meta and not (isinstance(meta["encoder"], str) and meta["encoder"]):
        _problem(problems, path, damaged.format(f"encoder {meta.pop('encoder')!r} is not a component name"))
    kinds = meta.get("encoder_kinds", {})
    if not isinstance(kinds, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in kinds.items()):
        _problem(problems, path, damaged.format("encoder_kinds is not a map of names to kinds"))
        meta.pop("encoder_kinds")
    magnitudes = meta.get("magnitudes", {})
    if not isinstance(magnitudes, dict):
        _problem(problems, path, damaged.format("magnitudes is not a map of names to numbers"))
        meta.pop("magnitudes")
    else:
        for name, m in list(magnitudes.items()):
            good = m is None or (isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0)
            if not good:
                _problem(problems, path, damaged.format(f"the magnitude of {name} is {m!r}, not a positive finite number or null"))
                magnitudes[name] = None
    return meta


#: The fix for damaged dti metadata in a foreign-format file.
METADATA_FIX_FOREIGN = "write the file again with `dti convert`, or pass the original"


def _problem(problems: list[str] | None, path: Path, text: str) -> None:
    """Record ``text`` (which names its fix) or raise it as one line."""
    if problems is None:
        raise DTIError(f"{path}: {text}")
    problems.append(text.split("; ")[0])


def read_file(path: str | Path, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """Any supported concept file -> Concept. ``token`` overrides the name stored in the file.
    With ``problems``, unusable values are recorded there instead of refused (``dti inspect``)."""
    path = Path(path)
    if not path.is_file():
        raise DTIError(f"concept file not found: {path}; check the path")
    data, metadata = _read_raw(path)
    if metadata.get("format") == FORMAT_NAME:
        concept = Concept.load(path, problems)
        return concept.renamed(token) if token else concept
    stored = metadata.get("name") or metadata.get("token")
    carried_text = data["dti_meta"] if isinstance(data.get("dti_meta"), str) else metadata.get("dti_meta")
    carried = _carried_meta(carried_text, path, problems)
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise DTIError(f"{path}: A1111 embedding with {len(params) if isinstance(params, Mapping) else '?'} terms; expected one")
        vectors = _as_matrix(next(iter(params.values())), path, "string_to_param", problems)
        name = token or (data["name"] if isinstance(data.get("name"), str) and data["name"] else default_token(path))
        step = data.get("step")
        return _single(vectors, name, "a1111", {"step": step if isinstance(step, (int, float, type(None))) else str(step), **carried})
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
        encoders = {components[by_key[k]]: EncoderVectors(_as_matrix(data[k], path, k, problems), kind=by_key[k]) for k in keyed}
        counts = {e.n_vectors for e in encoders.values()}
        if len(counts) != 1:
            _problem(problems, path, f"{', '.join(sorted(keyed))} have different vector counts {sorted(counts)}; the file is inconsistent")
        carried.pop("encoder_kinds", None)
        return Concept(token or stored or default_token(path), encoders, {"method": "unknown", **carried, "source_format": "single-file"})
    if "emb_params" in data:
        vectors = _as_matrix(data["emb_params"], path, "emb_params", problems)
        return _single(vectors, token or stored or default_token(path), "kohya", carried)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers {token: vectors}
        key, value = next(iter(tensors.items()))
        if isinstance(metadata.get("encoder"), str) and metadata["encoder"]:
            carried["encoder"] = metadata["encoder"]
        name = _diffusers_component(path)
        vectors = _as_matrix(value, path, str(key), problems)
        return _single(vectors, token or str(key) or stored or default_token(path), "diffusers", carried, name)
    raise DTIError(f"{path} is not a textual-inversion embedding dti knows (keys {sorted(map(str, data))[:6]}); see `dti convert --help`")


def _diffusers_component(path: Path) -> str:
    """``learned_embeds_2.safetensors`` is the second encoder's file, ``_3`` the third's."""
    match = re.match(r"learned_embeds(_\d+)?", path.name)
    return f"text_encoder{match.group(1) or ''}" if match else "text_encoder"


def read_folder(path: Path, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """A dti run folder (``concept.safetensors``) or a folder of diffusers per-encoder files."""
    if (path / CONCEPT_FILENAME).is_file():
        concept = Concept.load(path / CONCEPT_FILENAME, problems)
        return concept.renamed(token) if token else concept
    files = sorted(path.glob("learned_embeds*.safetensors")) or sorted(path.glob("learned_embeds*.bin"))
    if not files:
        raise DTIError(f"{path} holds no concept.safetensors or learned_embeds files; pass a concept file or run folder")
    parts = [read_file(f, problems=problems) for f in files]
    names = {p.token for p in parts}
    if len(names) != 1:
        raise DTIError(f"{path}: the per-encoder files name different tokens {sorted(names)}; pass one file")
    encoders: dict[str, EncoderVectors] = {}
    for part in parts:
        for name, enc in part.encoders.items():
            if name in encoders:
                raise DTIError(f"{path}: two files hold vectors for {name}; remove one")
            encoders[name] = enc
    counts = {e.n_vectors for e in encoders.values()}
    if len(counts) > 1:
        _problem(problems, path, f"the per-encoder files hold different vector counts {sorted(counts)}; the folder is inconsistent")
    meta: dict[str, Any] = {}
    for part in parts:
        meta.update(part.meta)
    return Concept(token or names.pop(), encoders, {**meta, "source_format": "diffusers"})


def read(path: str | Path, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """A concept from a file or folder in any supported format.

    Unusable vectors (NaN, infinite, all-zero or no rows, integer values, not ``[n, width]``) and
    damaged metadata are a one-line :class:`DTIError`; with ``problems`` (a list), the problems that
    leave something to show are recorded there and the concept is returned as well as it reads.
    """
    path = Path(path)
    concept = read_folder(path, token, problems) if path.is_dir() else read_file(path, token, problems)
    return _restore_magnitudes(concept)


# ------------------------------------------------------------------ writing
def diffusers_filename(encoder: str) -> str:
    """``text_encoder`` -> ``learned_embeds.safetensors`` (diffusers' default name),
    ``text_encoder_2`` -> ``learned_embeds_2.safetensors``."""
    suffix = encoder.removeprefix("text_encoder")
    return f"learned_embeds{suffix}.safetensors"


def _metadata(concept: Concept, fmt: str) -> dict[str, str]:
    magnitudes = {name: enc.magnitude for name, enc in concept.encoders.items()}
    kinds = {name: enc.kind for name, enc in concept.encoders.items() if enc.kind}
    meta = {**concept.meta, "magnitudes": magnitudes, "encoder_kinds": kinds}
    if len(concept.encoders) == 1:  # a one-encoder layout has no key that says which encoder it is
        meta["encoder"] = next(iter(concept.encoders))
    return {"format": fmt, "name": concept.token, "written_by": "dti", "dti_meta": json.dumps(meta, default=str)}


def _restore_magnitudes(concept: Concept) -> Concept:
    """Fixed norms a dti-written foreign file carried in its metadata (checked by :func:`_carried_meta`)."""
    for name, m in (concept.meta.pop("magnitudes", None) or {}).items():
        if name in concept.encoders and m is not None:
            concept.encoders[name].magnitude = float(m)
    for name, kind in (concept.meta.pop("encoder_kinds", None) or {}).items():
        if name in concept.encoders and kind:
            concept.encoders[name].kind = str(kind)
    return infer_kinds(concept)


def _save_job(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Callable[[str], None]:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return lambda tmp: save_file(tensors, tmp, metadata=metadata)


def write_diffusers(concept: Concept, folder: str | Path, overwrite: bool = True) -> dict[str, Path]:
    """One ``{token: [n_vectors, width]}`` file per encoder, for
    ``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)``."""
    paths = write(concept, "diffusers", folder, overwrite=overwrite)
    return dict(zip(concept.encoders, paths))


def single_file_keys(concept: Concept) -> dict[str, str]:
    """Single-file key -> the concept's component, in the layout other tools read: ``{clip_l, clip_g}``
    (SDXL), ``{clip_l, t5xxl}`` (FLUX), ``{clip_l, clip_g, t5xxl}`` (SD3) as ComfyUI names them; one CLIP
    encoder as ``emb_params`` (A1111 / kohya / ComfyUI, SD 1.x/2.x); one T5 or Gemma as OneTrainer's
    ``t5`` / ``gemma``. The concept itself is not changed (kinds are inferred on a copy)."""
    probe = infer_kinds(Concept(concept.token, {n: replace(e) for n, e in concept.encoders.items()}, dict(concept.meta)))
    if len(probe.encoders) == 1:
        name, enc = next(iter(probe.encoders.items()))
        return {{"t5": "t5", "gemma2": "gemma"}.get(encoder_kind(enc), "emb_params"): name}
    kinds = [enc.kind for enc in probe.encoders.values()]
    if None in kinds or len(set(kinds)) != len(kinds) or any(k not in KIND_KEYS for k in kinds):
        raise DTIError(
            f"no single-file layout holds encoders {sorted(concept.encoders)}; write --to diffusers (one file per encoder) instead"
        )
    return {KIND_KEYS[str(enc.kind)][0]: name for name, enc in probe.encoders.items()}


def single_file_tensors(concept: Concept) -> dict[str, torch.Tensor]:
    """The tensors of :func:`single_file_keys`' layout."""
    return {key: concept.encoders[name].vectors for key, name in single_file_keys(concept).items()}


def tool_keys(concept: Concept) -> dict[str, str]:
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
        return single_file_keys(concept)
    except DTIError:
        return {}


def trigger_tokenizers(concept: Concept, model: str | os.PathLike | None = None) -> dict[str, Any]:
    """The tokenizers to check a trigger word against, loaded cheaply (no weights): ``model``'s when
    given, else those of the concept's base model when it is a local pipeline folder; ``{}`` when
    neither is at hand (the check is then skipped rather than downloading anything)."""
    from dti.models import load_tokenizers

    if model:
        return load_tokenizers(model)[1]
    base = concept.meta.get("base_model")
    if isinstance(base, str) and base and (Path(base) / "model_index.json").is_file():
        try:
            return load_tokenizers(base)[1]
        except (DTIError, OSError, ValueError):
            return {}
    return {}


def planned_paths(concept: Concept, fmt: str, out: str | Path) -> list[Path]:
    """Every file :func:`write` would write for ``concept`` in ``fmt`` at ``out``, before anything
    is written (so a caller can refuse existing outputs or check the trigger word first). Refuses
    in one line a layout the concept cannot take."""
    out = Path(out)
    if fmt == "dti":
        return [out / CONCEPT_FILENAME if out.suffix != ".safetensors" else out]
    if fmt == "diffusers":
        if out.suffix:
            raise DTIError(f"--to diffusers writes one file per encoder; give a folder for --out, not {out.name}")
        return [out / diffusers_filename(name) for name in concept.encoders]
    if fmt in ("a1111", "comfyui", "kohya"):
        if out.suffix.lower() == ".pt":
            if fmt != "a1111" or len(concept.encoders) != 1:
                raise DTIError("only --to a1111 for a single-encoder (SD 1.x/2.x) concept can be written as .pt; use .safetensors")
            return [out]
        single_file_keys(concept)  # refuses a concept no single file holds
        return [out if out.suffix.lower() == ".safetensors" else out / f"{file_stem(concept.token)}.safetensors"]
    raise DTIError(f"--to {fmt!r} is not a known format; use one of {', '.join(FORMATS)}")


def stale_paths(fmt: str, paths: list[Path]) -> list[Path]:
    """Files beside the planned ones that would change what the output reads as: another encoder's
    ``learned_embeds_<n>`` in a diffusers folder (an SD concept written over an SDXL one)."""
    if fmt != "diffusers" or not paths or not paths[0].parent.is_dir():
        return []
    folder = paths[0].parent
    found = [*folder.glob("learned_embeds*.safetensors"), *folder.glob("learned_embeds*.bin")]
    return sorted(p for p in found if p not in paths)


def _jobs(concept: Concept, fmt: str, paths: list[Path]) -> list[tuple[Path, Callable[[str], None]]]:
    if fmt == "dti":
        return [(paths[0], _save_job(*concept.serialize()))]
    if fmt == "diffusers":
        return [
            (path, _save_job({concept.token: enc.vectors}, {**_metadata(concept, "diffusers"), "encoder": name}))
            for path, (name, enc) in zip(paths, concept.encoders.items())
        ]
    if paths[0].suffix.lower() == ".pt":
        vectors = next(iter(concept.encoders.values())).vectors.contiguous()
        data = {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": concept.token,
            "step": int(concept.meta.get("step") or 0) if isinstance(concept.meta.get("step"), (int, float, type(None))) else 0,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "dti_meta": _metadata(concept, fmt)["dti_meta"],  # A1111 ignores extra keys
        }
        return [(paths[0], lambda tmp: torch.save(data, tmp))]
    return [(paths[0], _save_job(single_file_tensors(concept), _metadata(concept, fmt)))]


def check_destination(paths: list[Path], overwrite: bool, stale: list[Path] = ()) -> None:
    """Refuse, in one line, outputs that exist (unless ``overwrite``), are folders, or lie under a file."""
    for path in paths:
        if path.is_dir():
            raise DTIError(f"{path} is a folder, not a file; choose another --out")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise DTIError(f"{parent} is a file, so {path} cannot be written; choose another --out")
                break
    existing = [p for p in [*paths, *stale] if p.exists()]
    if existing and not overwrite:
        raise DTIError(f"{existing[0]} already exists; pass --overwrite to replace it or choose another --out")


def write(concept: Concept, fmt: str, out: str | Path, overwrite: bool = True) -> list[Path]:
    """Write ``concept`` in format ``fmt`` to ``out`` (a file, or a folder for diffusers).

    Every path is known before anything is written (:func:`planned_paths`); without ``overwrite``
    an existing one is refused. New files are written beside their targets first and moved into
    place only once all of them are written, so a failure leaves the old output as it was.
    """
    paths = planned_paths(concept, fmt, out)
    stale = stale_paths(fmt, paths)
    check_destination(paths, overwrite, stale)
    jobs = _jobs(concept, fmt, paths)
    created = [p for p in {parent for path in paths for parent in path.parents} if not p.exists()]
    staged: list[tuple[Path, Path]] = []
    try:
        for path, job in jobs:
            stage = path.with_name(f".{path.name}.dti-new")
            atomic_write(stage, job)
            staged.append((stage, path))
        from dti.core.files import replace_together

        replace_together([str(stage) for stage, _ in staged], [path for _, path in staged])  # all or none
        for path in stale:
            path.unlink()
    except BaseException as exc:
        for stage, _ in staged:
            with contextlib.suppress(OSError):
                stage.unlink()
        for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise DTIError(f"could not write {out}: {exc.strerror or exc}; choose another --out") from None
        raise
    return paths
