"""A LoRA beside the word: put one into a pipeline (PEFT), take it out, scale it, and its two files.

A LoRA lives in a pipeline's components as PEFT ``LoraLayer`` wrappers under one adapter name (the
concept's token when loaded, :data:`TRAIN_NAME` while training), on the modules a family names
(:attr:`dti.models.Adapter.lora_targets` for the denoiser, :func:`dti.models.lora_text_targets` for a
text encoder). The files (docs/formats.md):

- ``pytorch_lora_weights.safetensors``: diffusers' layout, ``<component>.<module>.lora_A.weight`` /
  ``lora_B.weight``, the LoRA's config in the ``lora_adapter_metadata`` header entry; what
  ``pipe.load_lora_weights(folder)`` reads (families whose pipeline has a LoRA loader).
- ``webui/<trigger>-lora.safetensors``: kohya's layout, which A1111 and ComfyUI read:
  ``lora_unet_<module>`` (UNet families) or ``lora_transformer_<module>`` (transformer families) and
  ``lora_te_`` / ``lora_te<i>_<module>`` for text encoders (dots made underscores), each with
  ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``, and the word bundled under
  ``bundle_emb.<trigger>.<key>`` (``string_to_param.*`` for one CLIP encoder; ``clip_l`` / ``clip_g``, ...
  otherwise), the keys A1111's LoRA loader turns into an embedding.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dti.core.errors import DTIError

#: The adapter name of the LoRA a run trains.
TRAIN_NAME = "dti"
#: diffusers' file name, in the run folder.
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' header entry for the LoRA's config


def inject(module: torch.nn.Module, rank: int, alpha: float, targets: Sequence[str], name: str) -> list[str]:
    """A LoRA of ``rank`` on the Linear layers of ``module`` whose names end in one of ``targets``
    (B = 0: the module computes what it did); returns the wrapped module names, or refuses in one line."""
    from peft import LoraConfig, inject_adapter_in_model

    wanted = tuple(targets)
    found = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and any(n == t or n.endswith("." + t) for t in wanted)]
    if not found:
        raise DTIError(
            f"{type(module).__name__} has no layer named {', '.join(wanted)} for a LoRA; this model cannot take {{lora}}", settings=["lora"]
        )
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=list(wanted), lora_dropout=0.0, init_lora_weights=True)
    with warnings.catch_warnings():  # a second LoRA (another concept's) beside the first is what dti means to do
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        # a torchao-quantized base (--quantize int8/fp8): PEFT cannot merge into it, which dti never does
        warnings.filterwarnings("ignore", message=".*instantiated without `get_apply_tensor_subclass`")
        inject_adapter_in_model(config, module, adapter_name=name)
    for p in lora_parameters(module, name):
        p.data = p.data.float()  # the LoRA learns in fp32 whatever the base weights' precision
    return found


def tuner_layers(module: torch.nn.Module, name: str) -> list[tuple[str, torch.nn.Module]]:
    """The LoRA-wrapped layers of ``module`` that hold adapter ``name``."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer) and name in m.lora_A]


def lora_parameters(module: torch.nn.Module, name: str) -> list[torch.nn.Parameter]:
    out: list[torch.nn.Parameter] = []
    for _, layer in tuner_layers(module, name):
        out += [layer.lora_A[name].weight, layer.lora_B[name].weight]
    return out


