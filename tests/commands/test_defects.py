"""The defects a new user and hostile input found (issue 18, section 6), each with the test that fails
without its fix. Defects tested where their room's tests live: 6 (commands/test_cli.py and
evaluation/test_scorers.py: a hub id without a network), 7 (evaluation/test_evaluate.py: the mini
metric on real photos), 10 (use/test_use.py: "unload it first"; concepts/test_bad_concepts.py: a .pt
named with a space), 12 (concepts/test_tool_lookups.py: every tool's lookup rule)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import dti
from conftest import REPO, load_pipe, nan_loss_at
from dti.commands import main
from dti.concepts.concept import Concept
from dti.text.vocab import vocabulary_rows
from refusal import assert_refused

FAST = ["--resolution", "64", "--no-validation", "--quiet"]


def train_args(photos, model, out, *extra):
    return ["train", str(photos), "--token", "<my-tok>", "--init", "dog", "--model", str(model), "--output", str(out), *FAST, *extra]


# ------------------------------------------------------------------ 1. a learning rate past any float
def test_a_learning_rate_past_float_range_is_one_line(tiny_sd, photos, tmp_path, capsys):
    """`--method ti --lr 1e38` ended in a traceback from AdamW (its step lr x batch overflowed float32)."""
    out = tmp_path / "run"
    argv = train_args(photos, tiny_sd, out, "--method", "ti", "--lr", "1e38", "--steps", "2")
    assert_refused(argv, capsys, "--lr 1e+38 is past the sane limit")
    assert not out.exists()


def test_in_a_manifest_one_subjects_numerics_stop_only_that_subject(tiny_sd, photos, tmp_path, monkeypatch, capsys):
    """A subject whose every update blows up (lr at the limit) stops; the other subject finishes (defect:
    both stopped)."""
    for name in ("a", "b"):
        shutil.copytree(photos, tmp_path / "data" / name)
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        'root = "data"\n[defaults]\nsteps = 6\nresolution = 64\nvalidate = false\nmethod = "ti"\n'
        '[subjects.a]\nphotos = "a"\nclass = "dog"\nkind = "live"\nsettings = { lr = 1000.0 }\n'
        '[subjects.b]\nphotos = "b"\nclass = "dog"\nkind = "live"\n'
    )
    out = tmp_path / "runs"
    code = main(["train", "--manifest", str(manifest), "--model", str(tiny_sd), "--output", str(out), "--quiet", "--mix", "group"])
    err = capsys.readouterr().err
    assert code == 1 and "stopped: 1 concept(s) stopped (a); the others finished (b)" in err, err
    assert (out / "b" / "concept.safetensors").is_file() and not (out / "a" / "concept.safetensors").exists()


# ------------------------------------------------------------------ 2. --resume with no readable checkpoint
def test_resume_without_a_readable_checkpoint_says_it_starts_again(tiny_sd, photos, tmp_path, capsys):
    """Killed before its first checkpoint, checkpoints deleted, or every one damaged: the run trains
    from step 0 and says so (defect: it printed "(resumed)"), and the warnings say which checkpoint
    the next try is (defect: "using the one before it" for the oldest, too)."""
    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "2")) == 0
    (run / "concept.safetensors").unlink()  # as if killed after its last checkpoint
    for path in (run / "checkpoints").iterdir():
        path.write_bytes(b"damaged")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "using the one of step 3 before it" in warnings[0] and "no earlier checkpoint is left" in warnings[1], warnings
    assert "keeps no readable checkpoint" in warnings[2] and "trains again from step 0" in warnings[2]
    assert "started again from step 0: no checkpoint to resume" in out and "(resumed" not in out, out
    assert Concept.load(run / "concept.safetensors").meta["step"] == 4
    shutil.rmtree(run / "checkpoints")
    (run / "concept.safetensors").unlink()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "started again from step 0" in capsys.readouterr().out


# ------------------------------------------------------------------ 3. every step skipped
def test_a_run_whose_every_step_was_skipped_learned_nothing_and_says_so(tiny_sd, photos, tmp_path, capsys, monkeypatch):
    """Every step non-finite but fewer than --max-bad-steps: exit 1, no concept (defect: "learned",
    exit 0, the initializer written as the concept)."""
    nan_loss_at(monkeypatch, range(1, 100))
    run = tmp_path / "run"
    code = main(train_args(photos, tiny_sd, run, "--steps", "3"))
    err = capsys.readouterr().err
    assert code == 1 and "every one of the 3 steps was skipped" in err and "nothing was learned" in err, err
    assert not (run / "concept.safetensors").exists() and not (run / "webui").exists()
    with pytest.raises(dti.RunStopped, match="nothing was learned"):
        dti.train(photos, "<t2>", "dog", tiny_sd, None, steps=2, resolution=64, validate=False, progress=False)


# ------------------------------------------------------------------ 4. a sweep that moves
SWEEP_MANIFEST = '[defaults]\nsteps = 2\nresolution = 64\nvalidate = false\n[subjects.pup]\nphotos = "pup"\nclass = "dog"\nkind = "live"\n'


def test_a_copied_sweep_is_its_own_and_a_damaged_index_is_rebuilt(tiny_sd, photos, tmp_path, capsys):
    """sweep.json held absolute paths: a copied sweep read the original's concepts, a moved one had "no
    finished run". And a damaged sweep.json named a rerun that refused the same file."""
    from dti.training.sweep import read_sweep

    shutil.copytree(photos, tmp_path / "pup")
    (tmp_path / "m.toml").write_text(SWEEP_MANIFEST)
    first = tmp_path / "first"
    argv = ["sweep", str(tmp_path / "m.toml"), "--methods", "dti", "--model", str(tiny_sd), "--quiet"]
    assert main([*argv, "--out", str(first)]) == 0
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(first, copy)
    first.rename(moved)
    for folder in (copy, moved):
        (entry,) = read_sweep(folder).runs
        assert entry.concept == folder / "dti" / "pup" / "concept.safetensors" and entry.concept.is_file() and entry.done
    (copy / "sweep.json").write_text('{"format": "dti-sweep", "version": 1, "runs": [{"subject"')
    with pytest.raises(dti.DTIError, match="it rebuilds the index from the run folders"):
        read_sweep(copy)
    capsys.readouterr()
    assert main([*argv, "--out", str(copy)]) == 0  # the fix the message names works
    err = capsys.readouterr().err
    assert "rebuilding it from the run folders" in err and read_sweep(copy).runs[0].done


