"""The adapter contract: everything a pipeline family knows, behind one abstract class.

A family is one module in :mod:`dti.models` that defines an :class:`Adapter` subclass and
registers it for its pipeline class with :func:`register`. The trainer, the attach path, the
file formats and generation ask the adapter and never name a family themselves.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dti.core.rows import TrainableRows
from dti.text.attach import attach

if TYPE_CHECKING:
    from dti.core.draws import SampleDraws

#: pipeline class name -> adapter class, filled by :func:`register` as family modules import.
ADAPTERS: dict[str, type[Adapter]] = {}


def register(pipeline_class: str):
    """Class decorator: ``@register("SanaPipeline")`` makes the adapter the one for that pipeline."""

    def wrap(cls: type[Adapter]) -> type[Adapter]:
        if pipeline_class in ADAPTERS and ADAPTERS[pipeline_class] is not cls:
            raise RuntimeError(f"two adapters registered for {pipeline_class}: {ADAPTERS[pipeline_class].__name__} and {cls.__name__}")
        cls.pipeline_class = pipeline_class
        ADAPTERS[pipeline_class] = cls
        return cls

    return wrap


class AdapterHook:
    """Something a run hooks into an adapter (:attr:`Adapter.hooks`); every method may be left as is."""

    def before_encode(self, prompts: Sequence[str]) -> None:
        """``prompts`` are about to be encoded (:meth:`Adapter.encode`)."""

    def after_encode(self) -> None:
        """The encoding is done."""

    def release(self) -> None:
        """Undo everything: the pipeline as the hook found it."""


@dataclass(frozen=True)
class EncoderRole:
    """A text encoder a family's pipeline has, before anything is loaded.

    ``component`` / ``tokenizer`` are the pipeline's component names; ``kind`` says what the
    encoder is (``clip_l``, ``clip_g``, ``openclip_h``, ``t5``, ``gemma2``, ``llama``); ``pooling`` is
    ``eos`` for CLIP encoders whose pooled output the pipeline uses, else ``none``;
    ``optional`` encoders may be missing from a saved pipeline (SD3 without T5).
    """

    component: str
    tokenizer: str
    kind: str
    pooling: str = "none"
    optional: bool = False
    #: SentencePiece tokenizers (T5, Gemma): the placeholder absorbs the space before it, so
    #: "a <tok>" tokenizes like "a dog" (one piece where the word was, no lone "▁").
    sentencepiece: bool = False
    #: Byte-level BPE tokenizers (Qwen, Llama 3): the space before a word is the word's first byte ("Ġdog"), so
    #: the placeholder takes the one space before it out of the text: "a <tok>" tokenizes like "a dog" and a
    #: prompt-initial "<tok>" after a chat template's newline like "dog" there (the newline stays its own piece).
    byte_level: bool = False


@dataclass
class EncoderSlot:
    """A loaded text encoder that receives the token: its role plus the live modules."""

    role: EncoderRole
    tokenizer: Any
    text_encoder: torch.nn.Module
    max_length: int

    @property
    def name(self) -> str:
        return self.role.component

    @property
    def kind(self) -> str:
        return self.role.kind

    def attach(self, token: str, rows: TrainableRows, pooling: str = "eos") -> None:
        """The concept's rows under ``token`` in this encoder: the one attach path of training and
        loading, with the encoder's own pooling and tokenizer rules."""
        attach(
            self.tokenizer,
            self.text_encoder,
            token,
            rows,
            pooling=pooling if self.role.pooling == "eos" else "none",
            sentencepiece=self.role.sentencepiece,
            byte_level=self.role.byte_level,
        )


@dataclass(frozen=True)
class CropInfo:
    """Facts about one training crop that some families condition on (SDXL's time ids)."""

    original_size: tuple[int, int]  # (height, width) of the photo before resizing
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the resized photo
    target_size: tuple[int, int]  # (height, width) of the crop


