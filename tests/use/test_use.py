"""Using learned concepts: dti.load / unload, generate, interpolate, inspect, convert (tiny SDXL)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

import dti
from conftest import load_pipe
from dti.commands import main
from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats import read
from dti.core.errors import DTIError
from dti.text.attach import pool_at_end_token
from dti.text.vocab import vocab_stats
from dti.use.generate import generate
from dti.use.inspection import inspect_concept, nearest_tokens
from dti.use.loading import load, loaded_tokens, unload

FAST = dict(resolution=64, validate=False, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sdxl, dreambooth):
    root = tmp_path_factory.mktemp("runs")
    dti.train(dreambooth / "dog", "<my-dog>", "dog", tiny_sdxl, root / "dog", steps=10, **FAST)
    dti.train(dreambooth / "cat", "<my-cat>", "cat", tiny_sdxl, root / "cat", steps=10, **FAST)
    dti.train(dreambooth / "dog", "<ti-dog>", "dog", tiny_sdxl, root / "ti", steps=25, method="ti", **FAST)
    return root


def cond(pipe, prompt):
    out = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    return out[0], out[2]


def test_load_matches_diffusers_own_loader_and_unload_restores(runs, tiny_sdxl):
    pipe = load_pipe(tiny_sdxl)
    tables = [e.get_input_embeddings().weight.detach().clone() for e in (pipe.text_encoder, pipe.text_encoder_2)]
    concept = load(pipe, runs / "dog" / "webui" / "my-dog.safetensors")  # the A1111/ComfyUI single file
    assert loaded_tokens(pipe) == ["<my-dog>"]
    ours = cond(pipe, "a <my-dog> on the beach")

    ref = load_pipe(tiny_sdxl)  # diffusers' documented SDXL recipe, by hand
    from safetensors.torch import load_file

    state = load_file(runs / "dog" / "webui" / "my-dog.safetensors")
    ref.load_textual_inversion(state["clip_l"], token="<my-dog>", text_encoder=ref.text_encoder, tokenizer=ref.tokenizer)
    ref.load_textual_inversion(state["clip_g"], token="<my-dog>", text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2)
    pool_at_end_token(ref.text_encoder_2, ref.tokenizer_2.eos_token_id)
    theirs = cond(ref, "a <my-dog> on the beach")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert torch.equal(concept.encoders["text_encoder"].vectors, Concept.load(runs / "dog").encoders["text_encoder"].vectors)

    unload(pipe, "<my-dog>")
    assert loaded_tokens(pipe) == [] and len(pipe.tokenizer) == len(pipe.tokenizer_2) == 49408
    for enc, table in zip((pipe.text_encoder, pipe.text_encoder_2), tables):
        assert torch.equal(enc.get_input_embeddings().weight, table)
    with pytest.raises(DTIError, match="not loaded"):
        unload(pipe, "<my-dog>")


def test_load_refuses_mismatched_concepts(tiny_sdxl, tiny_sd, runs):
    pipe = load_pipe(tiny_sdxl)
    with pytest.raises(DTIError, match=r"needs text_encoder \(clip_l\), text_encoder_2 \(clip_g\)"):
        load(pipe, Concept("<x>", {"text_encoder": EncoderVectors(torch.randn(1, 32))}))
    wide = Concept("<x>", {"text_encoder": EncoderVectors(torch.randn(1, 768)), "text_encoder_2": EncoderVectors(torch.randn(1, 1280))})
    with pytest.raises(DTIError, match="width 768"):
        load(pipe, wide)
    with pytest.raises(DTIError, match="has no place for text_encoder_2"):
        load(load_pipe(tiny_sd), runs / "dog")
    load(pipe, runs / "dog")
    with pytest.raises(DTIError, match=r"already loaded \(the same concept given twice\?\)"):
        load(pipe, runs / "dog")
    with pytest.raises(DTIError, match="is a word of text_encoder's vocabulary, so loading it would change what that word means"):
        load(pipe, runs / "cat", token="dog")  # a vocabulary word is not "already loaded" (defect: it said so)


def test_ti_rescaled_at_load_time(tiny_sdxl, runs):
    pipe = load_pipe(tiny_sdxl)
    mean = vocab_stats(pipe.text_encoder_2.get_input_embeddings().weight).mean
    concept = load(pipe, runs / "ti", rescale="mean")
    token_id = pipe.tokenizer_2.convert_tokens_to_ids("<ti-dog>")
    row = pipe.text_encoder_2.get_input_embeddings()(torch.tensor([[token_id]]))[0, 0]
    assert float(row.detach().norm()) == pytest.approx(mean, rel=1e-5)
    assert concept.meta["rescaled_from"] == "ti"


def test_generate_writes_pngs_with_recipe_and_contact_sheet(tiny_sdxl, runs, tmp_path):
    pipe = load_pipe(tiny_sdxl)
    out = tmp_path / "gen"
    images = generate(
        pipe, "a <my-dog> and a <my-cat>", [runs / "dog", runs / "cat"], n=2, seed=5, sample_steps=2, out=out, model_name="tiny"
    )
    assert len(images) == 2 and loaded_tokens(pipe) == []  # attached for the call only
    png = Image.open(out / "seed-0006.png")
    recipe = json.loads(png.text["dti"])
    assert recipe["prompt"] == "a <my-dog> and a <my-cat>" and recipe["seed"] == 6 and recipe["concepts"] == ["<my-dog>", "<my-cat>"]
    assert "Seed: 6" in png.text["parameters"]
    assert (out / "contact_sheet.png").is_file()
    again = generate(pipe, "a <my-dog> and a <my-cat>", [runs / "dog", runs / "cat"], n=1, seed=6, sample_steps=2)
    assert (np.asarray(again[0]) == np.asarray(png.convert("RGB"))).all()  # reproducible
    with pytest.raises(DTIError, match="already exists"):
        generate(pipe, "a <my-dog>", [runs / "dog"], n=1, seed=5, sample_steps=2, out=out)


def test_generate_prompt_checks(tiny_sdxl, runs, capsys, tmp_path):
    pipe = load_pipe(tiny_sdxl)
    with pytest.raises(DTIError, match="<my-cat> but no --concept provides it"):
        generate(pipe, "a <my-cat> on the beach", [runs / "dog"], n=1, sample_steps=2)
    assert loaded_tokens(pipe) == []  # cleaned up after the error
    capsys.readouterr()
    generate(pipe, "a dog on the beach", [runs / "dog"], n=1, sample_steps=2, out=tmp_path / "g")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(err) == 1 and "names none of the loaded concepts" in err[0]


def test_inspect_flags_ti_and_not_dti(tiny_sdxl, runs):
    pipe = load_pipe(tiny_sdxl)
    ti = inspect_concept(read(runs / "ti"), pipe)
    d = inspect_concept(read(runs / "dog"), pipe)
    for name in ("text_encoder", "text_encoder_2"):
        assert ti["encoders"][name]["out_of_distribution"] and ti["encoders"][name]["norm_over_vocab_mean"][0] > 2
        assert not d["encoders"][name]["out_of_distribution"]
        assert d["encoders"][name]["norm_over_vocab_mean"][0] == pytest.approx(1.0, abs=1e-4)
        assert d["encoders"][name]["angle_to_initializer_deg"][0] > 0
    # a foreign file without a model still gets its norms against the concept's stored statistics
    foreign = inspect_concept(read(runs / "dog" / "learned_embeds_2.safetensors"))
    assert foreign["encoders"]["text_encoder_2"]["norms"][0] == pytest.approx(d["encoders"]["text_encoder_2"]["norms"][0])


def test_nearest_tokens_on_the_real_vocabulary_are_deterministic(tiny_sdxl):
    pipe = load_pipe(tiny_sdxl)
    table = pipe.text_encoder.get_input_embeddings().weight
    dog = pipe.tokenizer.convert_tokens_to_ids("dog</w>")
    probe = torch.stack([table[dog] * 3.0, table[dog] + 0.01])
    first = nearest_tokens(probe, table, pipe.tokenizer, 5)
    assert first == nearest_tokens(probe, table, pipe.tokenizer, 5)
    assert first["cosine"][0][0]["token"] == "dog" and first["cosine"][0][0]["cosine"] == pytest.approx(1.0)
    cosines = [n["cosine"] for n in first["cosine"][1]]
    distances = [n["distance"] for n in first["euclidean"][1]]
    assert cosines == sorted(cosines, reverse=True) and distances == sorted(distances)
    assert first["euclidean"][1][0]["distance"] == pytest.approx(0.01 * 32**0.5, abs=1e-4)  # the row it was nudged from


def test_cli_inspect_json_and_text(runs, tiny_sdxl, capsys):
    assert main(["inspect", str(runs / "ti"), "--model", str(tiny_sdxl), "--json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encoders"]["text_encoder"]["out_of_distribution"] is True
    assert len(report["encoders"]["text_encoder"]["nearest"]["cosine"][0]) == 3
    assert main(["inspect", str(runs / "dog"), "--model", str(tiny_sdxl)]) == 0
    assert "in-distribution norm" in capsys.readouterr().out


def test_cli_interpolate_writes_blends_json_and_grid(runs, tiny_sdxl, tmp_path, capsys):
    out = tmp_path / "interp"
    args = [
        "interpolate",
        str(runs / "dog"),
        str(runs / "cat"),
        "--blends",
        "5",
        "--model",
        str(tiny_sdxl),
        "--seeds",
        "0",
        "1",
        "--sample-steps",
        "2",
        "--resolution",
        "64",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("blend-*.safetensors")) == [f"blend-{i:02d}-w{i / 4:.3f}.safetensors" for i in range(5)]
    summary = json.loads((out / "interpolation.json").read_text())
    dog = Concept.load(runs / "dog")
    for norms in summary["encoders"]["text_encoder"]["norms"]:
        assert norms[0] == pytest.approx(dog.encoders["text_encoder"].magnitude, abs=1e-5)
    angles = [a[0] for a in summary["encoders"]["text_encoder"]["angle_from_a_deg"]]
    steps = [b - a for a, b in itertools.pairwise(angles)]
    assert max(steps) - min(steps) < 1e-2  # evenly spaced along the great circle
    grid = Image.open(out / "grid.png")
    assert grid.width > grid.height  # 5 columns (weights) x 2 rows (seeds)
    capsys.readouterr()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err


def test_cli_convert_and_rescale(runs, tiny_sdxl, tmp_path, capsys):
    out = tmp_path / "ti-fixed.safetensors"
    assert main(["rescale", str(runs / "ti"), "--model", str(tiny_sdxl), "--out", str(out)]) == 0
    fixed = read(out)
    pipe = load_pipe(tiny_sdxl)
    mean = vocab_stats(pipe.text_encoder.get_input_embeddings().weight).mean
    assert float(fixed.encoders["text_encoder"].norms[0]) == pytest.approx(mean, rel=1e-5)
    assert main(["convert", str(runs / "dog"), "--to", "kohya", "--out", str(tmp_path / "k.safetensors")]) == 0
    assert torch.equal(
        read(tmp_path / "k.safetensors").encoders["text_encoder_2"].vectors, Concept.load(runs / "dog").encoders["text_encoder_2"].vectors
    )
    capsys.readouterr()
    assert main(["convert", str(runs / "dog"), "--to", "kohya", "--out", str(tmp_path / "k.safetensors")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_generate(runs, tiny_sdxl, tmp_path, capsys):
    out = tmp_path / "g"
    assert (
        main(
            [
                "generate",
                "a <my-dog> in the snow",
                "--concept",
                str(runs / "dog"),
                "--model",
                str(tiny_sdxl),
                "-n",
                "2",
                "--sample-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "seed-0000.png", "seed-0001.png"]
    assert (
        main(
            ["generate", "a <nobody> in the snow", "--concept", str(runs / "dog"), "--model", str(tiny_sdxl), "--out", str(tmp_path / "h")]
        )
        == 2
    )
    assert "<nobody>" in capsys.readouterr().err and not (tmp_path / "h").exists()
