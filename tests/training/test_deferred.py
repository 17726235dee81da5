"""Steps decided on the device (issue 12): ``Trainer.fit`` launches steps without waiting for the
device and reads it every ``sync_every`` steps, and that changes nothing a run writes.

On a GPU the host then runs ahead of the device; on the CPU (where these tests run) a read costs
nothing, so the tests set ``sync_every`` themselves and check that (1) runs reading the device
every step and every few steps write the same bits, also when steps are skipped and when the
run stops for bad numerics mid-window, and (2) between reads the loop code asks the device for
no values at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import dti
import dti.training.data
import dti.training.loop
from conftest import load_pipe, nan_loss_at
from dti.concepts.concept import Concept
from dti.core.optim import RiemannianSGD, guarded_step
from dti.training.stopping import RunStopped

FAST = dict(resolution=64, progress=False, validate=False)


def run_files(run: Path) -> dict[str, object]:
    """What a run wrote that must not depend on how often the host read the device."""
    out: dict[str, object] = {"log": (run / "train_log.jsonl").read_text()}
    for path in sorted((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").is_dir() else []:
        state = torch.load(path, weights_only=True)
        out[path.name] = (state["step"], state["rows"], state["optimizer"]["state"], state["skipped"], state["bad_in_row"])
    for path in sorted((run / "snapshots").glob("*.safetensors")) if (run / "snapshots").is_dir() else []:
        out[path.name] = {k: v.vectors for k, v in Concept.load(path).encoders.items()}
    if (run / "concept.safetensors").exists():
        out["concept"] = {k: v.vectors for k, v in Concept.load(run).encoders.items()}
    return out


def same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def train(monkeypatch, pipe, photos, run, every: int, bad: set[int], **settings):
    monkeypatch.setattr(dti.training.loop, "default_sync_every", lambda device: every)
    nan_loss_at(monkeypatch, bad)
    try:
        return dti.train(photos, "<my-tok>", "dog", pipe, run, **{**FAST, **settings})
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("method", ["dti", "ti"])
def test_reading_the_device_every_few_steps_writes_the_same_run(method, tiny_sd, photos, tmp_path, monkeypatch, one_thread):
    pipe = load_pipe(tiny_sd)
    settings = dict(steps=9, method=method, checkpoint_every=4, keep_checkpoints=5, snapshot_every=3, bad=frozenset({2, 7}))
    runs = {}
    for every in (1, 4, 100):
        run = tmp_path / f"every-{every}"
        train(monkeypatch, pipe, photos, run, every, set(settings["bad"]), **{k: v for k, v in settings.items() if k != "bad"})
        runs[every] = run_files(run)
    log = [json.loads(line) for line in runs[1]["log"].splitlines()]
    assert [r["step"] for r in log if r.get("skipped")] == [2, 7]  # the test injects what it means to
    moved = [r["angle_to_init_deg"] for r in log]
    assert moved[2] == moved[1] and moved[3] != moved[2]  # a skipped step leaves the rows; the next moves them
    assert {"step-000004.pt", "step-000008.pt", "step-000009.pt", "concept-step-000003.safetensors", "concept"} <= set(runs[1])
    same(runs[4], runs[1])
    same(runs[100], runs[1])


def test_a_run_stopping_for_bad_numerics_mid_window_stops_where_a_stepwise_run_stops(tiny_sd, photos, tmp_path, monkeypatch, one_thread):
    pipe = load_pipe(tiny_sd)
    results = {}
    for every in (1, 8):  # steps 4-6 bad: the stop is at step 6, inside the first window of 8, before good steps 7 and 8
        run = tmp_path / f"every-{every}"
        with pytest.raises(RunStopped, match="for 3 steps in a row"):
            train(monkeypatch, pipe, photos, run, every, {4, 5, 6}, steps=20, max_bad_steps=3, checkpoint_every=0)
        results[every] = run_files(run)
    assert set(results[1]) >= {"step-000006.pt", "concept-step-000003.safetensors"}
    assert results[1]["step-000006.pt"][0] == 6 and results[1]["step-000006.pt"][4] == 3
    same(results[8], results[1])
    # and it resumes to the same finish
    for every in (1, 8):
        monkeypatch.setattr(dti.training.loop, "default_sync_every", lambda device, every=every: every)
        dti.resume(tmp_path / f"every-{every}", pipe)
        monkeypatch.undo()
    same(run_files(tmp_path / "every-8"), run_files(tmp_path / "every-1"))


PACKAGE = Path(dti.__file__).resolve().parent
# the training loop's own modules, relative to the package
LOOP_FILES = ("training/loop.py", "training/multi.py", "core/optim.py", "core/sphere.py", "core/rows.py", "text/vocab.py")


def count_reads(monkeypatch) -> list[str]:
    """Every read of a tensor's value on the host (item, tolist, bool, float, int, cpu, numpy) made
    by the training loop's own modules, as 'file:function'."""
    seen: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            where = Path(caller.co_filename).resolve()
            name = where.relative_to(PACKAGE).as_posix() if where.is_relative_to(PACKAGE) else ""
            if name in LOOP_FILES:
                seen.append(f"{name}:{caller.co_name}:{_name}")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return seen


