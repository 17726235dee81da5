"""What the conformance suite (test_families.py) does not check for Wan 2.1: images as one-frame
videos (latent shape, the pipeline's own latent normalization, the frame returned as the image),
UMT5 as its own encoder kind, and what the adapter refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dti
from dti.concepts.concept import Concept, EncoderVectors
from dti.core.errors import DTIError
from dti.models import load_adapter

RES = 64


@pytest.fixture(scope="module")
def wan(tiny_models):
    return load_adapter(tiny_models("wan"), quiet=True)


def test_a_photo_is_a_one_frame_latent_normalized_as_the_pipeline_decodes(wan):
    pixels = torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, std = wan.encode_pixels(pixels)
    factor = wan.pipe.vae_scale_factor_spatial
    assert mean.shape == std.shape == (2, wan.pipe.vae.config.z_dim, 1, RES // factor, RES // factor)
    scaled = wan.scale_latents(mean)
    assert not torch.allclose(scaled, mean)  # the per-channel statistics are not the identity
    # WanPipeline.__call__'s decode step, verbatim: it must take the scaled latent back to the VAE's
    config = wan.pipe.vae.config
    latents_mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1)
    latents_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1)
    assert torch.allclose(scaled / latents_std + latents_mean, mean, atol=1e-6)
    # the training noise has the latent's shape, time axis included
    from dti.core.draws import SampleDraws

    loss = wan.loss(mean, ["a photo of a dog"] * 2, [None, None], SampleDraws(0, [0, 1]), reduction="none")
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())


def test_training_shift_is_the_shipped_schedulers_flow_shift(wan):
    assert type(wan.pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert wan.train_shift() == pytest.approx(wan.pipe.scheduler.config.flow_shift) == pytest.approx(3.0)


def test_generation_returns_the_single_frame_the_pipeline_makes(wan):
    from dti.use.generate import render

    image = render(wan.pipe, "a photo of a dog", seed=3, steps=2, guidance=5.0, resolution=RES)
    assert image.size == (RES, RES) and image.mode == "RGB"
    frames = wan.pipe(
        "a photo of a dog",
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(3),
        height=RES,
        width=RES,
        num_frames=1,
        output_type="pil",
    ).frames
    assert len(frames) == 1 and len(frames[0]) == 1
    assert np.array_equal(np.asarray(image), np.asarray(frames[0][0]))


def test_a_t5_concept_is_refused_and_a_comfyui_umt5xxl_file_loads(wan, tmp_path):
    """UMT5 is its own kind: a T5 vector (PixArt's, same 4096 width at full size) never attaches to it."""
    from safetensors.torch import save_file

    width = wan.encoders[0].text_encoder.get_input_embeddings().weight.shape[-1]
    t5 = Concept("<t>", {"text_encoder": EncoderVectors(torch.randn(1, width), kind="t5")}, {"method": "dti"})
    with pytest.raises(DTIError, match=r"needs text_encoder \(umt5\)"):
        dti.load(wan.pipe, t5)
    file = tmp_path / "w.safetensors"
    save_file({"umt5xxl": torch.randn(1, width)}, str(file))
    concept = dti.load(wan.pipe, file, token="<u>")
    try:
        assert concept.encoders["text_encoder"].kind == "umt5"
    finally:
        dti.unload(wan.pipe, "<u>")


def test_tokens_the_pipelines_prompt_cleaning_would_change_are_refused(tiny_models):
    from dti.training.checks import check_family_words

    cls = type(load_adapter(tiny_models("wan"), quiet=True))
    check_family_words(cls, "<my-dog>")
    with pytest.raises(DTIError, match="cleans every prompt"):
        check_family_words(cls, "<my&amp;dog>")


def test_wan22_layouts_are_refused_before_a_step(wan):
    from dti.core.draws import SampleDraws

    latents = torch.zeros(1, 16, 1, 8, 8)
    wan.pipe.register_to_config(boundary_ratio=0.875)
    try:
        with pytest.raises(DTIError, match=r"Wan 2\.2"):
            wan.loss(latents, ["a photo of a dog"], [None], SampleDraws(0, [0]))
    finally:
        wan.pipe.register_to_config(boundary_ratio=None)


def test_the_tiny_builder_reloads_its_tokenizer_and_umt5_encoder(tiny_models):
    """The saved folder loads back through from_pretrained: the same token ids (through AutoTokenizer,
    as WanPipeline's loader and dti's word checks load it), a UMT5 encoder whose table outgrows the tokenizer."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    from dti.testing.t5 import t5_tokenizer

    folder = tiny_models("wan")
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    for text in ("a photo of a dog", "a stuffed animal in the snow", ""):
        assert tok(text).input_ids == t5_tokenizer()(text).input_ids
    encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder")
    assert encoder.get_input_embeddings().weight.shape[0] > len(tok)
