"""One conformance suite over every registered adapter, each with its tiny builder.

The sharpest test: a concept whose vectors are an existing word's vocabulary rows encodes a
prompt exactly (bit for bit, CPU fp32) as the word does, on every output the denoiser sees. It
catches embedding-scale, pooling, padding-side, expansion and truncation bugs in any family.
"""

from __future__ import annotations

import json

import pytest
import torch

import dti
from dti.commands import main
from dti.concepts.concept import Concept, EncoderVectors
from dti.models import ADAPTERS, CropInfo, adapter_for, load_adapter
from dti.testing import BUILDERS
from dti.text.words import initializer_ids
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer

FAMILIES = sorted(BUILDERS)
RES = 64  # every tiny family trains and renders at 64 px in these tests


@pytest.fixture(params=FAMILIES)
def family(request, tiny_models):
    return request.param, tiny_models(request.param)


def test_every_registered_adapter_has_a_tiny_builder():
    families = {cls.family for cls in ADAPTERS.values()}
    assert families <= {name.split("-")[0] for name in BUILDERS}
    assert {"sd", "sdxl", "sd3", "flux", "pixart", "sana", "chroma", "lumina2"} <= families


def _crops(n):
    return [CropInfo((RES, RES), (0, 0), (RES, RES))] * n


def _word_concept(adapter, words: str) -> Concept:
    """Per encoder, the raw vocabulary rows of ``words`` as they appear in a prompt."""
    encoders = {}
    for slot in adapter.encoders:
        ids = initializer_ids(slot.tokenizer, words, slot.name)
        rows = slot.text_encoder.get_input_embeddings().weight[ids].detach().float()
        encoders[slot.name] = EncoderVectors(rows.clone(), float(rows.norm(dim=-1).mean()), kind=slot.kind)
    return Concept("<w>", encoders, {"method": "dti"})


def _assert_identical(a, b, where=""):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: max difference {float((a.float() - b.float()).abs().max())}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("words", ["dog", "stuffed animal"])
def test_word_equivalence(family, words):
    """A placeholder whose rows are a word's rows conditions exactly like the word."""
    name, folder = family
    adapter = load_adapter(folder, quiet=True)
    concept = _word_concept(adapter, words)
    prompts = ["a photo of a {}", "a {} in the snow"]
    with torch.no_grad():
        reference = adapter.condition([p.format(words) for p in prompts], _crops(2))
        dti.load(adapter.pipe, concept)
        try:
            placeholder = adapter.condition([p.format("<w>") for p in prompts], _crops(2))
        finally:
            dti.unload(adapter.pipe, "<w>")
        again = adapter.condition([p.format(words) for p in prompts], _crops(2))
    _assert_identical(placeholder, reference, name)
    _assert_identical(again, reference, f"{name} after unload")


def _trainer(folder, photos, **settings):
    adapter = load_adapter(folder, quiet=True)
    base = TrainConfig(photos=str(photos), token="<w>", init="stuffed animal", model=str(folder), progress=False, **settings)
    c = resolve(base, adapter.defaults, adapter.native_resolution())
    trainer = Trainer(c, adapter, load_photos(photos), None)
    trainer.setup()
    return trainer


def test_every_vector_of_a_multi_vector_word_gets_a_gradient(family, photos, one_thread):
    name, folder = family
    trainer = _trainer(folder, photos, steps=1, batch_size=2, resolution=RES, kappa=0.0)
    try:
        trainer.step()
        for slot_name in trainer.trained:
            grad = trainer.rows[slot_name].param.grad
            assert grad is not None and grad.shape[0] == 2, f"{name} {slot_name}"
            assert bool((grad.norm(dim=-1) > 0).all()), f"{name} {slot_name}: a vector got no gradient"
    finally:
        trainer.detach()


