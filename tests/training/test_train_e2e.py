"""End to end on tiny pipelines: photos -> train -> files -> diffusers load_textual_inversion -> generate."""

from __future__ import annotations

import json

import pytest
import torch

import dti
from conftest import load_pipe
from dti.concepts.concept import Concept
from dti.core.rows import TrainableRows
from dti.models import adapter_for
from dti.text.attach import attach, pool_at_end_token
from dti.text.vocab import vocab_stats
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.training.run_folder import read_log

FAST = dict(resolution=64, sample_steps=2, validation_seeds=[0], validation_prompts=["a photo of a {}"], progress=False)


def tables(pipe):
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else [])
    return [e.get_input_embeddings().weight.detach().clone() for e in encoders]


def encoder_pairs(pipe):
    pairs = [("text_encoder", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append(("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def load_with_diffusers(pipe, run):
    """What a diffusers user does: one load_textual_inversion per encoder (+ dti's pooling fix)."""
    suffix = {"text_encoder": "", "text_encoder_2": "_2"}
    for name, tok, enc in encoder_pairs(pipe):
        pipe.load_textual_inversion(str(run / f"learned_embeds{suffix[name]}.safetensors"), tokenizer=tok, text_encoder=enc)
        pool_at_end_token(enc, tok.eos_token_id)


def encode(pipe, prompt):
    out = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    return [o for o in out if o is not None]


def attach_for_training(pipe, concept):
    """The training-time path: wrapped embeddings reading the concept's rows."""
    for name, tok, enc in encoder_pairs(pipe):
        attach(tok, enc, concept.token, TrainableRows(concept.encoders[name].vectors, "free"))


def test_sdxl_dti_end_to_end(dreambooth, tiny_sdxl, tmp_path):
    pipe = load_pipe(tiny_sdxl)
    before = tables(pipe)
    run = tmp_path / "run"
    concept = dti.train(dreambooth / "dog", "<my-dog>", "dog", pipe, run, steps=20, **FAST)
    # the pipeline handed in is left as it was found
    assert all(torch.equal(a, b) for a, b in zip(before, tables(pipe)))
    assert len(pipe.tokenizer) == 49408 and len(pipe.tokenizer_2) == 49408
    names = {p.name for p in run.iterdir()}
    assert {
        "concept.safetensors",
        "learned_embeds.safetensors",
        "learned_embeds_2.safetensors",
        "config.json",
        "train_log.jsonl",
        "norms.png",
        "samples.png",
    } <= names

    # DTI: every logged step at exactly the vocabulary-mean norm of each encoder
    means = {name: vocab_stats(t).mean for name, t in zip(["text_encoder", "text_encoder_2"], before)}
    log = read_log(run)
    assert [r["step"] for r in log] == list(range(21))
    for rec in log:
        for name, norms in rec["norms"].items():
            assert norms == pytest.approx([means[name]], abs=1e-5)
    assert log[-1]["angle_to_init_deg"]["text_encoder"][0] > 1.0  # it did learn something
    saved = Concept.load(run)
    for name in ("text_encoder", "text_encoder_2"):
        assert torch.equal(saved.encoders[name].vectors, concept.encoders[name].vectors)
        assert saved.encoders[name].magnitude == pytest.approx(means[name])
    assert saved.meta["method"] == "dti" and saved.meta["family"] == "sdxl" and saved.meta["initializer"] == "dog"

    # diffusers' own loader gives exactly the conditioning training used
    prompt = "a photo of a <my-dog> wearing a santa hat"
    fresh = load_pipe(tiny_sdxl)
    load_with_diffusers(fresh, run)
    loaded = encode(fresh, prompt)
    trained = load_pipe(tiny_sdxl)
    attach_for_training(trained, saved)
    reference = encode(trained, prompt)
    for a, b in zip(loaded, reference):
        assert torch.allclose(a, b, atol=1e-6)

    # generation with the token runs, and the token is not just the initializer word
    gen = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    img = fresh(prompt, generator=torch.Generator().manual_seed(0), **gen).images[0]
    dog = fresh(prompt.replace("<my-dog>", "dog"), generator=torch.Generator().manual_seed(0), **gen).images[0]
    assert img.shape == (64, 64, 3) and not (img == dog).all()


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_sd_v"])
def test_sd_end_to_end(dreambooth, fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    run = tmp_path / "run"
    concept = dti.train(dreambooth / "cat", "<my-cat>", "cat", model, run, steps=12, **FAST)
    fresh = load_pipe(model)
    fresh.load_textual_inversion(str(run))  # a folder: diffusers finds learned_embeds.safetensors itself
    row = fresh.text_encoder.get_input_embeddings().weight[fresh.tokenizer.convert_tokens_to_ids("<my-cat>")]
    assert torch.equal(row, concept.encoders["text_encoder"].vectors[0])
    img = fresh(
        "a <my-cat> on the beach", num_inference_steps=2, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert img.shape == (64, 64, 3) and float(img.std()) > 0
    assert json.loads((run / "config.json").read_text())["method"] == "dti"


def test_ti_norm_grows_while_dti_norm_stays_fixed(photos, tiny_sd, tmp_path):
    pipe = load_pipe(tiny_sd)
    mean = vocab_stats(pipe.text_encoder.get_input_embeddings().weight).mean
    ti = dti.train(photos, "<t>", "dog", pipe, tmp_path / "ti", method="ti", steps=30, **FAST)
    d = dti.train(photos, "<t>", "dog", pipe, tmp_path / "dti", method="dti", steps=30, **FAST)
    ti_norms = [r["norms"]["text_encoder"][0] for r in read_log(tmp_path / "ti")]
    assert ti_norms[-1] > 3 * mean and ti_norms[-1] > 2 * ti_norms[0]
    assert ti.encoders["text_encoder"].magnitude is None
    assert float(d.encoders["text_encoder"].norms[0]) == pytest.approx(mean, abs=1e-6)


def test_multi_vector_initializer(photos, tiny_sdxl, tmp_path):
    run = tmp_path / "run"
    concept = dti.train(photos, "<plush>", "stuffed animal", tiny_sdxl, run, steps=3, **FAST)
    assert concept.n_vectors == 2 and concept.tokens == ["<plush>", "<plush>_1"]
    fresh = load_pipe(tiny_sdxl)
    load_with_diffusers(fresh, run)
    assert fresh.tokenizer_2.convert_tokens_to_ids(["<plush>", "<plush>_1"]) == [49408, 49409]
    assert fresh.maybe_convert_prompt("a <plush>", fresh.tokenizer) == "a <plush> <plush>_1"
    norms = concept.encoders["text_encoder_2"].norms
    assert torch.allclose(norms, torch.full((2,), concept.encoders["text_encoder_2"].magnitude), atol=1e-6)


def _trainer(pipe, photos, **settings):
    adapter = adapter_for(pipe)
    base = TrainConfig(photos=str(photos), token="<t>", init="dog", model="tiny", **{**FAST, **settings})
    config = resolve(base, adapter.defaults, adapter.native_resolution())
    trainer = Trainer(config, adapter, load_photos(photos), run=None)
    trainer.setup()
    return trainer


def test_frozen_weights_build_no_gradients_and_latents_are_cached(dreambooth, tiny_sdxl):
    pipe = load_pipe(tiny_sdxl)
    trainer = _trainer(pipe, dreambooth / "dog", steps=5)
    for _ in range(5):
        trainer.step()
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert all(r.param.grad is not None for r in trainer.rows.values())
    assert trainer.cache.encodes == 5  # square photos: one crop each, encoded once for 20 samples
    trainer.detach()


def test_fixed_crop_positions_are_all_encoded_before_the_first_step(photos, tiny_sd):
    trainer = _trainer(load_pipe(tiny_sd), photos, steps=6, crop_positions=2)
    before = trainer.cache.encodes
    assert before == len(trainer.data.crops()) == 6  # the two non-square photos have two offsets each, the others one
    encode = trainer.adapter.encode_pixels
    trainer.cache._encode = lambda pixels: pytest.fail("a VAE encode after setup")  # training does no VAE work
    try:
        assert all(trainer.step() is not None for _ in range(6))
    finally:
        trainer.cache._encode = encode
        trainer.detach()
    assert trainer.cache.encodes == before


def test_with_fixed_crops_the_vae_waits_off_the_device_and_comes_back(photos, tiny_sd, tmp_path, monkeypatch):
    """The VAE leaves the device once the crops are encoded, is back only to decode the validation
    samples, and the caller gets the pipeline back with its VAE on its device. (A CPU run parks
    nowhere, so the test parks it at a stand-in place, recording moves instead of making them.)"""
    from dti.training import offload

    pipe = load_pipe(tiny_sd)
    moves: list[str] = []
    real_to, real_decode = pipe.vae.to, pipe.vae.decode

    def to(*args, **kwargs):
        if args and args[0] == "parked-here":
            moves.append("park")
            return pipe.vae
        if args and isinstance(args[0], torch.device):
            moves.append("home")
        return real_to(*args, **kwargs)

    def decode(*args, **kwargs):
        moves.append("decode")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "to", to)
    monkeypatch.setattr(pipe.vae, "decode", decode)
    monkeypatch.setattr(offload, "parking", lambda adapter: "parked-here")
    settings = dict(steps=4, validation_every=2, sample_steps=2, validation_seeds=[0], resolution=64, progress=False)
    dti.train(photos, "<my-tok>", "dog", pipe, tmp_path / "run", crop_positions=2, **settings)
    decodes = ["decode"] * 2  # two validation prompts, one seed
    # setup, the samples at step 0 and step 2, the end's samples, detach
    assert moves == ["park", *(["home", *decodes, "park"] * 3), "home"]
    moves.clear()
    dti.train(photos, "<my-tok>", "dog", pipe, tmp_path / "again", **settings)  # random crops: the VAE is needed, stays
    assert "park" not in moves and moves.count("decode") == 6


def test_bf16_keeps_trainable_rows_fp32(photos, tiny_sd):
    from dti.models import load_adapter

    pipe = load_adapter(tiny_sd, torch.bfloat16).pipe
    trainer = _trainer(pipe, photos, steps=2)
    losses = [trainer.step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(r.param.dtype == torch.float32 for r in trainer.rows.values())
    trainer.detach()


@pytest.mark.parametrize(
    "settings, fixed",
    [
        (dict(optimizer="adamw"), "mean"),
        (dict(magnitude="min"), "min"),
        (dict(magnitude="0.25"), 0.25),
        (dict(kappa=0.0, beta=0.5), "mean"),
    ],
)
def test_ablations_keep_their_fixed_norm(photos, tiny_sd, tmp_path, settings, fixed):
    pipe = load_pipe(tiny_sd)
    stats = vocab_stats(pipe.text_encoder.get_input_embeddings().weight)
    target = fixed if isinstance(fixed, float) else getattr(stats, fixed)
    c = dti.train(photos, "<t>", "dog", pipe, None, steps=4, **FAST, **settings)
    assert float(c.encoders["text_encoder"].norms[0]) == pytest.approx(target, abs=1e-5)


def test_crossinit_starts_from_the_contextual_embedding(photos, tiny_sd):
    pipe = load_pipe(tiny_sd)
    trainer = _trainer(pipe, photos, method="crossinit", steps=1)
    start = trainer.rows["text_encoder"].vectors()
    ids = torch.tensor([[49406, 1929, 49407]])
    trainer.detach()
    with torch.no_grad():
        expected = pipe.text_encoder(ids).last_hidden_state[0, 1:2]
    assert torch.allclose(start, expected, atol=1e-6)


def test_saved_config_repeats_the_run_exactly(photos, tiny_sd, tmp_path):
    from dti.commands import main

    first = dti.train(photos, "<t>", "dog", tiny_sd, tmp_path / "a", steps=5, **FAST)
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--output", str(tmp_path / "b")]) == 0
    second = Concept.load(tmp_path / "b")
    assert torch.equal(first.encoders["text_encoder"].vectors, second.encoders["text_encoder"].vectors)


def test_snapshots_and_intermediate_samples(photos, tiny_sd, tmp_path):
    run = tmp_path / "run"
    dti.train(photos, "<t>", "dog", tiny_sd, run, steps=6, snapshot_every=2, validation_every=3, **FAST)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["concept-step-000002.safetensors", "concept-step-000004.safetensors"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000000.png", "step-000003.png", "step-000006.png"]
    assert Concept.load(run / "snapshots" / "concept-step-000004.safetensors").meta["step"] == 4
