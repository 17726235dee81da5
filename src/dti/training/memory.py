"""How much device memory a run takes, estimated before anything loads, and ``--vram N``'s choice.

The weights come from the model itself, without loading it: a component's parameters, the share in
linear layers (what ``--quantize`` shrinks) and its largest repeated block (what ``--offload group``
keeps on the device) are read from its safetensors headers (:func:`profile_of_folder`), or from the
modules of a pipeline already in memory (:func:`profile_of_modules`). The activations of one step
come from ``benchmarks/memory.py``, which runs dti's own step on every full-size family under fake
tensors (shapes, no data: CUDA's flash-attention footprint, the caching allocator's rounding): its
figures at batch 1, with and without gradient checkpointing, are :data:`ACTIVATIONS`, scaled here
linearly with the micro-batch and with the pixel count (the denoiser's tokens; at 768 and 1024 px
SDXL's table grows by 1.75x against (1024/768)^2 = 1.78x).

A step's peak = the weights on the device + the activations. Weights on the device:

- all of them (the denoiser, the encoders that learn the word, the VAE) without ``--offload``;
- ``model``: the largest of the denoiser and the learning encoders, plus the VAE;
- ``group``: every model's parts outside its repeated blocks, plus the largest block.

A quantized linear weight takes :data:`dti.training.quantize.BYTES` bytes a parameter (scales
included), the rest the run's precision. A setting fits a card when ``peak x 1.10 + 1.0 GiB <= the
card`` (the CUDA context, cuBLAS workspaces and fragmentation the estimate leaves out), the rule the
benchmark's tables use. Not modelled: host memory (offloaded weights wait there), the validation
samples (the pipeline's own sampling loop, under ``no_grad``), and prefetching.

``--vram N`` (:func:`choose`) adds the memory savers from the cheapest in time and quality to the
dearest until the step fits: gradient checkpointing, int8 weights, group offload, nf4 weights,
micro-batches of 1 (the same samples a step, accumulated), then lower resolutions (3/4 at a time);
then drops again each saver before the last that the others make unneeded (dearest first: FLUX.1
on 12 GB needs group offload and micro-batches of 1, and then neither int8 nor nf4). A setting the
user gave is never changed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dti.core.errors import Line
from dti.training import quantize

GIB = 2**30
SAFETY = 1.10  # fragmentation and what else the estimate misses (benchmarks/memory.py's margin rule)
CONTEXT_GIB = 1.0  # the CUDA context and cuBLAS workspace, outside the estimate
CARDS = (8, 12, 16, 24, 48)  # --vram's choices, GiB
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "auto": 2}

#: family -> [(denoiser GiB in bf16, reference px, activations GiB at batch 1 without / with gradient checkpointing)]:
#: benchmarks/memory.py's rows with the VAE off the device (peak minus weights); the results files say how
#: (benchmarks/results/memory-2026-12-01.json, -12-07-chroma-lumina2, -12-07-llm, memory-wan-2026-12-07, memory-2026-12-07-qwenimage)
ACTIVATIONS: dict[str, list[tuple[float, int, float, float]]] = {
    "sd": [(1.601, 512, 0.73, 0.23)],
    "sdxl": [(4.782, 768, 2.89, 0.40)],
    "sana": [(2.989, 1024, 4.76, 1.21)],
    "pixart": [(1.147, 1024, 4.68, 2.06)],
    "sd3": [(4.600, 1024, 9.32, 2.08)],
    "flux": [(22.168, 1024, 27.57, 5.37)],
    "chroma": [(16.578, 1024, 25.69, 5.31)],
    "lumina2": [(4.861, 1024, 17.78, 2.08)],
    "wan": [(2.644, 512, 5.38, 3.31), (26.615, 512, 11.98, 3.83)],
    "zimage": [(11.464, 1024, 29.11, 4.22)],
    "flux2_klein": [(7.219, 1024, 15.20, 3.40), (16.910, 1024, 24.88, 4.56)],
    "hidream": [(31.862, 768, 12.78, 2.27)],
    "qwenimage": [(38.055, 512, 5.90, 0.69)],
}


@dataclass(frozen=True)
class Part:
    """One component's weights, counted in parameters."""

    name: str
    role: str  # "denoiser", "encoder" or "vae"
    params: int
    linear: int  # in linear layers' weights: what --quantize stores in fewer bits
    blocks: int  # in the repeated blocks (outermost ModuleList items): what --offload group moves
    largest_block: int

    def gib(self, mode: str = "none", precision: int = 2, count: int | None = None) -> float:
        """GiB of ``count`` of its parameters (default: all) with linear weights in ``mode``, the same share linear."""
        count = self.params if count is None else count
        if mode == "none" or not self.params:
            return count * precision / GIB
        share = self.linear / self.params
        return count * (share * quantize.BYTES[mode] + (1 - share) * precision) / GIB


