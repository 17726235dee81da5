"""Settings written once: a dataclass field that carries everything about itself.

:func:`setting` makes a dataclass field whose metadata (a :class:`Spec`) holds the setting's help,
help group, command-line flag, bounds, choices, parser and how errors describe it. From that one
place the rest is derived: the type check of settings from a file or keywords
(:func:`conform`), the value checks (:func:`check_values`), the command line's flags and help
(``dti.commands.flags``) and the keys a settings file may use (:func:`file_keys`). An error names
the setting as ``{name}`` (:class:`~dti.core.errors.DTIError`), so the library says ``steps`` and
the command line ``--steps``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from dti.core.errors import DTIError

#: The help groups, in the order every verb's help page shows them.
GROUPS = ("inputs", "several subjects at once", "method", "word + LoRA", "schedule", "sampling", "hardware", "outputs")


@dataclass(frozen=True)
class Spec:
    """What a setting is, besides its name, type and default (see the module doc)."""

    help: str
    group: str
    flag: str | None = None  # the command-line flag; None: --name-with-dashes
    aliases: tuple[str, ...] = ()  # other spellings of the flag (--out for --output)
    negated: bool = False  # a true/false setting whose flag turns it off (--no-validation sets validate = false)
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    low: float | None = None  # the smallest allowed value (excluded when low_open)
    low_open: bool = False
    high: float | None = None  # the largest allowed value (a sane limit: past it is a slip, not a run)
    check: Callable[[Any], str | None] | None = None  # a value -> what is wrong with it (read after the name), or None
    parse: Callable[[str], Any] | None = None  # command-line text -> value
    default_text: str | None = None  # the default as help shows it, where the field's own default (None) means "depends"
    describe: str | None = None  # what a good value is, as a type error says it
    example: str | None = None  # a good value, for the fix of an error
    metavar: str | None = None
    repeat: bool = False  # on the command line: repeatable, each use adds to the list
    each: bool = True  # a list value is checked item by item (False: check sees the whole value)
    cli: bool = True  # whether the command line has a flag for it

    def options(self) -> tuple[Any, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field carrying its :class:`Spec`."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"spec": Spec(**spec)})


def specs(cls: type) -> dict[str, Spec]:
    """Field name -> :class:`Spec` of a settings dataclass, in field order."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}


def flag(cls: type, name: str) -> str:
    """The command-line flag of setting ``name`` (``--batch-size``; ``--no-validation`` for ``validate``)."""
    spec = specs(cls).get(name)
    if spec is not None and spec.flag:
        return spec.flag
    return "--" + name.replace("_", "-")


@cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def file_keys(cls: type) -> dict[str, tuple[str, bool]]:
    """Every key a settings file may use -> (field, negated): the field's name, its flag's name without
    dashes (``batch-size``), its aliases, and negated flags (``no-validation = true``)."""
    keys: dict[str, tuple[str, bool]] = {}
    for name, spec in specs(cls).items():
        keys[name] = (name, False)
        for text in (flag(cls, name), *spec.aliases):
            keys[text.lstrip("-")] = (name, spec.negated)
    return keys


# ------------------------------------------------------------------ types
class _Mismatch(Exception):
    """A value that does not have a field's type (internal to :func:`conform`)."""


def conform(cls: type, values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check that every key names a field of ``cls`` and every value has its field's type (from the
    annotations: ints are ints and not bools, floats accept ints, lists are checked item by item,
    ``None`` only where the field is optional); return the values normalized (floats as float, lists
    as list, tuples as tuple). ``source`` names where the settings came from, e.g. ``run.toml`` or
    ``dti.train()``."""
    types_ = field_types(cls)
    for key in values:
        if key not in types_:
            name = key.replace("-", "_") if isinstance(key, str) else str(key)
            close = difflib.get_close_matches(name, list(types_), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it (the settings are `dti train --help`'s flag names)"
            raise DTIError(f"unknown setting {key!r} in {source}; {hint}")
    out = {}
    all_specs = specs(cls)
    for key, value in values.items():
        try:
            out[key] = _conform(value, types_[key])
        except _Mismatch:
            spec = all_specs.get(key)
            want = (spec.describe if spec else None) or _describe(types_[key])
            raise DTIError(f"setting {key!r} in {source} must be {want}, got {show(value)} ({kind(value)})") from None
    return out


def _conform(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
    elif origin in (types.UnionType, typing.Union):
        for arm in args:
            try:
                return _conform(value, arm)
            except _Mismatch:
                pass
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond any float
                raise _Mismatch from None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_conform(v, args[0]) for v in value]
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_conform(v, a) for v, a in zip(value, args))
    elif origin is dict:
        if isinstance(value, Mapping):
            return {_conform(k, args[0]): _conform(v, args[1]) for k, v in value.items()}
    else:
        raise AssertionError(f"a settings class uses an annotation conform does not know: {tp}")
    raise _Mismatch


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is list:
        return f"a list of {_plural(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin is dict:
        return "a table (name = value)"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[tp]


def _plural(tp: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "strings", bool: "true/false values"}[tp]


def kind(value: Any) -> str:
    """What a value is, in words (for an error that says what it got)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, numbers.Integral):
        return "a whole number"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut at ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ values
