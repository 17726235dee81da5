"""``dti train``: learn a word from photos; also several subjects at once (``--manifest``) and
continuing a run (``--resume``). Its flags are the training settings' own (:mod:`dti.commands.flags`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dti.commands.flags import add_settings, given, groups_of
from dti.core.errors import DTIError
from dti.training.config import TrainConfig

VERB = "train"
HELP = "learn a new word for a subject from a folder of photos"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        argument_default=argparse.SUPPRESS,
        description="Learn a new word for a subject from 3-6 photos: dti train PHOTOS --token '<my-dog>' --init dog --model MODEL "
        "--output runs/my-dog. Defaults reproduce the paper (docs/METHOD.md section 5) for the model's family; every setting "
        "used is saved to OUTPUT/config.json.",
    )
    groups = groups_of(p)
    add_settings(p, TrainConfig)
    inputs = groups["inputs"]
    inputs.add_argument(
        "--config",
        help="a .toml or .json file of settings, e.g. an earlier run's config.json to repeat it; its keys are these flags' names "
        "(batch-size = 4, no-validation = true) or the settings' names (batch_size = 4); flags given here override it",
    )
    inputs.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted run in folder RUN from its last checkpoint, with its own settings "
        "(only --steps, --device, --quiet and the checkpoint flags may be given)",
    )
    several = groups["several subjects at once"]
    several.add_argument(
        "--manifest",
        metavar="TOML",
        help="train every subject of a manifest in one process, sharing the loaded model: one run folder per subject, "
        "OUTPUT/<subject>/, as `dti train` writes it; flags given here apply to every subject; with --resume OUTPUT, continue them",
    )
    several.add_argument("--data-root", dest="data_root", help="with --manifest: the folder its photo folders are relative to")
    several.add_argument(
        "--mix",
        choices=("auto", "batch", "group"),
        help="with --manifest: batch = one denoiser pass over all subjects' samples (fastest; equal to single runs to ~1e-6), "
        "group = one pass per subject (bit-identical to single runs) [default: auto = batch where the model family can]",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from dti.training.session import train

    values = given(args, TrainConfig)
    extra = {key: getattr(args, key) for key in ("config", "resume", "manifest", "data_root", "mix") if hasattr(args, key)}
    if "manifest" in extra:
        return _manifest(values, extra)
    for key in ("data_root", "mix"):
        if key in extra:
            raise DTIError(f"--{key.replace('_', '-')} goes with --manifest; drop it or pass --manifest")
    if "resume" in extra:
        return _resume(values, extra)
    config_path = extra.get("config")
    from dti.training.config import read_config_file

    record = read_config_file(config_path) if config_path else {}
    base = TrainConfig.from_dict(record, source=str(config_path)) if config_path else TrainConfig()
    if "dti_version" in record and "output" not in values:
        raise DTIError(
            f"{{output}} is required with {config_path}, an earlier run's config (a run is never written over its own results)",
            settings=["output"],
        )
    photos = values.pop("photos", None) or base.photos
    token = values.pop("token", None) or base.token
    init = values.pop("init", None)
    init = base.init if init is None else init
    model = values.pop("model", None) or base.model
    output = values.pop("output", None) or base.output
    if not photos:
        raise DTIError(
            "the photo folder is missing; give it first: dti train PHOTOS --token '<my-dog>' --init dog --model MODEL --output runs/my-dog"
        )
    if not output:
        raise DTIError("{output} is missing; name the run folder to create, e.g. runs/my-dog", settings=["output"])
    if "family_options" in values:
        values["family_options"] = {**(base.family_options or {}), **values["family_options"]}
    concept = train(photos, token, init, model, output, config=base, **values)
    enc = ", ".join(f"{name}: norm {float(e.norms.mean()):.4f}" for name, e in concept.encoders.items())
    print(f"learned {concept.token} ({concept.n_vectors} vector(s); {enc}) -> {output}")
    return 0


def _manifest(values: dict[str, Any], extra: dict[str, Any]) -> int:
    from dti.training.multi import train_manifest

    path = extra["manifest"]
    if any(values.get(key) for key in ("photos", "token", "init")) or extra.get("config"):
        raise DTIError("--manifest names every subject's photos, token and init; drop the photo folder, --token, --init and --config")
    resume, output = extra.get("resume"), values.pop("output", None)
    if resume and output and Path(resume).resolve() != Path(output).resolve():
        raise DTIError("with --manifest, --resume names the --output folder of the run to continue; pass just --resume OUTPUT")
    output = resume or output
    if not output:
        raise DTIError("{output} is missing; name the folder that gets one run folder per subject, e.g. runs/", settings=["output"])
    model = values.pop("model", None)
    concepts = train_manifest(path, model, output, extra.get("data_root"), resume=bool(resume), mix=extra.get("mix", "auto"), **values)
    for name, concept in concepts.items():
        print(f"learned {concept.token} ({name}) -> {Path(output) / name}")
    return 0


def _resume(values: dict[str, Any], extra: dict[str, Any]) -> int:
    from dti.training.session import RunFinished, resume_run

    folder = extra["resume"]
    if values.get("photos") or extra.get("config"):
        raise DTIError("--resume takes the run's own photos and settings; drop the photo folder and --config")
    try:
        concept, start = resume_run(folder, **values)
    except RunFinished as done:
        print(str(done))
        return 0
    how = f"resumed at step {start}" if start else "started again from step 0: no checkpoint to resume"
    print(f"learned {concept.token} ({how}) -> {folder}")
    return 0


def resume_hint(args: argparse.Namespace) -> str:
    """What to run after a hard interrupt."""
    run = getattr(args, "resume", None) or getattr(args, "output", None)
    if run and getattr(args, "manifest", None):
        return f"; continue from the last checkpoints with `dti train --manifest {args.manifest} --resume {run}`"
    if run:
        return f"; continue from the last checkpoint with `dti train --resume {run}`"
    return ""
