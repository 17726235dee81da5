"""``dti sweep``: train every subject of a manifest with several methods (the paper's table), resumably."""

from __future__ import annotations

import argparse
from typing import Any

from dti.commands.common import add_model
from dti.commands.flags import add_settings, given, groups_of
from dti.methods import VARIANTS
from dti.training.config import TrainConfig

VERB = "sweep"
HELP = "train every subject of a manifest with several methods (the paper's table), resumably"
#: The training settings a sweep passes to every run (over the manifest's).
RUN_SETTINGS = ("steps", "batch_size", "resolution", "seed", "pooling", "validate")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Train every subject of MANIFEST with every method of --methods into OUT/<method>/<subject>/, and index "
        "the runs in OUT/sweep.json for `dti evaluate`. Settings: the manifest's [defaults], then each subject's, then the "
        "flags below; each method's own settings (e.g. dti-kappa0's kappa) always apply. Rerunning the same command skips "
        "finished runs and continues an interrupted one from its checkpoint. Exits 1 if any run failed.",
    )
    groups = groups_of(p)
    inputs = groups["inputs"]
    inputs.add_argument(
        "manifest", help="a manifest .toml listing the subjects, or 'dreambooth' (the packaged 30 DreamBooth subjects; needs --data-root)"
    )
    groups["method"].add_argument(
        "--methods",
        required=True,
        help=f"comma-separated methods, e.g. dti,ti,ti-rescaled; known: {', '.join(VARIANTS)} "
        "(ti-rescaled is ti's concept rescaled when loaded: it brings ti along and trains nothing itself)",
    )
    add_model(p, help="diffusers pipeline: hub id, local folder or dti-mini, loaded once for every run", required=True)
    inputs.add_argument(
        "--data-root", dest="data_root", help="the folder holding the subjects' photo folders (overrides the manifest's root)"
    )
    add_settings(p, TrainConfig, RUN_SETTINGS)
    several = groups["several subjects at once"]
    several.add_argument(
        "--batched",
        nargs="?",
        const="auto",
        choices=("auto", "batch", "group"),
        help="train each method's subjects at once in one process (as `dti train --manifest`; --batched group is bit-identical "
        "to one run at a time, batch runs the denoiser once over all subjects' samples); the runs' files are the same",
    )
    outputs = groups["outputs"]
    outputs.add_argument(
        "--out", "--output", dest="out", required=True, help="the sweep's folder (a rerun with the same --out continues it)"
    )
    outputs.add_argument("--quiet", action="store_true", help="no progress bars (the one line per run stays)")
    return p


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `dti train` settings the flags give every run (those not given are left to the manifest)."""
    return {k: v for k, v in given(args, TrainConfig).items() if k in RUN_SETTINGS}


def run(args: argparse.Namespace) -> int:
    """Run the sweep; 0 when every run is done, 1 when any failed."""
    from dti.training.sweep import SWEEP_FILENAME, parse_methods, resolve_manifest, sweep

    methods = parse_methods(args.methods)  # an unknown method is one line, before the manifest is read
    manifest = resolve_manifest(args.manifest, args.data_root)
    runs = sweep(
        manifest,
        methods,
        args.model,
        args.out,
        settings=run_settings(args),
        progress=not args.quiet,
        device=args.device,
        precision=args.precision,
        batched=args.batched,
    )
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    elsewhere = sum(r.status == "pending" for r in runs)  # claimed by another worker of the same sweep, still training
    busy = f", {elsewhere} still training in another worker" if elsewhere else ""
    print(f"sweep: {done} of {len(runs)} runs done, {len(failed)} failed{busy} -> {args.out}/{SWEEP_FILENAME}")
    for r in failed:
        print(f"  failed: {r.method} {r.subject}: {r.error}")
    return 1 if failed else 0


def resume_hint(args: argparse.Namespace) -> str:
    return "; run the same `dti sweep` command again to continue from the last checkpoints"
