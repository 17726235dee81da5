"""Frozen weights on the device only while they run (``--offload {model,group}``), forward and backward.

A run learns a few rows, so every weight of the denoiser and of the text encoders that learn the
word is frozen, and nothing needs them on the device but the forward that uses them and the
backward that passes the gradient through them. With ``--offload`` they wait in host memory:

- ``group``: each block of a repeated stack (a ``ModuleList``'s items: the transformer blocks, a
  UNet's down and up blocks, an encoder's layers) comes to the device as its forward starts and
  leaves when it ends; the rest (embeddings, norms, the output projection: small) stays. Peak
  weights on the device: the largest block, plus the rest.
- ``model``: the denoiser and each such encoder as a whole, the same way (a model at a time).

The backward runs the blocks again in reverse, and the gradient to the word passes through every
one of them, so each block's outputs carry an identity whose backward brings the block back before
its own backward runs, and its inputs an identity whose backward sends it away once the gradient
has passed (``_Onload`` / ``_Offload``). Under gradient checkpointing the block's forward runs again
inside its backward; the block then stays until its backward is over. Autograd must keep nothing
that holds an away weight's device memory: torch's linear keeps a transposed *view* of its weight,
which would, so a block's plain linear layers run :class:`_FrozenLinear` instead (it keeps the layer
and reads the weight again in the backward; tested: nothing kept aliases an away weight). With
``--quantize`` the blocks move in their quantized form, through each module's own ``_apply``; whether
those backends' kernels keep views of their packed weights, and how torch's tensor swap takes a
quantized weight autograd holds, is not yet tested on a GPU (on a CPU the weights do not move).

This is dti's own hook rather than diffusers' ``apply_group_offloading`` or accelerate's CPU-offload
hooks: those move weights for the forward only (they are made for inference), and a block whose
weights left after its forward fails in the backward. Copies are synchronous (no side stream): a
block's copy is not overlapped with the previous block's compute, which costs time, not memory.

Weights in host memory are a copy made once (pinned on CUDA), so a block leaving the device is free;
the parameter objects stay the same, so the pipeline is handed back with its own parameters on their
own devices when the run ends (:meth:`Resident.release`). Encoders that do not learn the word are
not touched: :mod:`~dti.training.frozen` already serves them from kept outputs, off the device. On a
CPU run the weights already live in host memory: the setting changes nothing, and says so.

With ``--lora`` only the frozen base weights move: the LoRA's parameters (trainable, fp32) and their
AdamW state stay on the device the whole run, and its layers run torch's own linear (their weights'
gradient is what the LoRA learns from). The LoRA is put in before the hooks (see ``Trainer.setup``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils import _pytree

from dti.models.base import AdapterHook

HOOK = "offload"  # its name among the adapter's hooks
MODES = ("none", "model", "group")


def blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The items of ``module``'s outermost ``ModuleList``s (the repeated blocks), in order."""
    out: list[torch.nn.Module] = []

    def walk(m: torch.nn.Module) -> None:
        for child in m.children():
            if isinstance(child, torch.nn.ModuleList):
                out.extend(child)
            else:
                walk(child)

    walk(module)
    return out


def away(host: torch.Tensor) -> torch.Tensor:
    """What a plain weight holds while its block is away: its host copy (the tests put NaN there, so a block
    used while away shows)."""
    return host


def _plain(t: torch.Tensor) -> bool:
    return type(t) is torch.nn.Parameter or type(t) is torch.Tensor


