"""Qwen-Image's own checks: the 34 template tokens the pipeline drops, the vision tower that never runs,
the causal encoder, and the magnitude over the rows its tokenizer reaches (the table is padded)."""

from __future__ import annotations

import pytest
import torch

import dti
from dti.concepts.concept import Concept, EncoderVectors
from dti.models import CropInfo, load_adapter
from dti.text.words import initializer_ids

RES = 64


def _crops(n):
    return [CropInfo((RES, RES), (0, 0), (RES, RES))] * n


@pytest.fixture
def adapter(tiny_models):
    return load_adapter(tiny_models("qwenimage"), quiet=True)


def _reference(adapter, prompt: str) -> torch.Tensor:
    """The last hidden layer of the templated prompt from the first token of ``prompt`` on, found by
    tokenizing the template's prefix alone: independent of the pipeline's ``prompt_template_encode_start_idx``."""
    pipe = adapter.pipe
    prefix = pipe.prompt_template_encode.split("{}")[0]
    start = len(pipe.tokenizer(prefix).input_ids)
    ids = pipe.tokenizer(pipe.prompt_template_encode.format(prompt), return_tensors="pt").input_ids
    assert ids[0, :start].tolist() == pipe.tokenizer(prefix).input_ids  # the prefix's tokens do not merge with the prompt's
    hidden = pipe.text_encoder(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    return hidden[0, start:]


def test_the_dropped_prefix_is_the_template_before_the_prompt(adapter):
    """The pipeline drops a fixed count of tokens (34, a constant of its code); the kept states must begin
    at the prompt's first token, with a vocabulary word or with a 2-vector placeholder there. A placeholder
    that swallowed the template's newline before it (an ``lstrip`` added token) would shift the drop by one."""
    pipe = adapter.pipe
    assert pipe.prompt_template_encode_start_idx == 34
    with torch.no_grad():
        for prompt in ("dog in the snow", "a photo of a dog"):
            kept = adapter.condition([prompt], _crops(1))["encoder_hidden_states"][0]
            assert torch.equal(kept, _reference(adapter, prompt)), prompt
        slot = adapter.encoders[0]
        ids = slot.tokenizer("stuffed animal").input_ids  # prompt-initial: "stuffed" without the space marker, then "Ġanimal"
        assert len(ids) == 2 and ids[1:] == initializer_ids(slot.tokenizer, "animal")
        rows = slot.text_encoder.get_input_embeddings().weight[ids].detach().float()
        concept = Concept("<w>", {"text_encoder": EncoderVectors(rows.clone(), 1.0, kind="qwen25vl")}, {"method": "dti"})
        dti.load(pipe, concept)
        try:
            kept = adapter.condition(["<w> in the snow"], _crops(1))["encoder_hidden_states"][0]
            expected = _reference(adapter, "<w> in the snow")
        finally:
            dti.unload(pipe, "<w>")
        assert torch.equal(kept, expected)
        assert torch.equal(kept, _reference(adapter, "stuffed animal in the snow"))


def test_the_vision_tower_never_runs(adapter, photos, tmp_path, one_thread):
    """Training and generation run only the language model; the hook that would see the vision tower
    run is shown to work on a direct call with an image."""
    pipe = adapter.pipe
    visual = pipe.text_encoder.model.visual
    assert pipe.text_encoder.get_input_embeddings() is pipe.text_encoder.model.language_model.embed_tokens
    calls = []
    handle = visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        dti.train(
            photos, "<w>", "dog", pipe, output=tmp_path / "run", steps=1, batch_size=1, resolution=RES, validate=False, progress=False
        )
        dti.load(pipe, tmp_path / "run")
        dti.use.generate.generate(pipe, "a photo of a <w>", [], n=1, sample_steps=2, resolution=RES)
        dti.unload(pipe, "<w>")
        assert calls == []
        # the check can fail: an image given to the encoder runs the tower (one 28x28 image: 2x2 merged patches)
        config = visual.config
        patch = config.in_channels * config.temporal_patch_size * config.patch_size**2
        with torch.no_grad():
            visual(torch.zeros(4, patch), grid_thw=torch.tensor([[1, 2, 2]]))
        assert calls == [1]
    finally:
        handle.remove()


def test_the_encoder_is_causal(adapter):
    """Words before the placeholder do not see it: only the states from its position on change."""
    with torch.no_grad():
        dog, cat = (adapter.condition([f"a photo of a {w} in the snow"], _crops(1))["encoder_hidden_states"][0] for w in ("dog", "cat"))
    assert dog.shape == cat.shape
    changed = [i for i in range(dog.shape[0]) if not torch.equal(dog[i], cat[i])]
    assert changed and changed[0] == 4 and changed == list(range(4, dog.shape[0]))  # "a photo of a" stays as it was


def test_magnitude_is_measured_on_the_rows_its_tokenizer_reaches(tiny_models, photos, one_thread):
    """Qwen2.5-VL's table is padded past its tokenizer (152064 rows, 151665 tokens): the padding is no vocabulary."""
    from dti.models import load_adapter as load
    from dti.text.vocab import vocab_stats
    from dti.training.config import TrainConfig, resolve
    from dti.training.data import load_photos
    from dti.training.loop import Trainer

    folder = tiny_models("qwenimage")
    adapter = load(folder, quiet=True)
    base = TrainConfig(
        photos=str(photos), token="<w>", init="dog", model=str(folder), progress=False, steps=1, batch_size=1, resolution=RES
    )
    trainer = Trainer(resolve(base, adapter.defaults, adapter.native_resolution()), adapter, load_photos(photos), None)
    trainer.setup()
    try:
        slot = adapter.encoders[0]
        table = slot.text_encoder.get_input_embeddings().weight
        assert table.shape[0] > len(slot.tokenizer)
        reachable = vocab_stats(table[: len(slot.tokenizer) - 1]).mean  # 1 = the placeholder, added last
        assert trainer.magnitudes["text_encoder"] == pytest.approx(reachable, rel=1e-6)
        assert trainer.stats["text_encoder"]["rows"] == len(slot.tokenizer) - 1 < table.shape[0]  # the padding rows left out
    finally:
        trainer.detach()
