"""Flags several verbs share, each written once: the model and where it runs, the output folder."""

from __future__ import annotations

import argparse

from dti.commands.flags import add_settings, groups_of
from dti.training.config import TrainConfig


def add_model(
    parser: argparse.ArgumentParser,
    help: str = "diffusers pipeline: hub id, local folder or dti-mini [default: the concept's base model]",
    required: bool = False,
) -> None:
    """``--model`` (default None), ``--precision`` and ``--device`` (the training settings' own)."""
    groups_of(parser)["inputs"].add_argument("--model", default=None, required=required, help=help)
    add_settings(parser, TrainConfig, ["precision", "device"], keep_defaults=("precision", "device"))


def add_output(parser: argparse.ArgumentParser, help: str, default: str | None = None, required: bool = False, overwrite: str = "") -> None:
    """``--out`` / ``--output`` and ``--overwrite``."""
    outputs = groups_of(parser)["outputs"]
    outputs.add_argument("--out", "--output", dest="out", default=default, required=required, help=help)
    outputs.add_argument(
        "--overwrite", action="store_true", help=overwrite or "replace files already in --out (only once the new ones are complete)"
    )
