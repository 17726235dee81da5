"""`--offload {model,group}`: frozen weights on the device only while they run, forward and backward.

On a CPU machine the weights wait in host memory, where they already are; the tests make an away
weight hold NaN instead, so a block that ran its forward or its backward without being brought back
would show in the loss or the gradient: the same loss and word's gradient as a run without
offloading proves every block came back in both directions, with and without
gradient checkpointing and int8 weights. The pipeline comes back with its own parameters, their
values, on their devices, and no hook left; a real CPU run says in one line that it changes nothing.
"""

from __future__ import annotations

import pytest
import torch

import dti
from dti.core.errors import DTIError
from dti.models import adapter_for, load_adapter
from dti.training import quantize, residency
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer

RES = 64
SETTINGS = dict(steps=2, batch_size=1, resolution=RES, validate=False, progress=False)


def first_gradient(pipe, photos, **settings):
    """The word's gradient at step 0 and the loss, and how many blocks were away during the step."""
    adapter = adapter_for(pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", **SETTINGS, **settings), adapter.defaults, RES)
    trainer = Trainer(c, adapter, load_photos(photos), None)
    trainer.setup()
    try:
        hook = adapter.hooks.get(residency.HOOK)
        batch = trainer.micro_batch(1, 0)
        scaled, loss = trainer.objective(adapter.loss(batch.latents, batch.prompts, batch.crops, batch.draws))
        away = [not b.resident for b in hook.blocks] if hook else []
        scaled.backward()
        after = [not b.resident for b in hook.blocks] if hook else []
        grads = {name: trainer.rows[name].param.grad.detach().clone() for name in trainer.trained}
        return grads, float(loss), away, after
    finally:
        trainer.detach()


@pytest.mark.parametrize(
    "family, mode, extra",
    [
        ("sd", "group", {}),
        ("sd", "model", {}),
        ("sd3", "group", {"gradient_checkpointing": True}),
        ("sana", "group", {}),
        ("pixart", "model", {"gradient_checkpointing": True}),
    ],
)
def test_offloaded_blocks_come_back_for_forward_and_backward(family, mode, extra, tiny_models, photos, away_is_nan, one_thread):
    pipe = load_adapter(tiny_models(family)).pipe
    want, want_loss, _, _ = first_gradient(pipe, photos, **extra)
    got, got_loss, away, after = first_gradient(pipe, photos, offload=mode, **extra)
    assert away and all(away) and all(after)  # every block away between its forward and its backward, and after
    assert got_loss == want_loss
    for name in want:  # the identities add nodes, so a gradient summed over blocks may add in another order
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-9)


def test_a_block_not_brought_back_for_its_backward_fails(tiny_models, photos, away_is_nan, monkeypatch, one_thread):
    """The check above can fail: without the backward's onload, the blocks' backward meets NaN weights."""
    monkeypatch.setattr(residency._Onload, "backward", staticmethod(lambda ctx, *grads: (None, *grads)))
    pipe = load_adapter(tiny_models("sd")).pipe
    got, _, _, _ = first_gradient(pipe, photos, offload="group")
    assert all(g.isnan().any() for g in got.values())


@pytest.mark.skipif(quantize.missing("int8") is not None, reason="torchao not installed")
def test_offload_with_int8_weights_gives_the_same_gradient(tiny_models, photos, one_thread, monkeypatch):
    """Quantized weights move whole through their module (parked in host memory: on CPU, where they are)."""
    monkeypatch.setattr(residency, "parking_for", lambda device: torch.device("cpu"))
    pipe = load_adapter(tiny_models("sd")).pipe
    want, want_loss, _, _ = first_gradient(pipe, photos, quantize="int8")
    got, got_loss, away, _ = first_gradient(pipe, photos, quantize="int8", offload="group", gradient_checkpointing=True)
    assert away and all(away) and got_loss == want_loss
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-9)


def test_the_pipeline_comes_back_without_hooks(tiny_models, photos, away_is_nan, one_thread):
    pipe = load_adapter(tiny_models("sd")).pipe
    nets = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    params = {(n, k): p for n, net in nets.items() for k, p in net.named_parameters()}
    values = {key: p.detach().clone() for key, p in params.items()}
    concept = dti.train(str(photos), "<w>", "dog", model=pipe, offload="group", **SETTINGS)
    assert concept.meta["quantize"] == "none"
    for key, p in params.items():
        net = nets[key[0]]
        assert dict(net.named_parameters())[key[1]] is p and p.device.type == "cpu", key
        assert torch.equal(p.detach(), values[key]), key
    for net in nets.values():
        for m in net.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks, m
            assert not (isinstance(m, torch.nn.Linear) and "forward" in m.__dict__), m  # its own forward again


def test_a_cpu_run_says_offload_changes_nothing(tiny_models, photos, capsys, one_thread):
    dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), offload="model", **{**SETTINGS, "steps": 1})
    lines = [line for line in capsys.readouterr().err.splitlines() if "offload" in line]
    assert lines == ["warning: --offload model has no effect on a CPU run: the weights already live in host memory"]


def test_offload_with_compile_is_one_line_before_anything_loads(photos):
    with pytest.raises(DTIError) as err:
        dti.train(str(photos), "<w>", "dog", "no/such/model", offload="group", compile=True)
    assert "offload" in str(err.value) and "compile" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("family, extra", [("sd", {}), ("sana", {}), ("sd", {"lora": 4, "lora_text_encoder": True}), ("sana", {"lora": 4})])
def test_nothing_the_backward_keeps_holds_an_away_weight(family, extra, tiny_models, photos, away_is_nan, one_thread):
    """The point of offloading: between a block's forward and its backward its weights hold no device memory.
    Autograd keeps what the backward needs; a view of a weight (a linear layer's transposed weight) would keep
    the weight's storage alive, so only the weight parameters themselves (whose data leaves) may be kept. With
    a LoRA too: PEFT's wrapper calls the base layer, which runs the frozen linear (the LoRA's own weights stay)."""
    adapter = adapter_for(load_adapter(tiny_models(family)).pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", offload="group", **SETTINGS, **extra), adapter.defaults, RES)
    trainer = Trainer(c, adapter, load_photos(photos), None)
    trainer.setup()
    try:
        blocks = adapter.hooks[residency.HOOK].blocks
        params = {id(p): p for b in blocks for _, own in b.owners for p in own}
        storages = {b._host(p).untyped_storage().data_ptr() for b in blocks for _, own in b.owners for p in own}
        kept = []

        def pack(t):
            if id(t) not in params and t.device.type != "meta" and t.untyped_storage().data_ptr() in storages:
                kept.append(tuple(t.shape))
            return t

        batch = trainer.micro_batch(1, 0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            scaled, _ = trainer.objective(adapter.loss(batch.latents, batch.prompts, batch.crops, batch.draws))
        scaled.backward()
        assert not kept, kept[:5]
    finally:
        trainer.detach()