# ------------------------------------------------------------------ 5. the model a concept records
def test_a_local_model_is_recorded_resolved_and_a_recorded_model_is_named_when_it_fails(tiny_sd, photos, tmp_path, capsys):
    """A relative --model folder became a hub id when used from another folder; the error did not say
    the name came from the concept."""
    work = tmp_path / "work"
    shutil.copytree(tiny_sd, work / "model")
    os.chdir(work)
    try:
        assert main(train_args(photos, "model", tmp_path / "run", "--steps", "1")) == 0
    finally:
        os.chdir(REPO)
    concept = Concept.load(tmp_path / "run")
    assert concept.meta["base_model"] == str((work / "model").resolve())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == str((work / "model").resolve())
    shutil.rmtree(work)
    capsys.readouterr()
    code = main(["generate", "a <my-tok>", "--concept", str(tmp_path / "run"), "--out", str(tmp_path / "g"), "--sample-steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "the concept was trained on" in err[0] and "pass --model" in err[0], err


# ------------------------------------------------------------------ 8. a closed pipe
def test_a_closed_pipe_ends_quietly(tiny_sd, photos, tmp_path):
    """`dti inspect --json | head -1` printed "could not write: Broken pipe; free space..."."""
    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "1")) == 0
    # The reader is gone before dti writes a byte, so the write must meet the closed pipe (with `| head -1`
    # a small output can fit the pipe's buffer first and the run ends 0: a race, not a test).
    proc = subprocess.Popen(
        [sys.executable, "-m", "dti", "inspect", str(run), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err  # 128 + SIGPIPE, as a shell reports a tool ended by a closed pipe


# ------------------------------------------------------------------ 9. words dti-mini knows
def test_an_initializer_dti_mini_does_not_know_is_answered_with_words_it_knows(tmp_path, capsys):
    """On dti-mini, --init dog was refused with "use a common class word such as 'dog'"."""
    photos = tmp_path / "p"
    photos.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(photos / f"{i}.png")
    argv = ["train", str(photos), "--token", "<my-star>", "--init", "dog", "--model", "dti-mini", "--output", str(tmp_path / "r")]
    assert_refused(argv, capsys, "use a class word it knows, such as 'circle', 'square' or 'triangle'", untouched=[tmp_path / "r"])


# ------------------------------------------------------------------ 10. help pages
def test_each_verb_describes_itself(capsys):
    """`dti rescale --help` repeated convert's description; `dti inspect` did not say what --model adds."""
    helps = {}
    for verb in ("convert", "rescale", "inspect"):
        assert main([verb, "--help"]) == 0
        helps[verb] = " ".join(capsys.readouterr().out.split())
    assert "Plain Textual Inversion inflates" in helps["rescale"] and "Plain Textual Inversion inflates" not in helps["convert"]
    assert "with --model, the nearest vocabulary words" in helps["inspect"]


def test_inspect_without_a_model_says_what_a_model_adds(tiny_sd, photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "1")) == 0
    capsys.readouterr()
    assert main(["inspect", str(run)]) == 0
    assert "pass --model to measure them and to list each vector's nearest vocabulary words" in capsys.readouterr().out


# ------------------------------------------------------------------ 11. the Python dti needs
def test_the_package_asks_for_the_python_its_libraries_need():
    """transformers 5 and diffusers 0.42 need Python 3.11; requires-python said 3.10."""
    text = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in text
    readme = (REPO / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme  # the CPU build on a machine without a GPU


def test_missing_photo_folder_names_the_argument(tiny_sd, tmp_path, capsys):
    """The message said "--photos is missing", a flag that does not exist."""
    argv = ["train", "--token", "<t>", "--init", "dog", "--model", str(tiny_sd), "--output", str(tmp_path / "o")]
    assert_refused(argv, capsys, "the photo folder is missing; give it first: dti train PHOTOS", untouched=[tmp_path])


def test_an_abbreviated_or_foreign_flag_gets_dtis_name_for_it(tiny_sd, photos, tmp_path, capsys):
    """No silent prefix abbreviations; other trainers' flags answered with dti's name."""
    base = ["train", str(photos), "--token", "<t>", "--init", "dog", "--model", str(tiny_sd), "--output", str(tmp_path / "o")]
    assert_refused([*base, "--step", "2"], capsys, "--step is not a flag of `dti train`; did you mean --steps?")
    assert_refused([*base, "--learning_rate", "1e-3"], capsys, "dti calls it --lr")
    assert_refused([*base, "--max_train_steps", "9"], capsys, "dti calls it --steps")
    assert_refused([*base, "--validation_steps", "9"], capsys, "dti calls it --validation-every")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 13. what the hostile-user suite found
@pytest.mark.parametrize("which", ["photos", "model"])
def test_an_output_inside_an_input_folder_is_refused(tiny_sd, photos, tmp_path, capsys, which):
    """`--output <the photo folder> --overwrite` wrote the run among the photos (and into the model)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    target = {"photos": photos, "model": model}[which]
    for out in (target, target / "sub"):
        argv = train_args(photos, model, out, "--steps", "1", "--overwrite")
        line = assert_refused(argv, capsys, "choose a separate output folder", untouched=[photos, model])
        assert ("is the" if out == target else "lies inside the") in line, line
    assert not (target / "sub").exists()


@pytest.mark.parametrize("text", ["=1", "foo"])
def test_a_malformed_family_option_is_a_usage_line(text, capsys):
    """`--option =1` escaped argparse as a DTIError traceback."""
    argv = ["train", "p", "--token", "<t>", "--model", "m", "--output", "o", "--option", text]
    assert_refused(argv, capsys, f"argument --option: {text!r} is not KEY=VALUE, e.g. instruction=true")


def test_generate_rescales_to_every_statistic_help_offers(tiny_sd, photos, tmp_path, capsys):
    """`generate --rescale median` was offered by --help and refused by the loader ('use mean, min or max')."""
    from dti.concepts.concept import Concept

    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "1", "--method", "ti")) == 0
    out = tmp_path / "g"
    argv = ["generate", "a <my-tok>", "--concept", str(run), "--model", str(tiny_sd), "--out", str(out), "--sample-steps", "1"]
    assert main([*argv, "--rescale", "median", "--resolution", "64", "-n", "1"]) == 0, capsys.readouterr().err
    assert len(list(out.glob("seed-*.png"))) == 1
    pipe = load_pipe(tiny_sd)
    median = float(vocabulary_rows(pipe.tokenizer, pipe.text_encoder).detach().norm(dim=-1).median())
    concept = dti.load(pipe, run, rescale="median")
    norm = float(concept.encoders["text_encoder"].vectors.norm(dim=-1)[0])
    assert norm == pytest.approx(median, rel=1e-5)
    assert Concept.load(run).encoders["text_encoder"].vectors.norm() != pytest.approx(norm)


def test_generation_speaks_in_dtis_lines_only(tiny_sd, photos, tmp_path, capsys):
    """fp16 on the CPU and a prompt past 77 tokens printed diffusers' and transformers' own log lines
    (several, repeated); now one dti warning each, and nothing else on stderr."""
    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "1")) == 0
    prompt = "a <my-tok> dog " + "very " * 100 + "fluffy"
    argv = ["generate", prompt, "--concept", str(run), "--out", str(tmp_path / "g"), "-n", "1", "--sample-steps", "1"]
    argv += ["--resolution", "64", "--precision", "fp16"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")}
    done = subprocess.run([sys.executable, "-m", "dti", *argv], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 0 and all(line.startswith("warning:") for line in lines), done.stderr
    assert len(lines) == 2 and "fp16 on the CPU" in lines[0] and "reads the first 77; the rest is ignored" in lines[1], lines


def test_an_unknown_token_in_the_negative_prompt_is_refused(tiny_sd, photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(photos, tiny_sd, run, "--steps", "1")) == 0
    out = tmp_path / "g"
    argv = ["generate", "a <my-tok>", "--concept", str(run), "--out", str(out), "--sample-steps", "1", "--resolution", "64"]
    assert_refused([*argv, "--negative-prompt", "a <nope>"], capsys, "the negative prompt uses <nope> but no --concept provides it")
    assert_refused([*argv, "--guidance", "1e30"], capsys, "--guidance 1e+30 is not valid; use a number from 0 to 100")
    assert not out.exists()


def test_a_token_without_a_file_name_and_its_plot_are_quiet(tiny_sd, photos, tmp_path, capsys):
    """An emoji token: matplotlib's "Glyph missing" warnings on stderr, and a file-name warning that
    called the fallback 'concept' an ordinary word."""
    run = tmp_path / "run"
    argv = ["train", str(photos), "--token", "<\U0001f436>", "--init", "dog", "--model", str(tiny_sd), "--output", str(run), *FAST]
    assert main([*argv, "--steps", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no letter, digit, '.' or '-' a file name keeps" in err[0] and "dti-concept" in err[0], err
    assert (run / "norms.png").is_file()


def test_the_demo_refuses_runaway_lengths(tmp_path, capsys):
    out = tmp_path / "demo"
    assert_refused(["demo", "--out", out, "--steps", "1000000000"], capsys, "--steps 1000000000 is not valid; use 1 to 1,000,000")
    assert_refused(["demo", "--out", out, "--sample-steps", "100000"], capsys, "--sample-steps 100000 is not valid; use 1 to 1000")
    assert not out.exists()


def test_a_component_written_as_a_bare_class_name_is_named(tiny_sd, photos, tmp_path, capsys):
    """model_index.json with `"vae": "AutoencoderKL"` ended in "too many values to unpack (expected 2)"."""
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    index = json.loads((model / "model_index.json").read_text())
    index["vae"] = "AutoencoderKL"
    (model / "model_index.json").write_text(json.dumps(index))
    line = assert_refused(train_args(photos, model, tmp_path / "run", "--steps", "1"), capsys, "lists component vae as")
    assert '"AutoencoderKL", not a [library, class] pair' in line


def test_error_lines_escape_control_characters(tmp_path, capsys):
    """A photo named with a newline split the error over two lines."""
    from dti.core.errors import one_line

    assert one_line("bad\nname\t.png") == "bad\\nname\\t.png" and one_line("caf\u00e9 \U0001f436") == "caf\u00e9 \U0001f436"
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "a\nb.png").write_bytes(b"not a png")
    assert_refused(train_args(photos, "m", tmp_path / "o", "--steps", "1"), capsys, "a\\nb.png")
