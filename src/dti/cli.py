"""The ``dti`` command. Thin: parse, call the library, print; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dti.errors import DTIError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2, like DTIError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="learn a new word for a subject from a folder of photos",
        description="Learn a new word for a subject from 3-6 photos. Defaults reproduce the paper (METHOD.md section 5) "
        "for the model's family; every setting used is saved to OUTPUT/config.json.",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("photos", nargs="?", help="folder of jpg/png/webp photos of the subject")
    p.add_argument("--token", help="the new word, e.g. '<my-dog>' (must not exist in the vocabulary)")
    p.add_argument("--init", help="initializer: the subject's class word, e.g. 'dog'; several words give several vectors")
    p.add_argument("--model", help="diffusers pipeline: hub id or local folder (SD 1.x/2.x or SDXL)")
    p.add_argument("--output", help="run folder to create (refused if it already holds results, unless --overwrite)")
    p.add_argument("--config", help="config.json of an earlier run to repeat; flags given here override it")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --output")
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("dti", "ti", "crossinit"),
        help="dti: direction on the sphere at fixed norm (default); ti: free vector with AdamW; "
        "crossinit: free vector initialized from the class word's contextual embedding",
    )
    g.add_argument(
        "--optimizer",
        choices=("rsgd", "adamw"),
        help="rsgd (Riemannian SGD, dti default) or adamw (ti default; "
        "with --method dti: AdamW on a fixed-norm vector, the paper's ablation)",
    )
    g.add_argument(
        "--magnitude", help="dti's fixed norm per encoder: mean, min or max of the vocabulary norms, or a number [default: mean]"
    )
    g.add_argument("--kappa", type=float, help="von Mises-Fisher prior strength toward the initializer [default: 1e-4 for dti]")
    g.add_argument("--beta", type=float, help="EMA factor of RiemannianSGD's gradient normalization [default: 0]")
    g.add_argument("--eps", type=float, help="RiemannianSGD normalization epsilon [default: 1e-8]")
    g.add_argument("--weight-decay", type=float, dest="weight_decay", help="AdamW weight decay [default: 0.01]")
    g.add_argument("--crossinit-lambda", type=float, dest="crossinit_lambda", help="crossinit's pull toward its init [default: 1e-5]")
    g.add_argument(
        "--pooling",
        choices=("eos", "legacy"),
        help="where CLIP pools with new tokens: eos (the end token, as "
        "the base model) or legacy (transformers' highest-id rule, which picks the placeholder) [default: eos]",
    )
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=_int, help="optimizer steps [default: 400]")
    g.add_argument("--batch-size", type=_int, dest="batch_size", help="photos per step [default: 4]")
    g.add_argument("--grad-accum", type=_int, dest="grad_accum", help="batches accumulated per step [default: 1]")
    g.add_argument("--lr", type=float, help="per-sample learning rate [default: 0.01 rsgd, 0.005 adamw]")
    g.add_argument(
        "--no-scale-lr",
        dest="scale_lr",
        action="store_false",
        help="use --lr as given instead of multiplying it by batch size x grad accumulation",
    )
    g.add_argument("--resolution", type=_int, help="training crop size in pixels [default: 768 for SDXL, native otherwise]")
    g.add_argument("--templates", choices=("object", "style"), help="prompt templates [default: object]")
    g.add_argument("--seed", type=_int, help="random seed [default: 0]")
    g = p.add_argument_group("hardware")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="model weights' precision; learned rows stay fp32 [default: auto = bf16 on GPU, fp32 on CPU]",
    )
    g.add_argument("--device", help="torch device [default: auto]")
    g.add_argument(
        "--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", help="trade compute for memory in the UNet"
    )
    g = p.add_argument_group("outputs")
    g.add_argument("--log-every", type=_int, dest="log_every", help="steps between train_log.jsonl records [default: 1]")
    g.add_argument("--snapshot-every", type=_int, dest="snapshot_every", help="steps between concept snapshots, 0 = none [default: 0]")
    g.add_argument(
        "--validation-every", type=_int, dest="validation_every", help="steps between sample grids, 0 = only at the end [default: 0]"
    )
    g.add_argument(
        "--validation-prompt",
        action="append",
        dest="validation_prompts",
        help="sample prompt with {} for the token (repeatable) [default: 'a photo of a {}', 'a {} in the snow']",
    )
    g.add_argument("--validation-seed", action="append", type=_int, dest="validation_seeds", help="sample seed (repeatable) [default: 0 1]")
    g.add_argument("--validation-steps", type=_int, dest="validation_steps", help="sampler steps for samples [default: 25]")
    g.add_argument("--validation-guidance", type=float, dest="validation_guidance", help="guidance scale for samples [default: 5.0]")
    g.add_argument("--no-validation", dest="validate", action="store_false", help="write no sample images")
    g.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")


def _run_train(args: argparse.Namespace) -> int:
    from dti.config import TrainConfig
    from dti.trainer import train

    values = vars(args).copy()
    for key in ("command", "func"):
        values.pop(key, None)
    config_path = values.pop("config", None)
    base = TrainConfig.from_file(config_path) if config_path else TrainConfig()
    if config_path and "output" not in values:
        raise DTIError("--output is required with --config (a run is never written over its own results)")
    photos = values.pop("photos", None) or base.photos
    token = values.pop("token", None) or base.token
    init = values.pop("init", None)
    init = base.init if init is None else init
    model = values.pop("model", None) or base.model
    output = values.pop("output", None) or base.output
    if not output:
        raise DTIError("--output is missing; name the run folder to create, e.g. --output runs/my-dog")
    concept = train(photos, token, init, model, output, config=base, **values)
    enc = ", ".join(f"{name}: norm {float(e.norms.mean()):.4f}" for name, e in concept.encoders.items())
    print(f"learned {concept.token} ({concept.n_vectors} vector(s); {enc}) -> {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dti import __version__

    parser = _Parser(prog="dti", description="Directional Textual Inversion: learn new words for text-to-image models.")
    parser.add_argument("--version", action="version", version=f"dti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    return parser


COMMANDS = {"train": _run_train}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except DTIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
