"""Frozen layers in fewer bits (``--quantize {int8,fp8,nf4,int4}``): the denoiser's and the text
encoders' linear layers.

Every weight of a run is frozen, so a linear layer only has to pass the gradient on to its input;
weight-only quantization does (the weight stored in few bits, dequantized into the activations'
precision for the matmul). Per scheme, the maintained backend that runs on CPU *and* GPU (each
checked here, forward and backward to the input, on torch's CPU build):

- ``int8``: torchao ``Int8WeightOnlyConfig`` (per output channel; 1 byte a weight).
- ``fp8``: torchao ``Float8WeightOnlyConfig`` (e4m3, per output channel; 1 byte a weight). It runs
  on CPU (dequantized matmul), so optimum-quanto's qfloat8 is not needed.
- ``nf4``: bitsandbytes ``Linear4bit`` (NormalFloat4, blocks of 64; ~0.56 byte a weight): the
  scheme QLoRA made common and the one the 8 GB cards use. Its CPU backend ships with
  bitsandbytes >= 0.48. The layers are swapped for ``Linear4bit`` ones (rather than loaded through
  ``BitsAndBytesConfig``) so a handed-in pipeline and dti's own take one path.
- ``int4``: optimum-quanto ``qint4`` (groups of 128; ~0.56 byte a weight): torchao's int4 kernels
  want CUDA (tinygemm) or a CPU packing that needs a recent x86 build, quanto's run anywhere.

What is quantized: every ``nn.Linear`` of the denoiser and of each text encoder (for nf4, but the
ones a model keeps in fp32: :func:`kept_full`). What is not: the word's rows, the embedding tables
they attach to (``nn.Embedding`` is never touched), norms, the VAE, and the loss, which all stay in
the run's precision.

Who owns the pipeline decides what happens to the full-precision weights:

- a pipeline dti loaded itself (``dti train``, ``dti.train(model="id or folder")``) is loaded in host
  memory, quantized there and only then moved to the device (the device never holds it in full
  precision); its full-precision weights are dropped (that is the saving);
- a pipeline a caller hands in (``dti.train(model=pipe)``, sweeps and manifests share one) is
  handed back as it was given: the layers' own weight parameters (torchao) or the layers
  themselves (bitsandbytes, quanto: swapped back into their parents) are put back when the run ends
  (:class:`Quantized`, a hook the adapter owns). Meanwhile they wait in host memory on an
  accelerator run (the device memory is saved, host memory is not); on a CPU run they stay where
  they are, so a CPU run on a handed-in pipeline saves no memory.

A missing backend is one line naming ``pip install "dti[quant]"`` (checked with the settings,
before anything loads).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

from dti.core.errors import DTIError
from dti.models.base import AdapterHook
from dti.training import offload

HOOK = "quantize"  # its name among the adapter's hooks
MODES = ("none", "int8", "fp8", "nf4", "int4")
INSTALL = 'pip install "dti[quant]"'
#: scheme -> (the module it needs, the package to name, the pinned version the extra installs)
BACKENDS = {
    "int8": ("torchao", "torchao", "0.18.0"),
    "fp8": ("torchao", "torchao", "0.18.0"),
    "nf4": ("bitsandbytes", "bitsandbytes", "0.50.2"),
    "int4": ("optimum.quanto", "optimum-quanto", "0.2.7"),
}
#: bytes a quantized weight takes in memory, scales included (the memory estimate's numbers)
BYTES = {"int8": 1.0 + 4 / 1024, "fp8": 1.0 + 4 / 1024, "nf4": 0.5 + 4 / 64, "int4": 0.5 + 4 / 128}


def _installed(module: str) -> bool:
    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return False
    return module == top or importlib.util.find_spec(module) is not None


def missing(mode: str = "int8") -> str | None:
    """The line to say when ``--quantize mode`` cannot run here, or None."""
    if mode not in BACKENDS:
        return None
    module, package, version = BACKENDS[mode]
    if not _installed(module):
        return f"{{quantize}} {mode} needs {package}, which is not installed; {INSTALL} (or pip install {package}=={version})"
    return None


#: the loggers :func:`_quiet` silences (the command line silences them for good: commands.quiet_libraries)
QUIET = ("torchao", "torch.utils._pytree", "bitsandbytes", "kernels", "optimum.quanto")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchao's import logs a line per CUDA kernel library a CPU-only torch cannot load (harmless),
    torch a deprecation line per enum torchao registers, and bitsandbytes' CPU backend a line about a
    faster kernel it could not download: kept off the user's stderr."""
    names = QUIET
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load(mode: str = "int8") -> Callable[[torch.nn.Linear], Any]:
    """The scheme's backend, imported quietly: a function quantizing one linear layer, which returns
    either None (its weight was replaced in place, torchao) or the module to put in its place."""
    problem = missing(mode)
    if problem is not None:
        raise DTIError(problem, settings=["quantize"])
    with _quiet():
        if _installed("bitsandbytes"):  # diffusers imports it as a pipeline loads whenever it is installed: quietly here, once
            import bitsandbytes  # noqa: F401
        if mode in ("int8", "fp8"):
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

            with contextlib.suppress(ImportError):  # what transformers' torchao support imports as a pipeline loads
                import torchao.prototype.safetensors.safetensors_support  # noqa: F401
            config = Int8WeightOnlyConfig if mode == "int8" else Float8WeightOnlyConfig

            def ao(linear: torch.nn.Linear) -> None:
                with _quiet():
                    quantize_(linear, config())

            return ao
        if mode == "nf4":
            import bitsandbytes as bnb

            cls = _exact_linear4bit(bnb)

            def nf4(linear: torch.nn.Linear) -> torch.nn.Module:
                weight = linear.weight
                new = cls(linear.in_features, linear.out_features, bias=False, compute_dtype=weight.dtype, quant_type="nf4", device="meta")
                new.weight = bnb.nn.Params4bit(weight.detach().clone(), requires_grad=False, quant_type="nf4")
                new.bias = linear.bias  # the same parameter: biases stay in full precision
                # bitsandbytes' CPU shortcut (an AVX512-BF16 repacking of the weight for inputs without a gradient, in eval
                # mode) fails on some shapes when its downloaded kernel is missing: the plain dequantizing path everywhere
                new.support_avx512bf16_for_cpu = False
                with _quiet():
                    new = new.to(weight.device)  # bitsandbytes quantizes as the weight moves to its device
                new.check_cpu_kernel()
                return new

            return nf4
        from optimum.quanto import qint4
        from optimum.quanto.nn import QLinear

        def int4(linear: torch.nn.Linear) -> torch.nn.Module:
            new = QLinear.from_module(linear, weights=qint4)  # shares the weight and bias parameters until frozen
            new.freeze()  # its own quantized weight; the layer's parameter is untouched
            return new.requires_grad_(False)  # freeze() makes a parameter that asks for a gradient: frozen, as every weight

        return int4


