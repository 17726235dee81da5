"""HiDream-I1's Llama encoder: what the conformance suite (tests/models/test_families.py) does not check.

Its byte-level BPE tokenizer (a placeholder in a word's place, the initializer as it appears in a prompt),
its causal attention (text before the placeholder cannot see it) and which of its layers reach the transformer,
and its magnitude over the rows the tokenizer can emit (special tokens included, padding rows not).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import dti
from dti.concepts.concept import Concept, EncoderVectors
from dti.models import CropInfo, load_adapter
from dti.text.words import initializer_ids

RES = 64


def _llama(adapter):
    return next(slot for slot in adapter.encoders if slot.kind == "llama")


def _concept(adapter, words: str, llama_rows: torch.Tensor | None = None) -> Concept:
    """``<w>`` with the vocabulary rows of ``words`` in every encoder, or ``llama_rows`` in Llama's."""
    encoders = {}
    for slot in adapter.encoders:
        rows = slot.text_encoder.get_input_embeddings().weight[initializer_ids(slot.tokenizer, words)].detach().float()
        if slot.kind == "llama" and llama_rows is not None:
            rows = llama_rows
        encoders[slot.name] = EncoderVectors(rows.clone(), float(rows.norm(dim=-1).mean()), kind=slot.kind)
    return Concept("<w>", encoders, {"method": "dti"})


def test_byte_level_words_are_read_as_in_a_prompt(tiny_models):
    """The initializer is the ``Ġword`` piece a prompt has (not the bare word, a different row), and the
    placeholder takes the word's place: as many ids, no lone ``Ġ`` before it."""
    adapter = load_adapter(tiny_models("hidream"), quiet=True)
    tok = _llama(adapter).tokenizer
    assert initializer_ids(tok, "stuffed animal") == tok.convert_tokens_to_ids(["Ġstuffed", "Ġanimal"])
    assert tok.convert_tokens_to_ids("Ġdog") != tok.convert_tokens_to_ids("dog")
    dti.load(adapter.pipe, _concept(adapter, "stuffed animal"))
    try:
        word = tok.convert_ids_to_tokens(tok("a photo of a stuffed animal in the snow").input_ids)
        placeholder = tok.convert_ids_to_tokens(tok("a photo of a <w> in the snow").input_ids)
    finally:
        dti.unload(adapter.pipe, "<w>")
    assert placeholder == [t if t not in ("Ġstuffed", "Ġanimal") else {"Ġstuffed": "<w>", "Ġanimal": "<w>_1"}[t] for t in word]


def test_the_word_reaches_the_llama_layers_the_transformer_reads_after_its_position_only(tiny_models, one_thread):
    """Llama is causal: the states before the placeholder are the same whatever the word is; from it on (the
    padding included, which the transformer reads unmasked) every layer differs. The transformer reads the layers
    ``config.llama_layers`` names, and no other."""
    adapter = load_adapter(tiny_models("hidream"), quiet=True)
    slot, transformer = _llama(adapter), adapter.pipe.transformer
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(1, slot.text_encoder.get_input_embeddings().weight.shape[1], generator=g)
    concept = _concept(adapter, "dog", llama_rows=rows)
    crops = [CropInfo((RES, RES), (0, 0), (RES, RES))]
    with torch.no_grad():
        reference = adapter.condition(["a photo of a dog in the snow"], crops)
        at = slot.tokenizer("a photo of a dog in the snow").input_ids.index(slot.tokenizer.convert_tokens_to_ids("Ġdog"))
        dti.load(adapter.pipe, concept)
        try:
            placeholder = adapter.condition(["a photo of a <w> in the snow"], crops)
        finally:
            dti.unload(adapter.pipe, "<w>")
    ref, got = reference["encoder_hidden_states_llama3"], placeholder["encoder_hidden_states_llama3"]
    assert ref.shape[:3] == (slot.text_encoder.config.num_hidden_layers, 1, slot.max_length)
    read = transformer.config.llama_layers
    assert set(read) < set(range(ref.shape[0])), "the tiny transformer must leave a layer unread"
    for layer in range(ref.shape[0]):
        assert torch.equal(got[layer, :, :at], ref[layer, :, :at]), f"layer {layer}: text before the word saw it"
        assert bool((got[layer, 0, at:] - ref[layer, 0, at:]).norm(dim=-1).gt(0).all()), f"layer {layer}: a position after the word"
    for key in ("encoder_hidden_states_t5", "pooled_embeds"):  # the other encoders have the word's own rows
        assert torch.equal(placeholder[key], reference[key])

    noisy = torch.randn(1, transformer.config.in_channels, 16, 16, generator=g)
    t = torch.full((1,), 500.0)
    with torch.no_grad():
        base = adapter.predict(noisy, t, reference)
        for layer in range(ref.shape[0]):
            changed = dict(reference, encoder_hidden_states_llama3=ref.clone())
            changed["encoder_hidden_states_llama3"][layer] += 1.0
            moved = not torch.equal(adapter.predict(noisy, t, changed), base)
            assert moved == (layer in read), f"layer {layer}: read by the transformer is {moved}, config says {layer in read}"


