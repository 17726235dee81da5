"""``dti sweep``: its flags and what it prints. Light to import (no torch): cli.py builds every
subcommand's parser on each ``dti`` call, and the sweep itself is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

# The sweep's methods, listed here without importing the sweep (kept equal to sweep.METHODS by a test).
METHOD_NAMES = ("dti", "ti", "crossinit", "ti-rescaled", "adamw-fixed", "dti-min", "dti-5", "dti-kappa0", "dti-kappa5e-4")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``dti sweep`` to the ``dti`` command's subparsers."""
    p = sub.add_parser(
        "sweep",
        help="train every subject of a manifest with several methods (the paper's table), resumably",
        description="Train every subject of MANIFEST with every method of --methods into OUT/<method>/<subject>/, and index "
        "the runs in OUT/sweep.json for `dti evaluate`. Settings: the manifest's [defaults], then each subject's, then the "
        "flags below; each method's own settings (e.g. dti-kappa0's kappa) always apply. Rerunning the same command skips "
        "finished runs and continues an interrupted one from its checkpoint. Exits 1 if any run failed.",
    )
    p.add_argument(
        "manifest", help="a manifest .toml listing the subjects, or 'dreambooth' (the packaged 30 DreamBooth subjects; needs --data-root)"
    )
    p.add_argument(
        "--methods",
        required=True,
        help=f"comma-separated methods, e.g. dti,ti,ti-rescaled; known: {', '.join(METHOD_NAMES)} "
        "(ti-rescaled is ti's concept rescaled when loaded: it brings ti along and trains nothing itself)",
    )
    p.add_argument("--model", required=True, help="diffusers pipeline: hub id or local folder, loaded once for every run")
    p.add_argument("--out", "--output", dest="out", required=True, help="the sweep's folder (a rerun with the same --out continues it)")
    p.add_argument("--data-root", dest="data_root", help="the folder holding the subjects' photo folders (overrides the manifest's root)")
    g = p.add_argument_group("settings for every run (over the manifest's)")
    g.add_argument("--steps", type=_int, help="optimizer steps [default: the manifest's, else the family's]")
    g.add_argument("--batch-size", type=_int, dest="batch_size", help="photos per batch [default: the family's]")
    g.add_argument("--resolution", type=_int, help="training crop size in pixels [default: the family's]")
    g.add_argument("--seed", type=_int, help="random seed [default: 0]")
    g.add_argument(
        "--pooling",
        choices=("eos", "legacy"),
        help="where CLIP pools the prompt: eos (the end token, dti's default) or legacy (transformers' argmax rule, as the paper's code)",
    )
    g.add_argument("--no-validation", dest="validate", action="store_false", default=None, help="write no sample grids")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="torch device [default: auto]")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="model weights' precision")
    p.add_argument(
        "--batched",
        nargs="?",
        const="auto",
        choices=("auto", "batch", "group"),
        help="train each method's subjects at once in one process (as `dti train --manifest`; --batched group is bit-identical "
        "to one run at a time, batch runs the denoiser once over all subjects' samples); the runs' files are the same",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (the one line per run stays)")


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The `dti train` settings the flags give (those not given are left to the manifest)."""
    names = ("steps", "batch_size", "resolution", "seed", "pooling", "validate")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run(args: argparse.Namespace) -> int:
    """Run the sweep; 0 when every run is done, 1 when any failed."""
    from dti.training.sweep import SWEEP_FILENAME, parse_methods, resolve_manifest, sweep

    methods = parse_methods(args.methods)  # an unknown method is one line, before the manifest is read
    manifest = resolve_manifest(args.manifest, args.data_root)
    runs = sweep(
        manifest,
        methods,
        _model_alias(args.model),
        args.out,
        settings=settings_of(args),
        progress=not args.quiet,
        device=args.device,
        precision=args.precision,
        batched=args.batched,
    )
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    print(f"sweep: {done} of {len(runs)} runs done, {len(failed)} failed -> {args.out}/{SWEEP_FILENAME}")
    for r in failed:
        print(f"  failed: {r.method} {r.subject}: {r.error}")
    return 1 if failed else 0


def _model_alias(model: str) -> str:
    """``dti-mini`` names the model that ships inside the package (as for `dti train`)."""
    if model == "dti-mini":
        from dti.commands import _model_alias as alias

        return str(alias(model))
    return model
