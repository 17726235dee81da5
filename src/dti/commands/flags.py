"""Flags made from settings: each setting's flag, type, choices, help and default come from its field
(:mod:`dti.core.settings`), so the command line and the library cannot disagree about a setting.

:func:`add_settings` adds settings of a settings dataclass to a parser, in the help groups every
verb shows in the same order; :func:`given` reads back the ones the command line gave; :func:`flag`
names any setting as its flag, for errors (``dti.core.errors.naming``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from dti.commands.parser import ExtendSeeds, number, seeds, whole
from dti.core.errors import DTIError
from dti.core.settings import GROUPS, Spec, field_types, specs
from dti.training.config import TrainConfig

#: Settings of the verbs (not of a training run) whose flag is not ``--name-with-dashes``.
VERB_FLAGS = {"n": "-n", "photos": "PHOTOS", "to": "--to", "top": "--top"}


def flag(name: str) -> str:
    """The flag that sets ``name``: a training setting's own flag, else a verb's, else ``--name-with-dashes``."""
    spec = specs(TrainConfig).get(name)
    if spec is not None:
        if not spec.cli:  # set only in a --config file, by its name
            return name
        return spec.flag or "--" + name.replace("_", "-")
    return VERB_FLAGS.get(name, "--" + name.replace("_", "-"))


def _usage_errors(parse: Any) -> Any:
    """``parse`` whose DTIError is argparse's usage error (one line, exit 2): argparse lets any other
    exception of a type function escape as a traceback. The flag argparse already names is not repeated."""

    def read(text: str) -> Any:
        try:
            return parse(text)
        except DTIError as exc:
            message = exc.render(flag)
            named = flag(exc.settings[0]) + " " if exc.settings else ""
            raise argparse.ArgumentTypeError(message.removeprefix(named)) from None

    read.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in "invalid <name> value"
    return read


def _default_help(spec: Spec, default: Any) -> str:
    if spec.default_text:
        return f" [default: {spec.default_text}]"
    if default is None or isinstance(default, bool) or default == "":
        return ""
    shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    return f" [default: {shown}]"


def _kind(tp: Any) -> Any:
    """The plain type behind an optional annotation (``int | None`` -> int)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def groups_of(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The parser's help groups, made once each in :data:`~dti.core.settings.GROUPS` order."""
    made = parser.__dict__.setdefault("_dti_groups", {})
    for name in GROUPS:
        if name not in made:
            made[name] = parser.add_argument_group(name)
    return made


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    names: Iterable[str] | None = None,
    *,
    keep_defaults: Sequence[str] = (),
    helps: dict[str, str] | None = None,
) -> None:
    """Add the flags of ``cls``'s settings (``names``: those only) to ``parser``, each in its help group.
    A flag left out is absent from the parsed arguments (so a ``--config`` file or a method default
    can supply it), except the ``keep_defaults``, which take the field's default."""
    all_specs = specs(cls)
    kinds = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    groups = groups_of(parser)
    for name in names or all_specs:
        spec, tp = all_specs[name], _kind(kinds[name])
        if not spec.cli:
            continue
        field = fields[name]
        default_value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        default = default_value if name in keep_defaults else argparse.SUPPRESS
        text = (helps or {}).get(name, spec.help) + _default_help(spec, default_value)
        group = groups[spec.group]
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": text}
        if spec.flag and not spec.flag.startswith("-"):  # a positional (the photo folder)
            group.add_argument(name, nargs="?", metavar=spec.flag, default=default, help=text)
            continue
        flags = [spec.flag or "--" + name.replace("_", "-"), *spec.aliases]
        if tp is bool:
            kwargs["action"] = "store_false" if spec.negated else "store_true"
            kwargs["help"] = (helps or {}).get(name, spec.help)
        elif typing.get_origin(tp) is list and typing.get_args(tp)[0] is int:
            kwargs.update(nargs="+", type=seeds, action=ExtendSeeds, metavar=spec.metavar or "SEEDS")
        elif spec.repeat:
            kwargs.update(action="append", type=_usage_errors(spec.parse) if spec.parse else str, metavar=spec.metavar)
        else:
            parse = _usage_errors(spec.parse) if spec.parse else {int: whole, float: number}.get(tp, str)
            kwargs.update(type=parse, metavar=spec.metavar)
            options = spec.options()
            if options is not None and spec.parse is None:
                kwargs["choices"] = options
        group.add_argument(*flags, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` the command line gave (a repeated ``KEY=VALUE`` flag as a table)."""
    all_specs = specs(cls)
    kinds = field_types(cls)
    out: dict[str, Any] = {}
    for name, value in vars(args).items():
        if name not in all_specs:
            continue
        if typing.get_origin(_kind(kinds[name])) is dict and isinstance(value, list):
            value = dict(value)
        out[name] = value
    return out
