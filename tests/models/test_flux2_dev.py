"""FLUX.2 dev (Mistral-Small-3.1 encoder): what the conformance suite does not cover."""

from __future__ import annotations

import pytest
import torch

import dti
from dti.concepts.concept import Concept, EncoderVectors
from dti.models import load_adapter
from dti.models.flux2_dev import Flux2DevAdapter
from dti.training.loop import Trainer

PROMPT = "a photo of a dog"


@pytest.fixture
def adapter(tiny_models):
    return load_adapter(tiny_models("flux2_dev"), quiet=True)


def _pipeline_tokens(adapter, prompt, max_length=512):
    """The ids and mask the pipeline's encoder reads for ``prompt``: its template, system message and padding."""
    tok = adapter.encoders[0].tokenizer
    return tok(adapter.templated(prompt), add_special_tokens=False, padding="max_length", max_length=max_length, return_tensors="pt")


def test_the_vision_tower_never_runs(adapter, tiny_models, photos, one_thread):
    """Encoding, a training step and CrossInit read the language model only: no image ever enters the encoder."""
    from dti.training.config import TrainConfig, resolve
    from dti.training.data import load_photos

    encoder = adapter.pipe.text_encoder
    calls = []
    hooks = [
        m.register_forward_pre_hook(lambda *a: calls.append(a)) for m in (encoder.model.vision_tower, encoder.model.multi_modal_projector)
    ]
    try:
        folder = tiny_models("flux2_dev")
        config = TrainConfig(
            photos=str(photos), token="<w>", init="dog", model=str(folder), progress=False, steps=1, batch_size=1, resolution=64
        )
        c = resolve(config, adapter.defaults, adapter.native_resolution())
        trainer = Trainer(c, adapter, load_photos(photos), None)
        trainer.setup()
        trainer.step()
        slot = adapter.encoders[0]
        adapter.contextual_init(slot, slot.tokenizer("a dog", add_special_tokens=False).input_ids)
        with torch.no_grad():
            adapter.condition([PROMPT], [])
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []


def test_conditions_on_the_stacked_layers_it_records(adapter):
    """Layers 10, 20 and 30 of the encoder, side by side, under the padding mask; a family option, so training and
    generation read the same ones."""
    assert adapter.generation_kwargs()["text_encoder_out_layers"] == (10, 20, 30)
    with torch.no_grad():
        default = adapter.condition([PROMPT], [])["encoder_hidden_states"]
        out = adapter.pipe.text_encoder(**_pipeline_tokens(adapter, PROMPT), output_hidden_states=True)
        adapter.apply_options({"text_encoder_out_layers": [1, 2, 3]})
        other = adapter.condition([PROMPT], [])["encoder_hidden_states"]
    width = adapter.pipe.text_encoder.config.text_config.hidden_size
    assert default.shape == (1, 512, 3 * width)
    for i, layer in enumerate((10, 20, 30)):
        assert torch.equal(default[0, :, i * width : (i + 1) * width], out.hidden_states[layer][0])
    assert adapter.generation_kwargs()["text_encoder_out_layers"] == (1, 2, 3) and not torch.equal(default, other)


def test_a_placeholder_first_in_the_prompt_stands_where_the_word_would(adapter):
    """Right after the template's ``[INST]``, the word's prompt-initial piece ("dog", no "Ġ"); inside the prompt "Ġdog"."""
    slot = adapter.encoders[0]
    (first,) = slot.tokenizer("dog", add_special_tokens=False).input_ids
    row = slot.text_encoder.get_input_embeddings().weight[[first]].detach().float()
    concept = Concept("<w>", {slot.name: EncoderVectors(row.clone(), float(row.norm()), kind=slot.kind)}, {"method": "dti"})
    with torch.no_grad():
        reference = adapter.condition(["dog in the snow", "dog"], [])
        dti.load(adapter.pipe, concept)
        try:
            pieces = slot.tokenizer.tokenize(adapter.templated("<w> in the snow"))
            placeholder = adapter.condition(["<w> in the snow", "<w>"], [])
        finally:
            dti.unload(adapter.pipe, "<w>")
    assert pieces[pieces.index("<w>") - 1 : pieces.index("<w>") + 2] == ["[INST]", "<w>", "Ġin"], pieces
    assert torch.equal(placeholder["encoder_hidden_states"], reference["encoder_hidden_states"])


def test_magnitude_rows_and_prompt_budget(adapter):
    """The norm statistics read the tokenizer's rows, not the table's padding; the prompt's budget is what the
    system message and template leave of max_sequence_length."""
    from dti.text.vocab import vocabulary_rows

    slot = adapter.encoders[0]
    table = slot.text_encoder.get_input_embeddings().weight
    assert table.shape[0] > len(slot.tokenizer) and vocabulary_rows(slot.tokenizer, slot.text_encoder).shape[0] == len(slot.tokenizer)
    used = int(_pipeline_tokens(adapter, "a").attention_mask.sum())
    assert slot.max_length == 512 - (used - 1) and slot.max_length < 512


def test_img_in_a_token_is_refused():
    assert Flux2DevAdapter.token_problem("<my[IMG]dog>") and Flux2DevAdapter.token_problem("<my-dog>") is None
