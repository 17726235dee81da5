"""`--vram N` in a run: one line saying what it chose, the choice applied, the user's flags kept, and a
card nothing fits refused in one line (exit 2) before anything loads."""

from __future__ import annotations

import pytest

import dti
from dti.commands import main
from dti.core.errors import DTIError
from dti.training import memory
from dti.training.loop import Trainer

SETTINGS = dict(steps=1, batch_size=2, resolution=64, validate=False, progress=False)


@pytest.fixture
def heavy(monkeypatch):
    """The tiny SD's step made to weigh like a big one: 6 GiB of activations a sample at 64 px, 2 with checkpointing."""
    monkeypatch.setitem(memory.ACTIVATIONS, "sd", [(1e-4, 64, 6.0, 2.0)])


def run_settings(monkeypatch):
    seen = []
    setup = Trainer.setup

    def watched(self):
        c = self.config
        seen.append((c.gradient_checkpointing, c.quantize, c.offload, c.batch_size, c.grad_accum, c.resolution))
        return setup(self)

    monkeypatch.setattr(Trainer, "setup", watched)
    return seen


def test_the_run_says_in_one_line_what_it_chose_and_uses_it(tiny_models, photos, heavy, capsys, monkeypatch, one_thread):
    seen = run_settings(monkeypatch)
    dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), vram=12, **SETTINGS)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    # batch 2 x 6 GiB does not fit 12 GB; with checkpointing 2 x 2 GiB does
    assert len(notes) == 1 and notes[0].startswith("note: vram 12: gradient_checkpointing (estimated peak 4.0 GiB)"), notes
    assert seen == [(True, "none", "none", 2, 1, 64)]


def test_flags_the_user_gave_win(tiny_models, photos, heavy, capsys, monkeypatch, one_thread):
    seen = run_settings(monkeypatch)
    settings = {**SETTINGS, "batch_size": None}  # the family's default batch (4), the preset's to change
    dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), vram=8, gradient_checkpointing=False, **settings)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    # checkpointing refused by the user (at its default value): micro-batches of 1, accumulated 4 times (6 GiB)
    assert seen == [(False, "none", "none", 1, 4, 64)], seen
    assert len(notes) == 1 and notes[0].startswith("note: vram 8: batch_size 1, grad_accum 4 (estimated peak 6.0 GiB)"), notes


def test_a_lora_run_is_offered_quantization_and_offloading_by_the_preset(tiny_models, photos, heavy, monkeypatch, one_thread):
    """A LoRA trains on a quantized base (QLoRA) and on offloaded weights (its own stay on the card): the preset
    offers a LoRA run both, as it does the same run without one."""
    offered = []
    savers = memory.savers

    def watched(setup, given, multiple):
        steps = savers(setup, given, multiple)
        offered.append({key for step in steps for key in step})
        return steps

    monkeypatch.setattr(memory, "savers", watched)
    dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), vram=12, lora=2, **SETTINGS)
    dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), vram=12, **SETTINGS)
    assert len(offered) == 2
    assert {"quantize", "offload"} <= offered[0], offered
    assert {"quantize", "offload"} <= offered[1], offered


def test_a_card_nothing_fits_is_one_line_and_exit_2(tiny_models, photos, heavy, capsys, tmp_path):
    argv = ["train", str(photos), "--token", "<w>", "--init", "dog", "--model", str(tiny_models("sd")), "--vram", "8"]
    argv += ["--resolution", "64", "--batch-size", "1", "--gradient-checkpointing", "--no-validation", "--steps", "1"]
    argv += ["--output", str(tmp_path / "run")]
    memory.ACTIVATIONS["sd"] = [(1e-4, 64, 60.0, 20.0)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --vram 8: nothing dti can change fits"), err
    assert "Traceback" not in "".join(err)


def test_vram_takes_only_the_cards_it_knows(photos):
    with pytest.raises(DTIError) as err:
        dti.train(str(photos), "<w>", "dog", "no/such/model", vram=10)
    assert "8, 12, 16, 24, 48" in str(err.value)
