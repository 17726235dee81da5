"""`--lora RANK` with `--quantize {int8,fp8,nf4,int4}` (QLoRA): the LoRA learns beside the word on a quantized frozen base.

On real tiny pipelines of a UNet family (SD: UNet + CLIP) and a transformer family (SANA: DiT + Gemma), for
every scheme: while the run trains, every base linear layer holds the scheme's weight and the LoRA wraps
it with fp32 weights that learn; the word stays at its norm; the handed-in pipeline comes back with its
own modules and parameter values; the two files are the full-precision run's format (keys naming the
layers, not the quantized wrappers) and load into a full-precision pipeline, where the LoRA changes the
images (``dti.load`` and diffusers' ``load_lora_weights`` alike); the concept records the scheme.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dti
from conftest import load_pipe
from dti.commands import main
from dti.concepts.concept import Concept
from dti.models import adapter_for
from dti.training import quantize
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.use import lora as lora_files
from dti.use.generate import render

RES = 64
SCHEMES = tuple(m for m in quantize.MODES if m != "none")
FAMILIES = ("sd", "sana")
SETTINGS = dict(steps=2, batch_size=1, resolution=RES, validate=False, progress=False, lora=4, lora_lr=1e-2)
WEIGHT = {"int8": "Int8Tensor", "fp8": "Float8Tensor", "nf4": "Params4bit", "int4": "WeightQBitsTensor"}


def backend(mode):
    if quantize.missing(mode) is not None:
        pytest.skip(f"{mode}: {quantize.BACKENDS[mode][1]} not installed")


def lora_on_quantized(adapter, mode) -> bool:
    """Every base linear layer of the denoiser and the text encoders holds the scheme's frozen weight (the
    LoRA's own layers aside); the LoRA wraps quantized layers, its weights fp32 and learning."""
    nets = quantize.modules(adapter)
    wrapped = [layer for net in nets for _, layer in lora_files.tuner_layers(net, lora_files.TRAIN_NAME)]
    own = {id(m) for layer in wrapped for m in (layer.lora_A[lora_files.TRAIN_NAME], layer.lora_B[lora_files.TRAIN_NAME])}
    full = set().union(*(quantize.kept_full(net, mode) for net in nets))
    base = [m.weight for net in nets for m in net.modules() if isinstance(m, torch.nn.Linear) and id(m) not in own | full]
    params = [p for net in nets for p in lora_files.lora_parameters(net, lora_files.TRAIN_NAME)]
    return (
        bool(wrapped)
        and all(type(layer.get_base_layer().weight).__name__ == WEIGHT[mode] for layer in wrapped)
        and all(type(w).__name__ == WEIGHT[mode] and not w.requires_grad for w in base)
        and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    )


def snapshot(pipe):
    """Every component's modules by name (the objects) and its parameters' values."""
    nets = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    modules = {(name, k): id(m) for name, net in nets.items() for k, m in net.named_modules()}
    values = {(name, k): p.detach().clone() for name, net in nets.items() for k, p in net.named_parameters()}
    return modules, values


def image(pipe) -> np.ndarray:
    return np.asarray(render(pipe, "a photo of a <w>", 0, 2, 3.0, RES)).astype(np.int16)


def full_precision_keys(model: Path, component: str, targets) -> set[str]:
    """The keys a LoRA on the same layers of a full-precision pipeline has."""
    module = getattr(load_pipe(model), component)
    lora_files.inject(module, 4, 4.0, targets, "probe")
    return set(lora_files.lora_state(module, "probe"))