def test_dti_steps_change_only_the_concept_rows(family, photos, one_thread):
    name, folder = family
    trainer = _trainer(folder, photos, steps=2, batch_size=1, resolution=RES)
    pipe = trainer.adapter.pipe
    # taken while attached: the wrapped tables show up as "<name>.base.weight"
    before = {
        k: {n.replace(".base.", "."): t.clone() for n, t in m.state_dict().items()}
        for k, m in pipe.components.items()
        if isinstance(m, torch.nn.Module)
    }
    start = {n: rows.vectors() for n, rows in trainer.rows.items()}
    try:
        trainer.fit()
        for slot_name, rows in trainer.rows.items():
            vectors = rows.vectors()
            magnitude = trainer.magnitudes[slot_name]
            assert magnitude is not None
            assert torch.allclose(vectors.norm(dim=-1), torch.full((2,), magnitude), rtol=1e-5), f"{name} {slot_name}"
            assert not torch.equal(vectors, start[slot_name]), f"{name} {slot_name}: did not move"
    finally:
        trainer.detach()
    for key, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            after = module.state_dict()
            assert after.keys() == before[key].keys(), f"{name} {key}: state changed shape"
            assert all(torch.equal(after[n], before[key][n]) for n in after), f"{name} {key}: weights changed"


def test_encoders_flag_trains_only_the_named_encoder(tiny_models, photos, one_thread):
    folder = tiny_models("flux")
    trainer = _trainer(folder, photos, steps=2, batch_size=1, resolution=RES, encoders=["text_encoder"])
    t5_start = trainer.rows["text_encoder_2"].vectors()
    try:
        concept = trainer.fit()
    finally:
        trainer.detach()
    assert trainer.trained == ["text_encoder"]
    assert torch.equal(concept.encoders["text_encoder_2"].vectors, t5_start) and not concept.encoders["text_encoder_2"].trained
    assert concept.encoders["text_encoder"].magnitude is not None and concept.encoders["text_encoder"].trained