@dataclass(frozen=True)
class FamilyDefaults:
    """A family's default training settings (METHOD.md section 5; documented choices where the
    paper has none). ``resolution`` None means the model's native one; ``lr`` None the method's."""

    steps: int = 400
    batch_size: int = 4
    grad_accum: int = 1
    resolution: int | None = None
    kappa: float = 1e-4
    lr: float | None = None

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value


#: A text encoder's attention projections by encoder kind, for ``--lora-text-encoder`` (CLIP and
#: OpenCLIP: q/k/v/out_proj; T5 and UMT5: q/k/v/o; the decoder-only LLMs: q/k/v/o_proj).
TEXT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "clip_l": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "clip_g": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "openclip_h": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "t5": ("q", "k", "v", "o"),
    "umt5": ("q", "k", "v", "o"),
}
LLM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: The denoiser layers most families' LoRA trains: diffusers' attention projections (DreamBooth-LoRA's choice).
ATTENTION_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_text_targets(kind: str) -> tuple[str, ...]:
    """The layers of a text encoder of ``kind`` that ``--lora-text-encoder`` trains."""
    return TEXT_LORA_TARGETS.get(kind, LLM_LORA_TARGETS)


class Adapter(abc.ABC):
    """A loaded pipeline plus the family-specific pieces of training and generation."""

    family: ClassVar[str]
    pipeline_class: ClassVar[str]
    #: Every text encoder the family's pipeline may have, in pipeline order.
    roles: ClassVar[tuple[EncoderRole, ...]]
    #: The denoiser component (gradient checkpointing, compile): ``unet`` or ``transformer``.
    denoiser_name: ClassVar[str] = "unet"
    defaults: ClassVar[FamilyDefaults] = FamilyDefaults()
    #: Keyword arguments ``from_pretrained`` needs for this family.
    load_kwargs: ClassVar[dict[str, Any]] = {}
    #: The denoiser's layers a LoRA (``--lora``) trains, by name (a layer whose path ends in one of
    #: them); empty: the family takes no LoRA and ``--lora`` is refused.
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: Family choices training and generation must share (e.g. SANA's prompt instruction),
    #: with their defaults; a concept records them and loading it restores them.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._device = pipe.device  # pipe.device walks every module: too slow to ask per step
        # kept on the pipeline, so every adapter of the same pipeline sees the same choices
        self.options: dict[str, Any] = pipe.__dict__.setdefault("_dti_options", dict(self.default_options))
        #: What a run has hooked into this adapter (name -> hook): frozen encoders served from kept
        #: outputs, a VAE parked in host memory. Each is told which prompts :meth:`encode` encodes and
        #: is released when the run ends (:meth:`release_hooks`).
        self.hooks: dict[str, AdapterHook] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_pipeline(cls, model: str, dtype: torch.dtype, **options: Any) -> Any:
        """The pipeline from a folder or the hub (``options``: ``from_pretrained``'s, e.g. ``local_files_only``)."""
        import diffusers

        return getattr(diffusers, cls.pipeline_class).from_pretrained(model, dtype=dtype, **cls.load_kwargs, **options)

    @classmethod
    def tokenizer_folders(cls) -> dict[str, str]:
        """Encoder component -> tokenizer subfolder, for checking words before weights load."""
        return {role.component: role.tokenizer for role in cls.roles}

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    @property
    def encoders(self) -> list[EncoderSlot]:
        """The text encoders present in this pipeline (optional ones may be missing)."""
        slots = []
        for role in self.roles:
            encoder, tokenizer = getattr(self.pipe, role.component, None), getattr(self.pipe, role.tokenizer, None)
            if encoder is not None and tokenizer is not None:
                slots.append(EncoderSlot(role, tokenizer, encoder, self.max_length(role)))
        return slots

    def max_length(self, role: EncoderRole) -> int:
        """How many tokens the pipeline's prompt encoding keeps for this encoder."""
        return int(getattr(self.pipe, role.tokenizer).model_max_length)

    def freeze(self) -> None:
        """No pipeline weight builds a gradient."""
        for module in self.pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
                module.eval()

    @abc.abstractmethod
    def native_resolution(self) -> int: ...

    @property
    @abc.abstractmethod
    def resolution_multiple(self) -> int:
        """Crops and resolutions must be multiples of this (the latent downsampling)."""

    @abc.abstractmethod
    def encode_pixels(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pixels in [-1, 1] -> (mean, std) of the latent distribution in fp32; std None when
        the autoencoder is deterministic (DC-AE)."""

    @abc.abstractmethod
    def condition(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        """Denoiser keyword arguments from the pipeline's own prompt encoding, with gradients."""

    def encode(self, prompts: Sequence[str], crops: Sequence[CropInfo]) -> dict[str, Any]:
        """:meth:`condition`, with every hook told which prompts it encodes: what a loss calls."""
        hooks = list(self.hooks.values())
        for hook in hooks:
            hook.before_encode(prompts)
        try:
            return self.condition(prompts, crops)
        finally:
            for hook in hooks:
                hook.after_encode()

    def release_hooks(self) -> None:
        """Every hook off, the pipeline as the run found it."""
        for name in list(self.hooks):
            self.hooks.pop(name).release()

    @abc.abstractmethod
    def loss(
        self, latents: torch.Tensor, prompts: Sequence[str], crops: Sequence[CropInfo], draws: SampleDraws, reduction: str = "mean"
    ) -> torch.Tensor:
        """The family's own training loss for a batch of (unscaled) latents and prompts; every random
        draw comes from ``draws`` (one generator per sample, see :mod:`dti.core.draws`). ``reduction="none"``
        gives one loss per sample (the mean over its elements), for K concepts in one batch (:mod:`dti.training.multi`)."""

    def rendering(self, height: int, width: int) -> contextlib.AbstractContextManager[None]:
        """What one pipeline call at ``height`` x ``width`` needs around it (HiDream: the pipeline's own
        size rule, see :mod:`dti.models.hidream`); nothing by default."""
        return contextlib.nullcontext()

    def generation_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments the pipeline's ``__call__`` needs to condition as training did
        (and to return what :meth:`output_image` reads)."""
        return {}

    def output_image(self, output: Any) -> Any:
        """The PIL image of one pipeline call for one prompt (``dti.use.generate.render`` asks one at a
        time): ``output.images[0]`` for image pipelines; a video family takes its single frame."""
        return output.images[0]

    @classmethod
    def token_problem(cls, token: str) -> str | None:
        """Why the pipeline's own prompt handling would never show ``token`` to the tokenizer (read after
        the token), or None. Asked before any weight loads."""
        return None

    @torch.no_grad()
    def contextual_init(self, slot: EncoderSlot, ids: list[int]) -> torch.Tensor:
        """CrossInit: the encoder's last hidden state at the initializer's positions, encoded with
        the special tokens the tokenizer itself adds (CLIP: BOS .. EOS; T5: .. EOS; Gemma: BOS ..)."""
        tok = slot.tokenizer
        # the special tokens around a one-word text, with the word's ids swapped for the initializer's
        framed, word = tok("a").input_ids, tok("a", add_special_tokens=False).input_ids
        start = next(i for i in range(len(framed)) if framed[i : i + len(word)] == word)
        input_ids = torch.tensor([framed[:start] + list(ids) + framed[start + len(word) :]], device=slot.text_encoder.device)
        hidden = slot.text_encoder(input_ids).last_hidden_state[0, start : start + len(ids)]
        return hidden.float()

    def record_options(self) -> dict[str, Any]:
        """Family choices that training and generation must share, stored in the concept."""
        return dict(self.options)

    def apply_options(self, options: dict[str, Any]) -> None:
        """Take over the choices a concept was trained with (see :meth:`record_options`)."""
        self.options.update({k: v for k, v in options.items() if k in self.options})
