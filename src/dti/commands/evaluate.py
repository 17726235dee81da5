"""``dti evaluate``: score learned words the way the paper does, with a report people can read.

Light to import (the CLI builds its parser from it): torch, diffusers and the metrics load in :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from dti.commands.common import add_model
from dti.commands.flags import groups_of
from dti.commands.parser import add_seeds, number, whole

VERB = "evaluate"
HELP = "generate and score learned words: image and text similarity with intervals, a report"

DEFAULT_METRICS = "dinov2,siglip"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand on the CLI's subparsers."""
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Generate every run x prompt x seed (cached, so re-running or adding a metric generates nothing) "
        "and score each image: similarity to the subject's photos, and to the prompt with the token replaced by the class word. "
        "Writes scores.jsonl, summary.json, report.md, report.html and scatter.png into --out.",
    )
    groups = groups_of(p)
    inputs = groups["inputs"]
    inputs.add_argument("runs", nargs="+", help="run folders, concept files (with --class and --photos) or a sweep folder")
    add_model(p, help="diffusers pipeline: hub id, local folder or dti-mini [default: the runs' base model]")
    inputs.add_argument("--class", dest="class_word", default=None, help="the subject's class word [default: the run's initializer]")
    inputs.add_argument("--kind", choices=("object", "live"), default=None, help="prompt list [default: live for cat and dog, else object]")
    inputs.add_argument("--photos", default=None, help="the subject's reference photos [default: the run's own]")
    inputs.add_argument("--masks", default=None, help="folder of <subject>/<photo name>.png masks applied to the reference photos")
    sampling = groups["sampling"]
    sampling.add_argument(
        "--prompts", default="dreambooth", help="dreambooth, compositional, dreambooth+compositional, or a file with one prompt per line"
    )
    add_seeds(sampling, "--seeds", default=[0, 1, 2, 3], help="seeds per prompt: 0-3, 0,1,5 or 0 1 5")
    sampling.add_argument(
        "--subject",
        choices=("token", "token+class"),
        default="token",
        dest="subject_form",
        help="what {} in a prompt becomes: the token alone (the paper's code) or 'token class' (DreamBooth's form)",
    )
    sampling.add_argument(
        "--sample-steps", type=whole, default=None, dest="sample_steps", help="sampler steps [default: the pipeline's own]"
    )
    sampling.add_argument("--guidance", type=number, default=None, help="guidance scale [default: the pipeline's own]")
    sampling.add_argument("--resolution", type=whole, default=None, help="image size [default: the model's native size]")
    method = groups["method"]
    method.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated metrics: dinov2, siglip, clip, dino, mini")
    method.add_argument(
        "--metric-model", action="append", default=[], dest="metric_model", help="NAME=PATH: a metric's weights (repeatable)"
    )
    outputs = groups["outputs"]
    outputs.add_argument("--out", "--output", dest="out", required=True, help="folder for the report and its images")
    outputs.add_argument("--cache", default=None, help="generation cache folder [default: OUT/cache]")
    outputs.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    outputs.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def metric_names(text: str) -> list[str]:
    from dti.core.errors import DTIError

    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    if not names:
        raise DTIError("--metrics is empty; name one or more metrics, e.g. dinov2,siglip")
    if len(set(names)) != len(names):
        raise DTIError(f"--metrics {text!r} names a metric twice; name each once")
    return names


def load_scorers(names: list[str], metric_models: list[str], device: Any) -> dict[str, Any]:
    """Every metric's scorer (:mod:`dti.evaluation.scorers`); unknown names are refused before anything loads."""
    from dti.core.errors import DTIError
    from dti.evaluation import scorers

    unknown = [n for n in names if n not in scorers.METRICS]
    if unknown:
        raise DTIError(f"unknown metric {unknown[0]!r}; use {', '.join(scorers.METRICS)}")
    sources = scorers.parse_metric_models(metric_models)
    extra = sorted(set(sources) - set(names))
    if extra:
        raise DTIError(f"--metric-model names {extra[0]}, which --metrics does not use; add it to --metrics or drop it")
    return {name: scorers.load_scorer(name, sources.get(name), device=str(device)) for name in names}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dti.core.devices import resolve_device
    from dti.core.errors import DTIError
    from dti.evaluation.prompts import prompt_set
    from dti.evaluation.runner import evaluate, resolve_runs
    from dti.use.generate import check_settings

    seeds = args.seeds
    names = metric_names(args.metrics)
    check_settings(sample_steps=args.sample_steps, guidance=args.guidance, resolution=args.resolution)
    if args.masks is not None and not Path(args.masks).is_dir():
        raise DTIError(f"--masks {args.masks} is not a folder; pass a folder holding <subject>/<photo name>.png masks")
    runs = resolve_runs(args.runs, args.class_word, args.kind, args.photos)
    for kind in {r.kind for r in runs}:
        prompt_set(args.prompts, kind)
    from dti.evaluation.runner import check_out

    check_out(Path(args.out), args.overwrite)
    scorers = load_scorers(names, args.metric_model, resolve_device(args.device))
    result = evaluate(
        runs,
        args.model,
        args.out,
        prompts=args.prompts,
        seeds=seeds,
        scorers=scorers,
        sample_steps=args.sample_steps,
        guidance=args.guidance,
        resolution=args.resolution,
        device=args.device,
        precision=args.precision,
        cache_dir=args.cache,
        class_word=args.class_word,
        kind=args.kind,
        photos=args.photos,
        masks=args.masks,
        subject_form=args.subject_form,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    counts = f"{result.generated} generated, {result.cached} from the cache"
    print(f"scored {len(result.records)} image(s) ({counts}): see {Path(args.out) / 'report.md'}")
    return 0