@dataclass(frozen=True)
class Profile:
    """A pipeline's weights: its family and its parts."""

    family: str
    parts: tuple[Part, ...]

    @property
    def denoiser(self) -> Part:
        return next(p for p in self.parts if p.role == "denoiser")


@dataclass(frozen=True)
class Setup:
    """What decides a step's memory."""

    resolution: int
    batch_size: int
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    quantize: str = "none"
    offload: str = "none"
    encoders: tuple[str, ...] | None = None  # the encoders that learn (None: all)
    precision: int = 2  # bytes a full-precision weight takes


@dataclass(frozen=True)
class Estimate:
    weights_gib: float
    activations_gib: float

    @property
    def peak_gib(self) -> float:
        return self.weights_gib + self.activations_gib

    def fits(self, card_gib: float) -> bool:
        return self.peak_gib * SAFETY + CONTEXT_GIB <= card_gib


# ------------------------------------------------------------------ profiles
_BLOCK = re.compile(r"^(.*?\.\d+)\.")  # the first numbered module on a parameter's path: its outermost block


def _count(named: Iterable[tuple[str, tuple[int, ...], bool]]) -> tuple[int, int, int, int]:
    """(params, linear, in blocks, largest block) from (name, shape, is a linear weight) triples."""
    total = linear = 0
    groups: dict[str, int] = {}
    for name, shape, is_linear in named:
        n = math.prod(shape)
        total += n
        linear += n if is_linear else 0
        m = _BLOCK.match(name)
        if m:
            groups[m.group(1)] = groups.get(m.group(1), 0) + n
    return total, linear, sum(groups.values()), max(groups.values(), default=0)


def _linear_name(name: str, shape: Sequence[int]) -> bool:
    """A 2-D weight that is not an embedding table or a norm: a linear layer's (safetensors keep no module types)."""
    low = name.lower()
    return len(shape) == 2 and low.endswith(".weight") and "embed" not in low and "norm" not in low and "shared" not in low


