"""``--device`` -> a torch device that exists on this machine, or one line saying why not."""

from __future__ import annotations

import torch

from dti.core.errors import DTIError, warn

#: The weights' precisions a model loads in; ``auto`` is bf16 on a GPU and fp32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> torch.device:
    """``auto`` is the CUDA GPU when torch sees one, else the CPU; an explicit device must exist here."""
    text = str(device).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DTIError(f"--device {device!r} is not a torch device; use auto, cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DTIError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DTIError(
                f"--device {device}: torch sees {count} CUDA GPU(s), numbered 0 to {count - 1}; use --device cuda:0 .. cuda:{count - 1}"
            )
    elif dev.type == "mps" and not _mps_available():
        raise DTIError(f"--device {device}: Apple's MPS backend is not available here; use --device cpu")
    elif dev.type == "meta":
        raise DTIError(f"--device {device}: the meta device holds no data and cannot run a model; use auto, cpu or cuda")
    elif dev.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, dev.type, None)  # torch.xpu, torch.mtia, ...: each says whether it is usable
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise DTIError(f"--device {device}: torch has no usable {dev.type} device here; use --device cpu")
    return dev


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host tensor bound for a CUDA GPU goes through pinned memory without
    blocking, so the host does not wait for the GPU's queue (an ordinary ``.to("cuda")`` from
    pageable memory synchronizes the stream). For the per-step draws: noise and timesteps."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a GPU and fp32 on the CPU (where bf16 is slow and imprecise)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise DTIError(f"{{precision}} {precision!r} is not valid; use one of {', '.join(PRECISIONS)}", settings=["precision"])
    if precision == "fp16" and device.type == "cpu" and "fp16-cpu" not in _WARNED:
        _WARNED.add("fp16-cpu")
        warn("fp16 on the CPU is slow and loses precision (diffusers does not support it there); the CPU's own is fp32 (auto)")
    return table[precision]


_WARNED: set[str] = set()  # warnings said once per process