@pytest.mark.parametrize("method", ["dti", "ti"])
def test_between_reads_the_loop_asks_the_device_for_nothing(method, tiny_sd, photos, tmp_path, monkeypatch, one_thread):
    pipe = load_pipe(tiny_sd)
    reads: list[list[str]] = []
    real_launch = dti.training.loop.Trainer.launch
    real_flush = dti.training.loop.Trainer.flush

    def launch(self, step):
        with pytest.MonkeyPatch.context() as m:
            seen = count_reads(m)
            row = real_launch(self, step)
        reads.append(seen)
        return row

    flushes = []

    def flush(self, pending, bar=None):
        flushes.append([s for s, _ in pending])
        return real_flush(self, pending, bar)

    monkeypatch.setattr(dti.training.loop.Trainer, "launch", launch)
    monkeypatch.setattr(dti.training.loop.Trainer, "flush", flush)
    monkeypatch.setattr(dti.training.loop, "default_sync_every", lambda device: 5)
    dti.train(photos, "<my-tok>", "dog", pipe, tmp_path / "run", steps=10, method=method, checkpoint_every=0, **FAST)
    assert len(reads) == 10 and reads == [[]] * 10, reads
    assert flushes == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]


def test_the_spy_sees_the_read_a_step_by_step_step_makes(tiny_sd, photos, monkeypatch, one_thread):
    """``Trainer.step`` reads its row on the host: the spy of the test above must see it (so that test can fail)."""
    from dti.models import adapter_for
    from dti.training.config import TrainConfig, resolve

    pipe = load_pipe(tiny_sd)
    config = resolve(TrainConfig(photos=str(photos), token="<my-tok>", init="dog", steps=2, resolution=64, progress=False), {}, 64)
    trainer = dti.training.loop.Trainer(config, adapter_for(pipe), dti.training.data.load_photos(photos), None)
    trainer.setup()
    try:
        with pytest.MonkeyPatch.context() as m:
            seen = count_reads(m)
            trainer.step()
        assert seen == ["training/loop.py:step:tolist"]
    finally:
        trainer.detach()


def test_guarded_step_keeps_or_puts_back_every_bit():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(3, 8), dim=-1))
    for opt_cls, kwargs in ((RiemannianSGD, dict(lr=0.1, beta=0.9)), (torch.optim.AdamW, dict(lr=0.1))):
        opt = opt_cls([p], **kwargs)
        p.grad = torch.randn(3, 8)
        kept = guarded_step(opt, [p], torch.tensor(True), lambda t: torch.tensor(True))
        assert bool(kept)
        after_one = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
        p.grad = torch.randn(3, 8)
        kept = guarded_step(opt, [p], torch.tensor(False), lambda t: torch.tensor(True))
        assert not bool(kept) and torch.equal(p, after_one[0])
        same({k: v for k, v in opt.state[p].items()}, after_one[1])
        kept = guarded_step(opt, [p], torch.tensor(True), lambda t: torch.tensor(False))  # an unusable update
        assert not bool(kept) and torch.equal(p, after_one[0])
        same({k: v for k, v in opt.state[p].items()}, after_one[1])
        kept = guarded_step(opt, [p], torch.tensor(True), lambda t: torch.tensor(True))
        assert bool(kept) and not torch.equal(p, after_one[0])
        opt.state.clear()


def test_a_first_step_held_back_leaves_the_state_a_fresh_optimizer_has():
    torch.manual_seed(1)
    init = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    grads = [torch.randn(2, 8) for _ in range(2)]
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    for cls, kwargs in ((RiemannianSGD, dict(lr=0.05, beta=0.99)), (torch.optim.AdamW, dict(lr=0.05))):
        oa, ob = cls([a], **kwargs), cls([b], **kwargs)
        a.grad = grads[0] * float("nan")
        guarded_step(oa, [a], torch.tensor(False), lambda t: torch.tensor(True))  # held back: as if never taken
        for g in grads:
            a.grad, b.grad = g.clone(), g.clone()
            guarded_step(oa, [a], torch.tensor(True), lambda t: torch.tensor(True))
            ob.step()
        assert torch.equal(a, b)
        with torch.no_grad():
            a.copy_(init)
            b.copy_(init)