@pytest.mark.parametrize("mode", SCHEMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_learns_on_a_quantized_base_and_loads_into_a_full_precision_one(
    family, mode, tiny_models, photos, tmp_path, monkeypatch, one_thread, recwarn
):
    backend(mode)
    model = tiny_models(family)
    pipe = load_pipe(model)
    modules, values = snapshot(pipe)
    seen = []
    launch = Trainer.launch

    def watched(self, step):
        seen.append(lora_on_quantized(self.adapter, mode))
        return launch(self, step)

    monkeypatch.setattr(Trainer, "launch", watched)
    run = tmp_path / "run"
    concept = dti.train(str(photos), "<w>", "dog", pipe, run, quantize=mode, **SETTINGS)
    assert seen == [True, True]  # both steps: the LoRA on quantized layers
    assert not [w for w in recwarn if "get_apply_tensor_subclass" in str(w.message)]  # PEFT's merge warning, never dti's concern
    assert concept.meta["quantize"] == mode and concept.meta["lora"]["quantize"] == mode
    for vectors in concept.encoders.values():
        if vectors.trained:
            norms = vectors.vectors.norm(dim=-1)
            torch.testing.assert_close(norms, torch.full_like(norms, vectors.magnitude), rtol=1e-5, atol=1e-5)

    # the handed-in pipeline back as given: its own modules (no LoRA, no quantized layer), the same values
    after_modules, after_values = snapshot(pipe)
    assert after_modules == modules
    assert after_values.keys() == values.keys() and all(torch.equal(after_values[k], v) for k, v in values.items())
    assert not any(hasattr(m, "peft_config") for m in pipe.components.values())

    # the files: a full-precision run's keys, a LoRA that learned
    parts, configs = lora_files.read_diffusers(run / lora_files.DIFFUSERS_FILE)
    denoiser = adapter_for(pipe).denoiser_name
    assert set(parts) == {denoiser}
    assert set(parts[denoiser]) == full_precision_keys(model, denoiser, configs[denoiser]["target_modules"])
    assert lora_files.norm(parts[denoiser], 4.0, 4) > 1e-4, "the LoRA did not learn"
    (kohya,) = (run / "webui").glob("*-lora.safetensors")
    assert not [k for k in load_file(str(kohya)) if "base_layer" in k or "weight_q" in k]

    # into a full-precision pipeline: dti.load and diffusers' loader agree, and the LoRA changes the image
    fresh = load_pipe(model)
    dti.load(fresh, run, lora_scale=0.0)
    word_only = image(fresh)
    dti.unload(fresh, "<w>")
    dti.load(fresh, run)
    with_lora = image(fresh)
    assert np.abs(with_lora - word_only).max() > 0, "the LoRA changes nothing in a full-precision pipeline"
    theirs = load_pipe(model)
    dti.load(theirs, concept)
    theirs.load_lora_weights(run)
    assert np.abs(image(theirs) - with_lora).max() <= 1, "diffusers' load_lora_weights and dti.load disagree"


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_the_command_line_trains_a_lora_on_the_pipeline_it_quantizes_as_it_loads(mode, tiny_sd, photos, tmp_path, one_thread):
    """``dti train --lora --quantize``: dti's own pipeline is quantized as it loads, the LoRA put on it after."""
    backend(mode)
    out = tmp_path / "run"
    args = ["train", photos, "--token", "<w>", "--init", "dog", "--model", tiny_sd, "--output", out, "--steps", "2", "--quiet"]
    args += ["--resolution", RES, "--batch-size", 1, "--no-validation", "--lora", 4, "--lora-lr", 0.01, "--quantize", mode]
    assert main([str(a) for a in args]) == 0
    concept = Concept.load(out)
    assert concept.meta["lora"]["quantize"] == mode and concept.meta["lora"]["layers"]["unet"] == 32
    parts, _ = lora_files.read_diffusers(out / lora_files.DIFFUSERS_FILE)
    assert lora_files.norm(parts["unet"], 4.0, 4) > 1e-4
    assert list((out / "webui").glob("*-lora.safetensors"))


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_a_checkpoint_on_a_quantized_base_continues_bit_identically(mode, tiny_sd, photos, tmp_path, one_thread):
    """The LoRA and its optimizer saved from a quantized run and loaded into a new one: the rest of the run as one run's."""
    backend(mode)
    pipe = load_pipe(tiny_sd)
    adapter = adapter_for(pipe)
    settings = {**SETTINGS, "steps": 4, "lora": 2, "quantize": mode}
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", **settings), adapter.defaults, RES)

    def trainer():
        t = Trainer(c, adapter, load_photos(photos), None)
        t.setup()
        return t

    whole = trainer()
    losses = [whole.step() for _ in range(4)]
    lora = whole.lora.state()["unet"]
    whole.detach()
    first = trainer()
    for _ in range(2):
        first.step()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    first.detach()
    second = trainer()
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [second.step() for _ in range(2)] == losses[2:]
    got = second.lora.state()["unet"]
    second.detach()
    assert lora_files.norm(got, 2, 2) > 0 and all(torch.equal(lora[k], got[k]) for k in lora)
