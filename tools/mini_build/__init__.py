"""Build-time scripts of dti-mini: they train, measure and describe the shipped model and judge.

    python -m tools.mini_build.train_base   # the model (src/dti/mini/dti-mini)
    python -m tools.mini_build.train_judge  # the judge (src/dti/mini/judge.safetensors, judge.json)
    python -m tools.mini_build.evaluate     # the model's quality gate (quality.json)
    python -m tools.mini_build.probe        # which kinds of words the model uses (probe.json)
    python -m tools.mini_build.card         # the model card (README.md) from those facts

Nothing a user imports at run time (``dti``, ``dti.commands``, ``dti demo``, ``dti.mini.model``,
``dti.mini.judge``) imports this package (tests/test_layering.py checks it). The scripts follow
the ``dti`` command's conventions: bad input is one ``error: ...`` line and exit status 2, long
work shows a progress bar (``--quiet``), files are written atomically, and an earlier result is
replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit status 2, like a :class:`DTIError`."""

    def __init__(self, doc: str | None, **kwargs: Any) -> None:
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def script(parser: argparse.ArgumentParser, argv: list[str] | None, work: Callable[[argparse.Namespace], object]) -> int:
    """Parse and run a script the way ``dti`` runs a command: a usage error or a :class:`DTIError`
    is one ``error: ...`` line on stderr and status 2, never a traceback; ``--help`` is status 0."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    try:
        work(args)
    except DTIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk or a read-only place met outside dti.core.files (e.g. save_pretrained)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: could not write{where}: {exc.strerror or exc}; free space or choose another output folder", file=sys.stderr)
        return EXIT_USAGE
    return 0


def check_new(paths: list[Path], overwrite: bool, flag: str = "--out") -> None:
    """Refuse, before any work, to replace an earlier result unless ``--overwrite``."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise DTIError(f"{flag} {existing[0]} already exists; pass --overwrite to replace it or choose another {flag}")


def pipeline_folder(path: str | None, flag: str = "--model") -> str | None:
    """A ``--model`` folder, checked to hold a pipeline (``None``: the packaged dti-mini)."""
    if path is not None and not (Path(path) / "model_index.json").is_file():
        raise DTIError(f"{flag} {path}: no model_index.json there; pass a dti-mini pipeline folder (e.g. an --export of train_base)")
    return path
