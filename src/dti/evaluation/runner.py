"""``dti evaluate``'s work: generate every run x prompt x seed (cache first), score every image with
every metric, write the report.

Runs are run folders (their config.json names photos, token, initializer, method), concept files
(with ``class_word`` and ``photos`` given) or a sweep folder (``sweep.json``; a ``ti-rescaled`` run
loads TI's concept rescaled to the vocabulary's mean norm). One pipeline is loaded, only when an
image is missing from the cache, and each concept is attached for its own images and detached again.
Sampler defaults are the pipeline's own (its ``__call__`` defaults: SDXL 50 steps at guidance 5.0,
SANA 20 at 4.5, ...), as the paper's protocol uses "each model's default sampler, steps and guidance".
Everything that can be refused is refused before the model loads.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dti.core.errors import DTIError, warn
from dti.core.settings import check_seeds, parse_seeds
from dti.evaluation.cache import GenerationCache, Sampler, cache_key, file_sha256, model_identity, recipe
from dti.evaluation.prompts import SUBJECT_FORMS, check_kind, default_kind, fill, prompt_set, subject_text
from dti.evaluation.protocol import Scorer, check_inputs, class_prompt
from dti.evaluation.report import REPORT_FILES, metric_key, write_report

DEFAULT_SEEDS = (0, 1, 2, 3)
SCORE_BATCH = 16
FALLBACK_STEPS, FALLBACK_GUIDANCE = 25, 5.0  # dti generate's, for a pipeline whose __call__ names none


@dataclass
class EvalRun:
    """One learned word to evaluate: what it is, where its concept and photos are."""

    method: str
    subject: str
    kind: str
    class_word: str
    token: str
    photos: Path
    concept: Path
    rescale: str | None = None
    folder: Path | None = None


@dataclass
class EvalResult:
    """What an evaluation did: its records, its summary, how many images it generated or found cached."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    generated: int
    cached: int
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- input


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DTIError(f"cannot read {path} ({type(exc).__name__}); pass a run folder written by dti train") from None
    if not isinstance(data, dict):
        raise DTIError(f"{path} is not a JSON object; pass a run folder written by dti train")
    return data


def _subject_name(photos: Path) -> str:
    """A subject is named by its photo folder (dreambooth/dog -> dog), so every method's run on the
    same photos is the same subject, paired image for image in the report."""
    return photos.resolve().name or str(photos)


def _from_run_folder(folder: Path, class_word: str | None, kind: str | None, photos: str | None) -> EvalRun:
    from dti.concepts.concept import CONCEPT_FILENAME

    config = _read_config(folder)
    concept = folder / CONCEPT_FILENAME
    if not concept.is_file():
        raise DTIError(f"run folder {folder} has no {CONCEPT_FILENAME} (it has not finished); finish it with dti train --resume {folder}")
    word = class_word or config.get("init")
    if not isinstance(word, str) or not word.strip():
        raise DTIError(f"run folder {folder} does not name its initializer; pass --class WORD")
    where = photos or config.get("photos")
    if not isinstance(where, str) or not where:
        raise DTIError(f"run folder {folder} does not name its photos; pass --photos DIR")
    token = config.get("token")
    if not isinstance(token, str) or not token:
        raise DTIError(f"{folder / 'config.json'} names no token; pass the run's concept file with --class and --photos instead")
    return EvalRun(
        method=str(config.get("method") or "dti"),
        subject=_subject_name(Path(where)),
        kind=check_kind(kind or default_kind(word)),
        class_word=word.strip(),
        token=token,
        photos=Path(where),
        concept=concept,
        folder=folder,
    )


def _from_concept(path: Path, class_word: str | None, kind: str | None, photos: str | None) -> EvalRun:
    from dti.concepts.formats import read

    if not class_word or not photos:
        raise DTIError(f"{path} is a concept file, which names neither the subject's class nor its photos; pass --class and --photos")
    concept = read(path)
    return EvalRun(
        method=concept.method if concept.method != "unknown" else "concept",
        subject=_subject_name(Path(photos)),
        kind=check_kind(kind or default_kind(class_word)),
        class_word=class_word.strip(),
        token=concept.token,
        photos=Path(photos),
        concept=path,
    )


