"""Frozen layers in int8 (``--quantize int8``): the denoiser and the text encoders' linear layers.

Every weight of a run is frozen, so a linear layer only has to pass the gradient on to its input,
which torchao's weight-only int8 does (``Int8WeightOnlyConfig``: the weight stored per output
channel in int8, the matmul in the activations' precision; on CPU and GPU alike). What is
quantized: every ``nn.Linear`` of the denoiser and of each text encoder. What is not: the word's
rows, the embedding tables they attach to (``nn.Embedding`` is never touched), norms, the VAE, and
the loss, which all stay in the run's precision.

Who owns the pipeline decides what happens to the full-precision weights:

- a pipeline dti loaded itself (``dti train``, ``dti.train(model="id or folder")``) is quantized in
  place once it is loaded; its full-precision weights are dropped (that is the saving);
- a pipeline a caller hands in (``dti.train(model=pipe)``, sweeps and manifests share one) is
  handed back as it was given: the layers' own weight parameters are put back when the run ends
  (:class:`Quantized`, a hook the adapter owns). Meanwhile they wait in host memory on an
  accelerator run (the device memory is saved, host memory is not); on a CPU run they stay where
  they are, so a CPU run on a handed-in pipeline saves no memory.

A missing torchao is one line naming ``pip install "dti[quant]"`` (checked with the settings,
before anything loads).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import torch

from dti.core.errors import DTIError
from dti.models.base import AdapterHook
from dti.training import offload

HOOK = "quantize"  # its name among the adapter's hooks
MODES = ("none", "int8")
INSTALL = 'pip install "dti[quant]"'


def missing() -> str | None:
    """The line to say when ``--quantize`` cannot run here, or None."""
    if importlib.util.find_spec("torchao") is None:
        return f"{{quantize}} needs torchao, which is not installed; {INSTALL} (or pip install torchao==0.18.0)"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchao's import logs a line per CUDA kernel library a CPU-only torch cannot load (harmless), and
    torch a deprecation line per enum torchao registers: kept off the user's stderr."""
    names = ("torchao", "torch.utils._pytree")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load() -> tuple[Any, Any, type]:
    """torchao's quantize_, its int8 weight-only config and its tensor base class, imported quietly."""
    problem = missing()
    if problem is not None:
        raise DTIError(problem, settings=["quantize"])
    with _quiet():
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        from torchao.utils import TorchAOBaseTensor

        with contextlib.suppress(ImportError):  # what transformers' torchao support imports as a pipeline loads
            import torchao.prototype.safetensors.safetensors_support  # noqa: F401
    return quantize_, Int8WeightOnlyConfig, TorchAOBaseTensor


def modules(adapter: Any) -> list[torch.nn.Module]:
    """What ``--quantize`` quantizes: the denoiser and every text encoder that receives the word."""
    out = [adapter.denoiser, *(slot.text_encoder for slot in adapter.encoders)]
    return list({id(m): m for m in out}.values())


def is_quantized(linear: torch.nn.Module) -> bool:
    """Whether a linear layer's weight is a torchao quantized tensor."""
    weight = getattr(linear, "weight", None)
    return weight is not None and type(weight) is not torch.nn.Parameter and type(weight) is not torch.Tensor


def linears(module: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The module's linear layers that still hold a full-precision weight."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear) and not is_quantized(m)]


class Quantized(AdapterHook):
    """The adapter's hook while a handed-in pipeline's linear layers are int8: their own weight
    parameters, put back by :meth:`release` on the device they came from."""

    def __init__(self) -> None:
        self.kept: list[tuple[torch.nn.Linear, torch.nn.Parameter, torch.device]] = []

    def release(self) -> None:
        for linear, weight, device in self.kept:
            if weight.device != device:
                weight.data = weight.data.to(device)
            linear.weight = weight
        self.kept.clear()


def apply(adapter: Any, mode: str, keep: bool) -> int:
    """Quantize the adapter's frozen denoiser and text encoders to ``mode`` (``none``: nothing);
    ``keep``: the pipeline was handed in, so its full-precision weights are kept and put back when
    the adapter's hooks are released. Layers already quantized are left alone. Returns how many
    linear layers it quantized."""
    if mode == "none":
        return 0
    if mode not in MODES:
        raise DTIError(f"{{quantize}} {mode!r} is not valid; use one of {', '.join(MODES)}", settings=["quantize"])
    quantize_, config, _ = load()
    where = offload.parking_for(adapter.device)
    hook = adapter.hooks.setdefault(HOOK, Quantized()) if keep else None
    count = 0
    for module in modules(adapter):
        layers = linears(module)
        if not layers:
            continue
        originals = [(m, m.weight) for _, m in layers]
        targets = {id(m) for _, m in layers}
        with _quiet():
            quantize_(module, config(), filter_fn=lambda m, fqn, targets=targets: id(m) in targets)
        count += sum(is_quantized(m) for m, _ in originals)
        if hook is not None:
            for linear, weight in originals:
                if is_quantized(linear):
                    device = weight.device
                    if where is not None:
                        weight.data = weight.data.to(where)
                    hook.kept.append((linear, weight, device))
    return count


def record(mode: str) -> str | None:
    """What a concept's metadata says about its base's weights: ``int8``, or None (full precision)."""
    return None if mode == "none" else mode
