"""Encoders that do not learn the word (``--encoders``) run once per prompt (dti.training.frozen).

The kept outputs stand in for the encoder's forward in every step, the encoder waits off the
device, and the run equals one that runs the encoder every step: bit for bit at batch 1 (the kept
rows are the same batch-of-one forward), to float rounding at batch 2.
"""

from __future__ import annotations

import pytest
import torch

from dti.models import CropInfo, adapter_for, load_adapter
from dti.training import frozen, offload
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.training.multi import MultiTrainer

RES = 64
CASES = {"flux": ["text_encoder"], "sd3": ["text_encoder", "text_encoder_2"], "sdxl": ["text_encoder_2"]}


def trainer_for(pipe, photos, adapter=None, **settings):
    values = dict(photos=str(photos), token="<w>", init="dog", steps=3, batch_size=1, resolution=RES, validate=False, progress=False)
    c = resolve(TrainConfig(**{**values, **settings}), {}, RES)
    return Trainer(c, adapter or adapter_for(pipe), load_photos(photos), None)


def run(trainer):
    trainer.setup()
    try:
        trainer.fit()
        return {n: r.vectors() for n, r in trainer.rows.items()}, [r["loss"] for r in trainer.records]
    finally:
        trainer.detach()


def encode(adapter, prompt):
    with torch.no_grad():
        cond = adapter.condition([prompt], [CropInfo((RES, RES), (0, 0), (RES, RES))])
    return {k: v.clone() for k, v in cond.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 2])
def test_a_frozen_encoder_runs_once_per_prompt_and_the_run_is_the_same(family, batch, tiny_models, photos, monkeypatch, one_thread):
    pipe = load_adapter(tiny_models(family)).pipe
    trained = CASES[family]
    reference_cond = encode(adapter_for(pipe), "a photo of a dog")
    with monkeypatch.context() as m:  # the reference: every step runs every encoder
        m.setattr(frozen, "keep_outputs", lambda *a, **k: None)
        m.setattr(frozen, "served", lambda *a, **k: False)
        want_rows, want_losses = run(trainer_for(pipe, photos, encoders=trained, batch_size=batch))

    monkeypatch.setattr(offload, "parking_for", lambda device: torch.device("cpu"))  # a CPU run parks too, for the test
    trainer = trainer_for(pipe, photos, encoders=trained, batch_size=batch)
    trainer.setup()
    table = frozen.memos(trainer.adapter)
    frozen_names = sorted(s.name for s in trainer.adapter.encoders if s.name not in trained)
    try:
        assert sorted(table) == frozen_names and all(m.parked and m.serves for m in table.values())
        kept = {name: m.calls for name, m in table.items()}
        assert all(calls == len(trainer.data.prompts()) for calls in kept.values())  # one forward per prompt
        trainer.fit()
        assert {name: m.calls for name, m in table.items()} == kept  # no forward in any step
        got_rows, got_losses = {n: r.vectors() for n, r in trainer.rows.items()}, [r["loss"] for r in trainer.records]
    finally:
        trainer.detach()
    for name in want_rows:
        if batch == 1:
            assert torch.equal(got_rows[name], want_rows[name]), name
        else:
            torch.testing.assert_close(got_rows[name], want_rows[name], rtol=0, atol=1e-6)
    assert got_losses == pytest.approx(want_losses, abs=1e-6) if batch > 1 else got_losses == want_losses
    # handed back as it came: no memo, the encoders' own forward, the same prompt encoding
    assert not frozen.memos(trainer.adapter) and "condition" not in vars(trainer.adapter)
    assert all("forward" not in vars(s.text_encoder) for s in trainer.adapter.encoders)
    again = encode(adapter_for(pipe), "a photo of a dog")
    assert reference_cond.keys() == again.keys() and all(torch.equal(reference_cond[k], again[k]) for k in again)


def test_validation_samples_run_the_frozen_encoder_on_the_device(tiny_models, photos, tmp_path, monkeypatch, one_thread):
    pipe = load_adapter(tiny_models("flux")).pipe
    moves = []
    t5 = pipe.text_encoder_2
    real_to = t5.to
    monkeypatch.setattr(t5, "to", lambda *a, **k: (moves.append(str(a[0])), real_to(*a, **k))[1])
    monkeypatch.setattr(offload, "parking_for", lambda device: torch.device("cpu"))
    trainer = trainer_for(pipe, photos, encoders=["text_encoder"], validate=True, sample_steps=2, validation_seeds=[0])
    trainer.setup()
    memo = frozen.memos(trainer.adapter)["text_encoder_2"]
    try:
        trainer.fit()
        before = memo.calls
        sheet = trainer.samples()  # not a kept prompt: the real T5, at home for it
        assert sheet.size[0] > 0 and memo.calls > before and memo.parked
    finally:
        trainer.detach()
    assert moves[0] == "cpu" and len(moves) >= 3 and not memo.parked  # parked at setup, home for samples and at the end


def test_a_concept_that_trains_the_encoder_keeps_it_on_the_device(tiny_models, photos, monkeypatch, one_thread):
    """K concepts on one model: <a> trains every encoder, <b> only CLIP. T5 is never kept nor parked
    (its gradient must flow for <a>), and each concept equals its single run."""
    pipe = load_adapter(tiny_models("flux")).pipe
    specs = [dict(token="<a>"), dict(token="<b>", encoders=["text_encoder"], seed=3)]
    alone = [run(trainer_for(pipe, photos, **spec))[0] for spec in specs]
    monkeypatch.setattr(offload, "parking_for", lambda device: torch.device("cpu"))
    adapter = adapter_for(pipe)
    trainers = [trainer_for(pipe, photos, adapter=adapter, **spec) for spec in specs]
    for t in trainers:
        t.setup()
    memo = frozen.memos(adapter).get("text_encoder_2")
    assert memo is None or (not memo.serves and not memo.parked)
    multi = MultiTrainer(trainers, ["a", "b"], "group")
    try:
        multi.fit()
    finally:
        multi.detach()
    for t, want in zip(trainers, alone):
        for name in want:
            torch.testing.assert_close(t.rows[name].vectors(), want[name], rtol=0, atol=1e-6)
