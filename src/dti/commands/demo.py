"""``dti demo``: learn, generate, blend and score two words on dti-mini, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from dti.commands.flags import groups_of
from dti.commands.parser import whole
from dti.core.errors import DTIError
from dti.core.settings import MAX_SAMPLER_STEPS
from dti.training.config import MAX_STEPS

VERB = "demo"
HELP = "learn, generate and blend two words on the built-in dti-mini model (offline, under a minute on an idle 2-core CPU)"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Offline end-to-end demo on dti-mini, the small model that ships with dti: renders photos "
        "of two subjects, learns a word for each (DTI), generates new compositions, blends the two words "
        "by slerp, and writes a report scored by the mini world's judge. Writes into ./dti-demo unless --out says otherwise.",
    )
    groups = groups_of(p)
    groups["inputs"].add_argument("--model", default=None, help="a dti-mini pipeline folder [default: the packaged one]")
    groups["schedule"].add_argument("--steps", type=whole, default=150, help="optimizer steps per word")
    groups["sampling"].add_argument("--sample-steps", type=whole, default=20, dest="sample_steps", help="sampler steps per image")
    outputs = groups["outputs"]
    outputs.add_argument("--out", "--output", dest="out", default="dti-demo", help="output folder")
    outputs.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    outputs.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from dti.evaluation.demo import run_demo

    if not 0 < args.steps <= MAX_STEPS:
        raise DTIError(f"{{steps}} {args.steps} is not valid; use 1 to {MAX_STEPS:,} (the demo's 150 takes a minute)", settings=["steps"])
    if not 0 < args.sample_steps <= MAX_SAMPLER_STEPS:
        raise DTIError(
            f"{{sample_steps}} {args.sample_steps} is not valid; use 1 to {MAX_SAMPLER_STEPS} (20 is the demo's)", settings=["sample_steps"]
        )
    numbers = run_demo(
        args.out,
        args.model,
        steps=args.steps,
        sampler_steps=args.sample_steps,
        overwrite=args.overwrite,
        progress=not args.quiet,
        stage=lambda line: print(f"demo: {line}", flush=True),
    )
    print(f"demo finished in {numbers['seconds']} s: open {Path(args.out) / 'report.html'}")
    return 0
