"""FLUX.2 dev (``Flux2Pipeline``): one Mistral-Small-3.1 encoder (``Mistral3ForConditionalGeneration``, a 24B
vision-language model whose language model is 5120 wide) whose hidden layers ``text_encoder_out_layers`` (default
10, 20 and 30) are stacked side by side into each token's conditioning (3 x 5120), FLUX.2's packed-latent MMDiT
with a guidance embedding (dev is guidance-distilled) and FLUX.2's VAE, trained by flow matching
(:mod:`dti.models.flux2`, shared with klein).

Prompts are encoded by the pipeline's own ``encode_prompt``, as at generation, so nothing differs from the
pipeline's inference encoding: Mistral's chat template with the pipeline's system message
(``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]{prompt}[/INST]``, the prompt right after ``[INST]``), padded to
``max_sequence_length`` tokens (template included) and read under the padding mask. Only the language model's
input embedding learns the word: the pipeline never gives the encoder an image, so its vision tower never runs.
The transformer gets every position, padding included and with no mask. Attention in the encoder is causal, so
the template's system prompt and the words before the placeholder never see it; only the placeholder and the
words after it carry the concept.

The tokenizer is a ``PixtralProcessor`` (``AutoProcessor``) around Mistral's byte-level BPE (Tekken): dti attaches
words to the processor's tokenizer, which the processor calls for the text. The space before a word is its first
byte (``"Ġdog"``), so the placeholder takes the space before it (``byte_level``). The pipeline removes ``[IMG]`` from
every prompt, so a word containing it would never reach the tokenizer. transformers' ``PixtralProcessor`` imports
torchvision: without it the pipeline does not load.

Training guidance: the transformer's guidance input is the pipeline's default ``guidance_scale`` (4.0), as FLUX.1
dev is trained at its distilled guidance value (3.5); no training value is published for FLUX.2 dev.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import ATTENTION_LORA_TARGETS, CropInfo, EncoderRole, EncoderSlot, FamilyDefaults, register
from dti.models.flux2 import Flux2Adapter

#: The one encoder: Mistral-Small-3.1's language model (kind ``mistral3``: ComfyUI's ``mistral3_24b``).
MISTRAL3_ROLE = EncoderRole("text_encoder", "tokenizer", "mistral3", byte_level=True)


def text_tokenizer(tokenizer: Any) -> Any:
    """The tokenizer itself: a processor's (``PixtralProcessor.tokenizer``), or the component when it is one."""
    inner = getattr(tokenizer, "tokenizer", None)
    return inner if inner is not None and hasattr(inner, "get_vocab") else tokenizer


@register("Flux2Pipeline")
class Flux2DevAdapter(Flux2Adapter):
    family = "flux2_dev"
    lora_targets: ClassVar[tuple[str, ...]] = ATTENTION_LORA_TARGETS
    roles: ClassVar[tuple[EncoderRole, ...]] = (MISTRAL3_ROLE,)
    # No paper setting: klein's (500 steps as SANA's and Lumina 2's; batch 4 as 2 x 2 accumulation, one micro-batch
    # of 2 for a 32B transformer; 1024 px, the pipeline's default size; kappa 5e-5, the paper's value for its LLM
    # encoder, Mistral being one too).
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=2, grad_accum=2, resolution=1024, kappa=5e-5)
    #: the pipeline's defaults: 512 Mistral tokens counting the chat template and system prompt; the hidden layers it
    #: stacks; the guidance value the transformer is trained at (the pipeline's default ``guidance_scale``)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 512, "text_encoder_out_layers": [10, 20, 30], "guidance": 4.0}

    @property
    def encoders(self) -> list[EncoderSlot]:
        """The encoder with the processor's tokenizer: the words go where the processor tokenizes the text."""
        return [EncoderSlot(s.role, text_tokenizer(s.tokenizer), s.text_encoder, s.max_length) for s in super().encoders]

    def templated(self, prompt: str) -> str:
        """The text the pipeline tokenizes for ``prompt``: its system message and the prompt as one user turn."""
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        messages = format_input(prompts=[prompt], system_message=self.pipe.system_message)
        text = self.pipe.tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
        return text[0] if isinstance(text, list) else text

    def max_length(self, role: EncoderRole) -> int:
        """The prompt's share of ``max_sequence_length``: what the chat template and the system message leave."""
        tok = text_tokenizer(getattr(self.pipe, role.tokenizer))
        template = len(tok(self.templated("a"), add_special_tokens=False).input_ids) - len(tok("a", add_special_tokens=False).input_ids)
        return max(1, int(self.options["max_sequence_length"]) - template)

    @classmethod
    def token_problem(cls, token: str) -> str | None:
        if "[IMG]" in token:
            return "FLUX.2's pipeline deletes [IMG] from every prompt, so the word would never reach the tokenizer"
        return None

    @torch.no_grad()
    def contextual_init(self, slot: EncoderSlot, ids: list[int]) -> torch.Tensor:
        """CrossInit through the language model alone (never the vision tower): the final hidden states at the
        initializer's positions, after ``<s>`` as every prompt of the pipeline begins."""
        encoder = slot.text_encoder
        body = encoder.model.language_model
        bos = slot.tokenizer.bos_token_id
        input_ids = torch.tensor([[bos, *ids]], device=encoder.device)
        return body(input_ids=input_ids, use_cache=False).last_hidden_state[0, 1:].float()

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        embeds, text_ids = self.pipe.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            max_sequence_length=int(self.options["max_sequence_length"]),
            text_encoder_out_layers=self._layers(),
        )
        return {"encoder_hidden_states": embeds, "txt_ids": text_ids}

    def guidance(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if not self.pipe.transformer.config.guidance_embeds:
            return None
        return torch.full((batch,), float(self.options["guidance"]), device=device, dtype=torch.float32)

    def unpack(self, out: torch.Tensor, ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipe._unpack_latents_with_ids(out, ids)  # Flux2Pipeline's reads the size from the ids

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"]), "text_encoder_out_layers": self._layers()}
