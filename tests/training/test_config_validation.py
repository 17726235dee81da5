"""Settings from a --config file, flags and dti.train(): names and types (check_settings) and values
(check) are refused with one line naming the setting, before any model is looked at or file written."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest

import dti.training.session
from dti.commands import build_parser, main
from dti.commands.flags import flag as flag_of
from dti.commands.parser import ExtendSeeds
from dti.core.errors import DTIError
from dti.training.config import MAX_SEED, TrainConfig, check, check_settings, read_config_file
from refusal import assert_refused


def refused(fn, *args, **kwargs) -> str:
    """The one line a refusal says, with its settings named as the command line names them (their flags)."""
    with pytest.raises(DTIError) as info:
        fn(*args, **kwargs)
    message = info.value.render(flag_of)
    assert "\n" not in message and message.strip() == message, repr(message)
    return message


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ------------------------------------------------------------------ bad files: (file name, contents, fragment)
BAD_FILES = [
    ("run.toml", "stepz = 2", "unknown setting 'stepz' in"),
    ("run.toml", "stepz = 2", "did you mean 'steps'?"),
    ("run.json", '{"batch-sise": 2}', "did you mean 'batch_size'?"),
    ("run.toml", "colour = 'red'", "unknown setting 'colour'"),
    ("run.toml", "[train]\nsteps = 2", "unknown setting 'train'"),
    ("run.json", '{"config": "other.json"}', "unknown setting 'config'"),
    ("run.toml", 'steps = "2"', "setting 'steps' in"),
    ("run.toml", "steps = 2.5", "'steps'"),
    ("run.toml", "steps = true", "'steps'"),
    ("run.json", '{"steps": "2"}', "'steps'"),
    ("run.json", '{"steps": 2.0}', "'steps'"),
    ("run.json", '{"steps": true}', "'steps'"),
    ("run.toml", 'lr = "fast"', "'lr'"),
    ("run.json", '{"lr": "fast"}', "'lr'"),
    ("run.json", '{"lr": [0.1]}', "'lr'"),
    ("run.toml", "kappa = false", "'kappa'"),
    ("run.toml", "templates = 5", "'templates'"),
    ("run.json", '{"templates": ["a {}", 5]}', "'templates'"),
    ("run.toml", "adam_betas = [0.9]", "'adam_betas'"),
    ("run.toml", "adam_betas = [0.9, 0.99, 0.999]", "'adam_betas'"),
    ("run.json", '{"adam_betas": [0.9, "a"]}', "'adam_betas'"),
    ("run.json", '{"adam_betas": 0.9}', "'adam_betas'"),
    ("run.toml", "family_options = 3", "'family_options'"),
    ("run.toml", "option = ['instruction=true']", "'family_options'"),
    ("run.json", '{"encoders": "text_encoder"}', "'encoders'"),
    ("run.toml", "encoders = [1]", "'encoders'"),
    ("run.toml", 'validate = "yes"', "'validate'"),
    ("run.json", '{"validate": 1}', "'validate'"),
    ("run.toml", 'no-validation = "yes"', "'no-validation'"),
    ("run.toml", "quiet = 1", "'quiet'"),
    ("run.toml", "validation-seed = [0, '1']", "'validation_seeds'"),
    ("run.json", '{"validation_seeds": 0}', "'validation_seeds'"),
    ("run.toml", "validation-prompt = 'a {}'", "'validation_prompts'"),
    ("run.toml", "magnitude = true", "'magnitude'"),
    ("run.toml", "magnitude = [1.0]", "'magnitude'"),
    ("run.toml", "token = 5", "'token'"),
    ("run.json", '{"output": ["a", "b"]}', "'output'"),
    ("run.json", '{"precision": null}', "'precision'"),
    ("run.json", '{"seed": null}', "'seed'"),
    ("run.toml", "batch-size = 2\nbatch_size = 3", "'batch-size' and 'batch_size'"),
    ("run.toml", "out = 'a'\noutput = 'b'", "same setting"),
    ("run.json", "[1, 2]", "must hold an object of settings"),
    ("run.json", '"steps"', "must hold an object"),
    ("run.json", "null", "must hold an object"),
    ("run.json", "{bad", "is not valid JSON"),
    ("run.json", "", "is not valid JSON"),
    ("run.toml", "steps = ", "is not valid TOML"),
    ("run.toml", "steps = 1\nsteps = 2", "is not valid TOML"),
    ("run.toml", b"token = '\xff'", "cannot read --config"),
    ("run.yaml", "steps: 2", "is not a .toml or .json file"),
    ("run", '{"steps": 2}', "is not a .toml or .json file"),
    ("config.json.bak", '{"steps": 2}', "is not a .toml or .json file"),
]


@pytest.mark.parametrize("name, text, fragment", BAD_FILES)
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, name, text, fragment):
    path = write(tmp_path, name, text)
    message = refused(TrainConfig.from_file, path)
    assert fragment.lower() in message.lower(), message


def test_a_missing_or_unreadable_file_is_one_line(tmp_path):
    assert "cannot read --config" in refused(TrainConfig.from_file, tmp_path / "nope.toml")
    (tmp_path / "folder.json").mkdir()
    assert "cannot read --config" in refused(TrainConfig.from_file, tmp_path / "folder.json")


# ------------------------------------------------------------------ bad values: (settings, fragment naming the flag)
BAD_VALUES = [
    ({"lr": math.inf}, "--lr"),
    ({"lr": math.nan}, "--lr"),
    ({"lr": -math.inf}, "--lr"),
    ({"lr": 0.0}, "--lr"),
    ({"lr": -0.1}, "--lr"),
    ({"kappa": math.inf}, "--kappa"),
    ({"kappa": math.nan}, "--kappa"),
    ({"kappa": -1.0}, "--kappa"),
    ({"eps": 0.0}, "--eps"),
    ({"eps": -1e-8}, "--eps"),
    ({"eps": math.inf}, "--eps"),
    ({"eps": math.nan}, "--eps"),
    ({"eps": 1e30}, "--eps 1e+30 is past the sane limit of 1"),
    ({"kappa": 1e30}, "--kappa 1e+30 is past the sane limit of 1e+06"),
    ({"lr": 1001.0}, "--lr 1001.0 is past the sane limit of 1000"),
    ({"validation_guidance": 1e30}, "--validation-guidance 1e+30 is past the sane limit of 100"),
    ({"magnitude": 1e4}, "--magnitude 10000.0 must be a finite number in (0, 1000]"),
    ({"weight_decay": -0.1}, "--weight-decay"),
    ({"weight_decay": math.nan}, "--weight-decay"),
    ({"weight_decay": math.inf}, "--weight-decay"),
    ({"beta": math.nan}, "--beta"),
    ({"beta": 1.0}, "--beta"),
    ({"beta": -0.1}, "--beta"),
    ({"crossinit_lambda": -1.0}, "--crossinit-lambda"),
    ({"crossinit_lambda": math.inf}, "--crossinit-lambda"),
    ({"crossinit_lambda": math.nan}, "--crossinit-lambda"),
    ({"validation_guidance": math.nan}, "--validation-guidance"),
    ({"validation_guidance": math.inf}, "--validation-guidance"),
    ({"validation_guidance": -1.0}, "--validation-guidance"),
    ({"adam_betas": (1.0, 0.999)}, "adam_betas"),
    ({"adam_betas": (0.9, math.nan)}, "adam_betas"),
    ({"adam_betas": (-0.1, 0.999)}, "adam_betas"),
    ({"magnitude": "1e30"}, "--magnitude"),
    ({"magnitude": 1e30}, "--magnitude"),
    ({"magnitude": "inf"}, "--magnitude"),
    ({"magnitude": math.inf}, "--magnitude"),
    ({"magnitude": "nan"}, "--magnitude"),
    ({"magnitude": "0"}, "--magnitude"),
    ({"magnitude": -1.0}, "--magnitude"),
    ({"magnitude": "big"}, "--magnitude"),
    ({"magnitude": "10001"}, "--magnitude"),
    ({"method": "ti", "magnitude": "max"}, "--magnitude"),
    ({"seed": -1}, "--seed"),
    ({"seed": 2**63}, "--seed"),
    ({"seed": 2**64}, "--seed"),
    ({"validation_seeds": [0, -1]}, "--validation-seeds"),
    ({"validation_seeds": [2**64]}, "--validation-seeds"),
    ({"validation_seeds": []}, "--validation-seeds"),
    ({"steps": 0}, "--steps"),
    ({"steps": 10_000_000}, "--steps"),
    ({"batch_size": 0}, "--batch-size"),
    ({"batch_size": 2000}, "--batch-size"),
    ({"grad_accum": 0}, "--grad-accum"),
    ({"grad_accum": 2000}, "--grad-accum"),
    ({"resolution": 8192}, "--resolution"),
    ({"resolution": 60}, "--resolution"),
    ({"resolution": 0}, "--resolution"),
    ({"sample_steps": 0}, "--sample-steps"),
    ({"sample_steps": 5000}, "--sample-steps"),
    ({"encoders": []}, "--encoders"),
    ({"validation_prompts": []}, "--validation-prompt"),
    ({"validation_prompts": ["no token"]}, "--validation-prompt"),
    ({"templates": []}, "templates"),
    ({"log_every": -1}, "--log-every"),
    ({"lr": "fast"}, "'lr'"),  # a TrainConfig built by hand is type-checked too
    ({"steps": True}, "'steps'"),
    ({"validation_seeds": [0.5]}, "'validation_seeds'"),
]


@pytest.mark.parametrize("settings, fragment", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_flag(settings, fragment):
    message = refused(check, TrainConfig(**settings))
    assert fragment.lower() in message.lower(), message


@pytest.mark.parametrize("settings, fragment", [(s, f) for s, f in BAD_VALUES if f.startswith("--")])
def test_the_same_bad_value_in_a_file_is_refused(tmp_path, settings, fragment):
    path = write(tmp_path, "run.json", json.dumps(settings, allow_nan=True))
    message = refused(lambda: check(TrainConfig.from_file(path)))
    assert fragment.lower() in message.lower(), message


ACCEPTED = [
    {"seed": 0},
    {"seed": MAX_SEED, "validation_seeds": [0, MAX_SEED]},
    {"kappa": 1e6},  # large finite strengths are a choice, not an error
    {"kappa": 0.0, "weight_decay": 0.0, "crossinit_lambda": 0.0, "validation_guidance": 0.0},
    {"magnitude": "1e3"},
    {"magnitude": 1e3},
    {"lr": 1e3, "eps": 1.0, "validation_guidance": 100.0},
    {"magnitude": "0.5"},
    {"magnitude": 2},
    {"magnitude": "min"},
    {"steps": 1_000_000, "batch_size": 1024, "grad_accum": 1024},
    {"resolution": 4096},
    {"adam_betas": (0.0, 0.999)},
    {"sample_steps": 1000},
    {"validation_seeds": [7]},
]


@pytest.mark.parametrize("settings", ACCEPTED)
def test_boundary_values_are_accepted(settings):
    check(TrainConfig(**settings))


def test_seed_limits_are_what_torch_accepts():
    import torch

    for seed in (0, MAX_SEED):
        assert torch.Generator().manual_seed(seed).initial_seed() == seed


# ------------------------------------------------------------------ check_settings for dti.train(**settings)
def test_check_settings_reads_naturally_for_keyword_arguments():
    message = refused(check_settings, {"stepz": 2}, "dti.train()")
    assert message == "unknown setting 'stepz' in dti.train(); did you mean 'steps'?"
    message = refused(check_settings, {"steps": "2"}, "dti.train()")
    assert message.startswith("setting 'steps' in dti.train() must be a whole number, got '2'"), message
    assert "remove it" in refused(check_settings, {"zzzz": 1}, "dti.train()")
    assert "'lr'" in refused(check_settings, {"lr": "fast"}, "dti.train()")
    assert "'templates'" in refused(check_settings, {"templates": 5}, "dti.train()")


def test_check_settings_takes_only_field_names():
    # flag spellings are a file's convenience (TrainConfig.from_dict); keyword arguments are fields
    assert "'batch-size'" in refused(check_settings, {"batch-size": 2}, "dti.train()")
    assert "'quiet'" in refused(check_settings, {"quiet": True}, "dti.train()")


def test_check_settings_normalizes():
    out = check_settings(
        {"lr": 1, "adam_betas": [0.8, 0.9], "validation_seeds": (3, 4), "steps": None, "magnitude": 2, "family_options": {"a": 1}},
        "dti.train()",
    )
    assert out == {
        "lr": 1.0,
        "adam_betas": (0.8, 0.9),
        "validation_seeds": [3, 4],
        "steps": None,
        "magnitude": 2.0,
        "family_options": {"a": 1},
    }
    assert isinstance(out["lr"], float) and isinstance(out["adam_betas"], tuple) and isinstance(out["validation_seeds"], list)
    assert check_settings({}, "dti.train()") == {}


def test_every_field_has_a_type_check_settings_knows():
    defaults = TrainConfig()
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    assert check_settings(values, "TrainConfig") == {**values, "adam_betas": (0.9, 0.999)}


# ------------------------------------------------------------------ files that work
def test_a_saved_run_config_keeps_working(tmp_path):
    config = TrainConfig(photos="p", token="<t>", init="dog", model="m", output="runs/a", steps=5, lr=0.02, magnitude="max")
    config.templates, config.validation_prompts, config.encoders = "object", ["a {}"], ["text_encoder"]
    path = write(tmp_path, "config.json", json.dumps({**config.to_dict(), "dti_version": "0.1.0"}, indent=2))
    assert TrainConfig.from_file(path) == config


def test_toml_and_json_give_the_same_config(tmp_path):
    toml = write(tmp_path, "run.toml", "steps = 7\nlr = 1\nadam_betas = [0.8, 0.9]\n[family_options]\ninstruction = true\n")
    data = {"steps": 7, "lr": 1, "adam_betas": [0.8, 0.9], "family_options": {"instruction": True}}
    js = write(tmp_path, "run.json", json.dumps(data))
    a, b = TrainConfig.from_file(toml), TrainConfig.from_file(js)
    assert a == b == TrainConfig(steps=7, lr=1.0, adam_betas=(0.8, 0.9), family_options={"instruction": True})
    assert read_config_file(toml) == data


def _train_parser() -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices["train"]


# every TrainConfig field with a non-default value: (value as the file writes it, value as the flags give it)
EVERY_FIELD = {
    "photos": "/photos",
    "token": "<x>",
    "init": "cat toy",
    "model": "/models/m",
    "output": "/runs/x",
    "method": "ti",  # with magnitude "max" check() would refuse it; only reading is tested here
    "optimizer": "adamw",
    "steps": 7,
    "batch_size": 3,
    "grad_accum": 2,
    "lr": 0.02,
    "scale_lr": False,
    "kappa": 0.5,
    "beta": 0.1,
    "eps": 1e-6,
    "magnitude": "max",
    "adam_betas": (0.8, 0.9),  # file only: no flag
    "weight_decay": 0.05,
    "crossinit_lambda": 1e-4,
    "resolution": 128,
    "crop_positions": 4,
    "encoders": ["text_encoder", "text_encoder_2"],
    "family_options": {"instruction": True, "max_sequence_length": 77},
    "templates": "style",
    "seed": 5,
    "precision": "fp32",
    "device": "cpu",
    "gradient_checkpointing": True,
    "compile": True,
    "quantize": "int8",
    "lora": 8,
    "lora_alpha": 4.0,
    "lora_lr": 0.001,
    "lora_text_encoder": True,
    "word_steps": 3,
    "lora_steps": 5,
    "offload": "group",
    "vram": 24,
    "pooling": "legacy",
    "log_every": 2,
    "snapshot_every": 3,
    "checkpoint_every": 10,
    "keep_checkpoints": 3,
    "max_bad_steps": 2,
    "validation_every": 4,
    "validation_prompts": ["a {} here", "a {} there"],
    "validation_seeds": [3, 4],
    "sample_steps": 9,
    "validation_guidance": 2.5,
    "validate": False,
    "overwrite": True,
    "progress": False,
}


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans are spelled alike in TOML and JSON


def _sources():
    """The TOML text (flag names as keys) and the argv for EVERY_FIELD, both from the parser's own flags."""
    lines, argv = [], ["train"]
    for action in _train_parser()._actions:
        name = action.dest
        if name not in EVERY_FIELD or not action.option_strings:
            continue
        value, key = EVERY_FIELD[name], action.option_strings[0].lstrip("-")
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            assert value == isinstance(action, argparse._StoreTrueAction), name
            lines.append(f"{key} = true")
            argv.append(action.option_strings[0])
        elif name == "family_options":
            lines.append(f"{key} = {_toml_value(value)}")
            argv += [x for k, v in value.items() for x in (action.option_strings[0], f"{k}={json.dumps(v)}")]
        elif isinstance(action, argparse._AppendAction):
            lines.append(f"{key} = {_toml_value(value)}")
            argv += [x for v in value for x in (action.option_strings[0], str(v))]
        elif isinstance(action, ExtendSeeds):  # seeds: several words after one flag
            lines.append(f"{key} = {_toml_value(value)}")
            argv += [action.option_strings[0], *map(str, value)]
        elif name == "encoders":
            lines.append(f"{key} = {_toml_value(value)}")
            argv += [action.option_strings[0], ",".join(value)]
        else:
            lines.append(f"{key} = {_toml_value(value)}")
            argv += [action.option_strings[0], str(value)]
    argv.insert(1, EVERY_FIELD["photos"])  # the positional
    for name in ["photos", *_file_only()]:
        lines.append(f"{name} = {_toml_value(EVERY_FIELD[name])}")
    return "\n".join(lines) + "\n", argv


