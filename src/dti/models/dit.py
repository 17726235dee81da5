"""Pieces PixArt-Sigma and SANA share (SANA's pipeline descends from PixArt's): prompts encoded by
one sentence encoder with an attention mask that the DiT also receives, and learned-variance
outputs whose second half is dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dti.models.base import CropInfo


class MaskedPromptMixin:
    """``encode_prompt`` -> ``encoder_hidden_states`` + ``encoder_attention_mask``, caption cleaning off."""

    pipe: Any
    device: torch.device
    options: dict[str, Any]

    def max_length(self, role: Any) -> int:
        return int(self.options["max_sequence_length"])

    def prompt_kwargs(self) -> dict[str, Any]:
        """Family-specific ``encode_prompt`` arguments (SANA's instruction)."""
        return {}

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=False,
            device=self.device,
            clean_caption=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
            **self.prompt_kwargs(),
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def generation_kwargs(self) -> dict[str, Any]:
        # dti asks for exact sizes; resolution binning would render another size and resize
        return {
            "clean_caption": False,
            "use_resolution_binning": False,
            "max_sequence_length": int(self.options["max_sequence_length"]),
            **self.prompt_kwargs(),
        }


def epsilon_half(out: torch.Tensor, transformer: torch.nn.Module, latent_channels: int) -> torch.Tensor:
    """A learned-variance DiT predicts [mean part, variance part]: keep the first, as the pipelines do."""
    if transformer.config.out_channels // 2 == latent_channels:
        return out.chunk(2, dim=1)[0]
    return out
