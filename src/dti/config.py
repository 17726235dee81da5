"""Training settings: one dataclass, the paper's defaults per method and family, validation.

Fields left ``None`` mean "the default for this method and model family" and are filled by
:func:`resolve`; the resolved config is saved with every run so it can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dti.errors import DTIError

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
    magnitude: str = "mean"  # mean | min | max | a positive number (dti)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    crossinit_lambda: float = 1e-5
    resolution: int | None = None
    encoders: list[str] | None = None  # text encoders that learn the word; None: all (the others keep the initializer's rows)
    family_options: dict[str, Any] | None = None  # the family's shared train/generate choices, e.g. SANA {"instruction": true}
    templates: str | list[str] | None = None  # object | style | bare | a list with {}; None: the model's hint, else object
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    pooling: str = "eos"  # eos: pool CLIP at the end token; legacy: transformers' argmax rule
    log_every: int = 1
    snapshot_every: int = 0
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
        """A config saved by a previous run (``config.json``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DTIError(f"cannot read config {path} ({exc}); pass the config.json of a previous run") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"dti_version", "resolved"})
        if unknown:
            raise DTIError(f"{source} has unknown settings {unknown}; remove them")
        values = {k: v for k, v in data.items() if k in known}
        if "adam_betas" in values:
            values["adam_betas"] = tuple(values["adam_betas"])
        return cls(**values)


def check(config: TrainConfig) -> None:
    """Refuse settings no run can use (before anything is loaded or written)."""
    c = config
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
    positive = {"--steps": c.steps, "--batch-size": c.batch_size, "--lr": c.lr, "--grad-accum": c.grad_accum}
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise DTIError(f"{flag} must be positive, got {value}")
    if c.kappa is not None and c.kappa < 0:
        raise DTIError(f"--kappa must be >= 0, got {c.kappa}")
    if not 0.0 <= c.beta < 1.0:
        raise DTIError(f"--beta must be in [0, 1), got {c.beta}")
    if c.resolution is not None and (c.resolution <= 0 or c.resolution % 8):
        raise DTIError(f"--resolution {c.resolution} must be a positive multiple of 8, e.g. 512, 768 or 1024")
    if c.templates is not None:
        from dti.data import TEMPLATE_SETS

        if isinstance(c.templates, str) and c.templates not in TEMPLATE_SETS:
            raise DTIError(f"--templates {c.templates!r} is not valid; use one of {', '.join(TEMPLATE_SETS)}")
        if not isinstance(c.templates, str) and (not c.templates or not all("{}" in t for t in c.templates)):
            raise DTIError("templates must be a set name or a list of prompts that each contain {}")
    for prompt in c.validation_prompts or []:
        if "{}" not in prompt:
            raise DTIError(f"--validation-prompt {prompt!r} needs {{}} where the token goes")
    for name in ("log_every", "snapshot_every", "validation_every"):
        if getattr(c, name) < 0:
            raise DTIError(f"--{name.replace('_', '-')} must be >= 0")
    if c.validation_steps <= 0:
        raise DTIError("--validation-steps must be positive")
    if c.method != "dti" and c.magnitude != "mean":
        raise DTIError(f"--magnitude fixes the norm of a dti vector; method {c.method} trains a free vector")


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
