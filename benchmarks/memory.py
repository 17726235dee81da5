"""Peak CUDA memory of one dti training step on full-size models, estimated without a GPU.

    python benchmarks/memory.py --family sdxl --resolution 768 --batch 4 [--gradient-checkpointing] [--vae-offload]
    python benchmarks/memory.py --all --json OUT.json --md OUT.md
    python benchmarks/memory.py --all --only wan wan-14b --json OUT.json --md OUT.md   # some families' rows
    python benchmarks/memory.py --all --only chroma lumina2 --json OUT.json --md OUT.md   # some families' rows
    python benchmarks/memory.py --all --only zimage flux2_klein flux2_klein-9b hidream --json OUT.json --md OUT.md
    python benchmarks/memory.py --calibrate        # the one configuration measured on an H200 (ENVIRONMENT.md)
    python benchmarks/memory.py --presets --md OUT.md   # --vram's choice per family and 8/12/16/24 GB card (README's table)

Two models of memory live here. This script's fake-tensor run (below) is the measurement: dti's own
step on each full-size family. ``--vram`` needs an answer before a model loads, so the library keeps
a small model of it (``dti.training.memory``): the weights read from the model's files (or, here, from
the full-size modules built on the meta device), quantized and offloaded as the settings say, plus
this script's activations at batch 1 (its ``ACTIVATIONS`` table, copied from the results files),
scaled with the micro-batch and the pixel count. ``--presets`` prints that model's choices.

How: the full-size pipeline of ``benchmarks/full_configs.py`` (real diffusers / transformers classes
from the released configs, random weights) is built under ``FakeTensorMode``: every tensor has its
real shape, dtype and strides and no data, so nothing full-size is allocated. Weights are cast to the
training dtype as ``--precision bf16`` loads them (``resolve_dtype`` -> bf16 for every component;
dti's ``vae_precision`` upcasts only fp16 VAEs). Then dti's own code runs a step's memory-relevant
part: ``adapter.freeze()``, ``denoiser.enable_gradient_checkpointing()`` when asked (what
``Trainer.setup`` does), the trainable rows through dti's attach path (``TrainableRows`` in
``sphere`` mode + ``EncoderSlot.attach``, as ``Trainer.setup`` attaches them), then ``adapter.loss`` on
cached fp32 latents (the family's own noise, timesteps, prompt encoding through the attached
embedding, denoiser call, MSE) and ``loss.backward()``, which reaches the input rows only (frozen
weights build no gradient). The parts of ``Trainer.step`` left out (zero_grad, the finiteness check,
RiemannianSGD on a few rows) hold kilobytes.

Counting: a ``TorchDispatchMode`` sees every op's outputs; a storage not seen before (and not an
alias of an input) is an allocation, rounded up to 512 bytes as the CUDA caching allocator rounds
each block (what ``torch.cuda.max_memory_allocated`` counts); a weakref finalizer on the storage
frees it when autograd, Python or a checkpoint drops it. Weights (parameters and buffers) on the
device are counted from the start, one rounded block per tensor, as ``from_pretrained`` allocates
them. The peak is the largest total live at any moment of forward + backward.

Attention: the CUDA kernel is modelled, not the CPU one. ``F.scaled_dot_product_attention`` is
replaced during estimation by an ``autograd.Function`` with flash / memory-efficient attention's
footprint: the forward allocates the output (laid out (B, L, H, D), as flash writes it) and a float32
logsumexp (B, H, L), and saves q, k, v, out, logsumexp (+ the mask, if one is given) -- never the
L x L matrix; its backward allocates dq, dk, dv and flash-attention-2's float32 temporaries
(softmax_d (B, H, L128) and dq_accum (B, H, L128, D), L rounded up to 128). Attention written out
by hand (Gemma-2's eager softcapped attention, SANA's linear attention, which upcasts to fp32) runs
as written, as on the GPU.

Routing: HiDream-I1's routed experts count their tokens with ``bincount(...).cpu()``, which fake tensors cannot
answer; :func:`balanced_routing` gives every expert the same share (``tokens x 2 / 4``). In eval mode (dti's frozen
denoiser) diffusers runs them under ``no_grad``, so they save nothing for backward and the share moves only a
transient.

Not modelled: the CUDA context (~0.5-1 GiB outside PyTorch's allocator), the cuBLAS / cuDNN
workspaces (tens to hundreds of MiB), caching-allocator fragmentation and the reserved-but-unused
memory (``max_memory_reserved`` > ``max_memory_allocated``), ``torch.compile``, kernels whose CUDA
autograd saves other tensors than the CPU / meta formulas (e.g. a fused CUDA RMSNorm), the small
CPU-side tensors (token ids, per-sample draws) that the estimate counts as if they were on the
device (kilobytes), and T5's fp32 ``wo`` layers (``_keep_in_fp32_modules``; no family in the table
has T5). The "fits" columns therefore add a margin: a row fits a card when
``peak x 1.10 + 1.0 GiB <= card`` (16 GiB for "16 GB", 24 GiB for "24 GB").

VAE: on cached latents a step does not run the VAE, so ``--vae-offload`` (latents pre-encoded, VAE
off the device during the loop) only removes the VAE's weights; with the VAE on the device a step
whose crop misses the latent cache also encodes one crop (batch 1, no_grad) before the denoiser
runs, and that transient peak is estimated too and taken when larger.

Calibration (``--calibrate``): ENVIRONMENT.md's one GPU measurement, "SDXL UNet fwd+bwd, batch 4,
768 px, bf16, eager | H200 | 16 GiB peak": the UNet alone resident in bf16, gradient to its
conditioning inputs (``benchmarks/step.py``'s floor).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from dti.training.memory import CONTEXT_GIB, SAFETY  # the margin rule: one definition, the library's

HERE = Path(__file__).resolve().parent
GIB = 2**30
BLOCK = 512  # the CUDA caching allocator rounds every block up to a multiple of 512 bytes

CARDS_GIB = {"16 GB": 16.0, "24 GB": 24.0}
MARGIN_RULE = f"fits a card when peak x {SAFETY:.2f} + {CONTEXT_GIB:.1f} GiB (CUDA context, cuBLAS) <= the card's 16 / 24 GiB"
#: (family, resolution) of the table; batches and checkpointing are crossed with these
BATCHES = (1, 2, 4)
# (family, resolution, batches): the three, SD 1.5, and the big-T5 families at the batches they can afford
TABLE = (
    ("sdxl", 768, BATCHES),
    ("sdxl", 1024, BATCHES),
    ("sana", 1024, BATCHES),
    ("sd", 512, BATCHES),
    ("pixart", 1024, (1, 2)),
    ("sd3", 1024, (1, 2)),
    ("flux", 1024, (1, 2)),
    ("wan", 512, BATCHES),  # Wan 2.1 T2V 1.3B at the paper's 512 px (one-frame latents)
    ("wan-14b", 512, (1, 2)),
    ("chroma", 1024, (1, 2)),
    ("lumina2", 1024, (1, 2)),
    ("qwenimage", 512, (1, 2)),  # its default 512 px (the 20B transformer and 7B encoder fill most of the memory)
    ("zimage", 1024, (1, 2)),  # Z-Image's native 1024 px (dti's default)
    ("flux2_klein", 1024, (1, 2)),  # FLUX.2 klein 4B at 1024 px (dti's default)
    ("flux2_klein-9b", 1024, (1, 2)),
    ("hidream", 768, (1, 2)),  # dti's default 768 px (the 17B MoE transformer and four encoders: ~62 GiB of weights)
)
#: ENVIRONMENT.md: "SDXL UNet fwd+bwd, batch 4, 768 px, bf16, eager | H200 | 249 ms, 16 GiB peak"
CALIBRATION = {"family": "sdxl", "resolution": 768, "batch": 4, "measured_gib": 16.0}


def rounded(nbytes: int, block: int = BLOCK) -> int:
    """Bytes the caching allocator hands out for a request of ``nbytes`` (0 stays 0)."""
    return 0 if nbytes <= 0 else -(-nbytes // block) * block


# ------------------------------------------------------------------ the tracker
class MemoryTracker(TorchDispatchMode):
    """Live bytes of tensor storages and their peak: a storage is allocated when an op first returns
    it (rounded up to ``block`` bytes) and freed when its Python storage object dies (weakref
    finalizer). Outputs that alias an input's storage (views, in-place ops) allocate nothing.
    ``hold`` counts storages that exist already (resident weights)."""

    def __init__(self, block: int = BLOCK) -> None:
        super().__init__()
        self.block = block
        self.live: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0
        self.allocations = 0
        self.phase = "start"
        self.peak_phase = "start"

    def _add(self, storage: Any) -> None:
        if storage in self.live:
            return
        size = rounded(storage.nbytes(), self.block)
        self.live[storage] = size
        self.allocations += 1
        self.current += size
        if self.current > self.peak:
            self.peak, self.peak_phase = self.current, self.phase
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.current -= size

    def hold(self, tensors: Iterator[torch.Tensor] | Sequence[torch.Tensor]) -> None:
        for t in tensors:
            self._add(t.untyped_storage())

    def reset_peak(self) -> None:
        self.peak, self.peak_phase = self.current, self.phase

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.index.Tensor and len(args) == 2:
            args = (args[0], _long_indices(args[1]))
        out = func(*args, **(kwargs or {}))
        inputs = [t.untyped_storage() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if not any(st is s for s in inputs):
                    self._add(st)
        return out


def _long_indices(indices: Sequence[Any]) -> list[Any]:
    """A real boolean mask indexing a fake tensor (Z-Image's ``embeds[i][mask[i]]``) as the integer indices it
    selects: the same result, but a shape a fake tensor can know (a mask's ``nonzero`` needs its data)."""
    from torch._subclasses.fake_tensor import FakeTensor

    out: list[Any] = []
    for idx in indices:
        if isinstance(idx, torch.Tensor) and idx.dtype == torch.bool and not isinstance(idx, FakeTensor):
            out.extend(idx.nonzero().unbind(1))
        else:
            out.append(idx)
    return out


# ------------------------------------------------------------------ flash attention's footprint
class FlashAttentionFootprint(torch.autograd.Function):
    """Stands in for the CUDA flash / memory-efficient SDPA kernels: same output, same saved tensors
    (q, k, v, out, a float32 logsumexp (B, H, L), the mask if any), backward temporaries of
    flash-attention-2's size. The values are not computed (only shapes matter here)."""

    @staticmethod
    def forward(ctx, query, key, value, mask):
        *lead, heads, length, _ = query.shape
        dv = value.shape[-1]
        out = query.new_empty((*lead, length, heads, dv)).transpose(-3, -2)  # written (B, L, H, D), returned as (B, H, L, D)
        lse = query.new_empty((*lead, heads, length), dtype=torch.float32)
        saved = [query, key, value, out, lse] + ([mask] if isinstance(mask, torch.Tensor) else [])
        ctx.save_for_backward(*saved)
        ctx.has_mask = isinstance(mask, torch.Tensor)
        ctx.mark_non_differentiable(lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value = ctx.saved_tensors[:3]
        *lead, heads, length, dim = query.shape
        padded = -(-length // 128) * 128
        softmax_d = query.new_empty((*lead, heads, padded), dtype=torch.float32)
        dq_accum = query.new_empty((*lead, heads, padded, dim), dtype=torch.float32)
        dq, dk, dv = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        del softmax_d, dq_accum
        return dq, dk, dv, None


def flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``F.scaled_dot_product_attention``'s signature; the footprint does not depend on the other arguments."""
    return FlashAttentionFootprint.apply(query, key, value, attn_mask)


@contextlib.contextmanager
def cuda_attention() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` -> :class:`FlashAttentionFootprint` (diffusers and transformers
    look the function up on ``torch.nn.functional`` at call time)."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = flash_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


# ------------------------------------------------------------------ HiDream's routed experts
def _balanced_moe_infer(self, x, flat_expert_indices, flat_expert_weights):
    """``MOEFeedForwardSwiGLU.moe_infer`` with the routing's token counts made even: each routed expert takes
    ``tokens x active / experts`` rows (the real counts come from ``bincount(...).cpu()``, data a fake tensor does
    not have). Same gathers, expert calls and scatter as the original, and like it under ``no_grad``."""
    expert_cache = torch.zeros_like(x)
    idxs = flat_expert_indices.argsort()
    token_idxs = idxs // self.num_activated_experts
    total, count = flat_expert_indices.shape[0], len(self.experts)
    start = 0
    for i, expert in enumerate(self.experts):
        end = total if i == count - 1 else start + total // count
        exp_token_idx = token_idxs[start:end]
        expert_out = expert(x[exp_token_idx])
        expert_out.mul_(flat_expert_weights[idxs[start:end]])
        expert_cache = expert_cache.to(expert_out.dtype)
        expert_cache.scatter_reduce_(0, exp_token_idx.view(-1, 1).repeat(1, x.shape[-1]), expert_out, reduce="sum")
        start = end
    return expert_cache


@contextlib.contextmanager
def balanced_routing() -> Iterator[None]:
    """HiDream-I1's mixture of experts under fake tensors: :func:`_balanced_moe_infer` for ``moe_infer`` (the
    path an eval-mode transformer takes: dti freezes the denoiser in eval mode). Does nothing to other families."""
    from diffusers.models.transformers import transformer_hidream_image as hidream

    cls = hidream.MOEFeedForwardSwiGLU
    original = cls.moe_infer
    cls.moe_infer = torch.no_grad()(_balanced_moe_infer)
    try:
        yield
    finally:
        cls.moe_infer = original


# ------------------------------------------------------------------ building
def fake_mode() -> FakeTensorMode:
    # real CPU tensors made outside (token ids, generator draws, scheduler tables) become fake on use
    return FakeTensorMode(allow_non_fake_inputs=True)


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """``module.to(dtype)`` for fake tensors (``Module._apply`` would swap tensors, which fake tensors
    with weak references refuse): floating parameters and buffers of another dtype are replaced."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_floating_point() and p.dtype != dtype:
                sub._parameters[name] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_floating_point() and b.dtype != dtype:
                sub._buffers[name] = b.to(dtype)


def build_fake_pipeline(family: str, dtype: torch.dtype, spec: dict[str, Any] | None = None) -> Any:
    """``full_configs.build_pipeline(family, dtype)`` for the current fake mode: the same modules from
    the same configs, created in ``dtype`` (weights fake: shapes only), then cast as ``pipe.to(dtype)`` does."""
    import diffusers

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from full_configs import FAMILIES, pipeline_parts

    spec = spec or FAMILIES[family]

    def cast(module: torch.nn.Module) -> torch.nn.Module:
        cast_floating(module, dtype)
        return module

    import full_configs
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    real_scheduler = full_configs._scheduler

    def scheduler(spec: Any) -> Any:  # real tables: FlowMatchEulerDiscrete's __init__ reads one with .item()
        with unset_fake_temporarily():
            return real_scheduler(spec)

    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    full_configs._scheduler = scheduler
    try:
        pipe = getattr(diffusers, spec["pipeline"])(**pipeline_parts(spec, dtype, "cpu", cast))
    finally:
        full_configs._scheduler = real_scheduler
        diffusers.utils.logging.set_verbosity(level)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def module_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def tensors_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[id(st)] = rounded(st.nbytes())
    return sum(seen.values())


class Estimator:
    """One family's full-size pipeline, built fake once, with dti's trainable rows attached."""

    def __init__(
        self,
        family: str,
        dtype: torch.dtype = torch.bfloat16,
        token: str = "<dti>",
        init: str = "dog",
        spec: dict[str, Any] | None = None,
        fake: bool = True,
    ) -> None:
        """``spec``: a ``full_configs.FAMILIES``-style entry instead of the family's full-size one (tests);
        ``fake=False``: real weights and tensors on the CPU (tiny specs only: to check that fake tensors
        count what real ones allocate)."""
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))

        from dti.core.rows import TrainableRows
        from dti.models import adapter_for
        from dti.text.vocab import vocabulary_rows
        from dti.text.words import initializer_ids

        self.family, self.dtype, self.token = family, dtype, token
        self.mode: Any = fake_mode() if fake else contextlib.nullcontext()
        t0 = time.perf_counter()
        with self.mode:
            self.pipe = build_fake_pipeline(family, dtype, spec)
        # From here on the fake mode is not entered: ops on the fake weights are fake through the
        # tensors themselves, while token ids and per-sample draws stay real (dti compares and
        # remembers token ids, which a fake tensor cannot do).
        self.adapter = adapter = adapter_for(self.pipe)
        adapter.freeze()
        self.rows = []
        for slot in adapter.encoders:  # Trainer.setup's attach, method dti (sphere rows, fixed magnitude)
            ids = initializer_ids(slot.tokenizer, init, slot.name)
            raw = vocabulary_rows(slot.tokenizer, slot.text_encoder)[ids].detach().float()
            rows = TrainableRows(raw, "sphere", magnitude=0.4)
            slot.attach(token, rows, "eos")
            self.rows.append(rows)
        self.build_s = time.perf_counter() - t0
        self._latent_shapes: dict[int, tuple[int, ...]] = {}

    # -------------------------------------------------------------- parts resident on the device
    def weights(self, vae: bool, text_encoders: bool = True) -> list[torch.Tensor]:
        parts = [self.adapter.denoiser]
        if text_encoders:
            parts += [slot.text_encoder for slot in self.adapter.encoders]
        if vae:
            parts.append(self.pipe.vae)
        tensors = [t for m in parts for t in module_tensors(m)]
        return tensors + ([p for r in self.rows for p in r.parameters()] if text_encoders else [])

    def component_gib(self) -> dict[str, float]:
        names = [self.adapter.denoiser_name, *(slot.name for slot in self.adapter.encoders), "vae"]
        return {n: round(tensors_bytes(module_tensors(getattr(self.pipe, n))) / GIB, 3) for n in names}

    def latent_shape(self, batch: int, resolution: int) -> tuple[int, ...]:
        """Cached latents of ``batch`` crops: the shape ``adapter.encode_pixels`` gives one crop (run once per
        resolution on fake tensors: shapes only), so a family's own layout (Wan's one-frame time axis) comes along."""
        if resolution not in self._latent_shapes:
            with self.mode:
                pixels = torch.empty((1, 3, resolution, resolution), dtype=torch.float32)
            mean, _ = self.adapter.encode_pixels(pixels)
            self._latent_shapes[resolution] = tuple(mean.shape[1:])
        return (batch, *self._latent_shapes[resolution])

    def _checkpointing(self, on: bool) -> None:
        denoiser = self.adapter.denoiser
        if on:
            denoiser.enable_gradient_checkpointing()
        elif denoiser.is_gradient_checkpointing:
            denoiser.disable_gradient_checkpointing()

    # -------------------------------------------------------------- runs
    def step(self, batch: int, resolution: int, checkpointing: bool) -> dict[str, Any]:
        """Peak of ``adapter.loss`` + backward (VAE not resident; add its weights for a resident VAE)."""
        from dti.core.draws import SampleDraws
        from dti.models import CropInfo

        self._checkpointing(checkpointing)
        prompts = [f"a photo of {self.token}"] * batch
        crops = [CropInfo((resolution, resolution), (0, 0), (resolution, resolution))] * batch
        draws = SampleDraws(0, list(range(batch)))
        with self.mode:
            latents = torch.empty(self.latent_shape(batch, resolution), dtype=torch.float32)  # LatentCache.sample: fp32
        with cuda_attention(), balanced_routing():
            tracker = MemoryTracker()
            with tracker:
                tracker.hold(self.weights(vae=False))
                tracker.hold([latents])
                base = tracker.current
                tracker.phase = "forward"
                loss = self.adapter.loss(latents, prompts, crops, draws)
                forward_end = tracker.current
                tracker.phase = "backward"
                loss.backward()
                del loss
                gc.collect()
                tracker.phase = "end"
                grads = [p.grad for r in self.rows for p in r.parameters()]
                assert all(g is not None for g in grads), "the backward did not reach the trainable rows"
                frozen = [
                    p for p in self.weights(vae=False) if p.grad is not None and all(p is not q for r in self.rows for q in r.parameters())
                ]
                assert not frozen, f"{len(frozen)} frozen weights got a .grad"
                end = tracker.current
            for r in self.rows:
                for p in r.parameters():
                    p.grad = None
        return {
            "resident_bytes": base,
            "peak_bytes": tracker.peak,
            "peak_phase": tracker.peak_phase,
            "saved_at_forward_end_bytes": forward_end - base,
            "left_after_step_bytes": end - base,
            "allocations": tracker.allocations,
        }

    def floor(self, batch: int, resolution: int, checkpointing: bool = False) -> dict[str, Any]:
        """``benchmarks/step.py``'s floor: the denoiser alone resident, forward + backward to its
        conditioning (a real step's conditioning, copied as leaves: those on the gradient path
        require grad), MSE of the fp32 prediction against an fp32 target."""
        from dti.models import CropInfo

        self._checkpointing(checkpointing)
        prompts = [f"a photo of {self.token}"] * batch
        crops = [CropInfo((resolution, resolution), (0, 0), (resolution, resolution))] * batch
        with cuda_attention(), balanced_routing():
            cond = _leaves(self.adapter.condition(prompts, crops))
            with self.mode:
                noisy = torch.empty(self.latent_shape(batch, resolution), dtype=self.adapter.denoiser.dtype)
                target = torch.empty(self.latent_shape(batch, resolution), dtype=torch.float32)
            timesteps = torch.full((batch,), 500, dtype=torch.long)
            inputs = [noisy, timesteps, target, *_tensors(cond)]
            tracker = MemoryTracker()
            with tracker:
                tracker.hold(module_tensors(self.adapter.denoiser))
                tracker.hold(inputs)
                base = tracker.current
                tracker.phase = "forward"
                pred = self.adapter.predict(noisy, timesteps, cond)
                loss = F.mse_loss(pred.float(), target)
                del pred
                forward_end = tracker.current
                tracker.phase = "backward"
                loss.backward()
                del loss
                gc.collect()
                assert all(t.grad is not None for t in _tensors(cond) if t.requires_grad), "the floor did not reach the conditioning"
        return {
            "resident_bytes": base,
            "peak_bytes": tracker.peak,
            "peak_phase": tracker.peak_phase,
            "saved_at_forward_end_bytes": forward_end - base,
            "conditioning": {k: list(t.shape) for k, t in _named(cond)},
        }

    def vae_encode(self, resolution: int) -> dict[str, Any]:
        """A cache miss: ``adapter.encode_pixels`` on one crop (no_grad), with the step's weights resident."""
        with self.mode:
            pixels = torch.empty((1, 3, resolution, resolution), dtype=torch.float32)
        with cuda_attention(), balanced_routing():
            tracker = MemoryTracker()
            with tracker:
                tracker.hold(self.weights(vae=True))
                base = tracker.current
                tracker.phase = "vae encode"
                mean, std = self.adapter.encode_pixels(pixels)
                del mean, std
        return {"resident_bytes": base, "peak_bytes": tracker.peak}


def _leaves(obj: Any) -> Any:
    """As ``benchmarks/step.py``'s ``leaves``: tensors on the gradient path become leaves that require grad."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, dict):
        return {k: _leaves(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_leaves(v) for v in obj)
    return obj


def _named(obj: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _named(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(obj, (list, tuple)):
        return [kv for i, v in enumerate(obj) for kv in _named(v, f"{prefix}[{i}]")]
    return []


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for _, t in _named(obj)]


# ------------------------------------------------------------------ rows
def fits(peak_gib: float, card_gib: float) -> bool:
    return peak_gib * SAFETY + CONTEXT_GIB <= card_gib


def gib(nbytes: int) -> float:
    return round(nbytes / GIB, 2)


def rows_for(
    est: Estimator, resolution: int, batches: Sequence[int], checkpointing: Sequence[bool], vae: Sequence[bool]
) -> list[dict[str, Any]]:
    """One row per (batch, checkpointing, VAE on the device). A step on cached latents never runs
    the VAE, so the VAE-resident row is the same run plus the VAE's weights (or the cache-miss
    encode's peak, if that is larger)."""
    vae_bytes = tensors_bytes(module_tensors(est.pipe.vae))
    encode = est.vae_encode(resolution) if any(vae) else None
    out = []
    for batch in batches:
        for ckpt in checkpointing:
            t0 = time.perf_counter()
            run = est.step(batch, resolution, ckpt)
            seconds = round(time.perf_counter() - t0, 1)
            for on in vae:
                peak = run["peak_bytes"] + (vae_bytes if on else 0)
                weights = run["resident_bytes"] + (vae_bytes if on else 0)
                where = run["peak_phase"]
                if on and encode is not None and encode["peak_bytes"] > peak:
                    peak, where = encode["peak_bytes"], "vae encode (cache miss)"
                row = {
                    "family": est.family,
                    "resolution": resolution,
                    "batch": batch,
                    "gradient_checkpointing": ckpt,
                    "vae_on_device": on,
                    "weights_gib": gib(weights),
                    "activations_gib": gib(peak - weights),
                    "peak_gib": gib(peak),
                    "peak_in": where,
                    "saved_for_backward_gib": gib(run["saved_at_forward_end_bytes"]),
                    "vae_encode_peak_gib": gib(encode["peak_bytes"]) if on and encode is not None else None,
                    "estimate_s": seconds,
                }
                row.update({f"fits {card}": fits(peak / GIB, size) for card, size in CARDS_GIB.items()})
                out.append(row)
    return out


def calibration_row(est: Estimator | None = None) -> dict[str, Any]:
    c = CALIBRATION
    est = est or Estimator(c["family"])
    run = est.floor(c["batch"], c["resolution"])
    peak = run["peak_bytes"] / GIB
    others = [t for slot in est.adapter.encoders for t in module_tensors(slot.text_encoder)] + module_tensors(est.pipe.vae)
    with_pipeline = peak + tensors_bytes(others) / GIB
    return {
        "what": "SDXL UNet fwd+bwd to its conditioning, batch 4, 768 px, bf16, eager, UNet alone resident (benchmarks/step.py's floor)",
        "measured": "ENVIRONMENT.md: H200, 16 GiB peak (torch.cuda max memory, as reported there)",
        "measured_gib": c["measured_gib"],
        "estimate_gib": round(peak, 2),
        "weights_gib": gib(run["resident_bytes"]),
        "saved_for_backward_gib": gib(run["saved_at_forward_end_bytes"]),
        "peak_in": run["peak_phase"],
        "estimate_over_measured": round(peak / c["measured_gib"], 3),
        # if the measurement was step.py's floor after a step (text encoders and VAE resident too)
        "estimate_with_pipeline_resident_gib": round(with_pipeline, 2),
        "conditioning": run["conditioning"],
    }


#: memory savers from cheapest to dearest: the VAE off the device costs nothing per step (latents are
#: cached anyway); gradient checkpointing recomputes the denoiser's forward (~30% slower)
SAVERS = (("none", False, True), ("--vae-offload", False, False), ("--gradient-checkpointing", True, True), ("both", True, False))


def smallest_fitting(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, resolution, card) and batch: the cheapest memory savers with which the step fits
    (by the margin rule), or "does not fit"."""
    out = []
    for family, resolution in dict.fromkeys((r["family"], r["resolution"]) for r in rows):
        mine = [r for r in rows if r["family"] == family and r["resolution"] == resolution]
        for card in CARDS_GIB:
            entry: dict[str, Any] = {"family": family, "resolution": resolution, "card": card}
            for batch in sorted({r["batch"] for r in mine}):
                entry[f"batch {batch}"] = "does not fit"
                for name, ckpt, vae in SAVERS:
                    hit = [r for r in mine if (r["batch"], r["gradient_checkpointing"], r["vae_on_device"]) == (batch, ckpt, vae)]
                    if hit and hit[0][f"fits {card}"]:
                        entry[f"batch {batch}"] = f"{name} ({hit[0]['peak_gib']:.1f} GiB)"
                        break
            out.append(entry)
    return out


# ------------------------------------------------------------------ output
COLUMNS = (
    ("family", "family"),
    ("resolution", "px"),
    ("batch", "batch"),
    ("gradient_checkpointing", "checkpointing"),
    ("vae_on_device", "VAE on device"),
    ("weights_gib", "weights GiB"),
    ("activations_gib", "activations GiB"),
    ("peak_gib", "peak GiB (estimate)"),
    ("peak_in", "peak in"),
    ("fits 16 GB", "fits 16 GB"),
    ("fits 24 GB", "fits 24 GB"),
)


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Peak CUDA memory of one dti training step, estimated (no GPU)",
        "",
        f"Command: `{' '.join(result['command'])}`  ",
        f"Date: {result['date']}; machine: {result['machine']}; torch {result['torch']}, diffusers {result['diffusers']}, "
        f"transformers {result['transformers']}; precision bf16 (every module).",
        "",
        "Estimated with fake tensors (shapes, no data) by `benchmarks/memory.py`: dti's `adapter.loss` + backward on cached latents,",
        "weights resident, flash-attention's footprint for SDPA, every block rounded up to 512 bytes. Not modelled: CUDA context,",
        "cuBLAS/cuDNN workspaces, allocator fragmentation / reserved memory, torch.compile (see the script's docstring).",
        f"**Margin rule:** {result['margin_rule']}.",
        "",
    ]
    cal = result.get("calibration")
    if cal:
        lines += [
            "## Calibration",
            "",
            f"{cal['what']}: estimate **{cal['estimate_gib']:.2f} GiB** vs measured **{cal['measured_gib']:.0f} GiB** ({cal['measured']}); "
            f"ratio {cal['estimate_over_measured']:.3f}. Of the estimate: weights {cal['weights_gib']:.2f} GiB, "
            f"tensors saved for backward {cal['saved_for_backward_gib']:.2f} GiB; peak in the {cal['peak_in']}. "
            f"Had the measurement kept the text encoders and the VAE resident too (step.py's floor after a step), the estimate "
            f"would be {cal['estimate_with_pipeline_resident_gib']:.2f} GiB.",
            "",
        ]
    lines += ["## Rows", "", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result["rows"]:
        lines.append("| " + " | ".join(_cell(r[k]) for k, _ in COLUMNS) + " |")
    if result.get("smallest"):
        batches = list(dict.fromkeys(k for e in result["smallest"] for k in e if k.startswith("batch ")))
        lines += [
            "",
            "## The cheapest memory savers that fit (by the margin rule)",
            "",
            "Savers from cheapest to dearest: none, `--vae-offload` (free per step), `--gradient-checkpointing` (recomputes the "
            "denoiser's forward), both. The estimated peak of that setting in brackets.",
            "",
            "| family | px | card | " + " | ".join(batches) + " |",
            "|---|---|---|" + "---|" * len(batches),
        ]
        for e in result["smallest"]:
            lines.append(f"| {e['family']} | {e['resolution']} | {e['card']} | " + " | ".join(e.get(b, "-") for b in batches) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ --vram's presets (the library's model)
CARD_TABLE = (8, 12, 16, 24)
#: the table's family names -> dti's family (the library's ACTIVATIONS key); a size variant shares its family's
FAMILY_OF = {"wan-14b": "wan", "flux2_klein-9b": "flux2_klein"}


def profile(family: str) -> Any:
    """The library's memory profile of a full-size family, from its modules built on the meta device (seconds)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from full_configs import FAMILIES, _module, components

    from dti.training.memory import profile_of_modules

    spec = FAMILIES[family]
    modules = {}
    for name in components(family):
        if name.startswith(("tokenizer", "scheduler")):
            continue
        kind, config = spec[name]
        with torch.device("meta"):
            module = _module(kind, config)
        role = "vae" if name == "vae" else "encoder" if name.startswith("text_encoder") else "denoiser"
        modules[name] = (role, module)
    return profile_of_modules(FAMILY_OF.get(family, family), modules)


def preset_rows(families: Sequence[str], cards: Sequence[int] = CARD_TABLE) -> list[dict[str, Any]]:
    """Per family and card: ``--vram``'s choice at the family's default settings, and its estimated peak."""
    from dti.models import ADAPTERS
    from dti.training.memory import Setup, activations_for, choose

    out = []
    for family in families:
        prof = profile(family)
        cls = next(c for c in ADAPTERS.values() if c.family == prof.family)
        ref = activations_for(prof)
        d = cls.defaults
        setup = Setup(
            resolution=int(d.get("resolution") or ref[0]), batch_size=int(d.get("batch_size", 4)), grad_accum=int(d.get("grad_accum", 1))
        )
        for card in cards:
            choice = choose(prof, setup, card, set())
            out.append(
                {
                    "family": family,
                    "resolution": setup.resolution,
                    "batch": f"{setup.batch_size}x{setup.grad_accum}",
                    "card": card,
                    "fits": choice.fits,
                    "changed": choice.changed,
                    "peak_gib": round(choice.estimate.peak_gib, 1),
                    "weights_gib": round(choice.estimate.weights_gib, 1),
                }
            )
        print(f"{family} done", file=sys.stderr)
    return out


SHORT = {"gradient_checkpointing": "ckpt", "quantize": "{}", "offload": "{} offload", "batch_size": "batch {}", "resolution": "{} px"}


def _choice_text(row: dict[str, Any]) -> str:
    """A table cell: the savers chosen (short names, README's legend) and the estimated peak in GiB."""
    if not row["fits"]:
        return f"does not fit ({row['peak_gib']:.1f})"
    said = [SHORT[k].format(v) for k, v in row["changed"].items() if k in SHORT]
    return f"{' + '.join(said) or 'defaults'}: {row['peak_gib']:.1f}"


def presets_markdown(rows: Sequence[dict[str, Any]]) -> str:
    cards = list(dict.fromkeys(r["card"] for r in rows))
    lines = [
        "| family | px | batch x accumulation | " + " | ".join(f"{c} GB" for c in cards) + " |",
        "|---|---|---|" + "---|" * len(cards),
    ]
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = {r["card"]: r for r in rows if r["family"] == family}
        first = next(iter(mine.values()))
        lines.append(f"| {family} | {first['resolution']} | {first['batch']} | " + " | ".join(_choice_text(mine[c]) for c in cards) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=tuple(DEFAULT_RESOLUTION), default="sdxl")
    p.add_argument("--resolution", type=int, default=None, help="default: the family's training resolution")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--vae-offload", action="store_true", help="latents pre-encoded, the VAE off the device during the loop")
    p.add_argument(
        "--all",
        action="store_true",
        help=f"the whole table: {', '.join(f'{f} {r} px' for f, r, _ in TABLE)} x batch 1/2(/4) x checkpointing x VAE",
    )
    p.add_argument("--only", nargs="+", choices=tuple(dict.fromkeys(f for f, _, _ in TABLE)), help="with --all: only these families' rows")
    p.add_argument(
        "--presets",
        action="store_true",
        help="--vram's choice for every family of the table (or --only's) on 8/12/16/24 GB cards, from the library's model",
    )
    p.add_argument("--calibrate", action="store_true", help="also estimate ENVIRONMENT.md's measured configuration (always with --all)")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--md", default=None, help="write a markdown table here")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be positive")
    if args.only and (not (args.all or args.presets) or set(args.only) - {f for f, _, _ in TABLE}):
        p.error(f"--only goes with --all and takes families of the table: {', '.join(dict.fromkeys(f for f, _, _ in TABLE))}")
    return args


DEFAULT_RESOLUTION = {
    "sd": 512,
    "sdxl": 768,
    "sana": 1024,
    "pixart": 1024,
    "sd3": 1024,
    "flux": 1024,
    "chroma": 1024,
    "lumina2": 1024,
    "qwenimage": 512,
    "zimage": 1024,
    "flux2_klein": 1024,
    "flux2_klein-9b": 1024,
    "hidream": 768,
    "wan": 512,
    "wan-14b": 512,
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import diffusers
    import transformers

    args = parse_args(argv)
    if args.presets:
        families = args.only or list(dict.fromkeys(f for f, _, _ in TABLE))
        rows = preset_rows(families)
        text = presets_markdown(rows)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"command": ["python", "benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)], "rows": rows}, indent=2
                )
                + "\n"
            )
        if args.md:
            Path(args.md).write_text(text)
        print(text)
        return {"rows": rows}
    result: dict[str, Any] = {
        "command": ["python", "benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU (fake tensors)",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "precision": "bf16",
        "margin_rule": MARGIN_RULE,
        "block_bytes": BLOCK,
    }
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    result["components_gib"] = {}
    if args.all:
        built: dict[str, Estimator] = {}
        for family, resolution, batches in TABLE:
            if args.only and family not in args.only:
                continue
            est = built.setdefault(family, Estimator(family))
            result["components_gib"][family] = est.component_gib()
            rows += rows_for(est, resolution, batches, (False, True), (True, False))
            print(f"{family} {resolution} px done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if not args.only or args.calibrate or "sdxl" in args.only:
            result["calibration"] = calibration_row(built.get("sdxl"))
        result["smallest"] = smallest_fitting(rows)
    else:
        est = Estimator(args.family)
        result["components_gib"][args.family] = est.component_gib()
        resolution = args.resolution or DEFAULT_RESOLUTION[args.family]
        rows = rows_for(est, resolution, (args.batch,), (args.gradient_checkpointing,), (not args.vae_offload,))
        if args.calibrate:
            result["calibration"] = calibration_row(est if args.family == "sdxl" else None)
    result["rows"] = rows
    result["estimate_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
