"""Generate with concepts: images with their recipe in PNG metadata, contact sheets,
interpolation grids (rows = seeds, columns = blend weight, one seed per row)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dti.concepts.blend import Blend
from dti.concepts.concept import Concept
from dti.core.errors import DTIError, warn
from dti.core.files import check_writable, save_image, save_images
from dti.core.images import grid
from dti.core.settings import MAX_GUIDANCE, MAX_SAMPLER_STEPS
from dti.models import adapter_for
from dti.use.loading import load, unload

_BRACKETED = re.compile(r"<[^<>\s]+>")


@dataclass
class Recipe:
    """How an image was made; stored in its PNG text chunks."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    model: str
    concepts: list[str]
    negative_prompt: str | None = None

    def pnginfo(self) -> PngInfo:
        info = PngInfo()
        info.add_text("prompt", self.prompt)
        info.add_text("seed", str(self.seed))
        info.add_text("dti", json.dumps(self.__dict__))
        # A1111's "parameters" chunk, so the image's recipe shows in tools people already use
        info.add_text(
            "parameters", f"{self.prompt}\nSteps: {self.steps}, CFG scale: {self.guidance}, Seed: {self.seed}, Model: {self.model}"
        )
        return info


def check_prompt(prompt: str, tokenizer: Any, loaded: Sequence[str], negative_prompt: str | None = None) -> None:
    """Error for a ``<token>`` no loaded concept provides (in the prompt or the negative prompt); warn
    when no concept token is used."""
    vocab = tokenizer.get_vocab()
    for text, which, setting in ((prompt, "prompt", "prompt"), (negative_prompt or "", "negative prompt", "negative_prompt")):
        missing = [t for t in _BRACKETED.findall(text) if t not in vocab and t not in loaded]
        if missing:
            raise DTIError(
                f"the {which} uses {', '.join(missing)} but no --concept provides it; load its concept or fix the {{{setting}}}",
                settings=[setting],
            )
    if loaded and not any(t in prompt for t in loaded):
        warn(f"the prompt names none of the loaded concepts ({', '.join(loaded)}); write one of them in the prompt")


def warn_truncation(slots: Sequence[Any], prompt: str, which: str = "prompt") -> None:
    """One line when an encoder reads only the start of ``prompt`` (the pipeline truncates it quietly,
    or with the tokenizer's and pipeline's own log lines, which dti keeps off the user's screen)."""
    for slot in slots:
        ids = slot.tokenizer(prompt, add_special_tokens=True, truncation=False, verbose=False).input_ids
        if len(ids) > slot.max_length:
            warn(f"the {which} is {len(ids)} tokens long for {slot.name}, which reads the first {slot.max_length}; the rest is ignored")


def render(pipe: Any, prompt: str, seed: int, steps: int, guidance: float, resolution: int | None, negative_prompt: str | None = None):
    adapter = adapter_for(pipe)
    res = resolution or adapter.native_resolution()
    generator = torch.Generator("cpu").manual_seed(int(seed))
    kwargs = adapter.generation_kwargs()
    if negative_prompt is not None:
        import inspect

        if "negative_prompt" not in inspect.signature(type(pipe).__call__).parameters:
            raise DTIError(f"{type(pipe).__name__} takes no negative prompt; leave out --negative-prompt")
        kwargs["negative_prompt"] = negative_prompt
    with adapter.rendering(res, res):
        output = pipe(
            prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, generator=generator, height=res, width=res, **kwargs
        )
    return adapter.output_image(output)


def save_png(image: Image.Image, path: Path, recipe: Recipe | None = None) -> Path:
    return save_image(image, path, pnginfo=recipe.pnginfo() if recipe else None)


MAX_RESOLUTION = 8192
MAX_IMAGES = 256  # per run: all of them are kept in memory and laid out on one contact sheet
CONTACT_CELL = 512  # the contact sheet shows larger images scaled down to this


