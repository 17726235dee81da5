"""dti sweep: subjects x methods into OUT/<method>/<subject>/, indexed in sweep.json, resumable.

The end-to-end sweeps train the tiny SD pipeline for 3 steps at 32 px (no sample grids): a clean
sweep of 2 subjects x (dti, ti, ti-rescaled), a rerun that trains nothing, a sweep killed by
SIGTERM inside its second run that a rerun finishes bit-identically, and a failing run that is
recorded while the sweep goes on. Planning and refusals need no model.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import sigterm_in_multi_step
from dti.commands import sweep as sweep_command
from dti.commands.flags import flag
from dti.concepts.concept import Concept
from dti.core.errors import DTIError
from dti.training import session as trainer
from dti.training.config import TrainConfig, resolve
from dti.training.lock import RunLock
from dti.training.manifest import load_manifest
from dti.training.stopping import RunStopped
from dti.training.sweep import INDEX_LOCK, METHODS, RunEntry, parse_methods, plan, read_sweep, resolve_manifest, sweep

MANIFEST = """
[defaults]
steps = 3
resolution = 32
no-validation = true

[subjects.alpha]
photos = "alpha"
class = "dog"
kind = "live"

[subjects.beta]
photos = "beta"
class = "coffee mug"
kind = "object"
init = "mug"
"""


def make_photos(folder: Path, seed: int, n: int = 3) -> None:
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        arr = (torch.rand(48, 40 + 8 * i, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:02d}.png")


def make_manifest(root: Path, text: str = MANIFEST) -> Path:
    make_photos(root / "alpha", 1)
    make_photos(root / "beta", 2)
    path = root / "subjects.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("subjects"))


@pytest.fixture(scope="module")
def pipe(tiny_sd, threads):
    from dti.models import load_adapter

    return load_adapter(tiny_sd, quiet=True).pipe


@pytest.fixture(scope="module")
def clean(manifest, tiny_sd, tmp_path_factory, threads):
    """One uninterrupted sweep (the reference the other tests compare against)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    runs = sweep(manifest, "dti,ti,ti-rescaled", tiny_sd, out, quiet=True, device="cpu")  # as the shared CPU pipeline
    return out, runs


class Calls:
    """Counts (and optionally forbids) calls of trainer.train / trainer.resume_run, through the real ones."""

    def __init__(self, monkeypatch, forbid: bool = False) -> None:
        self.train: list[str] = []
        self.resume: list[str] = []
        real_train, real_resume = trainer.train, trainer.resume_run

        def train(photos, token, init, model, output, **settings):
            assert not forbid, f"trained {output}"
            self.train.append(Path(output).relative_to(Path(output).parents[1]).as_posix())
            return real_train(photos, token, init, model, output, **settings)

        def resume_run(folder, pipe=None, **settings):
            assert not forbid, f"resumed {folder}"
            self.resume.append(Path(folder).relative_to(Path(folder).parents[1]).as_posix())
            return real_resume(folder, pipe, **settings)

        monkeypatch.setattr(trainer, "train", train)
        monkeypatch.setattr(trainer, "resume_run", resume_run)


