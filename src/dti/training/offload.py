"""The VAE off the accelerator while a run trains on pre-encoded crops (``--crop-positions``).

With a fixed set of crop positions every latent is encoded before the first step, so the loop
never runs the autoencoder: it waits in host memory (in bf16 SDXL's VAE is 0.16 GiB, SANA's DC-AE
0.58 GiB: benchmarks/memory.py) and comes back for the validation samples and when the run ends.
The parking is a hook the adapter owns (``adapter.hooks["vae"]``); releasing it hands the pipeline
back to the caller as it came, VAE on its device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from dti.models.base import AdapterHook

PARK = torch.device("cpu")
HOOK = "vae"  # its name among the adapter's hooks


def parking_for(device: torch.device) -> torch.device | None:
    """Where a module of a run on ``device`` waits, or None when it already lives there (a CPU run)."""
    return None if device.type == PARK.type else PARK


def parking(adapter: Any) -> torch.device | None:
    """Where the VAE waits during training."""
    return parking_for(adapter.device)


class ParkedVAE(AdapterHook):
    """The adapter's hook while its VAE waits in host memory."""

    def __init__(self, adapter: Any, where: Any) -> None:
        self.adapter, self.where, self.parked = adapter, where, False

    def park(self) -> None:
        if not self.parked:
            self.adapter.pipe.vae.to(self.where)
            self.parked = True

    def unpark(self) -> None:
        if self.parked:
            self.adapter.pipe.vae.to(self.adapter.device)
            self.parked = False

    def release(self) -> None:
        self.unpark()


def park(adapter: Any) -> bool:
    """Move the VAE off the device (once per adapter); whether it moved."""
    where = parking(adapter)
    hook = adapter.hooks.get(HOOK)
    if where is None or (hook is not None and hook.parked):
        return False
    hook = adapter.hooks.setdefault(HOOK, ParkedVAE(adapter, where))
    hook.park()
    return True


def unpark(adapter: Any) -> None:
    """The VAE back on the device for good (the run is over)."""
    hook = adapter.hooks.pop(HOOK, None)
    if hook is not None:
        hook.release()


def parked(adapter: Any) -> bool:
    hook = adapter.hooks.get(HOOK)
    return hook is not None and hook.parked


@contextlib.contextmanager
def vae_home(adapter: Any) -> Iterator[None]:
    """The VAE on the device for the body (encoding crops, decoding samples), parked again after."""
    hook = adapter.hooks.get(HOOK)
    was = hook is not None and hook.parked
    if was:
        hook.unpark()
    try:
        yield
    finally:
        if was:
            hook.park()