def _file_only() -> list[str]:
    """Fields with no flag (adam_betas): a file sets them, the flags leave the default."""
    dests = {action.dest for action in _train_parser()._actions}
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in dests and f.name != "photos"]


class Captured(Exception):
    pass


@pytest.fixture()
def captured_train(monkeypatch):
    """Stands in for dti.training.session.train: records the config the run would use (as train() builds it) and stops."""
    seen = {}

    def fake_train(photos=None, token=None, init=None, model=None, output=None, *, config=None, **settings):
        given = {"photos": photos, "token": token, "init": init, "model": model, "output": output}
        seen["config"] = dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None}, **settings)
        raise Captured

    monkeypatch.setattr(dti.training.session, "train", fake_train)
    return seen


def test_every_field_in_flag_spelling_round_trips_like_the_flags(tmp_path, captured_train):
    assert set(EVERY_FIELD) == {f.name for f in dataclasses.fields(TrainConfig)}, "add the new field to EVERY_FIELD"
    assert all(getattr(TrainConfig(), k) != v for k, v in EVERY_FIELD.items()), "every value must differ from its default"
    text, argv = _sources()
    path = write(tmp_path, "run.toml", text)
    expected = TrainConfig(**EVERY_FIELD)
    assert TrainConfig.from_file(path) == expected
    with pytest.raises(Captured):
        main(["train", "--config", str(path)])
    from_file = captured_train["config"]
    with pytest.raises(Captured):
        main(argv)
    from_flags = captured_train["config"]
    assert from_file == expected
    assert "adam_betas" in _file_only()
    assert from_flags == dataclasses.replace(expected, **{name: getattr(TrainConfig(), name) for name in _file_only()})
    # the same file with field names (underscores) reads the same
    fields = write(tmp_path, "fields.json", json.dumps(TrainConfig(**EVERY_FIELD).to_dict()))
    assert TrainConfig.from_file(fields) == expected


