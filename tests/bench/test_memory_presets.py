"""`--vram N`: the library's memory model (dti.training.memory) on full-size families built on the meta
device (benchmarks/memory.py's profiles), the choices it makes per card, that it keeps what the user
gave, that a card nothing fits is one line, and that a model's safetensors headers give the same
profile as its modules."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dti.models import load_adapter
from dti.training import memory
from dti.training.memory import Setup, choose, estimate, profile_of_folder, profile_of_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = pytest.importorskip("memory")
pytest.importorskip("full_configs")


@pytest.fixture(scope="module")
def profiles():
    built = {}

    def get(family):
        if family not in built:
            built[family] = bench.profile(family)
        return built[family]

    return get


@pytest.mark.parametrize(
    "family, resolution, batch, card, want",
    [
        ("sdxl", 768, 4, 24, {}),  # the defaults fit a 24 GB card (18.0 GiB)
        ("sdxl", 768, 4, 12, {"gradient_checkpointing": True}),
        ("sdxl", 768, 4, 8, {"gradient_checkpointing": True, "quantize": "int8"}),
        ("flux", 768, 4, 16, {"gradient_checkpointing": True, "offload": "group"}),
        ("flux", 768, 4, 12, {"gradient_checkpointing": True, "offload": "group", "batch_size": 1, "grad_accum": 4}),
        ("sana", 1024, 2, 12, {"gradient_checkpointing": True, "quantize": "int8"}),
        ("flux2_klein", 1024, 2, 12, {"gradient_checkpointing": True, "offload": "group"}),
        ("hidream", 768, 4, 24, {"gradient_checkpointing": True, "offload": "group"}),
    ],
)
def test_the_cheapest_savers_that_fit_each_card(profiles, family, resolution, batch, card, want):
    choice = choose(profiles(family), Setup(resolution=resolution, batch_size=batch), card, set())
    assert choice.fits and choice.changed == want
    assert choice.estimate.peak_gib * memory.SAFETY + memory.CONTEXT_GIB <= card
    # and no saver of the ladder before the last one chosen was enough alone
    plain = estimate(profiles(family), Setup(resolution=resolution, batch_size=batch))
    assert want or plain.fits(card)


def test_quantized_and_offloaded_weights_shrink_as_modelled(profiles):
    flux = profiles("flux")
    setup = Setup(resolution=768, batch_size=1)
    full = estimate(flux, setup).weights_gib
    int8 = estimate(flux, Setup(**{**setup.__dict__, "quantize": "int8"})).weights_gib
    nf4 = estimate(flux, Setup(**{**setup.__dict__, "quantize": "nf4"})).weights_gib
    group = estimate(flux, Setup(**{**setup.__dict__, "offload": "group"})).weights_gib
    model = estimate(flux, Setup(**{**setup.__dict__, "offload": "model"})).weights_gib
    assert 31.0 < full < 31.6  # the transformer 22.17 + T5 8.87 + CLIP 0.23 + VAE 0.16 GiB (benchmarks' fake-tensor count)
    assert 0.5 < int8 / full < 0.52 and 0.28 < nf4 / full < 0.3
    assert group < 2.0 < model < full  # the largest block + the rest < the transformer alone < all


def test_settings_the_user_gave_are_kept(profiles):
    flux = profiles("flux")
    setup = Setup(resolution=768, batch_size=4)
    choice = choose(flux, setup, 16, {"offload"})  # --offload none given: the preset may not offload
    assert "offload" not in choice.changed and choice.fits
    assert choice.changed["quantize"] in ("int8", "nf4")
    none = choose(flux, setup, 8, {"offload", "quantize", "batch_size", "resolution"})
    assert not none.fits
    line = str(none.line())
    assert line.startswith("vram 8: nothing dti can change fits") and "\n" not in line


def test_a_models_headers_give_its_modules_profile(tiny_models):
    folder = tiny_models("sdxl")
    adapter = load_adapter(folder)
    cls = type(adapter)
    encoders = [role.component for role in cls.roles]
    from_files = profile_of_folder(folder, cls.family, cls.denoiser_name, encoders)
    from_modules = profile_of_pipeline(adapter.pipe, cls.family, cls.denoiser_name, encoders)
    for a, b in zip(from_files.parts, from_modules.parts, strict=True):
        assert (a.name, a.role, a.params, a.blocks, a.largest_block) == (b.name, b.role, b.params, b.blocks, b.largest_block)
        assert abs(a.linear - b.linear) <= 0.05 * b.params, a.name  # names only, no module types: close, not exact


def test_a_model_far_smaller_than_its_familys_is_not_given_the_familys_activations(profiles, tiny_models):
    """dti-mini's denoiser (SDXL's layout, 1/1000th of its size) once borrowed SDXL's 1.6 GiB of activations and
    was told to checkpoint on an 8 GB card; activations now shrink with the size below half the table's model."""
    sdxl = profiles("sdxl")
    full_size = memory.activations_for(sdxl)
    assert full_size[1:] == tuple(memory.ACTIVATIONS["sdxl"][0][2:])  # the measured model itself: its own figures
    adapter = load_adapter(tiny_models("sdxl"))
    cls = type(adapter)
    tiny = profile_of_pipeline(adapter.pipe, cls.family, cls.denoiser_name, [role.component for role in cls.roles])
    ratio = tiny.denoiser.gib() / memory.ACTIVATIONS["sdxl"][0][0]
    _, plain, ckpt = memory.activations_for(tiny)
    assert plain == pytest.approx(full_size[1] * 2 * ratio) and ckpt == pytest.approx(full_size[2] * 2 * ratio)
    assert choose(tiny, Setup(resolution=768, batch_size=4), 8, set()).changed == {}
    # half the size and above: the family's figures as measured
    half = memory.Profile(sdxl.family, tuple(replace(p, params=p.params // 2 + 1) if p.role == "denoiser" else p for p in sdxl.parts))
    assert memory.activations_for(half)[1:] == full_size[1:]
