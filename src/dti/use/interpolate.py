"""``dti.interpolate``: blend two learned words along the way from one to the other, and show it.

Writes the blended concepts (``blend-NN-wW.safetensors``), ``interpolation.json`` (the norm and the
angle from A of every blend, per encoder and vector) and, given a model, ``grid.png`` (rows = seeds,
columns = blend weight, the same seed along a row). Every output is checked before anything is
written or loaded; the blends are written only once every one of them is usable.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dti.concepts.blend import Blend, blend
from dti.concepts.concept import Concept, value_problems
from dti.concepts.formats import read
from dti.core import sphere
from dti.core.errors import DTIError, Line, warn
from dti.core.files import atomic_write_all, check_writable, save_image
from dti.core.settings import check_seeds
from dti.models import adapter_for, load_tokenizers
from dti.text.templates import check_template
from dti.text.words import check_placeholder, check_token_text
from dti.use.generate import check_outputs, check_settings, interpolation_grid, interpolation_images
from dti.use.loading import match_encoders
from dti.use.pipelines import pipeline_of

MAX_BLENDS = 1000  # each blend is a file (and a grid column)


@dataclass
class Interpolation:
    """What :func:`interpolate` made: the blends, the files written, and what to tell the user."""

    blend: Blend
    files: list[Path]
    summary: dict[str, Any]
    grid: Path | None = None
    notes: list[str] = field(default_factory=list)


def interpolate(
    a: str | os.PathLike | Concept,
    b: str | os.PathLike | Concept,
    out: str | os.PathLike,
    *,
    blends: int = 7,
    mode: str = "slerp",
    token: str = "<blend>",
    model: Any | None = None,
    prompt: str = "a photo of {}",
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    sample_steps: int = 25,
    guidance: float = 5.0,
    resolution: int | None = None,
    grid: bool = True,
    precision: str = "auto",
    device: str = "auto",
    overwrite: bool = False,
) -> Interpolation:
    """Blend concept ``a`` (weight 0) into ``b`` (weight 1) in ``blends`` steps, per encoder and per
    vector: ``slerp`` of the directions at the fixed norm (METHOD.md section 7), or ``lerp`` for
    contrast. ``model`` (a loaded pipeline or a name; default: the concept's base model) renders the
    grid; without one, and with ``grid=False``, only the blends are written."""
    check_token_text(token)
    if blends < 2:
        raise DTIError("{blends} must be at least 2 (the two ends)", settings=["blends"])
    if blends > MAX_BLENDS:
        raise DTIError(f"{{blends}} {blends} writes that many files; use at most {MAX_BLENDS} blend weights", settings=["blends"])
    if grid:
        check_template(prompt, "prompt")
        check_settings(sample_steps=sample_steps, guidance=guidance, resolution=resolution)
        seeds = check_seeds(list(seeds))
    first = a if isinstance(a, Concept) else read(a)
    second = b if isinstance(b, Concept) else read(b)
    weights = [i / (blends - 1) for i in range(blends)]
    mix = blend(first, second, weights, mode, token)
    folder = Path(out)
    files = [folder / f"blend-{i:02d}-w{w:.3f}.safetensors" for i, w in enumerate(weights)]
    grid_path = folder / "grid.png"
    check_outputs([*files, folder / "interpolation.json", grid_path], overwrite)
    check_writable(folder)
    pipe = None
    if grid and (model is not None or first.meta.get("base_model")):
        pipe, _ = pipeline_of(model, first.meta.get("base_model"), precision, device)
        match_encoders(mix.concepts[0], pipe)  # a concept of another family is refused before anything is written
    if token is not None:
        check_blend_token(token, pipe, model if isinstance(model, (str, os.PathLike)) else first.meta.get("base_model"))
    summary = _summary(first, second, mix, mode, weights)
    try:
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"  # strict JSON: never a bare NaN
    except ValueError:
        raise DTIError("the blends have non-finite norms or angles; check both concepts with `dti inspect`") from None
    for weight, concept in zip(weights, mix.concepts):  # lerp of opposite vectors: an all-zero row no reader accepts
        bad = [p for name, enc in concept.encoders.items() for p in value_problems(name, enc.vectors)]
        if bad:
            raise DTIError(
                f"the {mode} blend at weight {weight:g}: {bad[0]} (the two vectors are opposite); use {{mode}} slerp", settings=["mode"]
            )
    jobs = [(path, concept.writer()) for concept, path in zip(mix.concepts, files)]
    jobs.append((folder / "interpolation.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8")))
    atomic_write_all(jobs)  # the blends and their summary appear together, or none of them
    written = None
    if pipe is not None:
        columns = interpolation_images(pipe, mix, prompt, seeds, sample_steps, guidance, resolution)
        written = save_image(interpolation_grid(columns, weights, seeds), grid_path)
    return Interpolation(mix, files, summary, written, list(mix.notes))


def check_blend_token(token: str, pipe: Any | None, model: str | os.PathLike | None) -> None:
    """Refuse a blend name that is a word of the model's vocabulary (loading the blend would change that
    word in every prompt): checked against the loaded pipeline, else the model's tokenizers where they
    load without the weights, else a warning for a plain word."""
    tokenizers: dict[str, Any] = {}
    if pipe is not None:
        tokenizers = {slot.name: slot.tokenizer for slot in adapter_for(pipe).encoders}
    elif model:
        with contextlib.suppress(DTIError):  # a hub id offline, a moved folder: the concepts still blend
            tokenizers = load_tokenizers(model)[1]
    for name, tokenizer in tokenizers.items():
        check_placeholder(tokenizer, token, f"the {name} tokenizer")
    if not tokenizers and token.isalpha():
        line = f"{{token}} {token!r} looks like an ordinary word; loading the blends would change what it means in every prompt: "
        warn(Line(line + f"use a made-up name such as '<{token}-blend>'", settings=["token"]))


def _summary(a: Concept, b: Concept, mix: Blend, mode: str, weights: list[float]) -> dict[str, Any]:
    summary: dict[str, Any] = {"a": a.token, "b": b.token, "mode": mode, "weights": weights, "notes": mix.notes, "encoders": {}}
    for name in a.encoders:
        summary["encoders"][name] = {
            "norms": [[round(float(n), 6) for n in c.encoders[name].norms] for c in mix.concepts],
            "angle_from_a_deg": [
                [round(math.degrees(float(x)), 3) for x in sphere.angle(c.encoders[name].vectors, a.encoders[name].vectors)]
                for c in mix.concepts
            ],
        }
    return summary