def _from_sweep(folder: Path, kind: str | None) -> list[EvalRun]:
    """The sweep's finished runs (a derived run, e.g. ti-rescaled, is its source's concept with its rescale)."""
    from dti.training.sweep import read_sweep

    index = read_sweep(folder)
    runs = [
        EvalRun(
            method=e.method,
            subject=e.subject,
            kind=check_kind(kind or e.kind),
            class_word=e.class_word,
            token=e.token,
            photos=Path(e.photos),
            concept=Path(e.concept),
            rescale=e.rescale,
            folder=Path(e.run),
        )
        for e in index.runs
        if e.done and Path(e.concept).is_file()
    ]
    left = [f"{e.subject}/{e.method} ({e.status})" for e in index.runs if not (e.done and Path(e.concept).is_file())]
    if left:
        warn(f"{len(left)} run(s) of sweep {folder} are not finished and are left out: {', '.join(left[:5])}")
    if not runs:
        raise DTIError(f"sweep {folder} has no finished run; finish it with dti sweep, then evaluate")
    return runs


def resolve_runs(
    items: Sequence[str | os.PathLike | EvalRun], class_word: str | None = None, kind: str | None = None, photos: str | None = None
) -> list[EvalRun]:
    """Every run to evaluate, from run folders, concept files and sweep folders, in the order given.
    Two runs of one method on one subject are told apart by their folder name."""
    if not items:
        raise DTIError("no runs to evaluate; pass run folders, concept files or a sweep folder")
    if kind is not None:
        check_kind(kind)
    runs: list[EvalRun] = []
    for item in items:
        if isinstance(item, EvalRun):
            runs.append(item)
            continue
        path = Path(item)
        if (path / "sweep.json").is_file():
            runs.extend(_from_sweep(path, kind))
        elif (path / "config.json").is_file():
            runs.append(_from_run_folder(path, class_word, kind, photos))
        elif path.is_file() or (path.is_dir() and any(path.glob("*.safetensors"))):
            runs.append(_from_concept(path, class_word, kind, photos))
        elif not path.exists():
            raise DTIError(f"{path} does not exist; pass run folders, concept files or a sweep folder")
        else:
            raise DTIError(f"{path} is not a run folder (no config.json), a sweep folder (no sweep.json) or a concept file")
    seen: dict[tuple[str, str], int] = {}
    for run in runs:
        seen[(run.method, run.subject)] = seen.get((run.method, run.subject), 0) + 1
    for run in runs:
        if seen[(run.method, run.subject)] > 1:
            run.method = f"{run.method}:{(run.folder or run.concept).name}"
    labels = [(r.method, r.subject) for r in runs]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise DTIError(f"two runs are both {dup[0]} on {dup[1]}; pass each run once")
    return runs


def resolve_model(model: str | os.PathLike | None, runs: Sequence[EvalRun]) -> str:
    """``--model``, ``dti-mini`` for the packaged model, else the base model every run names."""
    if model is not None and not isinstance(model, (str, os.PathLike)):  # a loaded pipeline: where it came from
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name or not Path(name).is_dir():
            raise DTIError("a loaded pipeline must come from a local folder (pipe.config._name_or_path); pass the folder instead")
        return str(name)
    if model is None:
        from dti.concepts.formats import read

        bases = {read(r.concept).meta.get("base_model") for r in runs}
        bases.discard(None)
        if len(bases) != 1:
            found = "different base models" if bases else "no base model"
            raise DTIError(f"--model is missing and the runs name {found}; pass --model")
        model = bases.pop()
    if str(model) == "dti-mini":
        from dti.mini.model import PACKAGED

        if not (PACKAGED / "model_index.json").is_file():
            raise DTIError(f"the packaged dti-mini model is missing at {PACKAGED}; reinstall dti")
        return str(PACKAGED)
    return str(model)


