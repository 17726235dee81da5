"""What a run's input must satisfy against its model, checked before weights load and before any
folder is made: the words in every tokenizer, the family's own settings, the trigger word.

Each check is one line naming the setting and the fix (:class:`~dti.core.errors.DTIError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dti.core.errors import DTIError, warn
from dti.models import Adapter
from dti.text.words import check_placeholder, check_trigger_word, file_stem, initializer_ids


def check_words(tokenizers: Mapping[str, Any], token: str, init: str, candidates: Sequence[str] = ()) -> None:
    """The placeholder must be new and the initializer known, in every encoder's tokenizer;
    ``candidates``: class words the model suggests when the initializer is not one of its words."""
    for name, tokenizer in tokenizers.items():
        check_placeholder(tokenizer, token, name)
        initializer_ids(tokenizer, init, name, candidates)


def check_family_settings(cls: type[Adapter], names: Sequence[str], config: Any) -> None:
    """``encoders`` and ``family_options`` must name what this model has; ``names`` are its text encoders."""
    unknown = sorted(set(config.encoders or names) - set(names))
    if unknown:
        raise DTIError(
            f"{{encoders}} {','.join(unknown)} is not a text encoder of this model; it has {', '.join(names)}", settings=["encoders"]
        )
    unknown = sorted(set(config.family_options or {}) - set(cls.default_options))
    if unknown:
        have = ", ".join(sorted(cls.default_options)) or "none"
        raise DTIError(
            f"{{family_options}} {unknown[0]} is not an option of {cls.pipeline_class}; it has {have}", settings=["family_options"]
        )
    for key, value in (config.family_options or {}).items():
        check_option_value(key, value, cls.default_options[key])
    if getattr(config, "lora", None) and not cls.lora_targets:
        raise DTIError(
            f"{{lora}} is not supported for {cls.pipeline_class} yet (the family names no LoRA layers); train the word alone",
            settings=["lora"],
        )


def check_option_value(key: str, value: Any, default: Any) -> None:
    """A family option has its default's type; numbers are finite, positive and sane."""
    where = f"{{family_options}} {key}={value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise DTIError(f"{where} must be true or false", settings=["family_options"])
        return
    if isinstance(default, (int, float)):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (isinstance(default, int) and not isinstance(value, int)):
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise DTIError(f"{where} must be {kind}, e.g. {key}={default}", settings=["family_options"])
        limit = 4096 if isinstance(default, int) else 1e3  # token counts of any encoder; guidance scales
        if not (math.isfinite(value) and 0 < value <= limit):
            raise DTIError(f"{where} must be a finite number in (0, {limit:g}], e.g. {key}={default}", settings=["family_options"])


def check_family_words(cls: type[Adapter], token: str) -> None:
    """Families whose pipelines lower-case prompts (PixArt, SANA) could never see a mixed-case token;
    a family whose pipeline rewrites prompts otherwise says what it would do to the token (Wan's cleaning)."""
    if getattr(cls, "lowercases_prompts", False) and token != token.lower():
        raise DTIError(
            f"{{token}} {token!r} has capitals, but {cls.pipeline_class} lower-cases every prompt; use {token.lower()!r}",
            settings=["token"],
        )
    found = cls.token_problem(token)
    if found:
        raise DTIError(f"{{token}} {token!r} cannot be used: {found}; choose a plain word such as '<my-dog>'", settings=["token"])


def webui_name(token: str, tokenizers: Mapping[str, Any], warn_user: bool = True) -> str:
    """The A1111 / ComfyUI / kohya file name (the trigger word those tools use): the token without
    brackets, or ``dti-<name>`` when that name is an ordinary word (A1111 would put the concept in
    place of every "toy" in every prompt), said once."""
    stem = file_stem(token)
    try:
        check_trigger_word(token, tokenizers)
    except DTIError:
        if warn_user:
            why = (
                f"{stem!r} is an ordinary word, so it cannot be"
                if re.sub(r"[^\w.-]", "", token)
                else f"{token!r} has no letter, digit, '.' or '-' a file name keeps, so it cannot name"
            )
            warn(
                f"{why} the A1111 / ComfyUI trigger word; the single-file embedding is "
                f"webui/dti-{stem}.safetensors (type dti-{stem} in A1111, embedding:dti-{stem} in ComfyUI)"
            )
        return f"dti-{stem}"
    return stem
