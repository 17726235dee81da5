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

from dti.evaluation.protocol import ScorerInfo


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

    def image_similarity(self, images: Sequence[Image.Image], references: Sequence[Image.Image]) -> list[float]:
        return self.judge.subject_similarity(list(images), list(references))

    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        return self.judge.text_fidelity(list(images), list(prompts))
