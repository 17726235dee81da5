"""HiDream-I1 (Full / Dev / Fast): four text encoders and a sparse (mixture-of-experts) DiT trained by flow matching.

- CLIP-L and CLIP-G (``text_encoder``, ``text_encoder_2``, ``CLIPTextModelWithProjection``): only their pooled
  projections, concatenated, reach the transformer (with the time embedding). The pipeline pads their prompts
  to ``min(max_sequence_length, 218)`` tokens (HiDream's CLIP encoders are long-context ones).
- T5-XXL (``text_encoder_3``): its last hidden states, a sequence every block reads.
- Llama-3.1-8B-Instruct (``text_encoder_4``, ``LlamaForCausalLM``): every layer's hidden states
  (``hidden_states[1:]``, stacked); the transformer's ``config.llama_layers`` picks one layer per block.

The word goes into all four, as OneTrainer trains HiDream embeddings: each encoder has its own rows, norm and
prior. Prompts are encoded by the pipeline's own ``encode_prompt`` (and through it its ``_get_clip_prompt_embeds``,
``_get_t5_prompt_embeds`` and ``_get_llama3_prompt_embeds``), with the same ``max_sequence_length`` generation
passes, so training conditions the transformer exactly as generation does: nothing of the inference encoding is
changed or dropped. Two things follow from the pipeline and are not papered over:

- Llama is causal: the hidden state of a token sees only the tokens before it. Words before the placeholder
  are encoded as if the placeholder were not there; only the placeholder's own position and what follows it
  carry the word (CLIP's text transformer is causal too; T5 is not).
- The pipeline pads Llama with its end token (``pad_token = eos_token``) and hands every padded position's
  states to the transformer, which takes no text mask; those positions see the whole prompt, placeholder
  included, and are part of what the word learns to steer, at training as at generation.

Time: the transformer gets the scheduler's timestep (sigma x 1000) and predicts ``x0 - noise``; the pipeline
negates its output before the Euler step, and :meth:`HiDreamAdapter.predict` does the same, so the loss's
target stays ``noise - x0``.

Size: ``HiDreamImagePipeline.__call__`` rescales any requested size to the area
``(default_sample_size x vae_scale_factor)^2`` (1024^2 for the released models). dti renders at the resolution
asked for (validation samples at the training resolution), by setting ``default_sample_size`` for the call
(:meth:`HiDreamAdapter.rendering`), as a diffusers user would; the native size is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch

from dti.models.base import CropInfo, EncoderRole, EncoderSlot, FamilyDefaults, register
from dti.models.ddpm import LatentVAEMixin
from dti.models.flow import FlowMatchingAdapter

#: ``_get_clip_prompt_embeds`` pads and cuts CLIP prompts at ``min(max_sequence_length, CLIP_LIMIT)`` tokens
CLIP_LIMIT = 218


@register("HiDreamImagePipeline")
class HiDreamAdapter(LatentVAEMixin, FlowMatchingAdapter):
    family = "hidream"
    lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out")
    roles: ClassVar[tuple[EncoderRole, ...]] = (
        EncoderRole("text_encoder", "tokenizer", "clip_l", pooling="eos"),
        EncoderRole("text_encoder_2", "tokenizer_2", "clip_g", pooling="eos"),
        EncoderRole("text_encoder_3", "tokenizer_3", "t5", sentencepiece=True),
        EncoderRole("text_encoder_4", "tokenizer_4", "llama", byte_level=True),
    )
    denoiser_name = "transformer"
    # Logit-normal over the (statically shifted) sigmas, as diffusers' SD3 example: HiDream has no diffusers
    # training example, and SD3 is the closest multi-encoder flow-matching model that has one.
    weighting_scheme = "logit_normal"
    # No paper setting. SD3's schedule (SANA's 500 steps, batch 4), the closest multi-encoder flow-matching family;
    # kappa 1e-4, SDXL's, for the CLIP encoders (the other three take the same prior strength, as in SD3 and FLUX);
    # 768 px, not the native 1024: at 1024 the 17B-parameter MoE transformer has 1.78x the image tokens, a step at least as much dearer.
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults(steps=500, batch_size=4, resolution=768, kappa=1e-4)
    #: max_sequence_length: the pipeline's default (128), for every encoder (CLIP at most 218)
    default_options: ClassVar[dict[str, Any]] = {"max_sequence_length": 128}

    @property
    def resolution_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size)

    def native_resolution(self) -> int:
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def max_length(self, role: EncoderRole) -> int:
        """What each ``_get_*_prompt_embeds`` keeps: CLIP ``min(max_sequence_length, 218)``, T5 and Llama
        ``min(max_sequence_length, tokenizer.model_max_length)``."""
        limit = int(self.options["max_sequence_length"])
        if role.kind in ("clip_l", "clip_g"):
            return min(limit, CLIP_LIMIT)
        return min(limit, int(getattr(self.pipe, role.tokenizer).model_max_length))

    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        t5, _, llama, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=int(self.options["max_sequence_length"]),
        )
        return {"encoder_hidden_states_t5": t5, "encoder_hidden_states_llama3": llama, "pooled_embeds": pooled}

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        # as the pipeline's __call__: timesteps as the scheduler gives them, the output negated
        with self._routed_experts_differentiable():
            return -self.pipe.transformer(hidden_states=noisy, timesteps=timesteps, return_dict=False, **cond)[0]

    @contextlib.contextmanager
    def _routed_experts_differentiable(self) -> Iterator[None]:
        """diffusers runs HiDream's routed experts in eval mode through ``moe_infer``, which is decorated
        ``@torch.no_grad()``: a frozen (eval) transformer would pass the word's gradient through the shared
        expert and attention only, never through the routed experts. While a gradient is being built, the MoE
        layers take their training-mode path: the same top-k weighted sum of the same experts (its auxiliary
        loss is computed but not applied, as diffusers leaves it), with gradients. Only those layers' flag
        changes; no dropout or other training behaviour is switched on, and the weights still get no gradient."""
        if not torch.is_grad_enabled():
            yield
            return
        moe = [m for m in self.pipe.transformer.modules() if type(m).__name__ in ("MOEFeedForwardSwiGLU", "MoEGate")]
        before = [m.training for m in moe]
        for m in moe:
            m.training = True
        try:
            yield
        finally:
            for m, was in zip(moe, before):
                m.training = was

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_sequence_length": int(self.options["max_sequence_length"])}

    @contextlib.contextmanager
    def rendering(self, height: int, width: int) -> Iterator[None]:
        """The pipeline renders at the area ``(default_sample_size x vae_scale_factor)^2`` whatever size it is
        asked for: for the call, make that area the requested square's."""
        pipe, factor = self.pipe, int(self.pipe.vae_scale_factor)
        before = pipe.default_sample_size
        if height == width and height % factor == 0:
            pipe.default_sample_size = height // factor
        try:
            yield
        finally:
            pipe.default_sample_size = before

    @torch.no_grad()
    def contextual_init(self, slot: EncoderSlot, ids: list[int]) -> torch.Tensor:
        """As every family's, for Llama from its decoder (``LlamaForCausalLM`` returns logits, its decoder the
        last hidden state, after the final norm)."""
        if slot.kind == "llama":
            slot = dataclasses.replace(slot, text_encoder=slot.text_encoder.get_decoder())
        return super().contextual_init(slot, ids)
