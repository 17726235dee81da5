"""`--lora RANK` with `--offload {model,group}`: only the frozen base weights come and go; the LoRA stays.

On the CPU the tests make an away weight hold NaN (``away_is_nan``): a block that ran while away, or a LoRA
weight that went away with its block, would show as NaN in the loss, the word or the LoRA. A few steps with
offloading then learn the same LoRA and word as the same run without it, on a UNet family (SD: UNet + CLIP,
with and without the LoRA on the text encoder) and transformer families (SANA, PixArt), and on an int8 base;
the LoRA's parameters are the same tensors in the same memory the whole run (never moved), its own layers
run torch's linear (their weights' gradient is what the LoRA learns from) while the base layers PEFT wraps
run the offload's frozen linear; a checkpoint resumes bit-identically; the handed-in pipeline comes back
with its own modules, its values, no hook and no LoRA.
"""

from __future__ import annotations

import pytest
import torch

import dti
from conftest import load_pipe
from dti.commands import main
from dti.models import adapter_for
from dti.training import quantize, residency
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.use import lora as lora_files

RES = 64
SETTINGS = dict(batch_size=1, resolution=RES, validate=False, progress=False, lora=4, lora_lr=1e-2)
STEPS = 3


def trainer(pipe, photos, **settings) -> Trainer:
    adapter = adapter_for(pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", **{"steps": STEPS, **SETTINGS, **settings}), adapter.defaults, RES)
    t = Trainer(c, adapter, load_photos(photos), None)
    t.setup()
    return t


def lora_layers_stay(t: Trainer) -> bool:
    """The LoRA's parameters belong to no offloaded block, its own layers run torch's linear, every base layer
    PEFT wraps moves with its block, and a plain one (not quantized) runs the offload's frozen linear."""
    blocks = t.adapter.hooks[residency.HOOK].blocks
    moved = {id(p) for b in blocks for _, own in b.owners for p in own}
    frozen_linear = {id(m) for b in blocks for m in b.linears}
    wrapped = [layer for module in t.lora.modules.values() for _, layer in lora_files.tuner_layers(module, t.lora.name)]
    own = [m for layer in wrapped for m in (layer.lora_A[t.lora.name], layer.lora_B[t.lora.name])]
    bases = [layer.get_base_layer() for layer in wrapped]
    plain_bases = [m for m in bases if type(m) is torch.nn.Linear and type(m.weight) is torch.nn.Parameter]
    return (
        bool(wrapped)
        and all(id(m.weight) in moved for m in bases)
        and not any(id(p) in moved for p in t.lora.params)
        and not any(id(m) in frozen_linear or "forward" in m.__dict__ for m in own)
        and all(id(m) in frozen_linear for m in plain_bases)
    )


def run(pipe, photos, **settings):
    """The losses, the LoRA (every component) and the words after a few steps; with offloading, whether every
    block was away after each step and the LoRA's parameters in the memory they started in."""
    t = trainer(pipe, photos, **settings)
    try:
        hook = t.adapter.hooks.get(residency.HOOK)
        where = [p.data_ptr() for p in t.lora.params]
        stays = lora_layers_stay(t) if hook else None
        start = lora_weights(t)
        losses, away, grads = [], [], []
        for _ in range(STEPS):
            losses.append(t.step())
            away.append(bool(hook and hook.blocks) and all(not b.resident for b in hook.blocks))
            grads = grads or [p.grad.detach().clone() for p in t.lora.params]  # the first step's
        kept = [p.data_ptr() for p in t.lora.params] == where
        lora = lora_weights(t)
        moved = max(float((lora[k] - start[k]).abs().max()) for k in lora)
        words = {name: t.rows[name].vectors().detach().cpu().clone() for name in t.trained}
        return losses, lora, words, {"away": away, "stays": stays, "kept": kept, "grads": grads, "moved": moved}
    finally:
        t.detach()


def lora_weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c, part in t.lora.state().items() for k, v in part.items()}


def biggest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_same_run(plain, offloaded) -> dict[str, float]:
    """The offloaded run learned what the plain one did; the measured differences."""
    (want_losses, want_lora, want_words, want), (losses, lora, words, seen) = plain, offloaded
    assert all(seen["away"]) and seen["stays"] and seen["kept"], {k: seen[k] for k in ("away", "stays", "kept")}
    assert all(v.isfinite().all() for v in [*lora.values(), *words.values()])
    assert want["moved"] > 1e-3, "the LoRA did not learn"
    torch.testing.assert_close(losses, want_losses, rtol=1e-6, atol=1e-7)
    # --offload model: bit for bit (measured). --offload group: each block's identities gather the gradients of
    # a tensor every block uses (the word's states) block by block, so their sum adds in another order: the
    # first step's LoRA gradients agree to rounding (SANA's bit for bit, SD's to 4e-10), the word's (as in
    # test_residency) too, and the word stays within 1e-6 over the steps (measured 4e-9). The word's rounding
    # reaches the LoRA's later gradients, and AdamW divides each entry by its own gradient's size, so an entry
    # whose gradient is near AdamW's eps turns it into a fraction of a step: the LoRA is held to 2% of how far it
    # moved (measured: SD 2.8e-6, SD + text encoder 6.9e-6, SANA 4.5e-4 of 3e-2).
    for got, wanted in zip(seen["grads"], want["grads"], strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-5, atol=1e-9)
    measured = {"lora": biggest_difference(lora, want_lora), "word": biggest_difference(words, want_words), "moved": want["moved"]}
    assert measured["word"] <= 1e-6 and measured["lora"] <= 0.02 * want["moved"], measured
    return measured


