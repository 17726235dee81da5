"""The ``dti train`` command a New word form makes: the worker runs exactly it, and the page shows it
to copy. Flags come from the settings' own specs, so the form cannot drift from the command line."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from dti.core.errors import DTIError
from dti.core.settings import specs
from dti.training.config import TrainConfig

#: The settings the form shows, editable, with the family's defaults filled in.
FORM_SETTINGS = ("steps", "batch_size", "lr", "resolution", "validation_every", "checkpoint_every", "sample_steps", "seed", "vram")
#: The memory preset's choices in the form (``--vram``, GiB of the card); "none": the settings as they are.
VRAM_CHOICES = ("none", "8", "12", "16", "24", "48")
#: What the app sets unless the form says otherwise: samples early and often, checkpoints to stop at.
APP_DEFAULTS = {"validation_every": 25, "checkpoint_every": 25, "sample_steps": 20}


def flag_of(name: str) -> str:
    """The ``dti train`` flag of setting ``name``."""
    spec = specs(TrainConfig)[name]
    return spec.flag or "--" + name.replace("_", "-")


def train_argv(
    photos: str, token: str, init: str, model: str, output: str, method: str = "dti", settings: Mapping[str, Any] | None = None
) -> list[str]:
    """``dti train`` arguments (after ``dti``); empty settings are left to dti's defaults. Refuses an
    empty required field in one line."""
    for name, value in (("photos", photos), ("token", token), ("init", init), ("model", model), ("output", output)):
        if not str(value or "").strip():
            raise DTIError(f"{name} is missing; fill it in")
    argv = ["train", photos, "--token", token, "--init", init, "--model", model, "--output", output, "--method", method]
    for name, value in (settings or {}).items():
        if name not in FORM_SETTINGS:
            raise DTIError(f"{name} is not a setting the form sets; use one of {', '.join(FORM_SETTINGS)}")
        if value is None or value == "" or (name == "vram" and value == "none"):
            continue
        if isinstance(value, float) and value.is_integer() and name != "lr":
            value = int(value)
        argv += [flag_of(name), str(value)]
    return [*argv, "--quiet"]


def resume_argv(output: str) -> list[str]:
    """Continue the run in ``output`` from its last checkpoint, with its own settings."""
    return ["train", "--resume", output, "--quiet"]


def shown(argv: list[str], workspace: str | None = None) -> str:
    """The command as a person types it (run in the workspace, where its paths are relative)."""
    line = "dti " + shlex.join(argv)
    return f"cd {shlex.quote(workspace)} && {line}" if workspace else line


def family_defaults(model: str, method: str) -> dict[str, Any]:
    """The settings a run on ``model`` with ``method`` gets when the form leaves them empty: the family's
    and the method's defaults (read from the model's tokenizers' folder, no weights loaded), then the app's.
    ``resolution`` None: the family's default capped at the model's native size (known only once its
    weights load)."""
    from dti import methods
    from dti.models import load_tokenizers, model_hints
    from dti.training.config import resolve

    cls, _ = load_tokenizers(model)
    methods.get(method)
    c = resolve(TrainConfig(method=method), cls.defaults, 1 << 14, model_hints(model))
    values = {name: getattr(c, name) for name in FORM_SETTINGS}
    return {**values, "resolution": None, "vram": "none", **APP_DEFAULTS}


def memory_line(model: str, method: str, settings: Mapping[str, Any]) -> str:
    """What ``--vram`` will choose for the form's run, said as ``dti train`` says it (flags named), before
    anything loads: the estimate from the model's file headers (:mod:`dti.training.memory`). Empty
    without a preset; a preset nothing fits, or a model without local files, is the refusal's line."""
    from dti.models import load_tokenizers
    from dti.training import memory

    card = settings.get("vram")
    if card in (None, "", "none"):
        return ""
    given = {n for n, v in settings.items() if v not in (None, "") and n != "vram" and n not in APP_DEFAULTS}
    values = {n: (int(v) if isinstance(v, float) and v.is_integer() and n != "lr" else v) for n, v in settings.items() if n in given}
    config = TrainConfig(model=model, method=method, vram=int(card), **values)
    cls, _ = load_tokenizers(model)
    _, choice = memory.preset(config, given, cls, None, 2)  # bf16: what --precision auto takes on a card
    return choice.line().render(flag_of)