def test_flags_override_the_file(tmp_path, captured_train):
    path = write(
        tmp_path, "run.toml", 'steps = 7\nlr = 0.5\noutput = "/runs/a"\nphotos = "/p"\ntoken = "<t>"\nmodel = "/m"\noption = {a = 1}\n'
    )
    with pytest.raises(Captured):
        main(["train", "--config", str(path), "--steps", "9", "--output", "/runs/b", "--option", "b=2"])
    c = captured_train["config"]
    assert (c.steps, c.lr, c.output, c.photos, c.family_options) == (9, 0.5, "/runs/b", "/p", {"a": 1, "b": 2})


def test_a_hand_written_file_may_name_its_output_but_a_saved_run_may_not(tmp_path, captured_train, capsys):
    path = write(tmp_path, "run.toml", 'output = "/runs/a"\nphotos = "/p"\ntoken = "<t>"\nmodel = "/m"\n')
    with pytest.raises(Captured):
        main(["train", "--config", str(path)])
    assert captured_train["config"].output == "/runs/a"
    saved = write(tmp_path, "config.json", json.dumps({**TrainConfig(output="/runs/a").to_dict(), "dti_version": "0.1.0"}))
    assert_refused(["train", "--config", saved], capsys, "--output is required", untouched=[tmp_path])


