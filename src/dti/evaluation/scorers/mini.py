"""dti-mini's judge as a :class:`~dti.evaluation.protocol.Scorer`: exact text fidelity and instance similarity.

The toy world's prompts have a grammar, so text fidelity is exact: the fraction of the prompt's
attributes (objects, shapes, colours, positions, background) the judge sees in the image. Image
similarity is the cosine between the judge's instance embedding of the image's best-matching
object and the mean embedding of the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from dti.core.errors import DTIError
from dti.evaluation.protocol import ScorerInfo
from dti.evaluation.scorers.registry import register

#: What the judge sees: the toy world's renders, this many pixels square.
WORLD_SIZE = 32
#: The fix when the judge is asked about anything else.
OTHER_METRICS = "score photos of the real world with dinov2, siglip, clip or dino"


@register("mini")
class MiniJudgeScorer:
    """The mini world's judge behind the scoring protocol."""

    def __init__(self, path: str | Path | None = None) -> None:
        from dti.mini.judge import WEIGHTS, Judge

        self.judge = Judge.load(path)
        step = self.judge.card.get("step") if isinstance(self.judge.card, dict) else None
        self.info = ScorerInfo(
            name="mini",
            backbone=f"dti-mini judge ({Path(path or WEIGHTS).name})",
            revision=None if step is None else f"step {step}",
            scale="fraction of prompt attributes in [0, 1] / cosine in [-1, 1]",
            image_metric="judge instance similarity",
            text_metric="judge text fidelity",
            notes="exact: the toy world's prompts have a grammar the judge checks attribute by attribute",
        )

    def check_inputs(self, references: Sequence[Image.Image], prompts: Sequence[str], what: str) -> None:
        """The judge reads only dti-mini's world: 32x32 renders, and prompts in its grammar."""
        from dti.mini.text import parse_caption

        for ref in references:
            if ref.size != (WORLD_SIZE, WORLD_SIZE):
                raise DTIError(
                    f"the mini metric judges dti-mini's toy world (its {WORLD_SIZE}x{WORLD_SIZE} renders), but {what}'s reference "
                    f"photos are {ref.size[0]}x{ref.size[1]}; {OTHER_METRICS}"
                )
        for prompt in prompts:
            try:
                parse_caption(prompt)
            except ValueError:
                raise DTIError(
                    f"the mini metric reads prompts in dti-mini's grammar, and {prompt!r} ({what}) is not one; pass --prompts with "
                    f"the world's prompts, or {OTHER_METRICS}"
                ) from None

    def image_similarity(self, images: Sequence[Image.Image], references: Sequence[Image.Image]) -> list[float]:
        return self.judge.subject_similarity(list(images), list(references))

    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        return self.judge.text_fidelity(list(images), list(prompts))
