"""What every pipeline family provides to training and generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class EncoderSlot:
    """One text encoder of a pipeline, named as the pipeline names the component."""

    name: str
    tokenizer: Any
    text_encoder: torch.nn.Module


@dataclass(frozen=True)
class MicroConditioning:
    """Per-sample facts some families condition on (SDXL's size and crop time ids)."""

    original_size: tuple[int, int]  # (height, width) of the photo before resizing
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the resized photo
    target_size: tuple[int, int]  # (height, width) of the crop


class Adapter:
    """A loaded pipeline plus the family-specific pieces of a training step."""

    family: ClassVar[str]
    pipeline_class: ClassVar[str]
    #: encoder name -> tokenizer subfolder of the pipeline folder
    tokenizer_folders: ClassVar[dict[str, str]] = {}
    #: Paper defaults for this family (METHOD.md section 5); resolution None = native.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._device = pipe.device  # pipe.device walks every module: too slow to ask per step

    @classmethod
    def load_pipeline(cls, model: str, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def encoders(self) -> list[EncoderSlot]:
        raise NotImplementedError

    def native_resolution(self) -> int:
        raise NotImplementedError

    @property
    def resolution_multiple(self) -> int:
        """Crops and resolutions must be multiples of this (the latent downsampling)."""
        raise NotImplementedError

    def freeze(self) -> None:
        """No pipeline weight builds a gradient."""
        for module in self.pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
                module.eval()

    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [-1, 1] -> (mean, std) of the latent distribution, in fp32."""
        raise NotImplementedError

    def loss(
        self,
        latents: torch.Tensor,
        prompts: Sequence[str],
        micro: Sequence[MicroConditioning],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The family's own training loss for a batch of (unscaled) latents and prompts."""
        raise NotImplementedError
