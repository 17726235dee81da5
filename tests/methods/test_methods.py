"""One suite over every registered method (dti.methods): a new method gets all of it by registering.

Each method trains a tiny SD pipeline for a few steps through the one trainer, and the suite checks
what every method must keep: only the word's rows move; a fixed-norm method's rows sit at their
magnitude after every step and the concept records it, a free method records none; a run resumed
from its state continues bit for bit; its defaults resolve; the settings it gives no effect to are
named; a sweep knows it. Then what each method promises on its own (ti-renorm: OneTrainer's rescale).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_pipe
from dti import methods
from dti.methods import METHODS, VARIANTS
from dti.models import adapter_for
from dti.training.config import TrainConfig, ignored_settings, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer

RES = 64
STEPS = 4


def trainer_for(pipe, photos, method: str, **settings) -> Trainer:
    values = dict(photos=str(photos), token="<w>", init="dog", steps=STEPS, batch_size=2, resolution=RES, validate=False, progress=False)
    c = resolve(TrainConfig(**{**values, "method": method, **settings}), {}, RES)
    return Trainer(c, adapter_for(pipe), load_photos(photos), None)


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    return load_pipe(tiny_sd)


@pytest.fixture(params=sorted(METHODS))
def method(request):
    return request.param


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v.detach().clone()
        for name, m in pipe.components.items()
        if isinstance(m, torch.nn.Module)
        for k, v in m.state_dict().items()
    }


def test_only_the_words_rows_move_and_fixed_norms_hold(pipe, photos, method, one_thread):
    before = weights(pipe)
    trainer = trainer_for(pipe, photos, method)
    trainer.setup()
    try:
        start = {n: r.vectors() for n, r in trainer.rows.items()}
        concept = trainer.fit()
        end = {n: r.vectors() for n, r in trainer.rows.items()}
    finally:
        trainer.detach()
    after = weights(pipe)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), "a pipeline weight changed"
    assert all(not torch.equal(start[n], end[n]) for n in start), "the word's rows did not move"
    m = METHODS[method]
    for name, enc in concept.encoders.items():
        assert torch.isfinite(enc.vectors).all()
        if m.fixed_norm:
            assert enc.magnitude is not None and concept.meta["magnitude"] is not None
            norms = [r["norms"][name] for r in trainer.records if r["step"] >= 1]
            assert all(n == pytest.approx([enc.magnitude] * len(n), rel=1e-5) for n in norms), (method, norms)
        else:
            assert enc.magnitude is None and concept.meta["magnitude"] is None
    assert concept.meta["method"] == method and trainer.skipped == 0


def test_a_run_resumed_from_its_state_continues_bit_for_bit(pipe, photos, method, one_thread):
    whole = trainer_for(pipe, photos, method)
    whole.setup()
    try:
        for _ in range(STEPS):
            whole.step()
        want = {n: r.vectors() for n, r in whole.rows.items()}
    finally:
        whole.detach()
    first = trainer_for(pipe, photos, method)
    first.setup()
    try:
        for _ in range(STEPS // 2):
            first.step()
        state = first.state_dict()
    finally:
        first.detach()
    second = trainer_for(pipe, photos, method)
    second.setup()
    try:
        second.load_state_dict(state)
        for _ in range(STEPS - STEPS // 2):
            second.step()
        got = {n: r.vectors() for n, r in second.rows.items()}
    finally:
        second.detach()
    assert all(torch.equal(got[n], want[n]) for n in want), method


def test_defaults_resolve_and_unread_settings_are_named(method):
    m = METHODS[method]
    c = resolve(TrainConfig(photos="p", token="<t>", init="dog", model="m", method=method), {}, 512)
    assert c.optimizer == m.optimizers[0] and c.lr == methods.BASE_LR[c.optimizer]
    assert (c.magnitude == m.default_magnitude) if m.fixed_norm else c.magnitude is None
    read = set(m.reads) | set(methods.OPTIMIZERS[c.optimizer])
    for name, value in (("kappa", 0.3), ("beta", 0.5), ("weight_decay", 0.3), ("crossinit_lambda", 0.3)):
        lines = [str(line) for line in ignored_settings(TrainConfig(method=method, **{name: value}))]
        assert bool(lines) == (name not in read), (method, name, lines)
    assert VARIANTS[method].settings == {"method": method}  # `dti sweep --methods` knows it


def test_every_method_module_is_registered():
    assert set(METHODS) == {"dti", "ti", "crossinit", "ti-renorm"}
    assert {"adamw-fixed", "dti-min", "dti-5", "dti-kappa0", "dti-kappa5e-4", "ti-rescaled"} <= set(VARIANTS)


# ------------------------------------------------------------------ ti-renorm: OneTrainer's rescale
def test_ti_renorm_is_adamw_then_the_rows_set_to_the_vocabulary_median(pipe, photos, one_thread):
    """Each applied step is AdamW's step followed by row := median * row / |row| (OneTrainer's
    normalize_embeddings); AdamW's own moments are those of plain TI's step from the same point."""
    from dti.text.vocab import vocab_stats, vocabulary_rows

    trainer = trainer_for(pipe, photos, "ti-renorm")
    trainer.setup()
    try:
        slot = trainer.adapter.encoders[0]
        median = vocab_stats(vocabulary_rows(slot.tokenizer, slot.text_encoder)).median
        assert trainer.magnitudes[slot.name] == pytest.approx(median)
        rows = trainer.rows[slot.name]
        raw = rows.param.detach().clone()
        assert float(raw.norm(dim=-1)[0]) != pytest.approx(median)  # it starts at the initializer's own norm
        reference = torch.optim.AdamW([torch.nn.Parameter(raw.clone())], lr=trainer.config.effective_lr, weight_decay=0.01)
        trainer.step()
        grad = rows.param.grad.detach().clone()
        ref_param = reference.param_groups[0]["params"][0]
        ref_param.grad = grad
        reference.step()
        want = median * ref_param.detach() / ref_param.detach().norm(dim=-1, keepdim=True)
        torch.testing.assert_close(rows.param.detach(), want, rtol=1e-6, atol=1e-6)
        state = trainer.optimizer.state[rows.param]
        torch.testing.assert_close(state["exp_avg"], reference.state[ref_param]["exp_avg"])
    finally:
        trainer.detach()


def test_ti_renorm_takes_a_magnitude_and_refuses_rsgd(tmp_path):
    from dti.core.errors import DTIError
    from dti.training.config import check

    c = resolve(TrainConfig(photos="p", token="<t>", init="dog", model="m", method="ti-renorm", magnitude="mean"), {}, 512)
    assert c.magnitude == "mean"
    with pytest.raises(DTIError, match="does not go with"):
        check(TrainConfig(method="ti-renorm", optimizer="rsgd"))
    with pytest.raises(DTIError, match="fixes the norm of a fixed-norm method"):
        check(TrainConfig(method="ti", magnitude="median"))