@pytest.mark.parametrize(
    "family, mode, extra",
    [
        ("sd", "group", {}),
        ("sd", "model", {}),
        ("sd", "group", {"lora_text_encoder": True}),
        ("sana", "group", {}),
        ("pixart", "model", {"gradient_checkpointing": True}),
    ],
)
def test_an_offloaded_run_learns_the_lora_and_word_a_plain_run_learns(family, mode, extra, tiny_models, photos, away_is_nan, one_thread):
    pipe = load_pipe(tiny_models(family))
    plain = run(pipe, photos, **extra)
    print(family, mode, extra, assert_same_run(plain, run(pipe, photos, offload=mode, **extra)))


def test_an_offloaded_lora_beside_a_fixed_word_is_bit_identical(tiny_models, photos, away_is_nan, one_thread):
    """What the tolerance above allows is the word's rounding: with the word fixed (``word_steps=0``) SANA's
    blocks, which use each other's outputs once, learn the LoRA of the plain run bit for bit under group
    offloading (SD's UNet, whose down blocks' outputs also feed its up blocks, adds those in another order)."""
    pipe = load_pipe(tiny_models("sana"))
    want_losses, want, _, plain = run(pipe, photos, word_steps=0)
    losses, got, _, seen = run(pipe, photos, word_steps=0, offload="group")
    assert all(seen["away"]) and seen["stays"] and seen["kept"] and plain["moved"] > 1e-3
    assert losses == want_losses and got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.skipif(quantize.missing("int8") is not None, reason="torchao not installed")
def test_an_offloaded_int8_base_learns_the_lora_a_resident_int8_base_learns(tiny_models, photos, away_is_nan, one_thread):
    """Quantized weights move whole through their module (parked in host memory: on CPU, where they are); the
    blocks' plain weights (convolutions, norms) hold NaN while away."""
    pipe = load_pipe(tiny_models("sd"))
    plain = run(pipe, photos, quantize="int8")
    print("sd int8 group", assert_same_run(plain, run(pipe, photos, quantize="int8", offload="group")))


def test_a_checkpoint_of_an_offloaded_lora_run_continues_bit_identically(tiny_sd, photos, tmp_path, away_is_nan, one_thread):
    """The LoRA and its optimizer saved from an offloaded run and loaded into a new one: the rest of the run as one run's."""
    pipe = load_pipe(tiny_sd)
    settings = {"steps": 4, "lora": 2, "offload": "group", "lora_text_encoder": True}
    whole = trainer(pipe, photos, **settings)
    losses = [whole.step() for _ in range(4)]
    lora, word = whole.lora.state(), whole.rows["text_encoder"].vectors().detach().clone()
    whole.detach()
    first = trainer(pipe, photos, **settings)
    for _ in range(2):
        first.step()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    first.detach()
    second = trainer(pipe, photos, **settings)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [second.step() for _ in range(2)] == losses[2:]
    got, got_word = second.lora.state(), second.rows["text_encoder"].vectors().detach().clone()
    second.detach()
    assert set(got) == {"unet", "text_encoder"} and torch.equal(word, got_word)
    for component, part in lora.items():
        assert lora_files.norm(got[component], 2, 2) > 0 and all(torch.equal(part[k], got[component][k]) for k in part)


def test_the_pipeline_comes_back_without_hooks_or_lora(tiny_sd, photos, tmp_path, away_is_nan, one_thread):
    pipe = load_pipe(tiny_sd)
    nets = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    modules = {(name, k): m for name, net in nets.items() for k, m in net.named_modules()}
    params = {(name, k): p for name, net in nets.items() for k, p in net.named_parameters()}
    values = {key: p.detach().clone() for key, p in params.items()}
    run_folder = tmp_path / "run"
    concept = dti.train(str(photos), "<w>", "dog", pipe, run_folder, offload="group", lora_text_encoder=True, steps=2, **SETTINGS)
    assert set(concept.meta["lora"]["layers"]) == {"unet", "text_encoder"}
    assert {(name, k): m for name, net in nets.items() for k, m in net.named_modules()} == modules  # no LoRA layer left
    assert not any(hasattr(m, "peft_config") for m in nets.values())
    for key, p in params.items():
        assert dict(nets[key[0]].named_parameters())[key[1]] is p and p.device.type == "cpu", key
        assert torch.equal(p.detach(), values[key]), key
    for net in nets.values():
        for m in net.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks, m
            assert "forward" not in m.__dict__, m  # its own forward again
    parts, _ = lora_files.read_diffusers(run_folder / lora_files.DIFFUSERS_FILE)
    assert set(parts) == {"unet", "text_encoder"} and all(v.isfinite().all() for part in parts.values() for v in part.values())


def test_the_command_line_takes_lora_with_offload(base_args, capsys, tmp_path, one_thread):
    """``dti train --lora 2 --offload group`` was refused; now it runs (on a CPU run offloading changes nothing, and says so)."""
    assert main([str(a) for a in [*base_args, "--lora", "2", "--lora-lr", "0.01", "--offload", "group"]]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "offload" in line]
    assert lines == ["warning: --offload group has no effect on a CPU run: the weights already live in host memory"]
    parts, _ = lora_files.read_diffusers(tmp_path / "out" / lora_files.DIFFUSERS_FILE)
    assert lora_files.norm(parts["unet"], 2.0, 2) > 0
