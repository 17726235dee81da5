"""``dti convert``: a concept from any format into another (dti, diffusers, A1111, ComfyUI, kohya)."""

from __future__ import annotations

import argparse

from dti.commands.common import add_model, add_output
from dti.commands.flags import groups_of
from dti.text.vocab import MAGNITUDES

VERB = "convert"
HELP = "convert a concept between the formats of dti, diffusers, A1111, ComfyUI, kohya, InvokeAI and OneTrainer"


def add_arguments(p: argparse.ArgumentParser, rescale_default: str | None) -> None:
    """The flags convert and rescale share."""
    from dti.concepts.formats import FORMATS

    groups = groups_of(p)
    groups["inputs"].add_argument("input", help="concept file or folder, any supported format")
    groups["inputs"].add_argument(
        "--token",
        default=None,
        help="rename the token: one made-up word such as '<my-dog>' (A1111's file and trigger word is it without brackets)",
    )
    add_model(p, help="diffusers pipeline whose vocabulary norms to rescale to (hub id, local folder or dti-mini)")
    groups["method"].add_argument(
        "--rescale",
        choices=MAGNITUDES,
        default=rescale_default,
        help="set every vector's norm to this statistic of the vocabulary's norms (repairs plain-TI norm inflation)",
    )
    groups["outputs"].add_argument("--to", choices=FORMATS, default="dti", help="output format")
    add_output(
        p,
        "output file or folder [default: named after the token, here]",
        overwrite="replace existing output files (refused otherwise; the old files stay until all new ones are written)",
    )


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Read a concept in any supported format and write it in another. A1111 .pt files are read "
        "with torch.load(weights_only=True): a pickle that would run code is refused.",
    )
    add_arguments(p, None)
    return p


def run(args: argparse.Namespace) -> int:
    from dti.use.convert import convert

    written = convert(
        args.input,
        args.to,
        args.out,
        token=args.token,
        rescale=args.rescale,
        model=args.model,
        precision=args.precision,
        device=args.device,
        overwrite=args.overwrite,
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