# ------------------------------------------------------------------ through the command: refused before the model is looked at
@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr"),
        (["--kappa", "nan"], "--kappa must be a finite number"),
        (["--kappa", "inf"], "--kappa"),
        (["--eps", "0"], "--eps"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--validation-guidance", "nan"], "--validation-guidance"),
        (["--magnitude", "1e30"], "--magnitude 1e+30 must be a finite number"),
        (["--magnitude", "inf"], "--magnitude"),
        (["--seed", "-1"], "--seed -1 is out of range"),
        (["--seed", str(2**64)], "--seed"),
        (["--validation-seed", str(2**64)], "--validation-seeds"),
        (["--resolution", "8192"], "--resolution"),
        (["--batch-size", "5000"], "--batch-size"),
    ],
)
def test_the_command_refuses_a_bad_flag_before_the_model(tmp_path, capsys, flags, fragment):
    argv = ["train", tmp_path / "no-photos", "--token", "<t>", "--init", "dog", "--model", "/nonexistent", "--output", tmp_path / "out"]
    assert_refused([*argv, *flags], capsys, fragment, untouched=[tmp_path])


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("bad.toml", "stepz = 2", "unknown setting 'stepz'"),
        ("bad.toml", 'lr = "fast"', "'lr'"),
        ("bad.toml", "lr = inf", "--lr"),
        ("bad.json", '{"kappa": NaN}', "--kappa"),
        ("bad.json", '{"magnitude": 1e30}', "--magnitude"),
        ("bad.json", "[]", "must hold an object"),
        ("bad.toml", "steps =", "not valid TOML"),
        ("bad.yaml", "steps: 2", "not a .toml or .json"),
    ],
)
def test_the_command_refuses_a_bad_config_before_the_model(tmp_path, capsys, name, text, fragment):
    path = write(tmp_path, name, text)
    argv = ["train", tmp_path / "no-photos", "--token", "<t>", "--model", "/nonexistent", "--output", tmp_path / "out", "--config", path]
    assert_refused(argv, capsys, fragment, untouched=[tmp_path])