def sampler_defaults(pipeline_class: str) -> tuple[int, float]:
    """The pipeline's own defaults for steps and guidance (its ``__call__`` signature)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    try:
        params = inspect.signature(cls.__call__).parameters if cls is not None else {}
    except (TypeError, ValueError):
        params = {}
    steps = getattr(params.get("num_inference_steps"), "default", None)
    guidance = getattr(params.get("guidance_scale"), "default", None)
    steps = steps if isinstance(steps, int) and steps > 0 else FALLBACK_STEPS
    guidance = float(guidance) if isinstance(guidance, (int, float)) else FALLBACK_GUIDANCE
    return steps, guidance


def scheduler_name(model: str) -> str | None:
    """The scheduler class from the model's files, without loading it (None: unknown until it loads)."""
    path = Path(model) / "scheduler" / "scheduler_config.json"
    if not Path(model).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "scheduler/scheduler_config.json"))
        except Exception:
            return None
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def reference_photos(run: EvalRun, masks: Path | None) -> tuple[list[Image.Image], int]:
    """The run's photos and how many were masked. ``masks`` holds one mask per photo (same file
    stem, white = subject), in ``masks/<subject>/`` when that folder exists, else in ``masks/``."""
    from dti.training.data import list_images, load_image

    paths = list_images(run.photos)
    if masks is None:
        return [load_image(p) for p in paths], 0
    from dti.evaluation.scorers.hf import load_references

    folder = masks / run.subject if (masks / run.subject).is_dir() else masks
    return load_references(paths, folder), len(paths)