def check_settings(
    n: int | None = None,
    sample_steps: int | None = None,
    guidance: float | None = None,
    resolution: int | None = None,
    seed: int | None = None,
) -> None:
    """Refuse sampler settings no model can use, before any model loads (``None``: not given).
    The model's own multiple (its latent downsampling) is checked once it is loaded."""
    if n is not None and not 0 < n <= MAX_IMAGES:
        raise DTIError(
            f"{{n}} {n} is not valid; generate 1 to {MAX_IMAGES} images per run (use {{seed}} to continue a series)", settings=["n", "seed"]
        )
    if sample_steps is not None and not 0 < sample_steps <= MAX_SAMPLER_STEPS:
        raise DTIError(
            f"{{sample_steps}} {sample_steps} is not valid; use 1 to {MAX_SAMPLER_STEPS} sampler steps (25 is typical)",
            settings=["sample_steps"],
        )
    if guidance is not None and not (math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
        raise DTIError(
            f"{{guidance}} {guidance} is not valid; use a number from 0 to {MAX_GUIDANCE:g} (5.0 is typical, 1 turns guidance off)",
            settings=["guidance"],
        )
    if resolution is not None and (resolution <= 0 or resolution % 8 or resolution > MAX_RESOLUTION):
        raise DTIError(
            f"{{resolution}} {resolution} is not valid; use a positive multiple of 8 up to {MAX_RESOLUTION}, e.g. 512 or 1024",
            settings=["resolution"],
        )
    if seed is not None and not 0 <= seed <= 2**63 - 1 - (n or 1):
        raise DTIError(f"{{seed}} {seed} is not valid; use a whole number from 0 to 2**63 - 1", settings=["seed"])


MAX_LORA_SCALE = 10.0  # a LoRA's strength: past 10x its trained update the images are noise


def check_lora_scale(scale: float) -> None:
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
        raise DTIError(
            f"{{lora_scale}} {scale!r} must be a number in [-{MAX_LORA_SCALE:g}, {MAX_LORA_SCALE:g}]; 1: as trained, 0: off",
            settings=["lora_scale"],
        )


def check_model_resolution(adapter: Any, resolution: int | None) -> None:
    """``resolution`` is a multiple of the model's latent downsampling (16 for FLUX, 32 for SANA, ...)."""
    multiple = adapter.resolution_multiple
    if resolution is not None and resolution % multiple:
        nearest = max(1, round(resolution / multiple)) * multiple
        raise DTIError(
            f"{{resolution}} {resolution} must be a multiple of {multiple} for this model, e.g. {nearest}", settings=["resolution"]
        )


def output_paths(out: str | os.PathLike, n: int, seed: int) -> list[Path]:
    """What :func:`generate` writes in ``out``: one PNG per seed, then the contact sheet."""
    out = Path(out)
    return [out / f"seed-{seed + i:04d}.png" for i in range(n)] + [out / "contact_sheet.png"]


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise DTIError(f"{existing[0]} already exists; pass {{overwrite}} or choose another {{out}}", settings=["overwrite", "out"])


def generate(
    pipe: Any,
    prompt: str,
    concepts: Sequence[str | os.PathLike | Concept] = (),
    n: int = 4,
    seed: int = 0,
    sample_steps: int = 25,
    guidance: float = 5.0,
    out: str | os.PathLike | None = None,
    resolution: int | None = None,
    negative_prompt: str | None = None,
    rescale: str | None = None,
    model_name: str = "",
    overwrite: bool = False,
    lora_scale: float = 1.0,
) -> list[Image.Image]:
    """Images for ``prompt`` with ``concepts`` attached (then detached); with ``out``, PNGs + contact sheet,
    written together once every image is made (a failure leaves no new file, and replaces no old one).
    A run folder trained with ``--lora`` brings its LoRA, at strength ``lora_scale`` (0 = the word alone).
    ``pipe`` is a loaded pipeline or a model name (a hub id, a local folder or ``dti-mini``)."""
    check_settings(n, sample_steps, guidance, resolution, seed)
    check_lora_scale(lora_scale)
    if isinstance(pipe, (str, os.PathLike)):
        from dti.use.pipelines import load_pipeline

        pipe, model_name = load_pipeline(pipe)[0], model_name or str(pipe)
    check_model_resolution(adapter_for(pipe), resolution)
    paths = []
    if out is not None:
        out = Path(out)
        paths = output_paths(out, n, seed)
        check_outputs(paths, overwrite)
        check_writable(out)
    attached = []
    try:
        for source in concepts:
            attached.append(load(pipe, source, rescale=rescale, lora_scale=lora_scale))
        slots = adapter_for(pipe).encoders
        check_prompt(prompt, slots[0].tokenizer, [c.token for c in attached], negative_prompt)
        warn_truncation(slots, prompt)
        if negative_prompt:
            warn_truncation(slots, negative_prompt, "negative prompt")
        images = [render(pipe, prompt, seed + i, sample_steps, guidance, resolution, negative_prompt) for i in range(n)]
    finally:
        for concept in attached:
            unload(pipe, concept.token)
    if out is not None:
        names = [c.token for c in attached]
        recipes = [Recipe(prompt, seed + i, sample_steps, guidance, model_name, names, negative_prompt) for i in range(n)]
        sheet = grid([images], row_labels=[prompt], col_labels=[f"seed {seed + i}" for i in range(n)], max_cell=CONTACT_CELL)
        files = [(image, path, {"pnginfo": r.pnginfo()}) for image, path, r in zip(images, paths, recipes)]
        save_images([*files, (sheet, paths[-1], {})])
    return images


def interpolation_images(
    pipe: Any,
    mix: Blend,
    prompt: str,
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    resolution: int | None = None,
) -> list[list[Image.Image]]:
    """``images[column][row]``: one column per blend weight, one row per seed (the same seed along a row).
    ``{}`` in ``prompt`` becomes the blend's token."""
    if "{}" not in prompt:
        raise DTIError("--prompt must contain {} where the blended concept goes, e.g. 'a photo of {}'")
    columns: list[list[Image.Image]] = []
    for concept in mix.concepts:
        load(pipe, concept)
        try:
            columns.append([render(pipe, prompt.format(concept.token), s, steps, guidance, resolution) for s in seeds])
        finally:
            unload(pipe, concept.token)
    return columns


def interpolation_grid(columns: Sequence[Sequence[Image.Image]], weights: Sequence[float], seeds: Sequence[int]) -> Image.Image:
    """Rows = seeds, columns = blend weights."""
    rows = [[col[r] for col in columns] for r in range(len(seeds))]
    return grid(rows, row_labels=[f"seed {s}" for s in seeds], col_labels=[f"{w:.2f}" for w in weights])
