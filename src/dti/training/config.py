"""Training settings: one dataclass whose fields say everything about themselves, and the checks.

Every setting is written once, as a field of :class:`TrainConfig` made by
:func:`~dti.core.settings.setting`: its type (the annotation), default, bounds, choices, help, help
group and flag. The ``dti train`` flags (:mod:`dti.commands.flags`), the keys a ``--config`` file may
use, the type check of ``dti.train(**settings)`` and the value checks are derived from it. Fields
left ``None`` mean "the default for this method and model family" and are filled by :func:`resolve`;
the resolved config is saved with every run so it can be repeated exactly.

Settings reach a run three ways, all checked here before anything loads: ``dti train`` flags, a
``--config`` file (TOML or JSON; its keys are the fields or the flag names, so ``batch-size = 4``,
``batch_size = 4``, ``no-validation = true`` and ``validation-seeds = [0, 1]`` all work; a run's own
``config.json`` is such a file) and ``dti.train(**settings)``. :func:`check_settings` checks names and
types; :func:`check` checks values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dti import methods
from dti.core.devices import PRECISIONS
from dti.core.errors import DTIError, Line
from dti.core.settings import (
    MAX_GUIDANCE,
    MAX_SAMPLER_STEPS,
    MAX_SEED,
    check_values,
    conform,
    file_keys,
    kind,
    parse_number_or_word,
    setting,
    show,
)
from dti.text.templates import DEFAULT_VALIDATION_PROMPTS, TEMPLATE_SETS, template_problem
from dti.text.vocab import MAGNITUDES, magnitude_problem
from dti.text.words import token_problem
from dti.training import memory, quantize, residency

POOLINGS = ("eos", "legacy")

# Upper sanity limits: a value past these is a typo, not a run (the paper trains 400-500 steps on
# 3-6 photos at 512-1024 px).
MAX_STEPS = 1_000_000  # days of training even on the smallest family; 4e6 for 400 is a slip
MAX_CROP_POSITIONS = 64  # fixed crop offsets per photo: more is every offset at 768 px in all but very wide photos
MAX_BATCH = 1024  # batch_size and grad_accum: a subject has 3-6 photos; 1024 crops at 512 px already exceed any GPU
MAX_RESOLUTION = 4096  # the largest native size of a supported family (SANA 4K)
# Usual rates are 1e-3 to 1e-1 (TI 5e-3, RSGD 1e-2); from ~1e2 up every step throws the row out of the vocabulary
# (such runs stop cleanly as non-finite), so a rate past 1e3 is a typo, not an experiment.
MAX_LR = 1e3
MAX_KAPPA = 1e6  # the paper's prior strength is 1e-4; at 1e6 the prior already pins the word to its initializer
MAX_EPS = 1.0  # RiemannianSGD's epsilon guards a division by the gradient norm (1e-8); at 1 it replaces the gradient
MAX_LORA_RANK = 1024  # a LoRA's rank: past this it is no longer low-rank for any supported model


def _resolution(value: int) -> str | None:
    if value > MAX_RESOLUTION:
        return f"{value} is larger than any supported model's ({MAX_RESOLUTION}); use e.g. 512, 768 or 1024"
    return None if value % 8 == 0 else f"{value} must be a positive multiple of 8, e.g. 512, 768 or 1024"


def _templates(value: str | list[str]) -> str | None:
    if isinstance(value, str):
        return None if value in TEMPLATE_SETS else f"{value!r} is not valid; use one of {', '.join(TEMPLATE_SETS)}"
    return next(filter(None, (template_problem(t) for t in value)), None)


def _names(text: str) -> list[str]:
    """``text_encoder,text_encoder_2`` -> the names."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value), the value read as true/false, a whole number, a number or text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DTIError(f"{{family_options}} {text!r} is not KEY=VALUE, e.g. instruction=true", settings=["family_options"])
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    for number in (int, float):
        try:
            return key.strip(), number(value)
        except ValueError:
            pass
    return key.strip(), value


def _seed(value: int) -> str | None:
    return None if 0 <= value <= MAX_SEED else f"{value} is out of range; a seed must be in [0, 2**63 - 1]"