def _slug(text: str, limit: int = 60) -> str:
    """A file name for ``text``: lower-case words joined by dashes, with a short hash of the text
    when that name is not the text itself (so two texts never share a file)."""
    import hashlib

    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"
    return slug if slug == text else f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def check_out(out: Path, overwrite: bool) -> None:
    from dti.core.files import check_writable

    existing = [out / name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise DTIError(f"{existing[0]} already exists; pass --overwrite or choose another --out")
    check_writable(out)


# ---------------------------------------------------------------------------- the work


class _Pipeline:
    """The pipeline, loaded on first use (a fully cached evaluation never loads it), or one already loaded."""

    def __init__(self, model: str, dtype: Any, device: Any, pipe: Any = None) -> None:
        self.model, self.dtype, self.device, self.pipe = model, dtype, device, pipe

    def get(self) -> Any:
        if self.pipe is None:
            from dti.models import load_adapter

            self.pipe = load_adapter(self.model, self.dtype, self.device, quiet=True).pipe
        return self.pipe


def _score(scorers: Mapping[str, Scorer], images: list[Image.Image], refs: list[Image.Image], texts: list[str]) -> list[dict[str, float]]:
    scores: list[dict[str, float]] = [{} for _ in images]
    bad: dict[str, int] = {}
    for name, scorer in scorers.items():
        for start in range(0, len(images), SCORE_BATCH):
            batch = images[start : start + SCORE_BATCH]
            found: dict[str, list[float]] = {}
            if scorer.info.image_metric:
                found[metric_key(name, "image")] = scorer.image_similarity(batch, refs)
            if scorer.info.text_metric:
                found[metric_key(name, "text")] = scorer.text_similarity(batch, texts[start : start + SCORE_BATCH])
            for key, values in found.items():
                if len(values) != len(batch):
                    raise RuntimeError(f"scorer {name} returned {len(values)} scores for {len(batch)} images")
                for i, value in enumerate(values):
                    value = float(value)
                    if math.isfinite(value):
                        scores[start + i][key] = value
                    else:
                        bad[key] = bad.get(key, 0) + 1
    for key, n in bad.items():
        warn(f"{key} gave {n} image(s) no finite score (NaN or inf); they are left out of its means")
    return scores


def evaluate(
    runs: Sequence[str | os.PathLike | EvalRun],
    model: str | os.PathLike | Any | None,
    out: str | os.PathLike,
    prompts: str | os.PathLike = "dreambooth",
    seeds: Sequence[int] | str = DEFAULT_SEEDS,
    scorers: Mapping[str, Scorer] | Sequence[str] | str | None = None,
    *,
    sample_steps: int | None = None,
    guidance: float | None = None,
    resolution: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    class_word: str | None = None,
    kind: str | None = None,
    photos: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    subject_form: str = "token",
    overwrite: bool = False,
    title: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Generate (cache first) and score every run x prompt x seed; write the report into ``out``.

    ``model`` is a hub id, a local folder, ``dti-mini``, or a pipeline loaded from a local folder
    (used as it is: ``device`` and ``precision`` then only label the report). ``scorers`` maps a
    metric name to a :class:`~dti.evaluation.protocol.Scorer`, or names metrics to load (``"dinov2,siglip"``).
    ``cache_dir`` defaults to ``out/cache``.
    ``subject_form`` says what ``{}`` in a prompt becomes (:data:`~dti.evaluation.prompts.SUBJECT_FORMS`;
    default: the token alone, as the paper's code)."""
    from dti.core.devices import resolve_device, resolve_dtype
    from dti.models import read_model_index
    from dti.use.generate import check_settings

    out = Path(out)
    if not scorers:
        raise DTIError("no metrics to score with; pass --metrics, e.g. dinov2,siglip")
    if isinstance(scorers, (str, list, tuple)):
        from dti.evaluation.scorers import load_scorer

        names = [n.strip() for n in scorers.split(",")] if isinstance(scorers, str) else list(scorers)
        scorers = {name: load_scorer(name, device=str(resolve_device(device))) for name in names if name}
    if subject_form not in SUBJECT_FORMS:
        raise DTIError(f"subject form {subject_form!r} is not valid; use {' or '.join(SUBJECT_FORMS)}")
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else check_seeds(seeds)
    check_settings(sample_steps=sample_steps, guidance=guidance, resolution=resolution)
    evaluated = resolve_runs(runs, class_word, kind, None if photos is None else str(photos))
    templates = {run.kind: prompt_set(prompts, run.kind) for run in evaluated}
    mask_dir = Path(masks) if masks is not None else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise DTIError(f"--masks {mask_dir} is not a folder; pass a folder holding <subject>/<photo name>.png masks")
    check_out(out, overwrite)
    # every subject's photos (and masks) read once now, so a bad one is refused before the model loads;
    # kept only while its runs are scored (a sweep is subject-major), not all at once
    masked = {}
    for r in evaluated:
        refs, masked[(r.photos, r.subject)] = reference_photos(r, mask_dir)
        texts = [class_prompt(fill(t, subject_text(r.token, r.class_word, subject_form)), r.token, r.class_word) for t in templates[r.kind]]
        for scorer in scorers.values():
            check_inputs(scorer, refs, texts, f"{r.method} {r.subject}")
    references: dict[tuple[Path, str], list[Image.Image]] = {}
    shas = {id(run): file_sha256(run.concept) for run in evaluated}
    name = resolve_model(model, evaluated)
    index = read_model_index(name)
    loaded = None if model is None or isinstance(model, (str, os.PathLike)) else model
    dev = resolve_device(device) if loaded is None else loaded.device
    dtype = resolve_dtype(precision, dev) if loaded is None else loaded.dtype
    default_steps, default_guidance = sampler_defaults(str(index["_class_name"]))
    steps = sample_steps if sample_steps is not None else default_steps
    guidance = guidance if guidance is not None else default_guidance
    pipeline = _Pipeline(name, dtype, dev, loaded)
    scheduler = (scheduler_name(name) if loaded is None else None) or type(pipeline.get().scheduler).__name__
    identity = model_identity(name)
    cache = GenerationCache(cache_dir if cache_dir is not None else out / "cache")
    settings = {
        "model": name,
        "pipeline": index["_class_name"],
        "prompts": str(prompts),
        "subject_form": subject_form,
        "seeds": seed_list,
        "steps": steps,
        "guidance": guidance,
        "resolution": resolution,
        "scheduler": scheduler,
        "precision": str(dtype).removeprefix("torch."),
        "device": str(dev),
        "masks": str(mask_dir) if mask_dir is not None else None,
        "masked_photos": sum(masked.values()),
        "runs": [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(r).items()} for r in evaluated],
    }
    total = sum(len(templates[r.kind]) * len(seed_list) for r in evaluated)
    from tqdm.auto import tqdm

    records: list[dict[str, Any]] = []
    generated = 0
    with tqdm(total=total, desc="evaluate", unit="image", disable=not progress) as bar:
        for run in evaluated:
            sampler = Sampler(steps, guidance, resolution, scheduler, settings["precision"], run.rescale)
            subject = subject_text(run.token, run.class_word, subject_form)
            jobs = []
            for template in templates[run.kind]:
                prompt = fill(template, subject)
                text = class_prompt(prompt, run.token, run.class_word)
                for seed in seed_list:
                    key = cache_key(shas[id(run)], prompt, seed, identity, sampler)
                    jobs.append((template, prompt, text, seed, key))
            images, made = _generate(pipeline, run, jobs, cache, identity, sampler, shas[id(run)], bar)
            generated += made
            if (run.photos, run.subject) not in references:
                references.clear()
                references[(run.photos, run.subject)] = reference_photos(run, mask_dir)[0]
            refs = references[(run.photos, run.subject)]
            scores = _score(scorers, images, refs, [j[2] for j in jobs])
            folder = Path("images") / _slug(run.subject, 40) / _slug(run.method, 40)
            for (template, prompt, text, seed, key), score in zip(jobs, scores):
                rel = folder / f"{_slug(text)}-seed{seed}.png"
                _copy(cache.path(key), out / rel)
                records.append(
                    {
                        "method": run.method,
                        "subject": run.subject,
                        "kind": run.kind,
                        "class_word": run.class_word,
                        "token": run.token,
                        "template": template,
                        "prompt": prompt,
                        "text_prompt": text,
                        "seed": seed,
                        "image": rel.as_posix(),
                        "cache_key": key,
                        "scores": score,
                    }
                )
    infos = {n: s.info for n, s in scorers.items()}
    summary = write_report(records, infos, out, title or f"dti evaluate: {len(evaluated)} run(s) on {Path(name).name}", settings)
    return EvalResult(records, summary, generated, cache.hits, out, settings)


def _generate(
    pipeline: _Pipeline, run: EvalRun, jobs: list, cache: GenerationCache, identity: str, sampler: Sampler, sha: str, bar: Any
) -> tuple:
    """Every job's image: from the cache, else rendered with the run's concept attached (once)."""
    from dti.use.generate import render
    from dti.use.loading import load, unload

    images: list[Image.Image | None] = [cache.get(job[4]) for job in jobs]
    bar.update(sum(im is not None for im in images))
    missing = [i for i, im in enumerate(images) if im is None]
    if not missing:
        return images, 0
    pipe = pipeline.get()
    concept = load(pipe, run.concept, rescale=run.rescale)
    try:
        for i in missing:
            _, prompt, _, seed, key = jobs[i]
            image = render(pipe, prompt, seed, sampler.steps, sampler.guidance, sampler.resolution)
            cache.put(key, image, {**recipe(sha, prompt, seed, identity, sampler), "concept": str(run.concept), "token": run.token})
            images[i] = image
            bar.update(1)
    finally:
        unload(pipe, concept.token)
    return images, len(missing)


def _copy(source: Path, target: Path) -> None:
    from dti.core.files import atomic_write

    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
