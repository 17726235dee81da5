"""The families with a Qwen3 encoder (Z-Image, FLUX.2 klein): what the conformance suite does not cover.

The suite's word equivalence puts the placeholder inside a prompt ("a photo of a <w>"); here it stands first,
right after the chat template's ``user\\n``, where a byte-level tokenizer has no space to absorb: a placeholder
that swallowed the template's newline (``lstrip``) would shift every later position and fail. Also: the
offline tokenizer is the real class with the real template, and magnitudes are measured on the rows the
tokenizer reaches (its own added tokens in, the table's padding rows out).
"""

from __future__ import annotations

import pytest
import torch

import dti
from dti.concepts.concept import Concept, EncoderVectors
from dti.models import load_adapter

QWEN_FAMILIES = ["zimage", "flux2_klein"]


def _same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), float((a - b).abs().max())
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)


@pytest.mark.parametrize("name", QWEN_FAMILIES)
def test_a_placeholder_first_in_the_prompt_stands_where_the_word_would(name, tiny_models):
    adapter = load_adapter(tiny_models(name), quiet=True)
    slot = adapter.encoders[0]
    (first,) = slot.tokenizer("dog", add_special_tokens=False).input_ids  # "dog" first in a prompt: no "Ġ"
    row = slot.text_encoder.get_input_embeddings().weight[[first]].detach().float()
    concept = Concept("<w>", {slot.name: EncoderVectors(row.clone(), float(row.norm()), kind=slot.kind)}, {"method": "dti"})
    prompts = ["{} in the snow", "a photo of a {}", "{}"]
    with torch.no_grad():
        reference = adapter.condition([p.format("dog") for p in prompts], [])
        dti.load(adapter.pipe, concept)
        try:
            text = adapter.pipe.tokenizer.apply_chat_template(
                [{"role": "user", "content": "<w> in the snow"}], tokenize=False, add_generation_prompt=True
            )
            pieces = adapter.pipe.tokenizer.tokenize(text)
            placeholder = adapter.condition([p.format("<w>") for p in prompts], [])
        finally:
            dti.unload(adapter.pipe, "<w>")
    assert pieces[pieces.index("<w>") - 1] == "Ċ", pieces  # the template's newline is kept
    _same(placeholder[next(iter(placeholder))][0], reference[next(iter(reference))][0])
    _same(placeholder[next(iter(placeholder))][2], reference[next(iter(reference))][2])


@pytest.mark.parametrize("name", QWEN_FAMILIES)
def test_the_tokenizer_is_qwens_class_with_qwen3s_template(name, tiny_models):
    from transformers import AutoTokenizer

    folder = tiny_models(name)
    tok = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    assert type(tok).__name__ == "Qwen2Tokenizer" and tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.tokenize("a photo of a dog") == ["a", "Ġphoto", "Ġof", "Ġa", "Ġdog"]
    text = tok.apply_chat_template(
        [{"role": "user", "content": "a dog"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert text == "<|im_start|>user\na dog<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tok.tokenize(text)[-4:] == ["<think>", "ĊĊ", "</think>", "ĊĊ"]


@pytest.mark.parametrize("name", QWEN_FAMILIES)
def test_magnitude_rows_are_the_tokenizers_not_the_tables_padding(name, tiny_models):
    from dti.core.rows import TrainableRows
    from dti.text.attach import attach, detach
    from dti.text.vocab import vocabulary_rows

    slot = load_adapter(tiny_models(name), quiet=True).encoders[0]
    table = slot.text_encoder.get_input_embeddings().weight
    n = len(slot.tokenizer)
    assert table.shape[0] > n and "<think>" in slot.tokenizer.added_tokens_encoder  # padding rows; a non-special added token
    assert vocabulary_rows(slot.tokenizer, slot.text_encoder).shape[0] == n
    attach(slot.tokenizer, slot.text_encoder, "<w>", TrainableRows(torch.ones(2, table.shape[1]), "free"), pooling="none", byte_level=True)
    try:
        assert torch.equal(vocabulary_rows(slot.tokenizer, slot.text_encoder), table[:n])
    finally:
        detach(slot.tokenizer, slot.text_encoder, "<w>")


def test_flux2_klein_conditions_on_the_stacked_layers_it_records(tiny_models):
    """The hidden layers klein stacks are a family option: training and generation read the same ones."""
    adapter = load_adapter(tiny_models("flux2_klein"), quiet=True)
    assert adapter.generation_kwargs()["text_encoder_out_layers"] == (9, 18, 27)
    with torch.no_grad():
        default = adapter.condition(["a photo of a dog"], [])["encoder_hidden_states"]
        out = adapter.pipe.text_encoder(
            **adapter.pipe.tokenizer(
                adapter.pipe.tokenizer.apply_chat_template(
                    [{"role": "user", "content": "a photo of a dog"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
                ),
                padding="max_length",
                max_length=512,
                return_tensors="pt",
            ),
            output_hidden_states=True,
        )
        adapter.apply_options({"text_encoder_out_layers": [1, 2, 3]})
        other = adapter.condition(["a photo of a dog"], [])["encoder_hidden_states"]
    width = adapter.pipe.text_encoder.config.hidden_size
    assert default.shape[-1] == 3 * width
    for i, layer in enumerate((9, 18, 27)):
        assert torch.equal(default[0, :, i * width : (i + 1) * width], out.hidden_states[layer][0])
    assert adapter.generation_kwargs()["text_encoder_out_layers"] == (1, 2, 3) and not torch.equal(default, other)
