"""Text encoders that do not learn the word run once per prompt, then wait in host memory.

With ``--encoders`` naming only some of a pipeline's encoders (FLUX's or SD3's CLIP and not T5;
SDXL's bigG and not CLIP-L), the others keep the initializer's rows, so their output for a given
prompt never changes during the run. A run's prompts are a fixed set (its templates with its
token), so before the first step each prompt goes through every such encoder once, on the device;
its outputs are kept there, row by row, and the encoder moves to host memory (T5-XXL is 8.9 GiB in
bf16). A step's call then stacks the kept rows: no forward, no weights on the device. The rows
equal a batched forward's to float rounding (a batch of one is not bitwise a row of a batch of
four).

The encoder comes back to the device for anything else: a prompt that was not kept (the validation
samples, another concept's prompts in a batch of several), or when another concept trains it.
All of it is one hook the adapter owns (``adapter.hooks["frozen"]``, told by
:meth:`~dti.models.base.Adapter.encode` which prompts it encodes); releasing it hands the pipeline
back as it came.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils import _pytree

from dti.models.base import AdapterHook
from dti.training import offload

HOOK = "frozen"  # its name among the adapter's hooks


class Memo:
    """Stands in for one frozen encoder's ``forward``: kept outputs by prompt, else the real call."""

    def __init__(self, module: torch.nn.Module, device: torch.device, trained: set[str], name: str) -> None:
        self.module, self.device, self.name, self.trained = module, device, name, trained
        self.real_forward = module.forward
        self.rows: dict[tuple[str, Any], list[torch.Tensor]] = {}  # (prompt, call signature) -> output leaves, row k
        self.specs: dict[Any, Any] = {}  # call signature -> the output's structure
        self.prompts: list[str] | None = None  # the batch being encoded (set by the adapter's condition)
        self.recording = False
        self.parked = False
        self.calls = 0  # real forwards (tests: none in training)
        module.forward = self  # an instance attribute: nn.Module.__call__ finds it first

    @staticmethod
    def signature(args: Sequence[Any], kwargs: dict[str, Any]) -> Any | None:
        """The call's options as a key, or None when a call cannot be kept (a tensor besides the ids)."""
        if len(args) > 1 or any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k != "input_ids"):
            return None
        return (len(args), tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "input_ids")))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ids = args[0] if args else kwargs.get("input_ids")
        sig = self.signature(args, kwargs)
        prompts = self.prompts
        usable = sig is not None and prompts is not None and isinstance(ids, torch.Tensor) and ids.shape[0] == len(prompts)
        if usable and not self.recording and self.serves and all((p, sig) in self.rows for p in prompts):
            leaves = [torch.stack([self.rows[(p, sig)][k] for p in prompts]) for k in range(len(self.rows[(prompts[0], sig)]))]
            return _pytree.tree_unflatten(leaves, self.specs[sig])
        with self.home():
            self.calls += 1
            out = self.real_forward(*args, **kwargs)
        if usable and self.recording:
            self.keep(prompts, sig, out)
        return out

    def keep(self, prompts: Sequence[str], sig: Any, out: Any) -> None:
        leaves, spec = _pytree.tree_flatten(out)
        if not all(isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == len(prompts) for t in leaves):
            return  # an output this cannot split by prompt: never kept, always the real call
        self.specs[sig] = spec
        for k, p in enumerate(prompts):
            self.rows[(p, sig)] = [t[k].detach().clone() for t in leaves]

    @contextlib.contextmanager
    def home(self) -> Iterator[None]:
        """The encoder on the device for a real call, back in host memory after it if it was there."""
        parked = self.parked
        if parked:
            self.module.to(self.device)
            self.parked = False
        try:
            yield
        finally:
            if parked:
                self.park()

    @property
    def serves(self) -> bool:
        """Whether steps take this encoder's outputs from the kept rows (no concept trains it)."""
        return bool(self.rows) and self.name not in self.trained

    def park(self) -> None:
        where = offload.parking_for(self.device)
        if where is not None and self.serves and not self.parked:
            self.module.to(where)
            self.parked = True

    def unpark(self) -> None:
        if self.parked:
            self.module.to(self.device)
            self.parked = False

    def release(self) -> None:
        """The encoder as it was: its own forward, on the device."""
        self.unpark()
        if self.module.__dict__.get("forward") is self:
            del self.module.forward


class FrozenEncoders(AdapterHook):
    """The adapter's hook: a :class:`Memo` per frozen encoder, and the encoders some concept trains
    (never kept, never parked: their gradient has to flow)."""

    def __init__(self) -> None:
        self.memos: dict[str, Memo] = {}
        self.trained: set[str] = set()

    def before_encode(self, prompts: Sequence[str]) -> None:
        for memo in self.memos.values():
            memo.prompts = list(prompts)

    def after_encode(self) -> None:
        for memo in self.memos.values():
            memo.prompts = None

    def release(self) -> None:
        for memo in self.memos.values():
            memo.release()
        self.memos.clear()


def memos(adapter: Any) -> dict[str, Memo]:
    hook = adapter.hooks.get(HOOK)
    return hook.memos if hook is not None else {}


def keep_outputs(adapter: Any, frozen: Sequence[Any], trained: Sequence[Any], prompts: Sequence[str], crop: Any) -> None:
    """Run ``prompts`` once through the ``frozen`` slots' encoders (outputs kept on the device), then
    park them. An encoder that some concept on this adapter trains (``trained``, now or in an
    earlier setup) is never kept nor parked: its gradient has to flow."""
    hook = adapter.hooks.setdefault(HOOK, FrozenEncoders())
    table, names = hook.memos, hook.trained
    names.update(slot.name for slot in trained)
    for memo in table.values():
        if not memo.serves:
            memo.unpark()
    keep = [slot for slot in frozen if slot.name not in names]
    if not keep:
        return
    for slot in keep:
        if slot.name not in table:
            table[slot.name] = Memo(slot.text_encoder, adapter.device, names, slot.name)
    recording = [table[slot.name] for slot in keep]
    with torch.no_grad():
        for memo in recording:
            memo.recording = True
        try:
            for p in dict.fromkeys(prompts):
                adapter.encode([p], [crop])
        finally:
            for memo in recording:
                memo.recording = False
    for memo in recording:
        memo.park()


def served(adapter: Any, name: str) -> bool:
    """Whether steps take encoder ``name``'s outputs from kept rows (so compiling it buys nothing)."""
    memo = memos(adapter).get(name)
    return memo is not None and memo.serves


def release(adapter: Any) -> None:
    """Every memo off, every encoder back on the device with its own forward."""
    hook = adapter.hooks.pop(HOOK, None)
    if hook is not None:
        hook.release()


@contextlib.contextmanager
def all_home(adapter: Any) -> Iterator[None]:
    """Every parked encoder on the device for the body (the validation samples), parked again after."""
    with contextlib.ExitStack() as stack:
        for memo in memos(adapter).values():
            stack.enter_context(memo.home())
        yield
