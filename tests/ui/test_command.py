"""The command a form makes is one ``dti train`` accepts, with the form's values; the page shows it
as a person would type it."""

from __future__ import annotations

import re
import shlex

import pytest

from dti.commands import build_parser
from dti.core.errors import DTIError
from dti.ui.command import FORM_SETTINGS, family_defaults, memory_line, resume_argv, shown, train_argv


def test_the_built_command_parses_as_dti_train_with_the_forms_values():
    settings = {"steps": 30.0, "batch_size": 2, "lr": 0.02, "resolution": None, "validation_every": 5, "seed": 7}
    argv = train_argv("photos/my dog", "<my-dog>", "dog", "dti-mini", "runs/my-dog", "ti", settings)
    args = build_parser().parse_args(argv)
    assert (args.command, args.photos, args.token, args.init, args.model, args.output) == (
        "train",
        "photos/my dog",
        "<my-dog>",
        "dog",
        "dti-mini",
        "runs/my-dog",
    )
    assert (args.method, args.steps, args.batch_size, args.lr, args.validation_every, args.seed) == ("ti", 30, 2, 0.02, 5, 7)
    assert not hasattr(args, "resolution")  # empty: left to dti's default
    line = shown(argv, "/work/my ws")
    assert line.startswith("cd '/work/my ws' && dti train ")
    assert shlex.split(line.split(" && ", 1)[1])[1:] == argv  # what is copied is exactly what runs


def test_resume_parses_and_missing_fields_are_refused():
    args = build_parser().parse_args(resume_argv("runs/x"))
    assert args.resume == "runs/x"
    with pytest.raises(DTIError, match="token is missing"):
        train_argv("photos/x", " ", "dog", "dti-mini", "runs/x")
    with pytest.raises(DTIError, match="not a setting the form sets"):
        train_argv("photos/x", "<x>", "dog", "dti-mini", "runs/x", settings={"output": "/etc"})


def test_the_family_defaults_are_dtis_own():
    values = family_defaults("dti-mini", "dti")
    assert set(values) == set(FORM_SETTINGS)
    assert values["steps"] == 400 and values["lr"] == 0.01 and values["resolution"] is None
    assert family_defaults("dti-mini", "ti")["lr"] != values["lr"]  # AdamW's rate, not RiemannianSGD's
    with pytest.raises(DTIError, match="method"):
        family_defaults("dti-mini", "nope")


def test_the_memory_preset_goes_into_the_command_and_its_choice_is_said_before_the_run(monkeypatch):
    argv = train_argv("photos/x", "<x>", "dog", "dti-mini", "runs/x", settings={"steps": 5, "vram": "12"})
    assert build_parser().parse_args(argv).vram == 12
    assert "--vram" not in train_argv("photos/x", "<x>", "dog", "dti-mini", "runs/x", settings={"vram": "none"})
    assert memory_line("dti-mini", "dti", {"vram": "none"}) == ""
    line = memory_line("dti-mini", "dti", {"steps": 5, "vram": "8"})
    # the line says the choice as `dti train` does, its settings named by their flags
    assert re.fullmatch(
        r"--vram 8: (the settings fit as they are|--[a-z-]+( \S+)?(, --[a-z-]+( \S+)?)*) \(estimated peak [0-9.]+ GiB\)", line
    ), line
    from dti.training import memory

    for family in list(memory.ACTIVATIONS):  # a step as heavy as no card holds, whichever family dti-mini is
        monkeypatch.setitem(memory.ACTIVATIONS, family, [(1e-4, 64, 60.0, 20.0)])
    with pytest.raises(DTIError, match="vram 8: nothing dti can change fits"):
        memory_line("dti-mini", "dti", {"vram": "8", "batch_size": 1, "resolution": 256})
