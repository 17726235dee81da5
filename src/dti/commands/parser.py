"""The command line's parser: one-line errors, no silent abbreviations, a suggestion for an unknown flag
(and dti's name for another trainer's flag), one help style in every verb.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

from dti.core.errors import DTIError
from dti.core.settings import parse_seeds

EXIT_USAGE = 2

#: Other tools' flags (diffusers' and kohya's textual-inversion scripts, dti's own earlier names) ->
#: what dti calls them; an unknown flag in this table is answered with its dti name.
FOREIGN: dict[str, str] = {
    "--learning_rate": "--lr",
    "--learning-rate": "--lr",
    "--placeholder_token": "--token",
    "--placeholder-token": "--token",
    "--token_string": "--token",
    "--initializer_token": "--init",
    "--initializer-token": "--init",
    "--init_word": "--init",
    "--max_train_steps": "--steps",
    "--max-train-steps": "--steps",
    "--num_train_steps": "--steps",
    "--num_vectors": "--init with several words (one vector per word)",
    "--num_vectors_per_token": "--init with several words (one vector per word)",
    "--output_dir": "--output",
    "--output-dir": "--output",
    "--output_name": "--output",
    "--pretrained_model_name_or_path": "--model",
    "--pretrained-model-name-or-path": "--model",
    "--train_data_dir": "the photo folder as the first argument (dti train PHOTOS ...)",
    "--instance_data_dir": "the photo folder as the first argument (dti train PHOTOS ...)",
    "--train_batch_size": "--batch-size",
    "--gradient_accumulation_steps": "--grad-accum",
    "--mixed_precision": "--precision",
    "--validation_steps": "--validation-every (steps between sample grids)",
    "--validation_prompt": "--validation-prompt",
    "--num_validation_images": "--validation-seeds (one image per seed)",
    "--save_steps": "--checkpoint-every",
    "--checkpointing_steps": "--checkpoint-every",
    "--save_every_n_steps": "--checkpoint-every",
    "--sample_every_n_steps": "--validation-every",
    "--resume_from_checkpoint": "--resume RUN",
    "--gradient_checkpointing": "--gradient-checkpointing",
    "--validation-steps": "--sample-steps (sampler steps of the samples)",
    "--sampler-steps": "--sample-steps",
}
#: A verb's flags that mean something else in dti: --steps is optimizer steps, sampler steps are --sample-steps.
VERB_RENAMED: dict[str, dict[str, str]] = {
    "generate": {"--steps": "--sample-steps (sampler steps; --steps means optimizer steps in dti)"},
    "evaluate": {"--steps": "--sample-steps (sampler steps; --steps means optimizer steps in dti)"},
    "interpolate": {"--steps": "--blends (the number of blends from A to B) or --sample-steps (sampler steps of the grid)"},
}


class HelpFormatter(argparse.HelpFormatter):
    """Every verb's help in one style: a flag's default, when it has one to show, as ``[default: X]``
    at the end of its help (a help text that states its own default keeps it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "[default:" in text or action.default in (None, [], False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} [default: {default}]"


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2 (like a DTIError) and takes no
    abbreviation of a flag (``--step 2`` is refused, not read as ``--steps``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def whole(text: str) -> int:
    """A whole number, or a one-line usage error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def number(text: str) -> float:
    """A number, or a one-line usage error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def seeds(text: str) -> list[int]:
    """Seeds in the one syntax of every verb: ``0-3``, ``0,1,5`` or ``0 1 5`` (several words)."""
    try:
        return parse_seeds(text)
    except DTIError as exc:
        raise argparse.ArgumentTypeError(exc.render(lambda s: "seeds").removeprefix("seeds ")) from None


class ExtendSeeds(argparse.Action):
    """``--seeds 0 1 5``, ``--seeds 0-3`` or repeated: every word's seeds, in order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        current = list(current) if isinstance(current, list) and current is not self.default else []
        for part in values if isinstance(values, list) and values and isinstance(values[0], list) else [values]:
            current.extend(part)
        setattr(namespace, self.dest, current)


def add_seeds(parser: Any, *flags: str, default: Any, help: str, dest: str | None = None) -> None:
    """A seeds flag in the one syntax (see :func:`seeds`)."""
    parser.add_argument(*flags, nargs="+", type=seeds, action=ExtendSeeds, default=default, dest=dest, metavar="SEEDS", help=help)


def unknown_flag(parser: argparse.ArgumentParser, verb: str | None, words: Sequence[str]) -> str:
    """The one-line message for words a verb's parser did not take: dti's name for another tool's
    flag, or the nearest flag of this verb, and where its help is."""
    flag = next((w for w in words if w.startswith("-")), words[0] if words else "")
    name = flag.split("=", 1)[0]
    where = f"dti {verb}" if verb else "dti"
    if not name.startswith("-"):
        return f"error: unexpected argument {name!r} for `{where}` (see `{where} --help`)"
    renamed = VERB_RENAMED.get(verb or "", {}).get(name) or FOREIGN.get(name)
    if renamed:
        return f"error: {name} is not a flag of `{where}`; dti calls it {renamed} (see `{where} --help`)"
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"error: {name} is not a flag of `{where}`{hint} (see `{where} --help`)"