def _unit_interval(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def _betas(value: tuple[float, float]) -> str | None:
    good = all(0.0 <= b < 1.0 for b in value)
    return None if good else f"must be two numbers in [0, 1), got {list(value)}; the default is [0.9, 0.999]"


@dataclass
class TrainConfig:
    """Everything that determines a run. ``None`` = the method's or the family's default."""

    # ------------------------------------------------------------------ inputs
    photos: str = setting("", help="folder of jpg/png/webp photos of the subject", group="inputs", flag="PHOTOS")
    token: str = setting(
        "",
        help="the new word, e.g. '<my-dog>' (must not exist in the vocabulary)",
        group="inputs",
        check=lambda token: token_problem(token) if token else None,  # a missing token is said when the run starts
    )
    init: str = setting("", help="initializer: the subject's class word, e.g. 'dog'; several words give several vectors", group="inputs")
    model: str = setting(
        "", help="diffusers pipeline: hub id, local folder, or dti-mini (SD 1.x/2.x, SDXL, SD3, FLUX, SANA, PixArt-Sigma)", group="inputs"
    )
    output: str | None = setting(
        None, help="run folder to create (refused if it holds results, unless --overwrite)", group="inputs", aliases=("--out",)
    )
    encoders: list[str] | None = setting(
        None,
        help="comma-separated text encoders that learn the word, e.g. text_encoder for FLUX's CLIP only; "
        "the others keep the initializer's rows",
        group="inputs",
        default_text="all",
        parse=_names,
        metavar="NAMES",
    )
    family_options: dict[str, Any] | None = setting(
        None,
        help="a family choice training and generation share, recorded in the concept (repeatable): SANA instruction=true "
        "(its complex human instruction), max_sequence_length=N (T5 / Gemma families), FLUX guidance=3.5",
        group="inputs",
        flag="--option",
        metavar="KEY=VALUE",
        parse=_option,
        repeat=True,
        describe="a table of the family's choices, e.g. {instruction = true}",
    )
    # ------------------------------------------------------------------ method
    method: str = setting(
        "dti",
        help="how the word is learned: " + "; ".join(f"{m.name}: {m.about}" for m in methods.METHODS.values()),
        group="method",
        choices=lambda: tuple(methods.METHODS),
    )
    optimizer: str | None = setting(
        None,
        help="rsgd (Riemannian SGD on the sphere) or adamw; with --method dti, adamw is the paper's ablation",
        group="method",
        choices=tuple(methods.OPTIMIZERS),
        default_text="the method's: rsgd for dti, adamw otherwise",
    )
    magnitude: str | float | None = setting(
        None,
        help=f"the fixed norm of a fixed-norm method, per encoder: the {', '.join(MAGNITUDES)} of the vocabulary's norms, or a number",
        group="method",
        parse=parse_number_or_word(MAGNITUDES),
        check=magnitude_problem,
        default_text="the method's: mean for dti, median for ti-renorm",
        describe=f"{', '.join(MAGNITUDES)} or a positive number",
    )
    kappa: float | None = setting(
        None,
        help="von Mises-Fisher prior strength toward the initializer (dti)",
        group="method",
        low=0.0,
        high=MAX_KAPPA,
        default_text="the family's: 1e-4; SANA 5e-5",
    )
    beta: float = setting(0.0, help="EMA factor of RiemannianSGD's gradient normalization, in [0, 1)", group="method", check=_unit_interval)
    eps: float = setting(1e-8, help="RiemannianSGD's normalization epsilon", group="method", low=0.0, low_open=True, high=MAX_EPS)
    adam_betas: tuple[float, float] = setting(
        (0.9, 0.999), help="AdamW's betas", group="method", cli=False, check=_betas, describe="a pair of numbers, e.g. [0.9, 0.999]"
    )
    weight_decay: float = setting(1e-2, help="AdamW's weight decay", group="method", low=0.0)
    crossinit_lambda: float = setting(1e-5, help="crossinit's pull toward its initial vector", group="method", low=0.0)
    pooling: str = setting(
        "eos",
        help="where CLIP pools with new tokens: eos (the end token, as the base model) or legacy "
        "(transformers' highest-id rule, which picks the placeholder)",
        group="method",
        choices=POOLINGS,
    )
    # ------------------------------------------------------------------ schedule
    steps: int | None = setting(
        None, help="optimizer steps", group="schedule", low=1, high=MAX_STEPS, default_text="the family's: 400; SANA 500"
    )
    batch_size: int | None = setting(
        None, help="photos per batch", group="schedule", low=1, high=MAX_BATCH, default_text="the family's: 4; SANA 2"
    )
    grad_accum: int | None = setting(
        None, help="batches accumulated per step", group="schedule", low=1, high=MAX_BATCH, default_text="the family's: 1; SANA 2"
    )
    lr: float | None = setting(
        None,
        help="per-sample learning rate (times batch size x grad accumulation unless --no-scale-lr)",
        group="schedule",
        low=0.0,
        low_open=True,
        high=MAX_LR,
        default_text="the optimizer's: 0.01 rsgd, 0.005 adamw",
    )
    scale_lr: bool = setting(
        True,
        help="use --lr as given instead of multiplying it by batch size x grad accumulation",
        group="schedule",
        flag="--no-scale-lr",
        negated=True,
    )
    resolution: int | None = setting(
        None,
        help="training crop size in pixels",
        group="schedule",
        low=1,
        check=_resolution,
        default_text="the family's: 768 for SDXL, native otherwise",
    )
    crop_positions: int = setting(
        0,
        help="N fixed crop offsets per photo, VAE-encoded once before the first step (no VAE work while training; "
        "less translation augmentation); 0 = every offset",
        group="schedule",
        low=0,
        high=MAX_CROP_POSITIONS,
    )
    templates: str | list[str] | None = setting(
        None,
        help="prompt templates: TI's object or style prompts, or bare 'a {}'",
        group="schedule",
        check=_templates,
        each=False,
        default_text="the model's dti.json, else object",
        describe="a template set name (object, style or bare) or a list of prompts with {}",
        metavar="{" + ",".join(TEMPLATE_SETS) + "}",
    )
    seed: int = setting(0, help="random seed", group="schedule", check=_seed)
    # ------------------------------------------------------------------ hardware
    precision: str = setting(
        "auto",
        help="model weights' precision; the learned rows stay fp32 (auto = bf16 on a GPU, fp32 on the CPU)",
        group="hardware",
        choices=PRECISIONS,
    )
    device: str = setting("auto", help="torch device (auto = cuda if available)", group="hardware")
    gradient_checkpointing: bool = setting(False, help="trade compute for memory in the denoiser", group="hardware")
    quantize: str = setting(
        "none",
        help="frozen weights in fewer bits: the denoiser's and the text encoders' linear layers, weight-only "
        "(int8, fp8: torchao; nf4: bitsandbytes; int4: optimum-quanto; the word's rows, embedding tables, norms and the loss "
        "stay in --precision; a --lora learns beside them in fp32)",
        group="hardware",
        choices=quantize.MODES,
    )
    offload: str = setting(
        "none",
        help="frozen weights on the device only while they run, forward and backward: model = the denoiser and each "
        "learning encoder whole, group = block by block (least memory, slowest); a --lora's own weights stay; no effect on a CPU run",
        group="hardware",
        choices=residency.MODES,
    )
    vram: int | None = setting(
        None,
        help="the card's memory in GiB: the cheapest memory savers that fit by dti's estimate, in this order: "
        "--gradient-checkpointing, --quantize int8, --offload group, --quantize nf4, micro-batches of 1, a lower --resolution; "
        "the memory flags you give are kept; one line says what it chose",
        group="hardware",
        choices=memory.CARDS,
    )
    compile: bool = setting(
        False,
        help="torch.compile the denoiser's and the text encoders' repeated blocks (regional); the first step pays the compilation",
        group="hardware",
    )
    # ------------------------------------------------------------------ word + LoRA
    lora: int | None = setting(
        None,
        help="also train a LoRA of this rank on the denoiser's attention layers, jointly with the word (AdamW at --lora-lr; "
        "the word keeps its method and optimizer)",
        group="word + LoRA",
        low=1,
        high=MAX_LORA_RANK,
        default_text="none",
        metavar="RANK",
    )
    lora_alpha: float | None = setting(
        None,
        help="the LoRA's alpha (its update is scaled by alpha / rank)",
        group="word + LoRA",
        low=0.0,
        low_open=True,
        default_text="the rank",
    )
    lora_lr: float = setting(
        1e-4, help="the LoRA's AdamW learning rate (not scaled by the batch)", group="word + LoRA", low=0.0, low_open=True, high=MAX_LR
    )
    lora_text_encoder: bool = setting(
        False, help="the LoRA also on the attention of the text encoders that learn the word", group="word + LoRA"
    )
    word_steps: int | None = setting(
        None,
        help="the word stops learning after this many steps (0: only the LoRA learns)",
        group="word + LoRA",
        low=0,
        high=MAX_STEPS,
        default_text="--steps",
    )
    lora_steps: int | None = setting(
        None, help="the LoRA stops learning after this many steps", group="word + LoRA", low=0, high=MAX_STEPS, default_text="--steps"
    )
    # ------------------------------------------------------------------ outputs
    log_every: int = setting(1, help="steps between train_log.jsonl records", group="outputs", low=0)
    snapshot_every: int = setting(0, help="steps between concept snapshots, 0 = none", group="outputs", low=0)
    checkpoint_every: int = setting(50, help="steps between resumable checkpoints in OUTPUT/checkpoints, 0 = none", group="outputs", low=0)
    keep_checkpoints: int = setting(2, help="how many of the last checkpoints to keep", group="outputs", low=1)
    max_bad_steps: int = setting(5, help="non-finite steps in a row (each skipped) before the run stops, resumably", group="outputs", low=1)
    overwrite: bool = setting(
        False,
        help="replace the results of an earlier run in --output, once the new run has finished (files dti did not write are kept)",
        group="outputs",
    )
    progress: bool = setting(True, help="no progress bar", group="outputs", flag="--quiet", negated=True)
    # ------------------------------------------------------------------ samples
    validation_every: int = setting(
        0, help="steps between sample grids (the first at step 0, before training), 0 = only at the end", group="sampling", low=0
    )
    validation_prompts: list[str] | None = setting(
        None,
        help="sample prompt with {} for the token (repeatable)",
        group="sampling",
        flag="--validation-prompt",
        repeat=True,
        check=template_problem,
        default_text="the model's dti.json, else 'a photo of a {}', 'a {} in the snow'",
    )
    validation_seeds: list[int] = setting(
        default_factory=lambda: [0, 1],
        help="sample seeds: 0-3, 0,1,5 or 0 1 5 (one grid column each)",
        group="sampling",
        aliases=("--validation-seed",),
        check=_seed,
        metavar="SEEDS",
    )
    sample_steps: int = setting(25, help="sampler steps of the samples", group="sampling", low=1, high=MAX_SAMPLER_STEPS)
    validation_guidance: float = setting(5.0, help="guidance scale of the samples", group="sampling", low=0.0, high=MAX_GUIDANCE)
    validate: bool = setting(True, help="write no sample images", group="sampling", flag="--no-validation", negated=True)

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
            raise DTIError(f'{source} must hold a table of settings (name = value), not {kind(data)}; e.g. {{"steps": 400}}')
        values = check_settings(field_keys({k: v for k, v in data.items() if k not in RECORD_KEYS}, source), source)
        if "dti_version" in data and values.get("magnitude") == "mean" and values.get("method") in methods.METHODS:
            if not methods.METHODS[values["method"]].fixed_norm:  # runs before magnitude defaulted by method recorded "mean"
                values["magnitude"] = None
        return cls(**values)


# Keys a run writes into its config.json besides the fields; read back and ignored.
RECORD_KEYS = ("dti_version", "resolved")
# Settings renamed since runs were first saved: an earlier run's config.json still reads.
RENAMED = {"validation_steps": "sample_steps", "validation-steps": "sample_steps"}

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
        file_kind = path.suffix.lower().lstrip(".").upper()
        reason = " ".join(str(exc).split())
        raise DTIError(f"--config {path} is not valid {file_kind} ({reason}); fix the file") from None
    if not isinstance(data, dict):
        raise DTIError(f'--config {path} must hold an object of settings (name: value), not {kind(data)}; e.g. {{"steps": 400}}')
    return data


def _toml() -> Any:
    """The standard library's TOML reader (Python 3.11+)."""
    import tomllib

    return tomllib


def field_keys(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` with flag-name keys (``batch-size``, ``no-validation``, ``option``) and renamed settings
    turned into field names; other keys pass unchanged (:func:`check_settings` refuses the unknown ones)."""
    keys = file_keys(TrainConfig)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key
        if isinstance(key, str):
            found = keys.get(key) or keys.get(key.replace("_", "-")) or keys.get(key.replace("-", "_"))
            if key in RENAMED:
                found = (RENAMED[key], False)
            if found is not None:
                name, negated = found
                if negated:
                    if not isinstance(value, bool):
                        raise DTIError(f"setting {key!r} in {source} must be true or false, got {show(value)} ({kind(value)})")
                    value = not value
        if name in out:
            raise DTIError(f"{spelled[name]!r} and {key!r} in {source} are the same setting ({name}); keep one")
        out[name], spelled[name] = value, key
    return out


def check_settings(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check that every key is a :class:`TrainConfig` field and every value has its field's type; return
    the values normalized (see :func:`~dti.core.settings.conform`). ``source`` names where the settings
    came from in the one-line :class:`DTIError`, e.g. ``"run.toml"`` or ``"dti.train()"``. Values are
    checked by :func:`check`."""
    return conform(TrainConfig, values, source)


def check(config: TrainConfig) -> None:
    """Refuse settings no run can use (before anything is loaded or written)."""
    c = config
    check_settings({f.name: getattr(c, f.name) for f in dataclasses.fields(c)}, "TrainConfig")
    methods.get(c.method)  # an unknown method names the known ones
    check_values(c)
    methods.check(c)
    if not c.validation_seeds:
        raise DTIError(
            "{validation_seeds} is empty; give at least one sample seed, e.g. 0 1, or use {validate}",
            settings=["validation_seeds", "validate"],
        )
    if c.quantize != "none" and (problem := quantize.missing(c.quantize)) is not None:
        raise DTIError(problem, settings=["quantize"])
    lora_problem(c)
    if c.offload != "none" and c.compile:
        raise DTIError(
            "{offload} moves the weights the compiled blocks read; use one of {offload} and {compile}", settings=["offload", "compile"]
        )
    if c.encoders is not None and not c.encoders:
        raise DTIError("{encoders} is an empty list; name at least one text encoder, or leave it out for all", settings=["encoders"])
    if isinstance(c.templates, list) and not c.templates:
        raise DTIError("{templates} is an empty list; give a set name or prompts that each contain {}", settings=["templates"])
    if c.validation_prompts is not None and not c.validation_prompts:
        raise DTIError(
            "{validation_prompts} is an empty list; give at least one prompt with {}, or leave it out for the defaults",
            settings=["validation_prompts"],
        )


def lora_problem(c: TrainConfig) -> None:
    """Refuse a LoRA with what it does not work with yet (one line). Every ``--quantize`` scheme takes one:
    PEFT wraps the quantized layer (torchao's weights: ``TorchaoLoraLinear``; bitsandbytes' and quanto's
    layers, ``nn.Linear`` subclasses: its plain ``Linear``), the LoRA's own weights in full precision.
    ``--offload`` takes one too: only the frozen base weights come and go, the LoRA's (trainable) stay
    on the device (:mod:`~dti.training.residency` moves frozen parameters only)."""
    if not c.lora:
        return
    if c.precision == "fp16":
        raise DTIError("{lora} with {precision} fp16 is not supported yet; use bf16 or fp32", settings=["lora", "precision"])


def ignored_settings(config: TrainConfig) -> list[Line]:
    """One line per setting the run was given that cannot change it, given the method, optimizer and
    validation choices (e.g. ``kappa`` with ``method="ti"``): a warning, not a refusal, since a settings
    file shared across methods is a normal thing to have. Each is a :class:`~dti.core.errors.Line`
    whose ``str()`` names the settings as the caller speaks."""
    c, d = config, TrainConfig()
    out = methods.ignored(c, d)
    validation = ("validation_every", "validation_prompts", "validation_seeds", "sample_steps", "validation_guidance")
    changed = [name for name in validation if getattr(c, name) != getattr(d, name)]
    lora_only = ("lora_alpha", "lora_lr", "lora_text_encoder", "lora_steps")
    unused = [name for name in lora_only if getattr(c, name) != getattr(d, name)]
    if not c.lora and unused:
        out.append(Line("{" + unused[0] + "} has no effect without {lora}", settings=[unused[0], "lora"]))
    if not c.validate and changed:
        out.append(Line("{" + changed[0] + "} has no effect with {validate}", settings=[changed[0], "validate"]))
    return out


def resolve(config: TrainConfig, family_defaults: Any, native_resolution: int, hints: Mapping[str, Any] | None = None) -> TrainConfig:
    """Fill every ``None`` with the default of the method and model family; ``hints`` are a
    model's own suggestions (its ``dti.json``: templates and sample prompts in its vocabulary)."""
    c = dataclasses.replace(config)
    hints = hints or {}
    method = methods.get(c.method)
    if c.templates is None:
        c.templates = hints.get("templates", "object")
    if c.validation_prompts is None:
        c.validation_prompts = list(hints.get("validation_prompts", DEFAULT_VALIDATION_PROMPTS))
    if c.optimizer is None:
        c.optimizer = method.optimizers[0]
    if c.magnitude is None and method.fixed_norm:
        c.magnitude = method.default_magnitude
    if c.steps is None:
        c.steps = int(family_defaults.get("steps", 400))
    if c.batch_size is None:
        c.batch_size = int(family_defaults.get("batch_size", 4))
    if c.grad_accum is None:
        c.grad_accum = int(family_defaults.get("grad_accum", 1))
    if c.lr is None:
        base = methods.BASE_LR[c.optimizer]
        c.lr = float(family_defaults.get("lr", base)) if c.optimizer == "rsgd" else base
    if c.kappa is None:
        c.kappa = method.default_kappa(float(family_defaults.get("kappa", 1e-4)))
    if c.resolution is None:
        default = family_defaults.get("resolution")
        c.resolution = min(int(default), native_resolution) if default else native_resolution
    check(c)
    return c
