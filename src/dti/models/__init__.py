"""Pipeline families: find a model, load it, and pick the adapter that trains through it.

The family is read from the pipeline's ``model_index.json`` (``_class_name``) before any
weights load, so an unsupported or missing model fails fast with a one-line error.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dti.core.errors import DTIError
from dti.models.base import ADAPTERS, Adapter, CropInfo, EncoderRole, EncoderSlot, FamilyDefaults, register

# Every module of this package is a family (or a loss base) that registers itself on import:
# adding a family is adding one file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

__all__ = [
    "ADAPTERS",
    "Adapter",
    "CropInfo",
    "EncoderRole",
    "EncoderSlot",
    "FamilyDefaults",
    "adapter_for",
    "check_components",
    "load_adapter",
    "load_tokenizers",
    "model_hints",
    "model_path",
    "model_record",
    "read_model_index",
    "register",
]


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _read_json_object(path: Path, label: str, fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object; anything else (truncated, a list, binary) is one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise DTIError(f"cannot read {label}: {reason}; {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        raise DTIError(f"{label} {what}; {fix}") from None
    if not isinstance(data, dict):
        raise DTIError(f"{label} holds {_json_kind(data)}, not a JSON object; {fix}")
    return data


def _check_index(index: dict[str, Any], label: str, fix: str) -> dict[str, Any]:
    name = index.get("_class_name")
    if not isinstance(name, str) or not name.strip():
        found = "has no _class_name" if name is None else f"has _class_name {json.dumps(name)}, not a pipeline class name"
        raise DTIError(f"{label} {found}; {fix}")
    return index


def model_path(model: str | os.PathLike) -> str:
    """Where a model name points: ``dti-mini`` is the model that ships inside the package; any other
    name (a local folder or a hub id) is itself."""
    from dti.mini.model import ALIAS, PACKAGED

    if str(model) == ALIAS:
        if not (PACKAGED / "model_index.json").is_file():
            raise DTIError(f"the packaged dti-mini model is missing at {PACKAGED}; reinstall dti")
        return str(PACKAGED)
    return str(model)


def model_record(model: str | os.PathLike) -> str:
    """The name to record for a model so that it loads again from any folder: a local folder as its
    absolute path; a hub id or ``dti-mini`` as given."""
    from dti.mini.model import ALIAS

    name = str(model)
    if name == ALIAS or not name:
        return name
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def read_model_index(model: str | os.PathLike) -> dict[str, Any]:
    """The pipeline's ``model_index.json`` from a local folder or the hub cache / hub (``dti-mini``: the packaged one)."""
    model = model_path(model)
    path = Path(model)
    if path.exists():
        index = path / "model_index.json"
        if not path.is_dir() or not index.is_file():
            raise DTIError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder written by save_pretrained or a hub id"
            )
        fix = "re-download the model or re-save it with save_pretrained"
        return _check_index(_read_json_object(index, str(index), fix), str(index), fix)
    name = str(model)
    if not _HUB_ID.match(name) or name.count("/") > 1:
        raise DTIError(f"model {name!r} does not exist as a local folder and is not a valid hub id; check the path")
    from dti.models import hub

    downloaded = hub.fetch(name, "model_index.json", "model", "pass a local diffusers folder, or download the model once with network")
    label = f"model_index.json of {name!r}"
    fix = "it is not a diffusers pipeline, or the cached copy is damaged: delete it from the hub cache and download again"
    return _check_index(_read_json_object(downloaded, label, fix), label, fix)


HINTS_FILENAME = "dti.json"


def model_hints(model: str | os.PathLike) -> dict[str, Any]:
    """A model folder's suggestions for dti (``dti.json``): e.g. prompt templates in its vocabulary.
    A damaged file, or a hint of the wrong shape, is refused in one line (it would shape training)."""
    from dti.text.templates import TEMPLATE_SETS

    path = Path(model_path(model)) / HINTS_FILENAME
    if not path.is_file():
        return {}
    fix = "fix or remove it"
    hints = _read_json_object(path, str(path), fix)
    templates = hints.get("templates")
    if templates is not None and not (
        templates in TEMPLATE_SETS
        if isinstance(templates, str)
        else isinstance(templates, list) and templates and all(isinstance(t, str) and "{}" in t for t in templates)
    ):
        raise DTIError(f"{path}: templates must be one of {', '.join(TEMPLATE_SETS)} or a list of prompts that each contain {{}}; {fix}")
    prompts = hints.get("validation_prompts")
    if prompts is not None and not (isinstance(prompts, list) and all(isinstance(t, str) and "{}" in t for t in prompts)):
        raise DTIError(f"{path}: validation_prompts must be a list of prompts that each contain {{}}; {fix}")
    words = hints.get("class_words")
    if words is not None and not (isinstance(words, list) and all(isinstance(w, str) and w.strip() for w in words)):
        raise DTIError(f"{path}: class_words must be a list of words; {fix}")
    return hints


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


def _components(index: dict[str, Any]) -> dict[str, str]:
    """Component folder -> class name, for the components the pipeline has (not ``[null, null]``)."""
    out = {}
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if isinstance(value[0], str) and isinstance(value[1], str):
            out[key] = value[1]
    return out


