"""The defects a new user and hostile input found (issue 18, section 6), each with the test that fails
without its fix. Defects tested where their room's tests live: 6 (tests/test_cli.py, test_scorers.py:
a hub id without a network), 7 (test_evaluate.py: the mini metric on real photos), 10 (test_use.py:
"unload it first"; test_bad_concepts.py: a .pt named with a space), 12 (test_tool_lookups.py: every
tool's lookup rule)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import dti
from conftest import REPO, nan_loss_at
from dti.commands import main
from dti.concepts.concept import Concept
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
    shell = f"{sys.executable} -m dti inspect {run} --json | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip() == "{" and done.stderr == "", done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports a tool ended by a closed pipe


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
