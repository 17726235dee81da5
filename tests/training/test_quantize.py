"""`--quantize int8`: the frozen denoiser and text encoders' linear layers in torchao's weight-only int8.

On real tiny pipelines of a UNet family (SD), a T5 DiT (PixArt) and a Gemma family (SANA): the run
trains only the word's rows, at their norm, through layers that really are int8 while it runs; the
word's gradient at step 0 points where the full-precision run's does; the concept says int8; and a
pipeline a caller hands in comes back as it was given (its own weight parameters, the same values).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import dti
from dti.core.errors import DTIError
from dti.models import adapter_for, load_adapter
from dti.training import quantize
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer

pytest.importorskip("torchao")

RES = 64
FAMILIES = ("sd", "pixart", "sana")
SETTINGS = dict(steps=2, batch_size=1, resolution=RES, validate=False, progress=False)


def all_int8(adapter):
    """Every linear layer of the denoiser and the text encoders int8 (torchao's tensor), every embedding table not."""
    layers = [m for net in quantize.modules(adapter) for m in net.modules()]
    linears = [m.weight for m in layers if isinstance(m, torch.nn.Linear)]
    embeddings = [m.weight for m in layers if isinstance(m, torch.nn.Embedding)]
    return (
        bool(linears) and all(type(w).__name__ == "Int8Tensor" for w in linears) and all(type(w) is torch.nn.Parameter for w in embeddings)
    )


def snapshot(pipe):
    nets = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    params = {(name, k): p for name, net in nets.items() for k, p in net.named_parameters()}
    values = {key: p.detach().clone() for key, p in params.items()}
    return params, values


def first_gradient(pipe, photos, mode):
    """The word's gradient at step 0 (before any update), per trained encoder."""
    adapter = adapter_for(pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", quantize=mode, **SETTINGS), adapter.defaults, RES)
    trainer = Trainer(c, adapter, load_photos(photos), None)
    trainer.setup()
    try:
        assert all_int8(adapter) == (mode == "int8")
        batch = trainer.micro_batch(1, 0)
        scaled, loss = trainer.objective(adapter.loss(batch.latents, batch.prompts, batch.crops, batch.draws))
        scaled.backward()
        return {name: trainer.rows[name].param.grad.detach().clone() for name in trainer.trained}, float(loss)
    finally:
        trainer.detach()


@pytest.mark.parametrize("family", FAMILIES)
def test_an_int8_run_trains_the_word_through_quantized_layers_and_hands_the_pipeline_back(
    family, tiny_models, photos, monkeypatch, one_thread
):
    pipe = load_adapter(tiny_models(family)).pipe
    params, values = snapshot(pipe)

    want, want_loss = first_gradient(pipe, photos, "none")
    got, got_loss = first_gradient(pipe, photos, "int8")
    assert got_loss == pytest.approx(want_loss, rel=0.05)
    for name in want:
        cosine = torch.nn.functional.cosine_similarity(got[name].flatten().double(), want[name].flatten().double(), dim=0)
        assert cosine > 0.99, (name, float(cosine))

    seen = []
    launch = Trainer.launch

    def watched(self, step):
        seen.append(all_int8(self.adapter))
        return launch(self, step)

    monkeypatch.setattr(Trainer, "launch", watched)
    concept = dti.train(str(photos), "<w>", "dog", model=pipe, quantize="int8", **SETTINGS)
    assert seen == [True, True]  # every step ran through int8 layers
    assert concept.meta["quantize"] == "int8"
    for vectors in concept.encoders.values():
        if vectors.trained:
            norms = vectors.vectors.norm(dim=-1)
            torch.testing.assert_close(norms, torch.full_like(norms, vectors.magnitude), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(torch.nn.functional.normalize(vectors.vectors, dim=-1), vectors.init, atol=1e-7)  # it moved
    # handed back as given: the same parameter objects, plain tensors, the same values (nothing else moved)
    after, _ = snapshot(pipe)
    assert after.keys() == params.keys()
    for key, p in params.items():
        assert after[key] is p and type(p) is torch.nn.Parameter, key
        assert torch.equal(p.detach(), values[key]), key


def test_a_pipeline_dti_loads_is_quantized_as_it_loads(tiny_models, photos, monkeypatch, one_thread):
    seen = []
    launch = Trainer.launch

    def watched(self, step):
        seen.append((all_int8(self.adapter), quantize.HOOK in self.adapter.hooks and bool(self.adapter.hooks[quantize.HOOK].kept)))
        return launch(self, step)

    monkeypatch.setattr(Trainer, "launch", watched)
    concept = dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), quantize="int8", **SETTINGS)
    assert seen == [(True, False), (True, False)]  # int8 from the start, no full-precision weights kept
    assert concept.meta["quantize"] == "int8"


def test_a_full_precision_concept_says_so(tiny_models, photos, one_thread):
    concept = dti.train(str(photos), "<w>", "dog", model=str(tiny_models("sd")), **{**SETTINGS, "steps": 1})
    assert concept.meta["quantize"] == "none"


def test_missing_torchao_is_one_line_before_anything_loads(photos, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(DTIError) as err:
        dti.train(str(photos), "<w>", "dog", "no/such/model", quantize="int8")
    assert 'pip install "dti[quant]"' in str(err.value) and "\n" not in str(err.value)


def test_torchaos_cuda_library_lines_stay_off_stderr(tiny_models):
    """torchao imported for a run, then a pipeline loaded (transformers imports more of torchao): no line of theirs."""
    load = f"from dti.models import load_adapter; load_adapter({str(tiny_models('sd'))!r})"
    code = f"from dti.training import quantize; quantize.load(); {load}; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert "Failed to load" not in done.stderr and "KernelPreference" not in done.stderr, done.stderr