def check_components(model: str | os.PathLike, index: dict[str, Any], only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> None:
    """A local pipeline folder has every component its ``model_index.json`` lists (``only`` those, less
    ``skip``: components the family loads as None), each with the files its kind needs; one line names
    the first that is missing. Hub ids are left to the hub's loader."""
    root = Path(str(model))
    if not root.is_dir():
        return
    fix = "the copy is incomplete: download the model again or re-save it with save_pretrained"
    for name, value in index.items():  # a component folder whose entry is not a [library, class] pair
        pair = isinstance(value, list) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value)
        if not name.startswith("_") and not pair and (root / name).is_dir():
            raise DTIError(
                f"{root / 'model_index.json'} lists component {name} as {json.dumps(value)[:60]}, not a [library, class] pair such "
                f'as ["diffusers", "AutoencoderKL"]; fix that entry or re-save the pipeline with save_pretrained'
            )
    for name, class_name in _components(index).items():
        if (only is not None and name not in only) or name in skip:
            continue
        folder = root / name
        if not folder.is_dir():
            raise DTIError(f"{root} has no {name} folder, which its model_index.json lists ({class_name}); {fix}")
        files = {p.name for p in folder.iterdir()}
        if "Tokenizer" in class_name:
            if not files & set(_TOKENIZER_FILES) and not any(f.endswith(".model") for f in files):
                raise DTIError(f"{folder} holds no tokenizer vocabulary (none of {', '.join(_TOKENIZER_FILES)}); {fix}")
        elif "Scheduler" in class_name:
            if "scheduler_config.json" not in files:
                raise DTIError(f"{folder} has no scheduler_config.json; {fix}")
        elif "Processor" in class_name or "FeatureExtractor" in class_name:
            continue
        elif "config.json" not in files:
            raise DTIError(f"{folder} has no config.json, so its {class_name} cannot load; {fix}")
        elif not any(f.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")) for f in files):
            raise DTIError(f"{folder} has no weights (.safetensors or .bin) for its {class_name}; {fix}")


def adapter_class(model_index: dict[str, Any], model: str) -> type[Adapter]:
    name = model_index.get("_class_name", "?")
    if not isinstance(name, str) or name not in ADAPTERS:
        raise DTIError(f"unsupported pipeline family {name} in {model}; dti supports {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name]


def adapter_for(pipe: Any) -> Adapter:
    """Wrap an already-loaded pipeline in its family's adapter."""
    name = type(pipe).__name__
    if name not in ADAPTERS:
        raise DTIError(f"unsupported pipeline family {name}; dti supports {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](pipe)


@contextlib.contextmanager
def _quiet_loading(quiet: bool) -> Iterator[None]:
    """Hide the Hugging Face loading bars (so an error stays one line in quiet mode)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    levels = dlog.get_verbosity(), tlog.get_verbosity()
    if quiet:  # also the loaders' own warnings ("An error occurred while trying to fetch ..."), so a failure stays one line
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
    try:
        yield
    finally:
        if quiet:
            dlog.set_verbosity(levels[0])
            tlog.set_verbosity(levels[1])
        if quiet and was[0]:
            dlog.enable_progress_bar()
        if quiet and was[1]:
            tlog.enable_progress_bar()


def load_tokenizers(model: str | os.PathLike) -> tuple[type[Adapter], dict[str, Any]]:
    """The family and its tokenizers only: enough to check the token and initializer in seconds,
    before gigabytes of weights load."""
    from transformers import AutoTokenizer

    index = read_model_index(model)
    model = model_path(model)
    cls = adapter_class(index, str(model))
    tokenizers = {}
    folders = cls.tokenizer_folders()
    check_components(model, index, only=list(folders.values()))
    optional = {role.component for role in cls.roles if role.optional}
    for encoder, subfolder in folders.items():
        if not any(index.get(subfolder) or [None]):  # a component the pipeline leaves out ([null, null])
            if encoder not in optional:
                raise DTIError(
                    f"{model} says it is a {cls.pipeline_class} but has no {subfolder}; the folder is not a complete pipeline "
                    "of that family (check model_index.json's _class_name)"
                )
            continue
        try:
            tokenizers[encoder] = AutoTokenizer.from_pretrained(str(model), subfolder=subfolder)
        except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:
            raise DTIError(
                f"could not load {subfolder} of {model} ({type(exc).__name__}); check that the pipeline folder is complete"
            ) from None
    return cls, tokenizers


def load_adapter(
    model: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", quiet: bool = False
) -> Adapter:
    """Load the pipeline behind ``model`` (hub id or local folder) in ``dtype`` on ``device``."""
    from safetensors import SafetensorError

    index = read_model_index(model)
    model = model_path(model)
    cls = adapter_class(index, str(model))
    check_components(model, index, skip=[name for name, value in cls.load_kwargs.items() if value is None])
    try:
        with _quiet_loading(quiet):
            from dti.models import hub

            options = {}
            if not Path(str(model)).exists() and not hub.online():  # a hub id and no network: the cache alone, no retries
                options["local_files_only"] = True
            pipe = cls.load_pipeline(str(model), dtype, **options)
    except (OSError, ValueError, RuntimeError, SafetensorError, KeyError, TypeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DTIError(f"could not load the pipeline from {model}: {first}; check that the folder is complete") from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return cls(pipe)