def test_llama_magnitude_is_measured_on_the_rows_its_tokenizer_can_emit(tiny_models, photos, one_thread):
    """The table has padding rows no token reaches; Llama's special tokens (added tokens flagged special,
    most not among ``all_special_tokens``) are vocabulary, as every family's special tokens are."""
    from dti.text.vocab import vocab_stats
    from dti.training.config import TrainConfig, resolve
    from dti.training.data import load_photos
    from dti.training.loop import Trainer

    folder = tiny_models("hidream")
    adapter = load_adapter(folder, quiet=True)
    base = TrainConfig(
        photos=str(photos), token="<w>", init="dog", model=str(folder), progress=False, steps=1, batch_size=1, resolution=RES
    )
    trainer = Trainer(resolve(base, adapter.defaults, adapter.native_resolution()), adapter, load_photos(photos), None)
    trainer.setup()
    try:
        slot = _llama(adapter)
        table = slot.text_encoder.get_input_embeddings().weight
        emitted = len(slot.tokenizer) - 1  # the placeholder, added last
        assert table.shape[0] > emitted and slot.tokenizer.convert_tokens_to_ids("<w>") == emitted
        assert len(set(slot.tokenizer.added_tokens_encoder) - set(slot.tokenizer.all_special_tokens)) > 1
        assert trainer.magnitudes["text_encoder_4"] == pytest.approx(vocab_stats(table[:emitted]).mean, rel=1e-6)
    finally:
        trainer.detach()


def test_the_routed_experts_pass_the_words_gradient(tiny_models, one_thread, monkeypatch):
    """diffusers' eval-mode MoE path (``moe_infer``) runs under ``torch.no_grad()``: with the transformer frozen in
    eval mode the word's gradient reached the denoiser's input only through the shared expert and attention. The
    adapter lets the MoE layers take their training-mode path while a gradient is built: the same prediction, and
    a gradient that now includes the routed experts'."""
    adapter = load_adapter(tiny_models("hidream"), quiet=True)
    adapter.freeze()
    transformer = adapter.pipe.transformer
    assert any(type(m).__name__ == "MOEFeedForwardSwiGLU" for m in transformer.modules()), "the tiny transformer has no MoE layer"
    g = torch.Generator().manual_seed(0)
    crops = [CropInfo((RES, RES), (0, 0), (RES, RES))]
    with torch.no_grad():
        cond = adapter.condition(["a photo of a dog"], crops)
    noisy = torch.randn(1, transformer.config.in_channels, 16, 16, generator=g)
    t = torch.full((1,), 500.0)

    def input_gradient():
        states = cond["encoder_hidden_states_t5"].clone().requires_grad_(True)
        out = adapter.predict(noisy, t, dict(cond, encoder_hidden_states_t5=states))
        (grad,) = torch.autograd.grad(out.square().sum(), states)
        return out.detach(), grad

    with torch.no_grad():
        inference = adapter.predict(noisy, t, cond)
    out, grad = input_gradient()
    assert torch.allclose(out, inference, atol=1e-5, rtol=1e-4)  # the training-mode path computes the same prediction
    assert all(not m.training for m in transformer.modules()), "the MoE layers' flag is restored"
    monkeypatch.setattr(type(adapter), "_routed_experts_differentiable", lambda self: contextlib.nullcontext())
    _, without = input_gradient()
    assert not torch.allclose(grad, without, atol=1e-6), "the routed experts added nothing to the gradient"