def _bound_problem(spec: Spec, item: float) -> str | None:
    if isinstance(item, float) and not math.isfinite(item):
        return f"must be a finite number, got {item}"
    if spec.low is not None and (item <= spec.low if spec.low_open else item < spec.low):
        if isinstance(item, int) and spec.low == 1 and not spec.low_open:
            return f"must be positive, got {item}"
        kind = "a whole number" if isinstance(item, int) else "a finite number"
        return f"must be {kind} {'>' if spec.low_open else '>='} {spec.low:g}, got {item}"
    if spec.high is not None and item > spec.high:
        return f"{item} is past the sane limit of {spec.high:g}; use a smaller value"
    return None


def problem(spec: Spec, value: Any) -> str | None:
    """What is wrong with one value by its spec's choices, bounds and check (read after the setting's
    name, braces literal), or None. A list is checked item by item."""
    if value is None:
        return None
    for item in value if isinstance(value, list) and spec.each else [value]:
        options = spec.options()
        if options is not None and item not in options:
            return f"{item!r} is not valid; use one of {', '.join(map(str, options))}"
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            found = _bound_problem(spec, item)
            if found:
                return found
        if spec.check is not None:
            found = spec.check(item)
            if found:
                return found
    return None


def check_values(obj: Any) -> None:
    """Refuse, in one line naming the setting, the first value of a settings dataclass its spec refuses."""
    for name, spec in specs(type(obj)).items():
        found = problem(spec, getattr(obj, name))
        if found:
            raise DTIError("{" + name + "} " + found, settings=[name])


def parse_number_or_word(words: Sequence[str]) -> Callable[[str], Any]:
    """A command-line parser for settings that are one of ``words`` or a number (``--magnitude``)."""

    def parse(text: str) -> Any:
        if text in words:
            return text
        try:
            return float(text)
        except ValueError:
            return text  # the value check names the problem

    return parse


# ------------------------------------------------------------------ seeds: one syntax in every verb
# Sampler limits shared by training's samples and generation.
MAX_SAMPLER_STEPS = 1000  # the schedulers' own training timesteps: more inference steps repeat timesteps
# Guidance scales in use run 1-30 (FLUX's distilled guidance ~3.5, SD 7.5); 100 already saturates every image,
# and past it the prediction's difference is scaled out of half-precision range.
MAX_GUIDANCE = 100.0
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes int64 / uint64; [0, 2**63 - 1] is valid for both
MAX_SEEDS = 1000  # per list: each seed is a generation (or a grid row)
_SEED_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str, setting: str = "seeds") -> list[int]:
    """``0-3`` -> [0, 1, 2, 3]; ``0,1,5`` and ``0 1 5`` -> [0, 1, 5]; ranges and numbers mixed; nothing
    else. The one seed syntax of every verb (``--seeds``, ``--validation-seeds``)."""
    seeds: list[int] = []
    name = "{" + setting + "}"
    fix = "write seeds like 0-3, 0,1,5 or 0 1 5"
    items = [item for item in re.split(r"[,\s]+", str(text).strip()) if item]
    for item in items:
        found = _SEED_ITEM.match(item)
        if not found:
            raise DTIError(f"{name} {text!r} is not valid: {item!r} is not a seed or a range; {fix}", settings=[setting])
        first, last = int(found.group(1)), int(found.group(2) if found.group(2) is not None else found.group(1))
        if last < first:
            raise DTIError(
                f"{name} {text!r} is not valid: the range {item} runs backwards; write it as {last}-{first}",
                settings=[setting],
            )
        if last - first >= MAX_SEEDS or len(seeds) + last - first >= MAX_SEEDS:
            raise DTIError(f"{name} {text!r} asks for more than {MAX_SEEDS} seeds; use fewer (the paper uses 0-3)", settings=[setting])
        seeds.extend(range(first, last + 1))
    return check_seeds(seeds, text, setting)


def check_seeds(seeds: Sequence[Any], shown: object = None, setting: str = "seeds") -> list[int]:
    """``seeds`` as a list of distinct whole numbers in [0, 2**63 - 1], or one line naming ``setting``."""
    values = list(seeds)
    label = repr(shown if shown is not None else ",".join(map(str, values)))
    name = "{" + setting + "}"
    if not values:
        raise DTIError(f"{name} is empty; give one or more seeds, e.g. 0-3", settings=[setting])
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 or s > MAX_SEED for s in values):
        raise DTIError(f"{name} {label} is not valid; seeds are whole numbers from 0 to 2**63 - 1, e.g. 0-3", settings=[setting])
    repeated = sorted({s for s in values if values.count(s) > 1})
    if repeated:
        raise DTIError(f"{name} {label} names seed {repeated[0]} twice; name each seed once", settings=[setting])
    return values
