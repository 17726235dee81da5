"""Long runs: exact resume, SIGKILL / SIGTERM, the lock, transactional overwrite, non-finite steps.

Every comparison here is bit-for-bit on CPU: a resumed run must write what an uninterrupted run
writes (concept rows, snapshots, sample images, log), because every random draw is a function of
(seed, sample index) and checkpoints hold the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dti
from conftest import REPO, load_pipe, nan_loss_at
from dti.commands import main
from dti.concepts.concept import Concept
from dti.models import adapter_for
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.training.stopping import RunStopped
from refusal import assert_refused, snapshot

FAST = dict(resolution=64, progress=False)


def cli_args(photos, model, out, *extra):
    return [
        "train",
        photos,
        "--token",
        "<my-tok>",
        "--init",
        "dog",
        "--model",
        model,
        "--output",
        out,
        "--resolution",
        "64",
        "--quiet",
        *extra,
    ]


LONG = ["--steps", "10", "--checkpoint-every", "2", "--snapshot-every", "3", "--validation-every", "4"]
LONG += ["--sample-steps", "2", "--validation-seed", "0", "--validation-prompt", "a photo of a {}"]


def rows_of(run: Path) -> dict[str, torch.Tensor]:
    concept = Concept.load(run)
    return {name: enc.vectors for name, enc in concept.encoders.items()}


def same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same results: rows, snapshots, sample images, logged numbers."""
    ra, rb = rows_of(a), rows_of(b)
    assert ra.keys() == rb.keys()
    for name in ra:
        assert torch.equal(ra[name], rb[name]), name
    snaps = sorted(p.name for p in (a / "snapshots").iterdir())
    assert snaps == sorted(p.name for p in (b / "snapshots").iterdir()) and snaps
    for name in snaps:
        sa, sb = Concept.load(a / "snapshots" / name), Concept.load(b / "snapshots" / name)
        assert all(torch.equal(sa.encoders[k].vectors, sb.encoders[k].vectors) for k in sa.encoders), name
    grids = sorted(p.name for p in (a / "samples").iterdir())
    assert grids == sorted(p.name for p in (b / "samples").iterdir()) and grids
    for name in grids:
        assert np.array_equal(np.asarray(Image.open(a / "samples" / name)), np.asarray(Image.open(b / "samples" / name))), name
    la = [json.loads(line) for line in (a / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (b / "train_log.jsonl").read_text().splitlines()]
    assert la == lb


def spawn(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "tests")}
    return subprocess.Popen([sys.executable, "-m", "dti", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Poll until the subprocess has written ``path``; the timeout only turns a hung run into a
    failure with its stderr (it measures no speed)."""
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


# ---------------------------------------------------------------------- state_dict, in process
@pytest.mark.parametrize("method", ["dti", "ti"])
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_state_dict_continues_bit_identically(family, method, request, photos, one_thread):
    pipe = load_pipe(request.getfixturevalue(f"tiny_{family}"))
    images = load_photos(photos)
    c = resolve(
        TrainConfig(photos=str(photos), token="<t>", init="dog", method=method, steps=6, batch_size=2, grad_accum=2, **FAST),
        {},
        64,
    )

    def trainer():
        t = Trainer(c, adapter_for(pipe), images, None)
        t.setup()
        return t

    whole = trainer()
    losses = [whole.step() for _ in range(6)]
    expected = {k: r.param.detach().clone() for k, r in whole.rows.items()}
    whole.detach()

    first = trainer()
    for _ in range(3):
        first.step()
    state = first.state_dict()
    first.detach()
    torch.save(state, Path(photos).parent / "state.pt")  # through the file format too
    state = torch.load(Path(photos).parent / "state.pt", weights_only=True)
    second = trainer()
    second.load_state_dict(state)
    assert second.step_count == 3
    resumed = [second.step() for _ in range(3)]
    got = {k: r.param.detach().clone() for k, r in second.rows.items()}
    second.detach()
    assert resumed == losses[3:]
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    if method == "dti":  # the optimizer state that matters was carried (rows moved, so it mattered)
        assert not torch.equal(state["rows"]["text_encoder"], got["text_encoder"])


def test_steps_draw_by_sample_index_not_by_history(tiny_sd, photos, one_thread):
    """Step k's samples do not depend on the steps before it: two trainers that start at different
    steps draw the same batch for the same step."""
    from dti.core.draws import SampleDraws, batch_indices

    pipe = load_pipe(tiny_sd)
    c = resolve(TrainConfig(photos=str(photos), token="<t>", init="dog", steps=9, batch_size=4, **FAST), {}, 64)
    t = Trainer(c, adapter_for(pipe), load_photos(photos), None)
    a = t.data.batch(batch_indices(7, 0, 4, 1))
    t.setup()
    for _ in range(3):
        t.step()
    t.detach()
    assert t.data.batch(batch_indices(7, 0, 4, 1)) == a
    # a sample's noise is its own: the same with other samples beside it
    assert torch.equal(SampleDraws(0, [5, 6]).randn((3,))[1], SampleDraws(0, [6]).randn((3,))[0])
    # two shards of a batch are the batch
    assert list(batch_indices(3, 1, 4, 2, 0, 2)) + list(batch_indices(3, 1, 4, 2, 1, 2)) == list(batch_indices(3, 1, 4, 2))


# ---------------------------------------------------------------------- kill and resume, subprocess
def whole_and_running(request, family, method, photos, tmp_path, checkpoint_step):
    """An uninterrupted run (in process), and the same run in a subprocess, once it has written the
    checkpoint of ``checkpoint_step``."""
    model = request.getfixturevalue(f"tiny_{family}")
    whole, other = tmp_path / "whole", tmp_path / "other"
    extra = [*LONG, "--method", method]
    assert main([str(a) for a in cli_args(photos, model, whole, *extra)]) == 0
    proc = spawn(cli_args(photos, model, other, *extra))
    wait_for(other / "checkpoints" / f"step-{checkpoint_step:06d}.pt", proc)
    return whole, other, proc


@pytest.mark.parametrize("family,method", [("sd", "dti"), ("sdxl", "ti")])
def test_sigkill_then_resume_is_bit_identical(family, method, request, photos, tmp_path, capsys):
    whole, killed, proc = whole_and_running(request, family, method, photos, tmp_path, 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "concept.safetensors").exists(), "the run finished before it was killed; the test proves nothing"
    assert (killed / ".dti.lock").exists()  # a dead process's lock is stale and is taken over
    capsys.readouterr()
    assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    same_run(whole, killed)
    assert not (killed / ".dti.lock").exists()
    # a finished run asked to resume says so and changes nothing
    before = snapshot(killed)
    capsys.readouterr()
    assert main(["train", "--resume", str(killed)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert snapshot(killed) == before


@pytest.mark.parametrize("family,method,signum,code", [("sdxl", "ti", signal.SIGTERM, 143), ("sd", "dti", signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_and_say_how_to_continue(family, method, signum, code, request, photos, tmp_path, capsys):
    whole, stopped, proc = whole_and_running(request, family, method, photos, tmp_path, 2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    err = err.decode()
    assert proc.returncode == code, err
    assert len([line for line in err.splitlines() if line.startswith("stopped: ")]) == 1, err
    assert f"dti train --resume {stopped}" in err and "Traceback" not in err
    assert not (stopped / "concept.safetensors").exists()
    step = max(int(p.stem.split("-")[1]) for p in (stopped / "checkpoints").iterdir())
    assert (stopped / "snapshots" / f"concept-step-{step:06d}.safetensors").is_file()  # the current concept
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    snaps = stopped / "snapshots"
    (snaps / f"concept-step-{step:06d}.safetensors").unlink()  # the interruption's extra snapshot
    if step % 3 == 0:
        Concept.load(whole / "snapshots" / f"concept-step-{step:06d}.safetensors").save(snaps / f"concept-step-{step:06d}.safetensors")
    same_run(whole, stopped)


def test_resume_refuses_changed_settings_and_changed_photos(tiny_sd, photos, tmp_path, capsys):
    run = tmp_path / "run"
    proc = spawn(cli_args(photos, tiny_sd, run, *LONG))
    wait_for(run / "checkpoints" / "step-000002.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_refused(["train", "--resume", run, "--lr", "0.5"], capsys, "--lr cannot change", untouched=[run])
    assert_refused(["train", "--resume", tmp_path / "nothing"], capsys, "no such run folder", untouched=[tmp_path / "nothing"])
    assert_refused(cli_args(photos, tiny_sd, run, "--steps", "3"), capsys, "dti train --resume", untouched=[run])
    Image.new("RGB", (64, 64), "red").save(photos / "00.png")
    assert_refused(["train", "--resume", run], capsys, "photos", untouched=[run])


def test_a_finished_run_trains_further_as_if_never_stopped(tiny_sd, photos, tmp_path, capsys):
    ten, six = tmp_path / "ten", tmp_path / "six"
    quick = ["--checkpoint-every", "3", "--no-validation"]
    assert main([str(a) for a in cli_args(photos, tiny_sd, ten, "--steps", "10", *quick)]) == 0
    assert main([str(a) for a in cli_args(photos, tiny_sd, six, "--steps", "6", *quick)]) == 0
    assert main(["train", "--resume", str(six), "--steps", "10", "--quiet"]) == 0
    assert torch.equal(rows_of(ten)["text_encoder"], rows_of(six)["text_encoder"])
    assert Concept.load(six).meta["steps"] == 10


# ---------------------------------------------------------------------- the lock
def test_second_run_into_a_busy_folder_is_refused(tiny_sd, photos, tmp_path, capsys):
    run = tmp_path / "run"
    proc = spawn(cli_args(photos, tiny_sd, run, "--steps", "400", "--no-validation"))
    try:
        wait_for(run / "config.json", proc)
        assert_refused(cli_args(photos, tiny_sd, run, "--steps", "2", "--overwrite"), capsys, "another dti run")
        assert_refused(["train", "--resume", run], capsys, "another dti run")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- overwrite is transactional
def test_overwrite_replaces_only_on_success_and_only_dti_files(tiny_sd, tiny_sdxl, photos, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main([str(a) for a in cli_args(photos, tiny_sdxl, run, "--steps", "2", "--sample-steps", "1")]) == 0
    old = rows_of(run)
    (run / "samples" / "mine.png").write_bytes(b"user")
    (run / "snapshots").mkdir()
    (run / "snapshots" / "keep.txt").write_text("user")
    (run / "notes.md").write_text("user")

    def boom(self, concept):
        raise RuntimeError("injected failure while writing results")

    monkeypatch.setattr(Trainer, "finish", boom)
    with pytest.raises(RuntimeError, match="injected"):
        main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "2", "--overwrite", "--no-validation")])
    monkeypatch.undo()
    assert all(torch.equal(old[k], rows_of(run)[k]) for k in old)  # the old results, untouched
    assert (run / "learned_embeds_2.safetensors").exists()

    assert main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "2", "--overwrite", "--no-validation")]) == 0
    assert set(rows_of(run)) == {"text_encoder"}  # the new SD concept
    assert not (run / "learned_embeds_2.safetensors").exists()  # the old SDXL run's file went with it
    assert not (run / "samples.png").exists() and not (run / "samples" / "step-000002.png").exists()
    assert (run / "samples" / "mine.png").read_bytes() == b"user"
    assert (run / "snapshots" / "keep.txt").read_text() == "user"
    assert (run / "notes.md").read_text() == "user"
    assert not (run / ".dti-overwrite").exists() and not (run / ".dti.lock").exists()


def test_an_overwrite_whose_commit_fails_keeps_every_old_file(tiny_sd, photos, tmp_path, capsys):
    """Renames onto run/concept.safetensors keep failing (also any put-back): the old concept and
    every other old file stay as they were, the finished new run stays staged, and --resume
    commits it once the disk behaves."""
    from dti.testing.faults import fail_os_replace

    run = tmp_path / "run"
    assert main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "2", "--no-validation")]) == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with fail_os_replace(match=f"{run}/concept.safetensors"):
        code = main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "3", "--overwrite", "--no-validation")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and f"{run}/concept.safetensors" in err and "dti-new" not in err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and ".dti-overwrite" not in p.parts}
    assert after == before
    assert (run / ".dti-overwrite" / "concept.safetensors").is_file()  # the new run, whole
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert Concept.load(run).meta["step"] == 3 and not (run / ".dti-overwrite").exists()
    assert not [p for p in run.rglob("*") if "dti-old" in p.name or "dti-new" in p.name]


# ---------------------------------------------------------------------- numerics
def test_non_finite_steps_are_skipped_then_the_run_stops_resumably(tiny_sd, photos, tmp_path, capsys, monkeypatch):
    bad = {3}  # one bad step: skipped, counted, the run goes on
    calls = nan_loss_at(monkeypatch, bad)
    once = tmp_path / "once"
    assert main([str(a) for a in cli_args(photos, tiny_sd, once, "--steps", "5", "--no-validation")]) == 0
    concept = Concept.load(once)
    assert concept.meta["skipped_steps"] == 1
    log = [json.loads(line) for line in (once / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("skipped")] == [3] and log[3]["norms"] == log[2]["norms"]

    calls["n"] = 0
    bad.clear()
    bad.update(range(4, 100))  # from step 4 on: stop after 3 in a row
    run = tmp_path / "run"
    code = main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "20", "--max-bad-steps", "3", "--no-validation")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "for 3 steps in a row" in lines[0] and "Traceback" not in err
    good = Concept.load(run / "snapshots" / "concept-step-000003.safetensors")
    state = torch.load(run / "checkpoints" / "step-000006.pt", weights_only=True)
    assert torch.equal(state["rows"]["text_encoder"] * good.encoders["text_encoder"].magnitude, good.encoders["text_encoder"].vectors)
    assert torch.isfinite(good.encoders["text_encoder"].vectors).all()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # resumable: finite again, it finishes
    assert Concept.load(run).meta["skipped_steps"] == 3


def test_huge_learning_rates_end_in_one_line_not_a_traceback(tiny_sd, photos, tmp_path, capsys):
    run = tmp_path / "run"
    code = main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "30", "--method", "ti", "--lr", "1000", "--no-validation")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 1 and "in a row" in err, err  # every update pushes the free row past any usable norm: undone, then a clean stop
    assert Concept.load(run / "snapshots" / "concept-step-000000.safetensors").meta["step"] == 0


def test_library_interrupt_raises_run_stopped(tiny_sd, photos, tmp_path, monkeypatch):
    """The Python API sees the same clean stop (here a SIGTERM delivered during step 2)."""
    pipe = load_pipe(tiny_sd)
    real = Trainer.launch

    def launch(self, step):
        if self.step_count == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, step)

    monkeypatch.setattr(Trainer, "launch", launch)
    with pytest.raises(RunStopped) as info:
        dti.train(photos, "<t>", "dog", pipe, tmp_path / "run", steps=5, validate=False, **FAST)
    assert info.value.exit_code == 143 and "step 2 of 5" in str(info.value)
    monkeypatch.undo()
    concept = dti.resume(tmp_path / "run", pipe)
    assert concept.meta["step"] == 5


# ---------------------------------------------------------------------- data parallel through accelerate
def test_two_processes_train_what_one_process_trains(tiny_sd, photos, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["--steps", "4", "--batch-size", "4", "--checkpoint-every", "2", "--no-validation"]
    assert main([str(a) for a in cli_args(photos, tiny_sd, one, *extra)]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", "-m", "dti"]
    out = subprocess.run([*launch, *map(str, cli_args(photos, tiny_sd, two, *extra))], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = rows_of(one)["text_encoder"], rows_of(two)["text_encoder"]
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert not torch.equal(a, Concept.load(one).encoders["text_encoder"].init * Concept.load(one).encoders["text_encoder"].magnitude)
    la = [json.loads(x)["loss"] for x in (one / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (two / "train_log.jsonl").read_text().splitlines()]
    assert la[0] is None and np.allclose(la[1:], lb[1:], atol=1e-5)  # the same global batches, the same losses
    assert out.stdout.count("learned <my-tok>") == 2  # every rank finished; only rank 0 wrote (one config, one log)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-000002.pt", "step-000004.pt"]
    # resume works the same sharded: train the 2-process run further, compare with 6 steps in one process
    six = tmp_path / "six"
    assert main([str(a) for a in cli_args(photos, tiny_sd, six, *extra, "--steps", "6")]) == 0
    out = subprocess.run(
        [*launch, "train", "--resume", str(two), "--steps", "6", "--quiet"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert torch.allclose(rows_of(six)["text_encoder"], rows_of(two)["text_encoder"], atol=1e-5, rtol=0)


def test_fp16_scales_the_loss_and_an_overflow_is_not_a_bad_step(tiny_sd, photos, one_thread):
    from dti.models import load_adapter

    adapter = load_adapter(tiny_sd, torch.float16, torch.device("cpu"), quiet=True)
    c = resolve(TrainConfig(photos=str(photos), token="<t>", init="dog", steps=4, **FAST), {}, 64)
    t = Trainer(c, adapter, load_photos(photos), None)
    t.setup()
    assert t.scaler is not None and all(p.dtype == torch.float32 for p in t.trainable())
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # certain to overflow fp16 gradients
    before = t.trainable()[0].detach().clone()
    assert t.step() is None and t.bad_in_row == 0 and t.skipped == 0  # skipped by the scaler, not a bad step
    assert torch.equal(before, t.trainable()[0]) and t.scaler.get_scale() < 2.0**40
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    losses = [t.step() for _ in range(2)]
    assert all(loss is not None and np.isfinite(loss) for loss in losses)
    assert not torch.equal(before, t.trainable()[0])
    assert t.state_dict()["scaler"]["scale"] == t.scaler.get_scale()
    t.detach()


def test_a_stopped_overwrite_keeps_the_old_results_until_it_is_resumed(tiny_sd, photos, tmp_path, monkeypatch):
    pipe = load_pipe(tiny_sd)
    run = tmp_path / "run"
    old = dti.train(photos, "<my-tok>", "dog", pipe, run, steps=2, validate=False, **FAST)
    (run / "notes.md").write_text("user")
    real = Trainer.launch

    def launch(self, step):
        if self.step_count == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, step)

    monkeypatch.setattr(Trainer, "launch", launch)
    with pytest.raises(RunStopped, match=f"dti train --resume {run}"):
        dti.train(photos, "<my-tok>", "cat", pipe, run, steps=6, validate=False, overwrite=True, **FAST)
    monkeypatch.undo()
    assert torch.equal(Concept.load(run).encoders["text_encoder"].vectors, old.encoders["text_encoder"].vectors)
    assert (run / ".dti-overwrite" / "checkpoints").is_dir()
    new = dti.resume(run, pipe)
    assert new.meta["initializer"] == "cat" and Concept.load(run).meta["initializer"] == "cat"
    assert torch.equal(Concept.load(run).encoders["text_encoder"].vectors, new.encoders["text_encoder"].vectors)
    assert not (run / ".dti-overwrite").exists() and (run / "notes.md").read_text() == "user"
    assert json.loads((run / "config.json").read_text())["init"] == "cat"


def test_the_python_api_refuses_in_one_line(tiny_sd, photos, tmp_path, capsys):
    """What the API is handed is checked as the CLI's flags are: a DTIError, never a stray KeyError."""
    from dti.core.errors import DTIError

    pipe = load_pipe(tiny_sd)
    for bad, match in [
        (dict(templates=["a {} in {style}"]), "field {style}"),
        (dict(validation_prompts=["a {} {0}"]), "field {0}"),
        (dict(steps="2"), "whole number"),
        (dict(config=5), "config= takes"),
    ]:
        with pytest.raises(DTIError, match=match):
            dti.train(photos, "<my-tok>", "dog", pipe, tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()
    toml = tmp_path / "run.toml"
    toml.write_text("steps = 2\nresolution = 64\nvalidate = false\nprogress = false\n")
    done = dti.train(photos, "<my-tok>", "dog", pipe, tmp_path / "run", config=str(toml))
    assert done.meta["steps"] == 2
    assert dti.train(photos, "<my-tok>", "dog", pipe, config={"steps": 1, "resolution": 64, "validate": False}).meta["steps"] == 1
    capsys.readouterr()
    again = dti.resume(tmp_path / "run", pipe)  # finished: one warning, the concept as it is
    assert torch.equal(again.encoders["text_encoder"].vectors, done.encoders["text_encoder"].vectors)
    assert "already finished" in capsys.readouterr().err
    for source in (5, None, b"bytes"):
        with pytest.raises(DTIError, match="takes"):
            dti.load(pipe, source)
        with pytest.raises(DTIError, match="takes"):
            Concept.load(source)
    with pytest.raises(DTIError, match="needs a magnitude"):
        done.rescaled({})
    with pytest.raises(DTIError, match="NaN"):
        Concept("<n>", {"text_encoder": dti.EncoderVectors(torch.full((1, 32), float("nan")))}).save(tmp_path / "n.safetensors")
    assert not (tmp_path / "n.safetensors").exists()
    with pytest.raises(DTIError, match="n_vectors, width"):
        dti.EncoderVectors(torch.zeros(1, 2, 3))


def test_a_commit_that_fails_midway_puts_the_old_results_back(tiny_sd, photos, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main([str(a) for a in cli_args(photos, tiny_sd, run, "--steps", "2", "--no-validation")]) == 0
    before = snapshot(run)
    real, calls = os.replace, {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if ".dti-overwrite" in str(src) and "concept.safetensors" in str(src):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    assert_refused(cli_args(photos, tiny_sd, run, "--steps", "2", "--no-validation", "--overwrite", "--seed", "7"), capsys, "no space")
    monkeypatch.undo()
    after = snapshot(run)
    assert {k: v for k, v in after.items() if not k.startswith(".dti-overwrite")} == before  # every old file back, unchanged


def test_family_options_are_typed_and_outputs_fail_in_one_line(base_args, capsys, tmp_path):
    from dti.testing import build_tiny

    flux = build_tiny("flux", tmp_path / "flux")
    args = [*base_args, "--model", str(flux), "--token", "<my-tok>"]
    for option, fragment in [("guidance=lots", "must be a number"), ("guidance=nan", "finite"), ("guidance=-1", "finite")]:
        assert_refused([*args, "--option", option], capsys, fragment, untouched=[tmp_path / "out"])
    (tmp_path / "afile").write_text("x")
    assert_refused([*base_args, "--output", tmp_path / "afile" / "sub"], capsys, "output", untouched=[tmp_path / "afile"])