def test_train_file_load_generate_and_cli(family, photos, tmp_path, capsys, one_thread):
    """Trained concept -> files -> a freshly loaded pipeline -> images; and every command."""
    _, folder = family
    run = tmp_path / "run"
    common = ["--steps", "2", "--batch-size", "1", "--resolution", str(RES), "--quiet"]
    sampling = ["--sample-steps", "2", "--validation-seed", "0"]
    assert (
        main(["train", str(photos), "--token", "<w>", "--init", "dog", "--model", str(folder), "--output", str(run), *common, *sampling])
        == 0
    )
    concept = Concept.load(run / "concept.safetensors")
    assert concept.meta["pipeline_class"] in ADAPTERS and all(e.kind for e in concept.encoders.values())
    assert (run / "samples.png").is_file()
    fresh = load_adapter(folder, quiet=True).pipe
    loaded = dti.load(fresh, run)
    assert adapter_for(fresh).encoders[0].tokenizer.convert_tokens_to_ids("<w>") is not None
    images = dti.use.generate.generate(fresh, "a photo of a <w>", [], n=1, sample_steps=2, resolution=RES)
    assert images[0].size == (RES, RES)
    dti.unload(fresh, loaded.token)
    assert dti.use.loading.loaded_tokens(fresh) == []

    out = tmp_path / "gen"
    args = ["--model", str(folder), "--sample-steps", "2", "--resolution", str(RES)]
    assert main(["generate", "a photo of a <w>", "--concept", str(run), "-n", "1", "--out", str(out), *args]) == 0
    assert (out / "seed-0000.png").is_file()
    run2 = tmp_path / "run2"
    assert (
        main(
            [
                "train",
                str(photos),
                "--token",
                "<v>",
                "--init",
                "cat",
                "--model",
                str(folder),
                "--output",
                str(run2),
                "--no-validation",
                *common,
            ]
        )
        == 0
    )
    grid = tmp_path / "blend"
    blend_args = ["--model", str(folder), "--sample-steps", "2", "--resolution", str(RES), "--seeds", "0"]
    assert main(["interpolate", str(run), str(run2), "--blends", "3", "--prompt", "a photo of {}", "--out", str(grid), *blend_args]) == 0
    assert (grid / "grid.png").is_file() and len(json.loads((grid / "interpolation.json").read_text())["weights"]) == 3
    capsys.readouterr()
    assert main(["inspect", str(run), "--model", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["encoders"]) == set(concept.encoders)
    single = tmp_path / "single.safetensors"
    assert main(["convert", str(run), "--to", "comfyui", "--out", str(single)]) == 0
    back = dti.concepts.formats.read(single)
    assert {n: e.kind for n, e in back.encoders.items()} == {n: e.kind for n, e in concept.encoders.items()}
    assert all(torch.equal(back.encoders[n].vectors, concept.encoders[n].vectors) for n in concept.encoders)
    dti.load(fresh, single)  # the single file attaches to the family's encoders
    dti.unload(fresh, back.token)


def test_sana_instruction_is_shared_by_training_and_generation(tiny_models, photos, tmp_path, capsys, one_thread):
    """SANA's complex human instruction: off by default, on with --option; the concept records the
    choice and loading it makes generation condition the same way."""
    folder = tiny_models("sana")
    run = tmp_path / "run"
    args = ["train", str(photos), "--token", "<w>", "--init", "dog", "--model", str(folder), "--output", str(run)]
    fast = ["--steps", "1", "--batch-size", "1", "--grad-accum", "1", "--resolution", str(RES), "--no-validation", "--quiet"]
    assert main([*args, *fast, "--option", "instruction=true"]) == 0
    concept = Concept.load(run / "concept.safetensors")
    assert concept.meta["family_options"]["instruction"] is True
    pipe = load_adapter(folder, quiet=True).pipe
    assert adapter_for(pipe).generation_kwargs()["complex_human_instruction"] is None
    dti.load(pipe, run)
    assert len(adapter_for(pipe).generation_kwargs()["complex_human_instruction"]) > 1
    dti.unload(pipe, "<w>")
    assert adapter_for(pipe).generation_kwargs()["complex_human_instruction"] is None
    assert main([*args[:-1], str(tmp_path / "bad"), *fast, "--option", "colour=red"]) == 2
    assert "--option colour is not an option of SanaPipeline" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_capitals_are_refused_where_the_pipeline_lower_cases(tiny_models, photos, tmp_path, capsys):
    folder = tiny_models("pixart")
    code = main(["train", str(photos), "--token", "<My-Dog>", "--init", "dog", "--model", str(folder), "--output", str(tmp_path / "r")])
    assert code != 0 and "lower-cases every prompt" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_t5_magnitude_is_measured_on_the_rows_its_tokenizer_reaches(tiny_models, photos, one_thread):
    """T5's table has more rows than its tokenizer: the unused rows are not vocabulary."""
    from dti.text.vocab import vocab_stats

    trainer = _trainer(tiny_models("pixart"), photos, steps=1, batch_size=1, resolution=RES)
    try:
        slot = trainer.adapter.encoders[0]
        table = slot.text_encoder.get_input_embeddings().weight
        reachable = vocab_stats(table[: len(slot.tokenizer) - 2]).mean  # 2 = the placeholder's parts, added last
        assert table.shape[0] > len(slot.tokenizer)
        assert trainer.magnitudes["text_encoder"] == pytest.approx(reachable, rel=1e-6)
        assert trainer.magnitudes["text_encoder"] != pytest.approx(vocab_stats(table).mean, rel=1e-4)
    finally:
        trainer.detach()


def test_flux_files_load_in_plain_diffusers(tiny_models, photos, tmp_path, one_thread):
    """Without dti: FluxPipeline.load_textual_inversion per encoder reads dti's diffusers files exactly
    (diffusers resizes T5's table to its tokenizer on the way; dti itself never does)."""
    from diffusers import FluxPipeline

    folder = tiny_models("flux")
    concept = dti.train(
        photos, "<w>", "dog", folder, output=tmp_path / "run", steps=1, batch_size=1, resolution=RES, validate=False, progress=False
    )
    pipe = FluxPipeline.from_pretrained(folder)
    for name, tok, enc in (("text_encoder", pipe.tokenizer, pipe.text_encoder), ("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2)):
        file = tmp_path / "run" / dti.concepts.formats.diffusers_filename(name)
        pipe.load_textual_inversion(str(file), tokenizer=tok, text_encoder=enc)
        row = enc.get_input_embeddings().weight[tok.convert_tokens_to_ids("<w>")]
        assert torch.equal(row, concept.encoders[name].vectors[0]), name


def _denoiser_calls(adapter, run, *args, **kwargs):
    """``run(*args, **kwargs)`` without gradients, and every call it made to the adapter's denoiser:
    ([(keyword arguments that carry something, output), ...], what ``run`` returned)."""
    calls = []

    def hook(module, hook_args, hook_kwargs, output):
        calls.append(({k: v for k, v in hook_kwargs.items() if k != "return_dict" and v is not None and v != {}}, output[0]))

    handle = adapter.denoiser.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():  # as generation: with gradients, CPU kernels may round differently
            result = run(*args, **kwargs)
    finally:
        handle.remove()
    return calls, result


@pytest.mark.parametrize("name", ["chroma", "lumina2", "qwenimage"])
def test_training_calls_the_denoiser_as_generation_does(name, tiny_models, one_thread):
    """The denoiser gets from training what it gets at generation: Chroma's T5 mask (extended over the image
    tokens), Lumina 2's system-prompted second-to-last Gemma layer with its mask, Lumina's reversed time and
    its negated output, Qwen-Image's templated last Qwen2.5-VL layer (prefix dropped), its packed one-frame
    latents and image shapes. Each sampler step's inputs go through ``adapter.predict``; every denoiser input must
    match bit for bit but the time, which (like the prediction) may differ by the rounding of sigma x 1000."""
    adapter = load_adapter(tiny_models(name), quiet=True)
    pipe, prompt = adapter.pipe, "a photo of a dog"

    def train_predict(noisy, timesteps):
        return adapter.predict(noisy, timesteps, adapter.condition([prompt], _crops(1)))

    generator = torch.Generator().manual_seed(0)
    generated, _ = _denoiser_calls(
        adapter,
        pipe,
        prompt,
        num_inference_steps=2,
        guidance_scale=1.0,
        output_type="latent",
        generator=generator,
        height=RES,
        width=RES,
        **{**adapter.generation_kwargs(), "negative_prompt": None},  # the conditional calls only (Qwen-Image's true CFG off)
    )
    assert len(generated) == 2
    for kwargs, out in generated:
        if name in ("chroma", "qwenimage"):  # packed latents (Qwen-Image: of one-frame videos), time = sigma
            scale = pipe.vae_scale_factor
            noisy = pipe._unpack_latents(kwargs["hidden_states"], RES, RES, scale)
            timesteps, expected = kwargs["timestep"] * 1000, pipe._unpack_latents(out, RES, RES, scale)
        else:  # Lumina's time is 1 - sigma, and the pipeline negates the output before its Euler step
            noisy, timesteps, expected = kwargs["hidden_states"], (1 - kwargs["timestep"]) * 1000, -out
        ((trained, _),), prediction = _denoiser_calls(adapter, train_predict, noisy, timesteps)
        assert trained.keys() == kwargs.keys(), name
        for key in kwargs:
            if key == "timestep":
                torch.testing.assert_close(trained[key], kwargs[key])
            else:
                _assert_identical(trained[key], kwargs[key], f"{name} {key}")
        torch.testing.assert_close(prediction, expected)


def test_lumina2_prompt_length_counts_the_system_prompt(tiny_models):
    """Lumina 2's max_sequence_length holds the system prompt too: the length dti warns past is what it leaves."""
    adapter = load_adapter(tiny_models("lumina2"), quiet=True)
    adapter.options["max_sequence_length"] = 120
    slot = adapter.encoders[0]
    prefix_and_a = len(slot.tokenizer(adapter.pipe.system_prompt + " <Prompt Start> a").input_ids)
    assert 1 < slot.max_length < 120 and slot.max_length == 120 - (prefix_and_a - 2)
    for extra in (0, 1):  # a prompt of max_length tokens is read whole, one more word is cut
        prompt = " ".join(["dog"] * (slot.max_length - 1 + extra))
        assert len(slot.tokenizer(prompt).input_ids) == slot.max_length + extra
        with torch.no_grad():
            mask = adapter.condition([prompt], _crops(1))["encoder_attention_mask"]
        assert mask.shape == (1, 120) and int(mask.sum()) == 120
        ids = slot.tokenizer(adapter.pipe.system_prompt + " <Prompt Start> " + prompt).input_ids
        assert len(ids) == 120 + extra


def test_chroma_files_load_in_plain_diffusers(tiny_models, photos, tmp_path, one_thread):
    """Without dti: ChromaPipeline.load_textual_inversion (its T5 is the pipeline's own tokenizer and encoder)
    reads dti's diffusers file exactly."""
    from diffusers import ChromaPipeline

    folder = tiny_models("chroma")
    concept = dti.train(
        photos, "<w>", "dog", folder, output=tmp_path / "run", steps=1, batch_size=1, resolution=RES, validate=False, progress=False
    )
    pipe = ChromaPipeline.from_pretrained(folder)
    pipe.load_textual_inversion(str(tmp_path / "run" / dti.concepts.formats.diffusers_filename("text_encoder")))
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<w>")]
    assert torch.equal(row, concept.encoders["text_encoder"].vectors[0])
