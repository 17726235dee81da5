"""The `dti` command: every bad input gives one line, exit status 2, and writes nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from PIL import Image

from dti.commands import build_parser, main
from dti.concepts.concept import Concept, EncoderVectors
from dti.training.config import TrainConfig


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_arg(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def expect_refusal(args, capsys, tmp_path, pattern):
    code, _, err = run_cli(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern.lower() in lines[0].lower(), lines[0]
    assert not (tmp_path / "out").exists()


def test_success_prints_summary(base_args, capsys, tmp_path):
    code, out, err = run_cli(base_args, capsys)
    assert code == 0, err
    assert "learned <t>" in out and (tmp_path / "out" / "concept.safetensors").is_file()


def test_missing_photo_folder(base_args, capsys, tmp_path):
    expect_refusal(["train", tmp_path / "nope", *base_args[2:]], capsys, tmp_path, "does not exist")


def test_empty_photo_folder(base_args, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    expect_refusal(["train", tmp_path / "empty", *base_args[2:]], capsys, tmp_path, "holds no images")


def test_unreadable_image_is_named(base_args, photos, capsys, tmp_path):
    (photos / "zz-broken.png").write_bytes(b"garbage")
    expect_refusal(base_args, capsys, tmp_path, "zz-broken.png is not a readable image")


def test_placeholder_already_in_vocabulary(base_args, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--token", "dog"), capsys, tmp_path, "already in the vocabulary")


def test_placeholder_with_spaces(base_args, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--token", "my dog"), capsys, tmp_path, "single word")


def test_initializer_missing(base_args, capsys, tmp_path):
    args = list(base_args)
    i = args.index("--init")
    del args[i : i + 2]
    expect_refusal(args, capsys, tmp_path, "--init is missing")


def test_initializer_not_in_vocabulary(base_args, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--init", "plushie"), capsys, tmp_path, "not in the vocabulary")


def test_unknown_local_model_path(base_args, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--model", tmp_path / "no-model"), capsys, tmp_path, "does not exist")


def test_unknown_hub_id_offline(base_args, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--model", "nobody/no-such-model"), capsys, tmp_path, "offline")


def test_folder_that_is_not_a_pipeline(base_args, photos, capsys, tmp_path):
    expect_refusal(with_arg(base_args, "--model", photos), capsys, tmp_path, "not a diffusers pipeline folder")


def test_unsupported_family(base_args, capsys, tmp_path):
    model = tmp_path / "audio"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "AudioLDMPipeline"}')
    expect_refusal(with_arg(base_args, "--model", model), capsys, tmp_path, "unsupported pipeline family AudioLDMPipeline")


@pytest.mark.parametrize("value", ["60", "0", "-8"])
def test_bad_resolution(base_args, capsys, tmp_path, value):
    expect_refusal(with_arg(base_args, "--resolution", value), capsys, tmp_path, "--resolution")


@pytest.mark.parametrize(
    "flag, value", [("--steps", "0"), ("--steps", "-5"), ("--lr", "0"), ("--lr", "-0.1"), ("--batch-size", "0"), ("--steps", "many")]
)
def test_non_positive_settings(base_args, capsys, tmp_path, flag, value):
    expect_refusal(with_arg(base_args, flag, value), capsys, tmp_path, flag)


def test_output_with_concept_is_not_overwritten(base_args, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Concept("<old>", {"text_encoder": EncoderVectors(torch.ones(1, 32))}).save(out / "concept.safetensors")
    before = (out / "concept.safetensors").read_bytes()
    code, _, err = run_cli(base_args, capsys)
    assert code == 2 and "already holds a concept" in err and "--overwrite" in err
    assert (out / "concept.safetensors").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["concept.safetensors"]
    code, _, err = run_cli([*base_args, "--overwrite"], capsys)
    assert code == 0, err
    assert Concept.load(out).token == "<t>"


def test_overwrite_keeps_files_dti_did_not_write(base_args, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "my-notes.txt").write_text("keep me")
    assert run_cli([*base_args, "--overwrite"], capsys)[0] == 0
    assert (out / "my-notes.txt").read_text() == "keep me"


def test_rsgd_needs_dti(base_args, capsys, tmp_path):
    expect_refusal([*base_args, "--method", "ti", "--optimizer", "rsgd"], capsys, tmp_path, "--optimizer rsgd")


def test_help_documents_every_setting(capsys):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]
    text = sub.format_help()
    flags = {opt for action in sub._actions for opt in action.option_strings}
    dests = {action.dest for action in sub._actions}
    for field in dataclasses.fields(TrainConfig):
        if field.name in {"adam_betas"}:
            continue  # fixed at the paper's (0.9, 0.999); recorded in config.json
        assert field.name in dests, f"TrainConfig.{field.name} has no flag"
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} is undocumented"
    assert "--kappa" in text and "--magnitude" in flags


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "dti", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--token" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "dti", "train", "--steps"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_not_an_image_file_with_image_extension(base_args, photos, capsys, tmp_path):
    Image.new("RGB", (64, 64)).save(photos / "ok.png")
    (photos / "fake.jpg").write_text("hello")
    expect_refusal(base_args, capsys, tmp_path, "fake.jpg")


def test_train_warns_once_per_problem_about_its_photos(base_args, photos, capsys, tmp_path):
    for extra in sorted(photos.iterdir())[1:]:
        extra.unlink()
    code, _, err = run_cli(with_arg(with_arg(base_args, "--resolution", "128"), "--token", "<my-tok>"), capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0, err
    assert len(warnings) == 2 and "1 photo" in warnings[0] and "smaller than the training resolution 128" in warnings[1], err


def test_an_ordinary_word_is_not_made_the_webui_trigger_word(base_args, capsys, tmp_path):
    code, _, err = run_cli(with_arg(base_args, "--token", "<toy>"), capsys)
    assert code == 0, err
    out = tmp_path / "out" / "webui"
    assert [p.name for p in out.iterdir()] == ["dti-toy.safetensors"]
    assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
        line for line in err.splitlines() if "ordinary word" in line
    ] and "dti-toy" in err
    code, _, err = run_cli(with_arg(with_arg(base_args, "--token", "<my-toy>"), "--output", tmp_path / "two"), capsys)
    assert code == 0 and [p.name for p in (tmp_path / "two" / "webui").iterdir()] == ["my-toy.safetensors"]


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["inspect", "nothing.safetensors", "--top", "0"], "--top 0"),
        (["interpolate", "a", "b", "--prompt", "a {} in {style}"], "{style}"),
        (["interpolate", "a", "b", "--sample-steps", "0"], "--sample-steps 0"),
        (["interpolate", "a", "b", "--seeds", "18446744073709551616"], "--seed"),
        (["interpolate", "a", "b", "--resolution", "63"], "--resolution 63"),
        (["interpolate", "a", "b", "--blends", "5000"], "at most 1000"),
    ],
)
def test_interpolate_and_inspect_settings_refused_before_reading(argv, fragment, capsys, tmp_path):
    from refusal import assert_refused

    out = tmp_path / "out"
    extra = ["--out", out] if argv[0] == "interpolate" else []
    assert_refused([*argv, *extra], capsys, fragment, untouched=[out])


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train", "photos", "--token", "<a>", "--init", "dog", "--model", "m", "--output", "runs/a"], "dti train --resume runs/a"),
        (["train", "--resume", "runs/b"], "dti train --resume runs/b"),
        (["sweep", "m.toml", "--methods", "dti", "--model", "m", "--out", "s"], "same `dti sweep` command again"),
    ],
)
def test_a_hard_interrupt_says_how_to_continue(argv, hint, capsys, monkeypatch):
    from dti import commands as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.verbs()[argv[0]], "run", interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted;") and hint in err[0]


def test_a_hub_model_without_a_network_is_one_line_at_once(tmp_path, base_args, capsys, monkeypatch):
    """dti train --model org/name, the hub unreachable and the machine not told it is offline: one line,
    no download tried (defect: 11 lines of huggingface_hub retries over about 25 s before dti's line)."""
    import huggingface_hub
    from huggingface_hub import constants

    from dti.models import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download was tried"))
    code, _, err = run_cli(with_arg(base_args, "--model", "some-org/some-model"), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "'some-org/some-model' is not a local folder and not in the hub cache, and the hub cannot be reached" in lines[0]
