"""Training settings: one dataclass, the paper's defaults per method and family, validation.

Fields left ``None`` mean "the default for this method and model family" and are filled by
:func:`resolve`; the resolved config is saved with every run so it can be repeated exactly.

Settings reach a run three ways, all checked here before anything loads: ``dti train`` flags,
a ``--config`` file (TOML or JSON; its keys are the TrainConfig fields or the flag names, so
``batch-size = 4``, ``batch_size = 4``, ``no-validation = true`` and ``validation-seed = [0, 1]``
all work; a run's own ``config.json`` is such a file) and ``dti.train(**settings)``.
:func:`check_settings` checks names and types (derived from the field annotations);
:func:`check` checks values.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError

METHODS = ("dti", "ti", "crossinit")
OPTIMIZERS = ("rsgd", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLINGS = ("eos", "legacy")

DEFAULT_VALIDATION_PROMPTS = ("a photo of a {}", "a {} in the snow")

# METHOD.md section 5: per-sample learning rates; with scale_lr they are multiplied by the
# effective batch (batch_size * grad_accum), as the reference launchers do.
BASE_LR = {"rsgd": 0.01, "adamw": 0.005}


@dataclass
class TrainConfig:
    """Everything that determines a run. ``None`` = method/family default."""

    photos: str = ""
    token: str = ""
    init: str = ""
    model: str = ""
    output: str | None = None
    method: str = "dti"
    optimizer: str | None = None  # rsgd for dti, adamw for ti / crossinit
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None  # None: the family's default (SANA: 2 x batch 2)
    lr: float | None = None  # per-sample learning rate (see scale_lr)
    scale_lr: bool = True  # effective lr = lr * batch_size * grad_accum
    kappa: float | None = None  # vMF prior concentration (dti)
    beta: float = 0.0  # RiemannianSGD normalization EMA
    eps: float = 1e-8
    magnitude: str | float = "mean"  # mean | min | max | a positive number (dti)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    crossinit_lambda: float = 1e-5
    resolution: int | None = None
    crop_positions: int = 0  # 0: every crop offset; N: N fixed offsets per photo, VAE-encoded once up front
    encoders: list[str] | None = None  # text encoders that learn the word; None: all (the others keep the initializer's rows)
    family_options: dict[str, Any] | None = None  # the family's shared train/generate choices, e.g. SANA {"instruction": true}
    templates: str | list[str] | None = None  # object | style | bare | a list with {}; None: the model's hint, else object
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False  # regional torch.compile of the denoiser's and text encoders' repeated blocks
    pooling: str = "eos"  # eos: pool CLIP at the end token; legacy: transformers' argmax rule
    log_every: int = 1
    snapshot_every: int = 0
    checkpoint_every: int = 50  # steps between resumable checkpoints (OUTPUT/checkpoints), 0 = none
    keep_checkpoints: int = 2  # the last K checkpoints kept
    max_bad_steps: int = 5  # non-finite steps in a row (skipped) before the run stops, resumable
    validation_every: int = 0  # 0: only at the end
    validation_prompts: list[str] | None = None  # None: the model's hint, else DEFAULT_VALIDATION_PROMPTS
    validation_seeds: list[int] = field(default_factory=lambda: [0, 1])
    validation_steps: int = 25
    validation_guidance: float = 5.0
    validate: bool = True
    overwrite: bool = False
    progress: bool = True

    # ------------------------------------------------------------------ derived
    @property
    def effective_batch(self) -> int:
        return int(self.batch_size or 1) * int(self.grad_accum or 1)

    @property
    def effective_lr(self) -> float:
        assert self.lr is not None
        return self.lr * self.effective_batch if self.scale_lr else self.lr

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        return data

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A ``.toml`` / ``.json`` file of settings, e.g. the ``config.json`` a previous run saved."""
        return cls.from_dict(read_config_file(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Settings keyed by field or flag name (see the module doc); a saved run's ``dti_version`` is ignored."""
        if not isinstance(data, Mapping):
            raise DTIError(f'{source} must hold a table of settings (name = value), not {_kind(data)}; e.g. {{"steps": 400}}')
        values = field_keys({k: v for k, v in data.items() if k not in RECORD_KEYS}, source)
        return cls(**check_settings(values, source))


# Keys a run writes into its config.json besides the fields; read back and ignored.
RECORD_KEYS = ("dti_version", "resolved")

# `dti train` flags whose name is not their field's (dashes aside); a --config key may use either.
FLAG_KEYS = {"out": "output", "option": "family_options", "validation-prompt": "validation_prompts", "validation-seed": "validation_seeds"}
# store_false flags: `no-validation = true` in a file means validate = false.
NEGATED_KEYS = {"no-scale-lr": "scale_lr", "no-validation": "validate", "quiet": "progress"}

CONFIG_SUFFIXES = (".toml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a ``.toml`` or ``.json`` settings file, unchecked (see :meth:`TrainConfig.from_dict`)."""
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise DTIError(f"--config {path} is not a .toml or .json file; write the settings as run.toml or run.json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DTIError(f"cannot read --config {path} ({reason}); pass a readable .toml or .json file") from None
    toml = _toml() if path.suffix.lower() == ".toml" else None
    try:
        data = toml.loads(text) if toml else json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:  # TOMLDecodeError is a ValueError
        kind = path.suffix.lower().lstrip(".").upper()
        reason = " ".join(str(exc).split())
        raise DTIError(f"--config {path} is not valid {kind} ({reason}); fix the file") from None
    if not isinstance(data, dict):
        raise DTIError(f'--config {path} must hold an object of settings (name: value), not {_kind(data)}; e.g. {{"steps": 400}}')
    return data


def _toml() -> Any:
    """The standard library's TOML reader (Python 3.11+), or tomli on 3.10."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise DTIError("reading a .toml --config needs Python 3.11+ or `pip install tomli`; or write the settings as .json") from None
    return tomllib


def field_keys(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` with flag-name keys (``batch-size``, ``no-validation``, ``option``) turned into field names;
    other keys pass unchanged (:func:`check_settings` refuses the unknown ones)."""
    fields = _field_types()
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key
        if isinstance(key, str):
            dashed = key.replace("_", "-")
            if dashed in NEGATED_KEYS:
                if not isinstance(value, bool):
                    raise DTIError(f"setting {key!r} in {source} must be true or false, got {_show(value)} ({_kind(value)})")
                name, value = NEGATED_KEYS[dashed], not value
            elif dashed in FLAG_KEYS:
                name = FLAG_KEYS[dashed]
            elif key.replace("-", "_") in fields:
                name = key.replace("-", "_")
        if name in out:
            raise DTIError(f"{spelled[name]!r} and {key!r} in {source} are the same setting ({name}); keep one")
        out[name], spelled[name] = value, key
    return out


@cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


class _Mismatch(Exception):
    """A value that does not have a field's type (internal to :func:`check_settings`)."""


# Where a field's meaning is narrower than its annotation, the message says so.
_DESCRIPTIONS = {
    "magnitude": "mean, min, max or a positive number",
    "templates": "a template set name (object, style or bare) or a list of prompts with {}",
    "family_options": "a table of the family's choices, e.g. {instruction = true}",
    "adam_betas": "a pair of numbers, e.g. [0.9, 0.999]",
}


def check_settings(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check that every key is a :class:`TrainConfig` field and every value has its field's type
    (from the annotations: ints are ints and not bools, floats accept ints, lists are checked
    item by item, ``None`` only where the field is optional); return the values normalized
    (floats as float, lists as list, ``adam_betas`` as a tuple). ``source`` names where the
    settings came from in the one-line :class:`DTIError`, e.g. ``"run.toml"`` or ``"dti.train()"``.
    Values are checked by :func:`check`."""
    types_ = _field_types()
    for key in values:
        if key not in types_:
            name = key.replace("-", "_") if isinstance(key, str) else str(key)
            close = difflib.get_close_matches(name, list(types_), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it (the settings are `dti train --help`'s flag names)"
            raise DTIError(f"unknown setting {key!r} in {source}; {hint}")
    out = {}
    for key, value in values.items():
        try:
            out[key] = _conform(value, types_[key])
        except _Mismatch:
            want = _DESCRIPTIONS.get(key) or _describe(types_[key])
            raise DTIError(f"setting {key!r} in {source} must be {want}, got {_show(value)} ({_kind(value)})") from None
    return out


def _conform(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or :class:`_Mismatch`."""
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
        raise AssertionError(f"TrainConfig uses an annotation check_settings does not know: {tp}")
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


def _kind(value: Any) -> str:
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


def _show(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAGNITUDES = ("mean", "min", "max")

# Upper sanity limits: a value past these is a typo, not a run (the paper trains 400-500 steps on
# 3-6 photos at 512-1024 px).
MAX_STEPS = 1_000_000  # days of training even on the smallest family; 4e6 for 400 is a slip
MAX_CROP_POSITIONS = 64  # fixed crop offsets per photo: more is every offset at 768 px in all but very wide photos
MAX_BATCH = 1024  # batch_size and grad_accum: a subject has 3-6 photos; 1024 crops at 512 px already exceed any GPU
MAX_RESOLUTION = 4096  # the largest native size of a supported family (SANA 4K)
MAX_SAMPLER_STEPS = 1000  # the schedulers' training timesteps; DDIM/DDPM refuse more inference steps
# A fixed row norm: the vocabularies' norms are ~0.4-1 (SD's CLIP ~0.4, T5 larger); 1e4 is already far
# outside, and a norm of 1e30 overflows fp16 (max 65504) and bf16 activations in the text encoder.
MAX_MAGNITUDE = 1e4
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes int64 / uint64; [0, 2**63 - 1] is valid for both


def _finite(flag: str, value: float | None, low: float, *, strict: bool) -> None:
    """``value`` (unless None) must be finite and > ``low`` (``strict``) or >= ``low``."""
    if value is None:
        return
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        raise DTIError(f"{flag} must be a finite number {'>' if strict else '>='} {low:g}, got {value}")


def check_token_text_like(token: str) -> None:
    """The placeholder is one printable word of sane length (it also names the A1111 file)."""
    if token and (any(ch.isspace() or not ch.isprintable() for ch in token) or len(token) > 100):
        raise DTIError(f"--token {token[:40]!r} must be a single word (printable, at most 100 characters), e.g. '<my-dog>'")


def check_prompt_template(text: str, what: str) -> None:
    """A prompt template holds ``{}`` (where the token goes) once, and no other ``{...}`` field
    (``str.format`` would fail on ``{style}`` or ``{0}`` at the first step); literal braces are ``{{ }}``."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise DTIError(f"{what} {text!r} is not a valid template ({exc}); write {{}} where the token goes, {{{{ }}}} for braces") from None
    if fields != [""]:
        other = [f"{{{name}}}" for name in fields if name]
        problem = f"has the field {other[0]}" if other else ("needs {} where the token goes" if not fields else "has {} more than once")
        raise DTIError(f"{what} {text!r} {problem}; write {{}} once where the token goes (and {{{{ }}}} for literal braces)")


def check(config: TrainConfig) -> None:
    """Refuse settings no run can use (before anything is loaded or written)."""
    c = config
    check_settings({f.name: getattr(c, f.name) for f in dataclasses.fields(c)}, "TrainConfig")
    if c.method not in METHODS:
        raise DTIError(f"--method {c.method!r} is not known; use one of {', '.join(METHODS)}")
    if c.optimizer is not None and c.optimizer not in OPTIMIZERS:
        raise DTIError(f"--optimizer {c.optimizer!r} is not known; use one of {', '.join(OPTIMIZERS)}")
    if c.optimizer == "rsgd" and c.method != "dti":
        raise DTIError(f"--optimizer rsgd trains directions on the sphere and needs --method dti, not {c.method}")
    if c.precision not in PRECISIONS:
        raise DTIError(f"--precision {c.precision!r} is not valid; use one of {', '.join(PRECISIONS)}")
    if c.pooling not in POOLINGS:
        raise DTIError(f"--pooling {c.pooling!r} is not valid; use eos or legacy")
    positive = {"--steps": c.steps, "--batch-size": c.batch_size, "--grad-accum": c.grad_accum}
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise DTIError(f"{flag} must be positive, got {value}")
    limits = {"--steps": (c.steps, MAX_STEPS), "--batch-size": (c.batch_size, MAX_BATCH), "--grad-accum": (c.grad_accum, MAX_BATCH)}
    for flag, (value, limit) in limits.items():
        if value is not None and value > limit:
            raise DTIError(f"{flag} {value} is past the sane limit of {limit}; use a smaller value")
    _finite("--lr", c.lr, 0.0, strict=True)
    _finite("--kappa", c.kappa, 0.0, strict=False)  # any finite strength; inf/nan make the vMF prior meaningless
    _finite("--eps", c.eps, 0.0, strict=True)
    _finite("--weight-decay", c.weight_decay, 0.0, strict=False)
    _finite("--crossinit-lambda", c.crossinit_lambda, 0.0, strict=False)
    _finite("--validation-guidance", c.validation_guidance, 0.0, strict=False)
    if not 0.0 <= c.beta < 1.0:
        raise DTIError(f"--beta must be in [0, 1), got {c.beta}")
    if not all(0.0 <= b < 1.0 for b in c.adam_betas):
        raise DTIError(f"adam_betas must be two numbers in [0, 1), got {list(c.adam_betas)}; the default is [0.9, 0.999]")
    if c.resolution is not None and (c.resolution <= 0 or c.resolution % 8):
        raise DTIError(f"--resolution {c.resolution} must be a positive multiple of 8, e.g. 512, 768 or 1024")
    if c.resolution is not None and c.resolution > MAX_RESOLUTION:
        raise DTIError(f"--resolution {c.resolution} is larger than any supported model's ({MAX_RESOLUTION}); use e.g. 512, 768 or 1024")
    _check_magnitude(c.magnitude)
    for flag, seed in [("--seed", c.seed)] + [("--validation-seed", s) for s in c.validation_seeds]:
        if not 0 <= seed <= MAX_SEED:
            raise DTIError(f"{flag} {seed} is out of range; a seed must be in [0, 2**63 - 1]")
    if not c.validation_seeds:
        raise DTIError("--validation-seed is empty; give at least one sample seed, e.g. [0, 1], or use --no-validation")
    if c.encoders is not None and not c.encoders:
        raise DTIError("--encoders is an empty list; name at least one text encoder, or leave it out for all")
    if c.templates is not None:
        from dti.training.data import TEMPLATE_SETS

        if isinstance(c.templates, str) and c.templates not in TEMPLATE_SETS:
            raise DTIError(f"--templates {c.templates!r} is not valid; use one of {', '.join(TEMPLATE_SETS)}")
        if not isinstance(c.templates, str):
            if not c.templates:
                raise DTIError("templates must be a set name or a list of prompts that each contain {}")
            for template in c.templates:
                check_prompt_template(template, "a template")
    if c.validation_prompts is not None and not c.validation_prompts:
        raise DTIError("--validation-prompt is an empty list; give at least one prompt with {}, or leave it out for the defaults")
    for prompt in c.validation_prompts or []:
        check_prompt_template(prompt, "--validation-prompt")
    if not 0 <= c.crop_positions <= MAX_CROP_POSITIONS:
        raise DTIError(f"--crop-positions {c.crop_positions} is not valid; use 0 (every offset) or 1 to {MAX_CROP_POSITIONS}")
    if c.keep_checkpoints < 1 or c.max_bad_steps < 1:
        raise DTIError("--keep-checkpoints and --max-bad-steps must be at least 1")
    check_token_text_like(c.token)
    for name in ("log_every", "snapshot_every", "validation_every", "checkpoint_every"):
        if getattr(c, name) < 0:
            raise DTIError(f"--{name.replace('_', '-')} must be >= 0")
    if c.validation_steps <= 0:
        raise DTIError("--validation-steps must be positive")
    if c.validation_steps > MAX_SAMPLER_STEPS:
        raise DTIError(f"--validation-steps {c.validation_steps} is more than the schedulers' {MAX_SAMPLER_STEPS} timesteps; use e.g. 25")
    if c.method != "dti" and c.magnitude != "mean":
        raise DTIError(f"--magnitude fixes the norm of a dti vector; method {c.method} trains a free vector")


def _check_magnitude(spec: str | float) -> None:
    """mean | min | max, or a finite number in (0, MAX_MAGNITUDE]."""
    if isinstance(spec, str) and spec in MAGNITUDES:
        return
    try:
        value = float(spec)
    except ValueError:
        raise DTIError(f"--magnitude {spec!r} is not valid; use mean, min, max or a positive number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_MAGNITUDE):
        raise DTIError(f"--magnitude {spec} must be a finite number in (0, {MAX_MAGNITUDE:g}]; vocabulary norms are ~0.4-1, or use mean")


def ignored_settings(config: TrainConfig) -> list[str]:
    """One line per setting the run was given that cannot change it, given the method, optimizer and
    validation choices (e.g. ``--kappa`` with ``--method ti``): a warning, not a refusal, since a
    settings file shared across methods is a normal thing to have."""
    c, d = config, TrainConfig()
    rsgd = c.method == "dti" and c.optimizer in (None, "rsgd")
    out = []
    if c.kappa is not None and c.method != "dti":
        out.append(f"--kappa has no effect with --method {c.method} (it is DTI's von Mises-Fisher prior)")
    if c.beta != d.beta and not rsgd:
        out.append("--beta has no effect without RiemannianSGD (it is its gradient-normalization EMA); it needs --method dti")
    if c.crossinit_lambda != d.crossinit_lambda and c.method != "crossinit":
        out.append(f"--crossinit-lambda has no effect with --method {c.method}")
    if rsgd and (c.weight_decay != d.weight_decay or tuple(c.adam_betas) != tuple(d.adam_betas)):
        out.append("--weight-decay and adam_betas are AdamW's; RiemannianSGD (--method dti) ignores them (or pass --optimizer adamw)")
    validation = ("validation_every", "validation_prompts", "validation_seeds", "validation_steps", "validation_guidance")
    changed = [name for name in validation if getattr(c, name) != getattr(d, name)]
    if not c.validate and changed:
        out.append(f"--{changed[0].replace('_', '-')} has no effect with --no-validation")
    return out


def resolve(
    config: TrainConfig, family_defaults: dict[str, Any], native_resolution: int, hints: dict[str, Any] | None = None
) -> TrainConfig:
    """Fill every ``None`` with the default of the method and model family; ``hints`` are a
    model's own suggestions (its ``dti.json``: templates and sample prompts in its vocabulary)."""
    c = dataclasses.replace(config)
    hints = hints or {}
    if c.templates is None:
        c.templates = hints.get("templates", "object")
    if c.validation_prompts is None:
        c.validation_prompts = list(hints.get("validation_prompts", DEFAULT_VALIDATION_PROMPTS))
    if c.optimizer is None:
        c.optimizer = "rsgd" if c.method == "dti" else "adamw"
    if c.steps is None:
        c.steps = int(family_defaults.get("steps", 400))
    if c.batch_size is None:
        c.batch_size = int(family_defaults.get("batch_size", 4))
    if c.grad_accum is None:
        c.grad_accum = int(family_defaults.get("grad_accum", 1))
    if c.lr is None:
        c.lr = float(family_defaults.get("lr", BASE_LR[c.optimizer])) if c.optimizer == "rsgd" else BASE_LR[c.optimizer]
    if c.kappa is None:
        c.kappa = float(family_defaults.get("kappa", 1e-4)) if c.method == "dti" else 0.0
    if c.resolution is None:
        default = family_defaults.get("resolution")
        c.resolution = min(int(default), native_resolution) if default else native_resolution
    check(c)
    return c
