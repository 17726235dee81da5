"""``dti rescale``: repair a plain-TI embedding by setting its norm to the vocabulary's."""

from __future__ import annotations

import argparse

from dti.commands import convert

VERB = "rescale"
HELP = "repair a plain-TI file by rescaling it to the vocabulary's mean norm"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Plain Textual Inversion inflates a word's norm far past the vocabulary's (2-20x on CLIP), which drowns the "
        "rest of the prompt. Rescale every vector to a vocabulary statistic (the mean by default; TI-rescaled in the paper) and "
        "write it in any format. The vocabulary's norms come from --model, else from the concept's metadata, else the "
        "published means (mean only).",
    )
    convert.add_arguments(p, "mean")
    return p


run = convert.run
