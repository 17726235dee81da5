"""Every random choice of a training run as a pure function of (seed, global sample index).

Sample ``i`` of a run (its photo, crop, prompt, latent draw, noise and timestep) depends on
nothing but the seed and ``i``. So a resumed run draws exactly what the uninterrupted run would
have drawn, and a run sharded over several processes draws exactly the samples of the
single-process run with the same global batch: each rank takes a contiguous slice of the
batch's indices. No generator state has to be saved or synchronized.

Photos are visited one pass at a time in a random order per pass: index ``i`` is position
``i % n`` of pass ``i // n``'s permutation (:meth:`dti.training.data.SubjectData.sample`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from functools import lru_cache

import torch


def stream_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed for one (run seed, stream, index), well mixed so neighbouring indices are
    unrelated (``seed + index`` would make run 1's sample 0 equal run 0's sample 1)."""
    digest = hashlib.blake2b(f"dti/{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@lru_cache(maxsize=64)
def photo_order(seed: int, n_photos: int, epoch: int) -> tuple[int, ...]:
    """Pass ``epoch``'s order of the photos."""
    order = list(range(n_photos))
    random.Random(stream_seed(seed, "order", epoch)).shuffle(order)
    return tuple(order)


def batch_indices(step: int, micro: int, batch_size: int, grad_accum: int, rank: int = 0, world: int = 1) -> range:
    """The global sample indices rank ``rank`` of ``world`` handles in micro-batch ``micro`` of
    ``step`` (1-based); ``batch_size`` is the global batch, split evenly over the ranks."""
    assert batch_size % world == 0, "the global batch must split evenly over the processes"
    first = ((step - 1) * grad_accum + micro) * batch_size
    share = batch_size // world
    return range(first + rank * share, first + (rank + 1) * share)


class SampleDraws:
    """One CPU generator per sample of a batch, seeded by the sample's global index.

    Each sample draws its latent noise, its diffusion noise and its timestep from its own
    generator, in that order, so the draw does not depend on which other samples share the batch.
    """

    def __init__(self, seed: int, indices: Sequence[int]) -> None:
        self.indices = list(indices)
        self.generators = [torch.Generator("cpu").manual_seed(stream_seed(seed, "noise", i)) for i in self.indices]

    @classmethod
    def joined(cls, parts: Sequence[SampleDraws]) -> SampleDraws:
        """Several batches' draws as one batch (K concepts in one step, :mod:`dti.training.multi`): each
        sample keeps its own generator where its stream stands, so it draws what it would alone."""
        out = cls.__new__(cls)
        out.indices = [i for part in parts for i in part.indices]
        out.generators = [g for part in parts for g in part.generators]
        return out

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """A ``[batch, *shape]`` standard normal tensor, row ``k`` from sample ``k``'s generator."""
        return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        """One integer in ``[0, high)`` per sample (int64)."""
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators])