def _headers(folder: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor's name and shape in a component folder's safetensors files (one variant: the plain files
    when there are, else the first variant's), from the headers alone."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1 or re.search(r"-\d+-of-\d+\.safetensors$", f.name)]
    if plain:
        files = plain
    elif files:
        variant = files[0].name.split(".")[-2]
        files = [f for f in files if f.name.split(".")[-2] == variant]
    out = []
    for f in files:
        with f.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        out += [(k, tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"]
    return out


def profile_of_folder(folder: str | Path, family: str, denoiser: str, encoders: Sequence[str]) -> Profile | None:
    """The profile of a diffusers folder from its safetensors headers, or None when a component has none
    (weights in .bin files, or not downloaded)."""
    parts = []
    for name, role in [(denoiser, "denoiser"), *((e, "encoder") for e in encoders), ("vae", "vae")]:
        sub = Path(folder) / name
        if not sub.is_dir():
            if role == "encoder":  # an optional encoder the pipeline leaves out
                continue
            return None
        tensors = _headers(sub)
        if not tensors:
            return None
        parts.append(Part(name, role, *_count((n, s, _linear_name(n, s)) for n, s in tensors)))
    return Profile(family, tuple(parts))


def profile_of_modules(family: str, modules: Mapping[str, tuple[str, torch.nn.Module]]) -> Profile:
    """The profile of modules in memory (a handed-in pipeline; benchmarks' fake full-size ones):
    name -> (role, module). Blocks as :mod:`~dti.training.residency` finds them."""
    from dti.training.residency import blocks

    parts = []
    for name, (role, module) in modules.items():
        linear_ids = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
        seen: set[int] = set()
        total = linear = 0
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            linear += p.numel() if id(p) in linear_ids else 0
        sizes = [sum(p.numel() for p in b.parameters()) for b in blocks(module)]
        parts.append(Part(name, role, total, linear, sum(sizes), max(sizes, default=0)))
    return Profile(family, tuple(parts))


def profile_of_pipeline(pipe: Any, family: str, denoiser: str, encoders: Sequence[str]) -> Profile:
    modules = {denoiser: ("denoiser", getattr(pipe, denoiser))}
    modules.update({e: ("encoder", getattr(pipe, e)) for e in encoders if getattr(pipe, e, None) is not None})
    if getattr(pipe, "vae", None) is not None:
        modules["vae"] = ("vae", pipe.vae)
    return profile_of_modules(family, modules)


# ------------------------------------------------------------------ the estimate
def activations_for(profile: Profile) -> tuple[int, float, float] | None:
    """(reference px, GiB at batch 1 without / with checkpointing) of the family entry nearest in denoiser size.
    A denoiser less than half that entry's size (a distilled or toy model of the family: dti-mini is 1/1000th
    of SDXL) gets the entry's activations scaled by ``2 x size / entry``: they grow with width x depth, its
    parameters with width^2 x depth, so this overstates a small model's, and never says that a model 1/1000th
    the size needs SDXL's gradient checkpointing."""
    entries = ACTIVATIONS.get(profile.family)
    if not entries:
        return None
    size = profile.denoiser.gib()
    best = min(entries, key=lambda e: abs(math.log(max(size, 1e-6) / e[0])))
    scale = min(1.0, 2.0 * size / best[0])
    return best[1], best[2] * scale, best[3] * scale


def estimate(profile: Profile, setup: Setup, activations: tuple[int, float, float] | None = None) -> Estimate:
    """The peak of one step with ``setup`` (module docstring); activations from :func:`activations_for`,
    or 0 for a family without figures (tiny test pipelines)."""
    s = setup
    models = [p for p in profile.parts if p.role == "denoiser" or (p.role == "encoder" and (s.encoders is None or p.name in s.encoders))]
    vae = sum(p.gib("none", s.precision) for p in profile.parts if p.role == "vae")
    if s.offload == "model":
        weights = max(p.gib(s.quantize, s.precision) for p in models) + vae
    elif s.offload == "group":
        rest = sum(p.gib(s.quantize, s.precision, p.params - p.blocks) for p in models)
        weights = rest + max(p.gib(s.quantize, s.precision, p.largest_block) for p in models) + vae
    else:
        weights = sum(p.gib(s.quantize, s.precision) for p in models) + vae
    acts = 0.0
    ref = activations if activations is not None else activations_for(profile)
    if ref is not None:
        px, plain, ckpt = ref
        acts = s.batch_size * (ckpt if s.gradient_checkpointing else plain) * (s.resolution / px) ** 2
    return Estimate(weights, acts)


# ------------------------------------------------------------------ --vram
@dataclass
class Choice:
    """What ``--vram`` chose: the settings it changed, the estimate, whether it fits."""

    card: int
    changed: dict[str, Any] = field(default_factory=dict)
    estimate: Estimate | None = None
    fits: bool = False

    def line(self) -> Line:
        """The one line the run says about it (settings named as the caller speaks)."""
        peak = self.estimate.peak_gib if self.estimate else 0.0
        names = ["vram", *self.changed]
        if not self.fits:
            return Line(
                f"{{vram}} {self.card}: nothing dti can change fits by the estimate; the least is {peak:.1f} GiB of weights and "
                f"activations (needs {peak * SAFETY + CONTEXT_GIB:.1f} GiB with the margin); "
                "use a larger card or set the memory flags yourself",
                settings=names,
            )
        said = ", ".join(_said(k, v) for k, v in self.changed.items()) or "the settings fit as they are"
        return Line(f"{{vram}} {self.card}: {said} (estimated peak {peak:.1f} GiB)", settings=names)


def _said(name: str, value: Any) -> str:
    return f"{{{name}}}" if value is True else f"{{{name}}} {value}"


def savers(setup: Setup, given: set[str], multiple: int) -> list[dict[str, Any]]:
    """The memory savers, cheapest in time and quality first; those touching a setting in ``given``, and
    quantization schemes whose backend is not installed, left out."""
    steps: list[dict[str, Any]] = [
        {"gradient_checkpointing": True},
        {"quantize": "int8"},
        {"offload": "group"},
        {"quantize": "nf4"},
    ]
    if setup.batch_size > 1:
        steps.append({"batch_size": 1, "grad_accum": setup.batch_size * setup.grad_accum})
    resolution = setup.resolution
    while True:
        lower = int(resolution * 0.75) // multiple * multiple
        if lower < 256:
            break
        steps.append({"resolution": lower})
        resolution = lower
    usable = [s for s in steps if "quantize" not in s or quantize.missing(s["quantize"]) is None]  # its backend installed
    return [step for step in usable if not set(step) & given and any(getattr(setup, k) != v for k, v in step.items())]


def _combined(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step in steps:
        out.update(step)
    return out


def choose(profile: Profile, setup: Setup, card: int, given: set[str], multiple: int = 16) -> Choice:
    """The cheapest savers that fit ``card`` GiB: the shortest run of :func:`savers` that fits, then each saver
    before the last dropped again, dearest first, when the rest still fits. Not fitting: the whole run (``fits`` False)."""
    ref = activations_for(profile)

    def trial(steps: Sequence[dict[str, Any]]) -> Choice:
        change = _combined(steps)
        est = estimate(profile, Setup(**{**setup.__dict__, **change}), ref)
        return Choice(card, {k: v for k, v in change.items() if getattr(setup, k) != v}, est, est.fits(card))

    steps = savers(setup, given, multiple)
    for k in range(len(steps) + 1):
        choice = trial(steps[:k])
        if choice.fits:
            kept = list(steps[:k])
            for step in reversed(steps[: max(0, k - 1)]):
                without = [s for s in kept if s is not step]
                if trial(without).fits:
                    kept = without
            return trial(kept)
    return choice


def local_folder(model: str) -> Path | None:
    """The local folder of a model name (a folder, ``dti-mini``, or a hub id already in the cache), or None."""
    from dti.models import model_path

    path = Path(model_path(model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # not in the cache (or not a hub id): the caller says what to do
        return None


def preset(config: Any, given: set[str], cls: Any, pipe: Any | None, precision_bytes: int) -> tuple[Any, Choice]:
    """``config`` with ``--vram``'s choice applied (the settings in ``given`` kept) and the choice; ``cls`` the
    family's adapter class, ``pipe`` a handed-in pipeline (else the model's folder is read)."""
    import dataclasses

    from dti.core.errors import DTIError

    c = config
    encoders = [role.component for role in cls.roles]
    if pipe is not None:
        profile = profile_of_pipeline(pipe, cls.family, cls.denoiser_name, encoders)
    else:
        folder = local_folder(c.model)
        profile = profile_of_folder(folder, cls.family, cls.denoiser_name, encoders) if folder is not None else None
        if profile is None:
            raise DTIError(
                f"{{vram}} needs the model's safetensors files to estimate its memory, and {c.model} has none here; "
                "download it first, or leave {vram} out and set the memory flags yourself",
                settings=["vram"],
            )
    defaults = cls.defaults
    ref = activations_for(profile)
    resolution = c.resolution or defaults.get("resolution") or (ref[0] if ref else 512)
    setup = Setup(
        resolution=int(resolution),
        batch_size=int(c.batch_size or defaults.get("batch_size", 4)),
        grad_accum=int(c.grad_accum or defaults.get("grad_accum", 1)),
        gradient_checkpointing=c.gradient_checkpointing,
        quantize=c.quantize,
        offload=c.offload,
        encoders=tuple(c.encoders) if c.encoders else None,
        precision=precision_bytes,
    )
    choice = choose(profile, setup, c.vram, set(given), multiple=16)  # a LoRA run too: its base may be quantized or offloaded
    if not choice.fits:
        raise DTIError(choice.line().message, settings=list(choice.line().settings))
    return dataclasses.replace(c, **choice.changed), choice