def lora_state(module: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """``<module>.lora_A.weight`` / ``lora_B.weight`` -> a copy of the tensor, on the CPU (PEFT's key layout)."""
    out = {}
    for path, layer in tuner_layers(module, name):
        out[f"{path}.lora_A.weight"] = layer.lora_A[name].weight.detach().float().cpu().clone()
        out[f"{path}.lora_B.weight"] = layer.lora_B[name].weight.detach().float().cpu().clone()
    return out


def load_state(module: torch.nn.Module, name: str, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`lora_state` back into the LoRA ``name`` of ``module`` (shapes must agree)."""
    layers = dict(tuner_layers(module, name))
    expected = {f"{p}.lora_{ab}.weight" for p in layers for ab in "AB"}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:2], sorted(set(state) - expected)[:2]
        raise DTIError(
            f"the LoRA does not fit {type(module).__name__} (missing {missing}, unexpected {extra}); it was trained for another model"
        )
    with torch.no_grad():
        for key, value in state.items():
            path, ab = key[: -len(".lora_A.weight")], key[-len("A.weight")]
            weight = (layers[path].lora_A if ab == "A" else layers[path].lora_B)[name].weight
            if weight.shape != value.shape:
                raise DTIError(
                    f"the LoRA's {key} is {list(value.shape)}, this model's is {list(weight.shape)}; it was trained for another model"
                )
            weight.copy_(value.to(weight.device, weight.dtype))


def remove(module: torch.nn.Module, name: str) -> None:
    """Take LoRA ``name`` out of ``module``; a layer left with no LoRA is put back as its base layer."""
    for path, layer in tuner_layers(module, name):
        layer.delete_adapter(name)
        if not layer.lora_A:  # nothing of PEFT's left here: the plain layer back in its place
            parent_path, _, child = path.rpartition(".")
            parent = module.get_submodule(parent_path) if parent_path else module
            setattr(parent, child, layer.get_base_layer())
    configs = getattr(module, "peft_config", None)  # PEFT's record of the adapters on the module
    if isinstance(configs, dict):
        configs.pop(name, None)
        if not configs:
            del module.peft_config


def set_scale(module: torch.nn.Module, name: str, scale: float) -> None:
    """The LoRA ``name``'s strength in ``module`` (1 = as trained, 0 = off)."""
    for _, layer in tuner_layers(module, name):
        layer.scaling[name] = scale * layer.lora_alpha[name] / layer.r[name]


def norm(state: Mapping[str, torch.Tensor], alpha: float, rank: int) -> float:
    """The Frobenius norm of the whole weight change, sqrt(sum over layers of |alpha/r * B A|^2)."""
    total = 0.0
    for key, a in state.items():
        if key.endswith(".lora_A.weight"):
            b = state[key[: -len("A.weight")] + "B.weight"]
            total += float(((alpha / rank) * (b.double() @ a.double())).pow(2).sum())
    return math.sqrt(total)


# ------------------------------------------------------------------ files
def lora_file(source: Any, concept: Any) -> Path | None:
    """The LoRA learned with a concept (``--lora``): :data:`DIFFUSERS_FILE` in its run folder (``source``
    the folder, or a file in it whose concept records a LoRA), or None (``source`` a Concept: None)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent if concept.meta.get("lora") else None
    found = folder / DIFFUSERS_FILE if folder is not None else None
    return found if found is not None and found.is_file() else None


def diffusers_tensors(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """component -> its :func:`lora_state` as diffusers' keys (``unet.<module>.lora_A.weight``)."""
    return {f"{component}.{key}": value.contiguous() for component, state in parts.items() for key, value in state.items()}


def diffusers_metadata(parts: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The header diffusers' loader reads the LoRA's config from (``<component>.r``, ``.lora_alpha``, ...)."""
    packed = {f"{component}.{k}": v for component in parts for k, v in configs[component].items()}
    return {"format": "pt", METADATA_KEY: json.dumps(packed, indent=2, sort_keys=True)}


def peft_config(rank: int, alpha: float, targets: Sequence[str]) -> dict[str, Any]:
    return {"r": int(rank), "lora_alpha": float(alpha), "target_modules": sorted(targets), "lora_dropout": 0.0}


def kohya_prefix(component: str, encoders: Sequence[str]) -> str:
    """The kohya key prefix of a component: ``lora_unet`` / ``lora_transformer`` for the denoiser,
    ``lora_te`` for the only text encoder of a one-encoder family, ``lora_te<i>`` otherwise (``text_encoder_2``: 2)."""
    if component in ("unet", "transformer"):
        return f"lora_{component}"
    if len(encoders) == 1:
        return "lora_te"
    suffix = component.rpartition("_")[2]
    return f"lora_te{suffix if suffix.isdigit() else 1}"


def kohya_tensors(
    parts: Mapping[str, Mapping[str, torch.Tensor]], alpha: float, encoders: Sequence[str], dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """kohya's layout: ``<prefix>_<module with _>.lora_down.weight`` (A), ``.lora_up.weight`` (B), ``.alpha``."""
    out: dict[str, torch.Tensor] = {}
    for component, state in parts.items():
        prefix = kohya_prefix(component, encoders)
        for key, value in state.items():
            path, ab = key[: -len(".lora_A.weight")], key[-len("A.weight")]
            base = f"{prefix}_{path.replace('.', '_')}"
            out[f"{base}.{'lora_down' if ab == 'A' else 'lora_up'}.weight"] = value.to(dtype).contiguous()
            out[f"{base}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return out


def bundle_keys(name: str, tool_keys: Mapping[str, str]) -> dict[str, str]:
    """``bundle_emb.<name>.<key>`` -> the concept's component, from its single-file keys: one CLIP
    encoder (``emb_params``) is A1111's ``string_to_param.*``, the others keep their keys (``clip_l``, ``clip_g``, ...)."""
    if list(tool_keys) == ["emb_params"]:
        return {f"bundle_emb.{name}.string_to_param.*": tool_keys["emb_params"]}
    return {f"bundle_emb.{name}.{key}": component for key, component in tool_keys.items()}


def read_diffusers(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
    """A :data:`DIFFUSERS_FILE` as (component -> PEFT-layout state, component -> config)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise DTIError(f"{path}: not a readable LoRA file ({type(exc).__name__}); train it again or pass another file") from None
    packed = json.loads(header.get(METADATA_KEY) or "{}")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        component, _, rest = key.partition(".")
        parts.setdefault(component, {})[rest] = value
    configs: dict[str, dict[str, Any]] = {}
    for key, value in packed.items():
        component, _, field = key.partition(".")
        configs.setdefault(component, {})[field] = value
    for component, state in parts.items():
        if component not in configs:  # rank from the shapes, alpha = rank (no config written)
            a = next(v for k, v in state.items() if k.endswith("lora_A.weight"))
            targets = sorted({target_name(k.rsplit(".lora_", 1)[0]) for k in state})
            configs[component] = peft_config(a.shape[0], a.shape[0], targets)
    return parts, configs


def attach(pipe: Any, path: Path, name: str, scale: float = 1.0) -> dict[str, Any]:
    """The LoRA of a :data:`DIFFUSERS_FILE` into ``pipe``'s components under adapter ``name``, at
    strength ``scale``; returns what was attached (component -> its config)."""
    parts, configs = read_diffusers(path)
    missing = [c for c in parts if not isinstance(getattr(pipe, c, None), torch.nn.Module)]
    if missing:
        raise DTIError(
            f"{path}: a LoRA for {', '.join(missing)}, which {type(pipe).__name__} does not have; it was trained for another model"
        )
    done: list[str] = []
    try:
        for component, state in parts.items():
            module, config = getattr(pipe, component), configs[component]
            if tuner_layers(module, name):
                raise DTIError(f"a LoRA named {name} is already loaded in {component}; unload it first")
            targets = sorted({k.rsplit(".lora_", 1)[0] for k in state})  # exact module paths: only those layers
            inject(module, int(config["r"]), float(config["lora_alpha"]), targets, name)
            done.append(component)
            load_state(module, name, state)
            set_scale(module, name, scale)
    except BaseException:
        for component in done:
            remove(getattr(pipe, component), name)
        raise
    return {c: configs[c] for c in parts}


def detach_from(pipe: Any, name: str) -> bool:
    """Take LoRA ``name`` out of every component of ``pipe``; whether there was one."""
    found = False
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module) and tuner_layers(module, name):
            remove(module, name)
            found = True
    return found


def scale_in(pipe: Any, name: str, scale: float) -> None:
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            set_scale(module, name, scale)


def target_name(path: str) -> str:
    """A layer path's target name: its last part (``to_q``), with its parent's for a numbered one (``to_out.0``)."""
    parts = path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def describe(path: Path) -> dict[str, Any]:
    """What :func:`inspect` says about a LoRA file: per component its rank, alpha, targets, layers and norm."""
    parts, configs = read_diffusers(path)
    out = {}
    for component, state in parts.items():
        config = configs[component]
        targets = sorted({target_name(k.rsplit(".lora_", 1)[0]) for k in state})
        out[component] = {
            "rank": int(config["r"]),
            "alpha": float(config["lora_alpha"]),
            "targets": targets,
            "layers": len(state) // 2,
            "norm": norm(state, float(config["lora_alpha"]), int(config["r"])),
        }
    return out
