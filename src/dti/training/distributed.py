"""Data-parallel training through accelerate: ``accelerate launch -m dti train ...``.

Only the new word's rows are trained and the model is frozen, so data parallelism needs no
wrapped model: each process computes the loss of its share of the global batch (the sample
indices of :func:`dti.core.draws.batch_indices`), the rows' gradients are averaged over processes, and
every process takes the same optimizer step, so the rows stay identical everywhere. Only the
main process writes. A single process (the usual case) touches no distributed code at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import torch

_INDEPENDENT = False  # set by a sweep whose launched processes each take their own runs (independent())


def launched() -> bool:
    """Whether this process is one of several started by accelerate / torchrun that train together."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _INDEPENDENT


def local_device() -> str:
    """A launched process's own accelerator (``cuda:LOCAL_RANK``), or "auto"."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "auto"


@contextlib.contextmanager
def independent() -> Iterator[None]:
    """Within the body, runs train alone in this process even under ``accelerate launch`` (a sweep's
    workers: each process takes other runs, none waits for the others)."""
    global _INDEPENDENT
    before, _INDEPENDENT = _INDEPENDENT, True
    try:
        yield
    finally:
        _INDEPENDENT = before


class Ranks:
    """This process's place in the run: ``rank`` of ``world``; ``device`` is its accelerator."""

    def __init__(self) -> None:
        self.rank, self.world, self.device, self._state = 0, 1, None, None
        if launched():
            from accelerate import PartialState

            # without CUDA, accelerate's processes talk over gloo on the CPU (``--multi_gpu`` on a CPU machine)
            self._state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self._state.process_index, self._state.num_processes
            self.device = self._state.device if self._state.device.type != "cpu" else torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average tensors over processes, in place (a no-op for one process)."""
        if self.world == 1:
            return
        for t in tensors:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            t.div_(self.world)

    def any_(self, flag: bool) -> bool:
        """True on every process if it is true on any (e.g. a stop request seen by one)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device or "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            self._state.wait_for_everyone()