def dequantize_4bit(weight: Any) -> torch.Tensor:
    """A bitsandbytes 4-bit weight (``Params4bit``) back in its dtype, computed here from the packed
    codes (two a byte, high nibble first, blocks of ``blocksize`` over the flattened weight, absmax
    per block, itself 8-bit quantized when ``nested``)."""
    import bitsandbytes.functional as bnbf

    state = weight.quant_state
    absmax = state.absmax
    if state.nested:
        absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    packed = weight.data.view(torch.uint8).reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(-1)
    n = 1
    for size in state.shape:
        n *= int(size)
    values = state.code.to(packed.device, torch.float32)[codes[:n].long()]
    scale = absmax.float().repeat_interleave(state.blocksize)[:n]
    return (values * scale).reshape(state.shape).to(state.dtype)


def _exact_linear4bit(bnb: Any) -> type:
    """bitsandbytes' ``Linear4bit``, but exact on the CPU: bitsandbytes 0.50.2's native CPU kernel
    dequantizes a weight wrongly when its input width is not a multiple of the 64-value block (a
    ``[48, 48]`` weight comes back with 0.40 relative error instead of NF4's 0.09; ``[96, 48]``,
    ``[3, 96]``, ``[5, 80]``, ``[32, 32]`` too; ``[64, 36]`` and odd widths, which it hands to its generic
    path, are right). Real models' widths are multiples of 64; dti-mini's (48, 96) and the tiny test
    models' (32) are not. Each layer checks the kernel against :func:`dequantize_4bit` once, where it is
    quantized; a layer the kernel gets wrong computes its CPU forward from :func:`dequantize_4bit`
    (the same matmul bitsandbytes does, dequantized weight then ``F.linear``). On CUDA, bitsandbytes'
    own kernels run."""

    class ExactLinear4bit(bnb.nn.Linear4bit):
        cpu_kernel_exact = True

        def check_cpu_kernel(self) -> None:
            if self.weight.device.type != "cpu":
                return
            ours = dequantize_4bit(self.weight)
            theirs = bnb.functional.dequantize_4bit(self.weight.data, self.weight.quant_state)
            self.cpu_kernel_exact = bool(torch.allclose(ours, theirs.reshape(ours.shape), rtol=1e-5, atol=1e-6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.device.type != "cpu" or self.cpu_kernel_exact:
                return super().forward(x)
            dtype = self.compute_dtype or x.dtype
            bias = None if self.bias is None else self.bias.to(dtype)
            return torch.nn.functional.linear(x.to(dtype), dequantize_4bit(self.weight).to(dtype), bias).to(x.dtype)

    return ExactLinear4bit


def modules(adapter: Any) -> list[torch.nn.Module]:
    """What ``--quantize`` quantizes: the denoiser and every text encoder that receives the word."""
    out = [adapter.denoiser, *(slot.text_encoder for slot in adapter.encoders)]
    return list({id(m): m for m in out}.values())


def is_quantized(linear: torch.nn.Module) -> bool:
    """Whether a linear layer's weight is a quantized tensor (torchao's, bitsandbytes' or quanto's)."""
    weight = getattr(linear, "weight", None)
    return weight is not None and type(weight) is not torch.nn.Parameter and type(weight) is not torch.Tensor


def kept_full(module: torch.nn.Module, mode: str) -> set[int]:
    """The linear layers ``mode`` leaves in full precision: for ``nf4``, those the model keeps in fp32
    (transformers' ``_keep_in_fp32_modules``, T5's ``wo``), whose input the model casts to the weight's
    dtype, which for bitsandbytes' packed weight is uint8: transformers' own bitsandbytes loading skips
    them too. torchao's and quanto's weights report the activations' dtype, so the other schemes
    quantize every layer."""
    if mode != "nf4":
        return set()
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    return {id(m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear) and keep & set(name.split("."))}


def linears(module: torch.nn.Module, mode: str = "int8") -> list[tuple[str, torch.nn.Linear]]:
    """The module's linear layers that ``mode`` quantizes and that still hold a full-precision weight."""
    full = kept_full(module, mode)
    return [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear) and not is_quantized(m) and id(m) not in full]


class Quantized(AdapterHook):
    """The adapter's hook while a handed-in pipeline's linear layers are quantized: their own weight
    parameters (``kept``) or the layers themselves (``swapped``, with their parents), put back by
    :meth:`release` on the device they came from."""

    def __init__(self) -> None:
        self.kept: list[tuple[torch.nn.Linear, torch.nn.Parameter, torch.device]] = []
        self.swapped: list[tuple[torch.nn.Module, str, torch.nn.Linear, torch.device]] = []

    def release(self) -> None:
        for linear, weight, device in self.kept:
            if weight.device != device:
                weight.data = weight.data.to(device)
            linear.weight = weight
        for parent, name, linear, device in reversed(self.swapped):
            if linear.weight.device != device:
                linear.weight.data = linear.weight.data.to(device)
            setattr(parent, name, linear)
        self.kept.clear()
        self.swapped.clear()


def apply(adapter: Any, mode: str, keep: bool) -> int:
    """Quantize the adapter's frozen denoiser and text encoders to ``mode`` (``none``: nothing);
    ``keep``: the pipeline was handed in, so its full-precision weights are kept and put back when
    the adapter's hooks are released. Layers already quantized are left alone. Returns how many
    linear layers it quantized."""
    if mode == "none":
        return 0
    if mode not in MODES:
        raise DTIError(f"{{quantize}} {mode!r} is not valid; use one of {', '.join(MODES)}", settings=["quantize"])
    one = load(mode)
    where = offload.parking_for(adapter.device)
    hook = adapter.hooks.setdefault(HOOK, Quantized()) if keep else None
    count = 0
    for module in modules(adapter):
        targets = {id(m) for _, m in linears(module, mode)}
        if not targets:
            continue
        done: dict[int, torch.nn.Module] = {}  # a layer two parents share is quantized once
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if id(child) not in targets:
                    continue
                weight, device = child.weight, child.weight.device
                if id(child) not in done:
                    done[id(child)] = one(child) or child
                    count += 1
                new = done[id(child)]
                if new is not child:
                    setattr(parent, name, new)
                if hook is None:
                    continue
                if where is not None and weight.device != where:
                    weight.data = weight.data.to(where)
                if new is child:
                    hook.kept.append((child, weight, device))
                else:
                    hook.swapped.append((parent, name, child, device))
    return count


def record(mode: str) -> str | None:
    """What a concept's metadata says about its base's weights: the scheme, or None (full precision)."""
    return None if mode == "none" else mode