def test_the_command_refuses_a_missing_config(tmp_path, capsys):
    argv = ["train", "--config", tmp_path / "nope.toml", "--output", tmp_path / "out"]
    assert_refused(argv, capsys, "cannot read --config", untouched=[tmp_path])


@pytest.mark.parametrize(
    "settings, flag",
    [
        (dict(method="ti", kappa=0.1), "--kappa"),
        (dict(method="crossinit", kappa=0.0), "--kappa"),
        (dict(method="ti", beta=0.5), "--beta"),
        (dict(method="dti", optimizer="adamw", beta=0.5), "--beta"),
        (dict(method="dti", crossinit_lambda=1e-3), "--crossinit-lambda"),
        (dict(method="dti", weight_decay=0.1), "--weight-decay"),
        (dict(validate=False, sample_steps=10), "--sample-steps"),
    ],
)
def test_settings_a_run_ignores_are_named_in_one_warning(settings, flag):
    lines = [line.render(flag_of) for line in dti.training.config.ignored_settings(TrainConfig(**settings))]
    assert (len(lines) == 1 and lines[0].startswith(flag) and "no effect" in lines[0]) or "ignores" in lines[0]


def test_settings_that_count_give_no_warning():
    counted = [dict(), dict(method="ti", weight_decay=0.1), dict(kappa=0.0, beta=0.5), dict(method="crossinit", crossinit_lambda=1)]
    for settings in counted:
        assert dti.training.config.ignored_settings(TrainConfig(**settings)) == [], settings


def test_train_warns_before_it_reads_anything(tmp_path, capsys):
    with pytest.raises(DTIError, match="does not exist"):
        dti.training.session.train(tmp_path / "missing", "<t>", "dog", "m", method="ti", kappa=0.1)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: kappa has no effect with method ti (it is DTI's von Mises-Fisher prior)"]  # the library names settings