def files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` but the sweep index, with its mtime."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != "sweep.json"}


def vectors(path: Path) -> dict[str, torch.Tensor]:
    return {name: enc.vectors for name, enc in Concept.load(path).encoders.items()}


# ---------------------------------------------------------------------- end to end
def test_sweep_trains_every_subject_and_method_into_its_folder(clean, manifest, tiny_sd):
    out, runs = clean
    assert [(r.subject, r.method) for r in runs] == [
        ("alpha", "dti"),
        ("alpha", "ti"),
        ("alpha", "ti-rescaled"),
        ("beta", "dti"),
        ("beta", "ti"),
        ("beta", "ti-rescaled"),
    ]
    assert all(r.status == "done" for r in runs)
    assert sorted(p.name for p in out.iterdir()) == ["dti", "sweep.json", "ti"]  # ti-rescaled trains nothing
    for r in runs:
        source = r.derived_from or r.method
        assert r.run == out.resolve() / source / r.subject
        assert r.concept == r.run / "concept.safetensors" and r.concept.is_file()
        assert r.photos == (manifest.parent / r.subject).resolve()
    by = {(r.subject, r.method): r for r in runs}
    assert by["alpha", "ti-rescaled"].concept == by["alpha", "ti"].concept
    assert (by["alpha", "ti-rescaled"].derived_from, by["alpha", "ti-rescaled"].rescale) == ("ti", "mean")
    assert by["alpha", "ti-rescaled"].seconds == 0.0 and by["alpha", "ti"].seconds > 0
    assert (by["beta", "dti"].kind, by["beta", "dti"].class_word, by["beta", "dti"].init) == ("object", "coffee mug", "mug")
    assert (by["alpha", "dti"].kind, by["alpha", "dti"].token) == ("live", "<alpha>")

    # each run is the method it says, with the manifest's settings
    for (subject, method), r in by.items():
        concept = Concept.load(r.concept)
        config = json.loads((r.run / "config.json").read_text())
        assert concept.token == f"<{subject}>" and concept.meta["method"] == (r.derived_from or method)
        assert (config["steps"], config["resolution"], config["validate"]) == (3, 32, False)
        assert config["photos"] == str(r.photos) and config["init"] == r.init
        assert config["output"] == str(r.run)
    dti, ti = Concept.load(by["alpha", "dti"].concept), Concept.load(by["alpha", "ti"].concept)
    enc = dti.encoders["text_encoder"]
    stats = dti.meta["vocab_norms"]["text_encoder"]
    assert enc.magnitude == pytest.approx(stats["mean"]) and torch.allclose(enc.vectors.norm(dim=-1), torch.tensor(stats["mean"]))
    assert ti.encoders["text_encoder"].magnitude is None and ti.meta["optimizer"] == "adamw"

    # the index on disk says the same: the photos absolute, the runs relative to the sweep (it can be moved)
    index = read_sweep(out)
    assert list(index.runs) == runs
    assert index.methods == ("dti", "ti", "ti-rescaled")
    assert index.manifest == manifest.resolve() and index.model == str(Path(tiny_sd).resolve())
    assert index.subjects() == ["alpha", "beta"]
    assert [r.method for r in index.of_method("ti")] == ["ti", "ti"] and index.get("beta", "ti-rescaled").derived_from == "ti"
    raw = json.loads((out / "sweep.json").read_text())
    first = raw["runs"][0]
    for key in ("subject", "method", "derived_from", "kind", "class_word", "token", "photos", "run", "concept", "status", "seconds"):
        assert key in first, key
    assert Path(first["photos"]).is_absolute() and first["run"] == "dti/alpha" and first["concept"] == "dti/alpha/concept.safetensors"
    assert first["settings"] == {"steps": 3, "resolution": 32, "validate": False, "method": "dti", "precision": "auto"}


def test_a_second_sweep_trains_nothing(clean, manifest, tiny_sd, monkeypatch, capsys):
    out, runs = clean
    before = files(out)
    Calls(monkeypatch, forbid=True)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded though every run is done")

    monkeypatch.setattr("dti.models.load_adapter", no_model)
    again = sweep(manifest, "dti,ti,ti-rescaled", tiny_sd, out, progress=False)
    assert again == runs  # same statuses, and the first sweep's training times kept
    assert files(out) == before  # nothing rewritten
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    assert lines[0] == f"[1/6] dti alpha: done already, skipped ({out.resolve() / 'dti' / 'alpha'})"
    assert sum("done already, skipped" in line for line in lines) == 4
    assert lines[2].startswith("[3/6] ti-rescaled alpha: ti's concept, rescaled")


def test_a_sweep_with_other_settings_is_refused_before_it_writes(clean, manifest, tiny_sd):
    out, _ = clean
    index = (out / "sweep.json").stat().st_mtime_ns
    with pytest.raises(DTIError) as err:
        sweep(manifest, "ti", tiny_sd, out, settings={"steps": 4}, quiet=True)
    message = str(err.value)
    assert "\n" not in message
    assert f"{out.resolve() / 'ti' / 'alpha'} was trained with steps = 3, this sweep asks 4" in message
    assert (out / "sweep.json").stat().st_mtime_ns == index
    assert not (out / ".dti.lock").exists()


def test_a_killed_sweep_continues_where_it_stopped(clean, manifest, pipe, tmp_path, monkeypatch, capsys):
    """SIGTERM at step 2 of beta's run: it stops after that step with a checkpoint; the rerun leaves
    alpha alone, continues beta from the checkpoint and ends with the uninterrupted sweep's concept.
    Both sweeps share one loaded pipeline, which they leave as they found it."""
    from dti.use.loading import loaded_tokens

    reference, _ = clean
    vocab = len(pipe.tokenizer)
    out = tmp_path / "out"
    real_launch = trainer.Trainer.launch
    sent = []

    def launch(self, index):
        row = real_launch(self, index)
        if self.config.token == "<beta>" and self.step_count == 2 and not sent:
            sent.append(self.step_count)
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: stop after this step
        return row

    monkeypatch.setattr(trainer.Trainer, "launch", launch)
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(RunStopped) as stopped:
        sweep(manifest, "dti", pipe, out, quiet=True)
    assert stopped.value.exit_code == 143 and "rerun the same `dti sweep`" in str(stopped.value)
    index = read_sweep(out)
    assert [(r.subject, r.status) for r in index.runs] == [("alpha", "done"), ("beta", "pending")]
    assert sorted(p.name for p in (out / "dti" / "beta" / "checkpoints").iterdir()) == ["step-000002.pt"]
    assert not (out / "dti" / "beta" / "concept.safetensors").exists()
    alpha = files(out / "dti" / "alpha")

    calls = Calls(monkeypatch)
    runs = sweep(manifest, "dti", pipe, out, progress=False)
    assert (calls.train, calls.resume) == ([], ["dti/beta"])
    assert loaded_tokens(pipe) == [] and len(pipe.tokenizer) == vocab
    assert files(out / "dti" / "alpha") == alpha
    assert [r.status for r in runs] == ["done", "done"] and read_sweep(out).runs == tuple(runs)
    assert "[2/2] dti beta: continuing from its checkpoint at step 2" in capsys.readouterr().out
    for subject in ("alpha", "beta"):
        got, want = vectors(out / "dti" / subject / "concept.safetensors"), vectors(reference / "dti" / subject / "concept.safetensors")
        assert got.keys() == want.keys()
        for name in got:
            assert torch.equal(got[name], want[name]), (subject, name)
    assert read_sweep(out).model == read_sweep(reference).model  # the pipeline's own folder


@pytest.mark.parametrize("mix", ["group", "batch"])
def test_a_batched_sweep_trains_each_methods_subjects_at_once_into_the_same_runs(clean, manifest, pipe, tmp_path, monkeypatch, mix):
    """--batched: each method's subjects in one MultiTrainer (no single-run trainer.train at all);
    the index and the concepts are the unbatched sweep's: bit-identical with group, to float
    rounding with batch (one denoiser pass over both subjects' samples)."""
    import dti.training.multi

    reference, want = clean
    batches: list[list[str]] = []
    real = dti.training.multi.train_manifest

    def train_manifest(m, *args, **kwargs):
        batches.append([s.name for s in m.subjects])
        return real(m, *args, **kwargs)

    monkeypatch.setattr(dti.training.multi, "train_manifest", train_manifest)
    Calls(monkeypatch, forbid=True)
    out = tmp_path / "out"
    runs = sweep(manifest, "dti,ti,ti-rescaled", pipe, out, quiet=True, batched=mix)
    assert batches == [["alpha", "beta"], ["alpha", "beta"]]  # dti's two subjects at once, then ti's
    assert [(r.subject, r.method, r.status) for r in runs] == [(r.subject, r.method, r.status) for r in want]
    assert all(r.seconds is not None and r.seconds > 0 for r in runs if r.derived_from is None)
    for r in runs:
        if r.derived_from is None:
            got, ref = vectors(r.concept), vectors(reference / r.method / r.subject / "concept.safetensors")
            for name in got:
                if mix == "group":
                    assert torch.equal(got[name], ref[name]), (r.subject, r.method, name)
                else:
                    torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-5)
    assert sorted(p.name for p in (out / "dti" / "alpha").iterdir()) == sorted(p.name for p in (reference / "dti" / "alpha").iterdir())
    again = sweep(manifest, "dti,ti,ti-rescaled", pipe, out, quiet=True, batched=mix)  # finished: nothing trains
    assert batches == [["alpha", "beta"], ["alpha", "beta"]] and [r.status for r in again] == [r.status for r in runs]


def test_a_batched_sweep_records_a_subject_whose_numerics_stop_it_and_finishes_the_others(manifest, pipe, tmp_path, monkeypatch):
    from dti.training.data import LatentCache

    real = LatentCache.sample

    def poisoned(self, data, samples, draws):
        latents = real(self, data, samples, draws)
        return latents * float("nan") if data.placeholder == "<beta>" else latents

    monkeypatch.setattr(LatentCache, "sample", poisoned)
    runs = sweep(manifest, "dti", pipe, tmp_path / "out", settings={"max_bad_steps": 2}, quiet=True, batched="group")
    assert [(r.subject, r.status) for r in runs] == [("alpha", "done"), ("beta", "failed")]
    assert "in a row" in runs[1].error and "\n" not in runs[1].error
    assert read_sweep(tmp_path / "out").runs == tuple(runs)


def test_a_killed_batched_sweep_continues_its_batch(clean, manifest, pipe, tmp_path, monkeypatch):
    """SIGTERM at step 2 of the dti batch: both subjects keep a checkpoint, the rerun continues
    them together and ends with the one-at-a-time sweep's concepts, bit for bit (group)."""
    reference, _ = clean
    sigterm_in_multi_step(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(RunStopped) as stopped:
        sweep(manifest, "dti", pipe, out, quiet=True, batched="group")
    message = str(stopped.value)
    assert stopped.value.exit_code == 143 and "rerun the same `dti sweep`" in message and "dti train --manifest" not in message
    assert [r.status for r in read_sweep(out).runs] == ["pending", "pending"]
    monkeypatch.undo()
    runs = sweep(manifest, "dti", pipe, out, quiet=True, batched="group")
    assert [r.status for r in runs] == ["done", "done"]
    for subject in ("alpha", "beta"):
        got, want = vectors(out / "dti" / subject / "concept.safetensors"), vectors(reference / "dti" / subject / "concept.safetensors")
        assert all(torch.equal(got[n], want[n]) for n in got), subject


def test_batched_takes_only_a_mix(manifest, pipe, tmp_path):
    with pytest.raises(DTIError, match="--batched 'fast' is not a mix; use one of auto, batch, group"):
        sweep(manifest, "dti", pipe, tmp_path / "out", quiet=True, batched="fast")
    assert not (tmp_path / "out").exists()


def command(argv: list[object]) -> int:
    """``dti sweep`` as the command line runs it, refusals naming flags; a DTIError propagates."""
    from dti.core.errors import naming

    parser = argparse.ArgumentParser(prog="dti")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep_command.add_parser(sub)
    with naming(flag):
        return sweep_command.run(parser.parse_args([str(a) for a in argv]))


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_sd, capsys, threads):
    path = make_manifest(tmp_path / "data", MANIFEST.replace("steps = 3", "steps = 2"))
    broken = tmp_path / "data" / "alpha" / "01.png"
    good = broken.read_bytes()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    argv = ["sweep", path, "--methods", "ti-rescaled", "--model", tiny_sd, "--out", out, "--quiet", "--seed", "3"]
    assert command(argv) == 1
    printed = capsys.readouterr().out
    assert f"[1/4] ti alpha: failed: {broken} is not a readable image" in printed
    assert "[2/4] ti-rescaled alpha: failed: its ti run failed" in printed
    assert "sweep: 2 of 4 runs done, 2 failed" in printed
    index = read_sweep(out)
    assert index.methods == ("ti", "ti-rescaled") and index.settings == {"seed": 3}
    status = {(r.subject, r.method): (r.status, r.error) for r in index.runs}
    assert status["alpha", "ti"] == ("failed", f"{broken} is not a readable image (UnidentifiedImageError); remove or replace it")
    assert status["alpha", "ti-rescaled"][0] == "failed" and status["beta", "ti"] == ("done", None)
    assert status["beta", "ti-rescaled"] == ("done", None)
    assert not (out / "ti" / "alpha").exists()  # the failed run left no folder
    assert json.loads((out / "ti" / "beta" / "config.json").read_text())["seed"] == 3  # the flag reached the run

    broken.write_bytes(good)  # fixed: the rerun trains what failed and nothing else
    beta = files(out / "ti" / "beta")
    assert command(argv) == 0
    assert "sweep: 4 of 4 runs done, 0 failed" in capsys.readouterr().out
    assert files(out / "ti" / "beta") == beta
    assert all(r.status == "done" and r.error is None for r in read_sweep(out).runs)

    # a later sweep of fewer methods into the same folder keeps the others in the index
    assert command(["sweep", path, "--methods", "ti", "--model", tiny_sd, "--out", out, "--quiet", "--seed", "3"]) == 0
    index = read_sweep(out)
    assert index.methods == ("ti", "ti-rescaled")
    assert sorted((r.subject, r.method, r.status) for r in index.runs) == [
        ("alpha", "ti", "done"),
        ("alpha", "ti-rescaled", "done"),
        ("beta", "ti", "done"),
        ("beta", "ti-rescaled", "done"),
    ]


# ---------------------------------------------------------------------- refusals, before any model loads
def test_a_sweep_waits_while_another_worker_rewrites_the_index(manifest, pipe, tmp_path):
    """Workers share OUT (test_sweep_workers.py): the index's lock, held by a live process, is waited for, not refused."""
    out = tmp_path / "out"
    held = RunLock(out, INDEX_LOCK)
    held.acquire()  # this process: alive, so not stale
    released = []

    def release():
        released.append(True)
        held.release()

    timer = threading.Timer(0.5, release)
    timer.start()
    try:
        runs = sweep(manifest, "dti", pipe, out, quiet=True, progress=False)
    finally:
        timer.cancel()
    assert released and [r.status for r in runs] == ["done", "done"]
    assert not (out / INDEX_LOCK).exists()


def test_refusals_are_one_line(manifest, tmp_path, dreambooth):
    cases = [
        (
            ["sweep", manifest, "--methods", "dti,tii", "--model", "m", "--out", tmp_path / "o"],
            "unknown method 'tii'; the sweep knows dti, ti,",
        ),
        (["sweep", "dreambooth", "--methods", "dti", "--model", "m", "--out", tmp_path / "o"], "the dreambooth manifest needs --data-root"),
        (["sweep", tmp_path / "none.toml", "--methods", "dti", "--model", "m", "--out", tmp_path / "o"], "does not exist"),
        (["sweep", manifest, "--methods", "dti", "--model", "m", "--out", tmp_path / "o", "--steps", "0"], "--steps must be positive"),
        (["sweep", manifest, "--methods", "dti", "--model", "m", "--out", manifest], "is a file"),
        (["sweep", manifest, "--methods", "dti", "--model", "m", "--out", "o", "--data-root", tmp_path / "x"], "--data-root"),
    ]
    for argv, fragment in cases:
        with pytest.raises(DTIError) as err:
            command(argv)
        said = err.value.render(flag)
        assert "\n" not in said and fragment in said, (argv, said)
    assert not (tmp_path / "o").exists()
    m = resolve_manifest("dreambooth", dreambooth)
    assert len(m.subjects) == 30 and m["dog"].photos == dreambooth / "dog"


def test_settings_a_sweep_decides_are_refused(manifest, tmp_path):
    m = load_manifest(manifest)
    for key in ("method", "output", "token", "overwrite", "progress"):
        with pytest.raises(DTIError, match=f"'{key}' cannot be a sweep setting"):
            plan(m, ["dti"], "m", tmp_path, {key: "x" if key != "overwrite" else True})
    for text, key in (("method = 'ti'", "method"), ("precision = 'bf16'", "precision"), ("device = 'cuda'", "device")):
        other = manifest.parent / f"with-{key}.toml"
        other.write_text(MANIFEST.replace("[defaults]", f"[defaults]\n{text}"))
        with pytest.raises(DTIError, match=f"a sweep cannot take {key} from a manifest"):
            plan(load_manifest(other), ["dti"], "m", tmp_path)
    with pytest.raises(DTIError, match=r"subject alpha, method ti: magnitude fixes the norm of a fixed-norm method \(dti, ti-renorm\)"):
        plan(m, ["ti"], "m", tmp_path, {"magnitude": 2.0})


# ---------------------------------------------------------------------- planning
def test_settings_precedence_manifest_subject_sweep_method(manifest, tmp_path):
    text = MANIFEST.replace('init = "mug"', 'init = "mug"\nsettings = { steps = 5, seed = 7, kappa = 2e-4 }')
    path = manifest.parent / "precedence.toml"
    path.write_text(text)
    m = load_manifest(path)
    runs = {(r.subject, r.method): r.settings for r in plan(m, ["dti", "dti-kappa0", "ti"], "m", tmp_path, {"seed": 9, "batch-size": 2})}
    common = {"resolution": 32, "validate": False, "batch_size": 2, "precision": "auto"}
    assert runs["alpha", "dti"] == {**common, "steps": 3, "seed": 9, "method": "dti"}
    assert runs["beta", "dti"] == {**common, "steps": 5, "seed": 9, "kappa": 2e-4, "method": "dti"}  # the sweep's seed over the subject's
    assert runs["beta", "dti-kappa0"] == {**common, "steps": 5, "seed": 9, "kappa": 0.0, "method": "dti"}  # the method's kappa wins
    assert runs["beta", "ti"]["method"] == "ti"


def test_methods_parse_in_order_with_their_sources():
    assert parse_methods("dti, ti") == ["dti", "ti"]
    assert parse_methods("ti-rescaled") == ["ti", "ti-rescaled"]
    assert parse_methods(["ti-rescaled", "dti", "ti", "dti"]) == ["ti", "ti-rescaled", "dti"]
    with pytest.raises(DTIError, match=r"--methods: unknown method 'DTI'; the sweep knows dti, ti, crossinit, ti-renorm, ti-rescaled"):
        parse_methods("DTI")
    with pytest.raises(DTIError, match="--methods is empty"):
        parse_methods(" , ")


def test_methods_are_the_papers_table():
    """Each method resolved with SDXL's defaults (METHOD.md section 5) is what the paper trains."""
    from dti.models.sdxl import StableDiffusionXLAdapter as SDXLAdapter

    got = {}
    for name, method in METHODS.items():
        if method.derived_from:
            continue
        c = resolve(TrainConfig(photos="p", token="<t>", init="dog", model="m", **method.settings), SDXLAdapter.defaults, 1024)
        got[name] = (c.method, c.optimizer, c.magnitude, c.kappa, c.effective_lr, c.steps, c.batch_size, c.resolution)
    base = (400, 4, 768)
    assert got == {
        "dti": ("dti", "rsgd", "mean", 1e-4, 0.04, *base),
        "ti": ("ti", "adamw", None, 0.0, 0.02, *base),
        "crossinit": ("crossinit", "adamw", None, 0.0, 0.02, *base),
        "ti-renorm": ("ti-renorm", "adamw", "median", 0.0, 0.02, *base),  # OneTrainer's rescale to the median norm
        "adamw-fixed": ("dti", "adamw", "mean", 1e-4, 0.02, *base),
        "dti-min": ("dti", "rsgd", "min", 1e-4, 0.04, *base),
        "dti-5": ("dti", "rsgd", 5.0, 1e-4, 0.04, *base),  # an absolute norm of 5.0
        "dti-kappa0": ("dti", "rsgd", "mean", 0.0, 0.04, *base),
        "dti-kappa5e-4": ("dti", "rsgd", "mean", 5e-4, 0.04, *base),
    }
    rescaled = METHODS["ti-rescaled"]
    assert (rescaled.derived_from, rescaled.rescale, dict(rescaled.settings)) == ("ti", "mean", {})


def test_read_sweep_refuses_what_is_not_an_index(tmp_path):
    with pytest.raises(DTIError, match=r"sweep\.json does not exist; pass the --out folder of a `dti sweep`"):
        read_sweep(tmp_path)
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(DTIError, match=r"cannot read .*sweep\.json"):
        read_sweep(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(DTIError, match="is not a dti sweep index"):
        read_sweep(tmp_path / "sweep.json")
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "dti-sweep", "version": 1, "runs": [{"subject": "a"}]}))
    with pytest.raises(DTIError, match="is damaged"):
        read_sweep(tmp_path)
    run = tmp_path / "dti" / "a"
    entry = RunEntry("a", "dti", None, None, "live", "dog", "<a>", "dog", Path("/p"), run, run / "concept.safetensors", "done", 1.5)
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "dti-sweep", "version": 1, "runs": [entry.to_json(tmp_path)]}))
    assert read_sweep(tmp_path).runs == (entry,)
    # an index written elsewhere (absolute paths of another folder) still names this folder's runs
    moved = {**entry.to_json(), "run": "/elsewhere/dti/a", "concept": "/elsewhere/dti/a/concept.safetensors"}
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "dti-sweep", "version": 1, "runs": [moved]}))
    assert read_sweep(tmp_path).runs == (entry,)


def test_command_flags_become_settings_for_every_run():
    import argparse

    from dti.commands import sweep as sweep_command

    parser = argparse.ArgumentParser()
    sweep_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "m.toml", "--methods", "dti", "--model", "m", "--out", "o", "--pooling", "legacy", "--steps", "7"])
    assert sweep_command.run_settings(args) == {"steps": 7, "pooling": "legacy"}
    bare = parser.parse_args(["sweep", "m.toml", "--methods", "dti", "--model", "m", "--out", "o"])
    assert sweep_command.run_settings(bare) == {}  # nothing given: the manifest's settings stand
    assert bare.batched is None
    flags = ["sweep", "m.toml", "--methods", "dti", "--model", "m", "--out", "o"]
    assert parser.parse_args([*flags, "--batched"]).batched == "auto"
    assert parser.parse_args([*flags, "--batched", "group"]).batched == "group"
