"""FLUX.2 klein (``Flux2KleinPipeline``): one Qwen3 encoder (``Qwen3ForCausalLM``: Qwen3-4B, 2560 wide, for klein
4B; Qwen3-8B, 4096 wide, for klein 9B) whose hidden layers ``text_encoder_out_layers`` (default 9, 18 and 27)
are stacked side by side into each token's conditioning (3 x the width), a packed-latent FLUX.2 MMDiT without a
guidance embedding, and FLUX.2's VAE (32 channels; its latents are patchified 2x2 to 128 channels and
normalized by the VAE's batch-norm statistics before the transformer sees them), trained by flow matching.

Prompts are encoded by the pipeline's own ``encode_prompt``, as at generation, so nothing differs from the
pipeline's inference encoding: Qwen3's chat template (one user turn, the assistant's opening and, thinking
disabled, an empty ``<think>`` block), padded to ``max_sequence_length`` tokens (template included). The
transformer gets every position, padding included and with no mask: the padding tokens come after the prompt
and, attention being causal, read it (the placeholder included), while the template's ``<|im_start|>user\\n``
and the words before the placeholder never see it.

The transformer, the latents and the training sigmas are FLUX.2's (:mod:`dti.models.flux2`, shared with FLUX.2 dev).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, FamilyDefaults, register
from dti.models.flux2 import Flux2Adapter
from dti.models.qwen3 import QWEN3_ROLE, Qwen3EncoderMixin, prompt_budget


@register("Flux2KleinPipeline")
class Flux2KleinAdapter(Qwen3EncoderMixin, Flux2Adapter):
    family = "flux2_klein"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (QWEN3_ROLE,)
    # No paper setting. 500 steps as SANA's and Lumina 2's (METHOD.md section 5); batch 4 as 2 x 2 accumulation (a 4B or
    # 9B transformer: one micro-batch of 2 in memory, as Lumina 2 and Z-Image); 1024 px, the pipeline's default size;
    # kappa 5e-5, the paper's value for its LLM encoder (Gemma-2), Qwen3 being one too.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    #: the pipeline's defaults: 512 Qwen3 tokens counting the chat template; the hidden layers it stacks
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512, "text_encoder_out_layers": [9, 18, 27]}

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: what the chat template leaves."""
        return prompt_budget(getattr(self.pipe, role.tokenizer), int(self.options["max_sequence_length"]), enable_thinking=False)

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, text_ids = self.pipe.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            max_sequence_length=int(self.options["max_sequence_length"]),
            text_encoder_out_layers=self._layers(),
        )
        return {"encoder_hidden_states": embeds, "txt_ids": text_ids}

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"]), "text_encoder_out_layers": self._layers()}
