"""The one scoring protocol: a scorer maps images to an image similarity (to the subject's reference
photos) and/or a text similarity (to the prompt with the token replaced by the class word).

Scores from different backbones are not comparable, so every scorer names its backbone, the
revision it loaded (when known) and the scale of its numbers, and every report carries them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from PIL import Image


@dataclasses.dataclass(frozen=True)
class ScorerInfo:
    """What a score means: which metric, computed by which weights, on which scale.

    ``image_metric`` / ``text_metric`` name the two scores (e.g. ``"DINOv2"`` / ``None``); a
    scorer that offers only one leaves the other ``None``. ``scale`` says what the number is,
    e.g. ``"cosine in [-1, 1]"`` or ``"sigmoid probability in [0, 1]"``."""

    name: str
    backbone: str
    revision: str | None
    scale: str
    image_metric: str | None = None
    text_metric: str | None = None
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class Scorer(Protocol):
    """A metric. Both methods return one float per image, in the order given."""

    info: ScorerInfo

    def image_similarity(self, images: Sequence[Image.Image], references: Sequence[Image.Image]) -> list[float]:
        """Per image, its mean similarity to every reference photo (higher: more like the subject)."""
        ...

    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """Per image, how well it matches its prompt; ``prompts`` (one per image) already name the
        class word, not the learned token (see :func:`class_prompt`)."""
        ...


def check_inputs(scorer: Any, references: Sequence[Image.Image], prompts: Sequence[str], what: str) -> None:
    """Ask a scorer that can judge only some inputs (it has ``check_inputs``) about a run's reference
    photos and text prompts before anything is generated; it refuses in one line naming ``what``."""
    check = getattr(scorer, "check_inputs", None)
    if callable(check):
        check(references, prompts, what)


def class_prompt(prompt: str, token: str, class_word: str) -> str:
    """The prompt a text metric reads: every occurrence of the learned token replaced by the class
    word, and the doubled class word a DreamBooth prompt then has ("a <dog> dog" -> "a dog") collapsed.
    A token that starts or ends with a letter or digit ("sks") is replaced only where it stands as a
    word there, so "tasks" keeps its letters; "<dog>" is replaced wherever it occurs."""
    if not token.strip() or not class_word.strip():
        raise ValueError(f"class_prompt needs a token and a class word, got {token!r} and {class_word!r}")
    before = r"(?<!\w)" if re.match(r"\w", token[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", token[-1]) else ""
    text = re.sub(before + re.escape(token) + after, lambda _: class_word, prompt)
    doubled = re.compile(rf"\b({re.escape(class_word)})\s+\1\b")
    text = doubled.sub(r"\1", text)
    return " ".join(text.split())