class _FrozenLinear(torch.autograd.Function):
    """A frozen linear layer whose backward reads the layer's weight as it is then (brought back by
    :class:`_Onload`): torch's own linear keeps a transposed view of the weight for the backward, and a
    view keeps the weight's device memory alive after the block has sent the weight away. Its input
    is not kept either: a frozen weight needs no gradient, so the backward needs only the weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: torch.nn.Linear) -> torch.Tensor:
        ctx.module = module
        return torch.nn.functional.linear(x, module.weight, module.bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return grad.matmul(ctx.module.weight.to(grad.dtype)), None


def _linear_forward(module: torch.nn.Linear) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _FrozenLinear.apply(x, module)
        return torch.nn.functional.linear(x, module.weight, module.bias)

    return forward


class Block:
    """One group of frozen weights that comes and goes together."""

    def __init__(self, module: torch.nn.Module, device: torch.device, park: torch.device) -> None:
        self.module, self.device, self.park = module, device, park
        self.home: dict[int, torch.device] = {}
        self.host: dict[int, torch.Tensor] = {}  # plain weights' host copies
        self.owners: list[tuple[torch.nn.Module, list[torch.Tensor]]] = []  # each module with frozen weights of its own
        self.resident = True
        self.in_backward = 0
        seen: set[int] = set()
        # frozen parameters only: a trainable one (a LoRA's lora_A / lora_B) stays on the device, where its
        # optimizer's state is and its gradient is made (a quantized layer moves whole: the LoRA's weights are not its own)
        for m in module.modules():
            own = [p for p in m.parameters(recurse=False) if not p.requires_grad and id(p) not in seen]
            if own:
                seen.update(id(p) for p in own)
                self.owners.append((m, own))
                self.home.update({id(p): p.device for p in own})
        # plain frozen linear layers: a backward that keeps no view of the weight (an instance attribute, removed on release).
        # Under a LoRA that is PEFT's base_layer (the wrapper calls it); the LoRA's own lora_A / lora_B layers learn, so
        # they keep torch's linear, whose backward makes their weight's gradient (_FrozenLinear makes none)
        self.linears = [
            m
            for m in module.modules()
            if type(m) is torch.nn.Linear and _plain(m.weight) and not m.weight.requires_grad and "forward" not in m.__dict__
        ]
        for m in self.linears:
            m.forward = _linear_forward(m)

    def _host(self, p: torch.Tensor) -> torch.Tensor:
        if id(p) not in self.host:
            copy = p.data if p.device == self.park else p.data.to(self.park)
            if copy is not p.data and self.device.type == "cuda":
                copy = copy.pin_memory()
            self.host[id(p)] = copy
        return self.host[id(p)]

    def offload(self) -> None:
        if not self.resident or self.in_backward:
            return
        for m, own in self.owners:
            if all(_plain(p) for p in own):
                for p in own:
                    host = self._host(p)
                    p.data = away(host)
            else:  # a quantized tensor subclass moves whole, through the module
                m._apply(lambda t: t.to(self.park), recurse=False)
        self.resident = False

    def settle(self) -> None:
        """The backward is over: away, whatever it left."""
        self.in_backward = 0
        self.offload()

    def onload(self, device: torch.device | None = None) -> None:
        if self.resident and device is None:
            return
        for m, own in self.owners:
            if all(_plain(p) for p in own):
                for p in own:
                    p.data = self._host(p).to(device or self.device, non_blocking=True)
            else:
                m._apply(lambda t: t.to(device or self.device, non_blocking=True), recurse=False)
        self.resident = True

    def release(self) -> None:
        """Every weight back on the device it came from, every linear layer its own forward."""
        for m in self.linears:
            m.__dict__.pop("forward", None)
        self.linears.clear()
        for m, own in self.owners:
            if all(_plain(p) for p in own):
                for p in own:
                    p.data = self._host(p).to(self.home[id(p)])
            else:
                home = self.home[id(own[0])]
                m._apply(lambda t, home=home: t.to(home), recurse=False)
        self.resident = True
        self.host.clear()


class _Marker(torch.autograd.Function):
    """Identity on tensors that remembers its block: what the backward of a subclass acts on."""

    @staticmethod
    def forward(ctx: Any, block: Block, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.block = block
        return tuple(t.view_as(t) for t in tensors)


class _Onload(_Marker):
    """Identity on a block's outputs: its backward brings the block back before the block's backward."""

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        block = ctx.block
        block.in_backward += 1
        block.onload()
        # a block none of whose inputs carries a gradient (an encoder fed token ids) has no _Offload: away when the backward ends
        torch.autograd.Variable._execution_engine.queue_callback(block.settle)
        return (None, *grads)


class _Offload(_Marker):
    """Identity on a block's inputs: its backward runs once the gradient has passed the block."""

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        block = ctx.block
        block.in_backward = max(0, block.in_backward - 1)
        block.offload()
        return (None, *grads)


def _wrap(fn: Any, block: Block, tree: Any) -> Any:
    """``tree`` with its tensors that carry a gradient passed through ``fn`` (one call for all of them)."""
    leaves, spec = _pytree.tree_flatten(tree)
    picks = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.requires_grad]
    if not picks or not torch.is_grad_enabled():
        return tree
    done = fn.apply(block, *[leaves[i] for i in picks])
    for i, t in zip(picks, done):
        leaves[i] = t
    return _pytree.tree_unflatten(leaves, spec)


class Resident(AdapterHook):
    """The adapter's hook while its frozen blocks come and go: the blocks and their forward hooks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.handles: list[Any] = []

    def add(self, module: torch.nn.Module, device: torch.device, park: torch.device) -> None:
        """``module``'s frozen weights off the device, back for its forward and its backward (once per module:
        trainers that share an adapter each ask)."""
        if any(block.module is module for block in self.blocks):
            return
        block = Block(module, device, park)
        if not block.owners:
            return

        def before(m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            block.onload()
            return _wrap(_Offload, block, (args, kwargs))

        def after(m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            output = _wrap(_Onload, block, output)
            block.offload()
            return output

        self.handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        self.handles.append(module.register_forward_hook(after, with_kwargs=True))
        self.blocks.append(block)
        block.offload()

    def release(self) -> None:
        for handle in self.handles:
            handle.remove()
        for block in self.blocks:
            block.release()
        self.handles.clear()
        self.blocks.clear()


def parking_for(device: torch.device) -> torch.device | None:
    """Where an offloaded block waits on a run on ``device``, or None when it already lives there."""
    return None if device.type == "cpu" else torch.device("cpu")


def apply(adapter: Any, mode: str, modules: Sequence[torch.nn.Module], park: torch.device | None = None) -> bool:
    """Offload ``modules``' frozen weights (``model``: each whole, ``group``: block by block) to ``park``
    (default: host memory on an accelerator run); whether anything was offloaded (False on a CPU run)."""
    if mode == "none":
        return False
    where = park if park is not None else parking_for(adapter.device)
    if where is None:
        return False
    hook = adapter.hooks.setdefault(HOOK, Resident())
    for module in modules:
        groups = [module] if mode == "model" else blocks(module)
        for group in groups:
            hook.add(group, adapter.device, where)
    return True
