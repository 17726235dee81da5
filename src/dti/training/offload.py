"""The VAE off the accelerator while a run trains on pre-encoded crops (``--crop-positions``).

With a fixed set of crop positions every latent is encoded before the first step, so the loop
never runs the autoencoder: it waits in host memory (in bf16 SDXL's VAE is 0.16 GiB, SANA's DC-AE 0.58 GiB: benchmarks/memory.py)
and comes back for the validation samples and when the run ends. The pipeline is handed
back to the caller as it came, VAE on its device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

PARK = torch.device("cpu")


def parking_for(device: torch.device) -> torch.device | None:
    """Where a module of a run on ``device`` waits, or None when it already lives there (a CPU run)."""
    return None if device.type == PARK.type else PARK


def parking(adapter: Any) -> torch.device | None:
    """Where the VAE waits during training."""
    return parking_for(adapter.device)


def park(adapter: Any) -> bool:
    """Move the VAE off the device (once per adapter); whether it moved."""
    where = parking(adapter)
    if where is None or getattr(adapter, "vae_parked", False):
        return False
    adapter.pipe.vae.to(where)
    adapter.vae_parked = True
    return True


def unpark(adapter: Any) -> None:
    """The VAE back on the device for good (the run is over)."""
    if getattr(adapter, "vae_parked", False):
        adapter.pipe.vae.to(adapter.device)
        adapter.vae_parked = False


@contextlib.contextmanager
def vae_home(adapter: Any) -> Iterator[None]:
    """The VAE on the device for the body (encoding crops, decoding samples), parked again after."""
    parked = getattr(adapter, "vae_parked", False)
    if parked:
        unpark(adapter)
    try:
        yield
    finally:
        if parked:
            park(adapter)
