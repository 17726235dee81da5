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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dti.errors import DTIError
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
    "load_adapter",
    "load_tokenizers",
    "model_hints",
    "read_model_index",
    "register",
    "resolve_dtype",
]


def read_model_index(model: str | os.PathLike) -> dict[str, Any]:
    """The pipeline's ``model_index.json`` from a local folder or the hub cache / hub."""
    path = Path(model)
    if path.exists():
        index = path / "model_index.json"
        if not path.is_dir() or not index.is_file():
            raise DTIError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass a folder written by save_pretrained or a hub id"
            )
        return json.loads(index.read_text())
    name = str(model)
    if not _HUB_ID.match(name) or name.count("/") > 1:
        raise DTIError(f"model {name!r} does not exist as a local folder and is not a valid hub id; check the path")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(name, "model_index.json")).read_text())
    except LocalEntryNotFoundError:
        raise DTIError(
            f"model {name!r} is not a local folder and is not in the hub cache, and the hub cannot be reached (offline); "
            "pass a local diffusers folder or download the model once with network"
        ) from None
    except (RepositoryNotFoundError, HFValidationError, HfHubHTTPError, OSError) as exc:
        raise DTIError(
            f"model {name!r} could not be found ({type(exc).__name__}); check the hub id or pass a local diffusers folder"
        ) from None


HINTS_FILENAME = "dti.json"


def model_hints(model: str | os.PathLike) -> dict[str, Any]:
    """A model folder's suggestions for dti (``dti.json``): e.g. prompt templates in its vocabulary."""
    path = Path(str(model)) / HINTS_FILENAME
    if not path.is_file():
        return {}
    try:
        hints = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DTIError(f"{path} is not valid JSON; fix or remove it") from None
    return hints if isinstance(hints, dict) else {}


def adapter_class(model_index: dict[str, Any], model: str) -> type[Adapter]:
    name = model_index.get("_class_name", "?")
    if name not in ADAPTERS:
        raise DTIError(f"unsupported pipeline family {name} in {model}; dti supports {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a GPU and fp32 on the CPU (where bf16 is slow and imprecise)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise DTIError(f"--precision {precision!r} is not valid; use auto, fp32, bf16 or fp16")
    return table[precision]


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
    if quiet:
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was[0]:
            dlog.enable_progress_bar()
        if quiet and was[1]:
            tlog.enable_progress_bar()


def load_tokenizers(model: str | os.PathLike) -> tuple[type[Adapter], dict[str, Any]]:
    """The family and its tokenizers only: enough to check the token and initializer in seconds,
    before gigabytes of weights load."""
    from transformers import AutoTokenizer

    index = read_model_index(model)
    cls = adapter_class(index, str(model))
    tokenizers = {}
    for encoder, subfolder in cls.tokenizer_folders().items():
        if not any(index.get(subfolder) or [None]):  # a component the pipeline leaves out ([null, null])
            continue
        try:
            tokenizers[encoder] = AutoTokenizer.from_pretrained(str(model), subfolder=subfolder)
        except (OSError, ValueError) as exc:
            raise DTIError(
                f"could not load {subfolder} of {model} ({type(exc).__name__}); check that the pipeline folder is complete"
            ) from None
    return cls, tokenizers


def load_adapter(
    model: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", quiet: bool = False
) -> Adapter:
    """Load the pipeline behind ``model`` (hub id or local folder) in ``dtype`` on ``device``."""
    index = read_model_index(model)
    cls = adapter_class(index, str(model))
    try:
        with _quiet_loading(quiet):
            pipe = cls.load_pipeline(str(model), dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DTIError(f"could not load the pipeline from {model}: {first}; check that the folder is complete") from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return cls(pipe)
