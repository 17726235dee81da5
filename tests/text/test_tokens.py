"""Vocabulary statistics, placeholder/initializer checks, and the attach path."""

import re

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from dti.core import sphere
from dti.core.errors import DTIError
from dti.core.rows import TrainableRows
from dti.text.attach import Block, ExtendedEmbedding, attach, attached_tokens, detach, pool_at_end_token
from dti.text.vocab import VocabStats, resolve_magnitude, vocab_stats
from dti.text.words import check_placeholder, expand_prompt, initializer_ids


def test_vocab_stats_skip_exactly_zero_rows():
    table = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0], [6.0, 8.0]])
    stats = vocab_stats(table)
    assert (stats.min, stats.max, stats.rows, stats.median) == (1.0, 10.0, 3, 5.0)
    assert stats.mean == pytest.approx((5 + 1 + 10) / 3)


@pytest.mark.parametrize("spec, expected", [("mean", 2.0), ("min", 1.0), ("max", 3.0), ("median", 1.5), ("0.5", 0.5), (5.0, 5.0)])
def test_resolve_magnitude(spec, expected):
    assert resolve_magnitude(spec, VocabStats(1.0, 2.0, 3.0, 10, median=1.5)) == expected


@pytest.mark.parametrize("spec", ["-1", "0", "big", "inf", 2e4])
def test_resolve_magnitude_rejects_bad_values(spec):
    with pytest.raises(DTIError) as info:
        resolve_magnitude(spec, VocabStats(1.0, 2.0, 3.0, 10, median=1.5))
    assert info.value.settings == ("magnitude",) and info.value.render(lambda s: "--" + s).startswith("--magnitude ")


def test_a_statistic_the_stats_lack_is_refused():
    """Statistics recorded before dti measured the median have none: one line, not a wrong number."""
    with pytest.raises(DTIError, match="median norm was not measured"):
        resolve_magnitude("median", VocabStats(1.0, 2.0, 3.0, 10))


def test_real_clip_vocabulary_ids(clip_tok):
    assert clip_tok("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]


@pytest.mark.parametrize("token", ["dog", "<|endoftext|>", "my dog", "", "a\tb"])
def test_check_placeholder_refuses(clip_tok, token):
    with pytest.raises(DTIError) as info:
        check_placeholder(clip_tok, token)
    assert info.value.settings[0] == "token" and info.value.render(lambda s: "--" + s).startswith("--token ")


def test_check_placeholder_accepts_new_word(clip_tok):
    check_placeholder(clip_tok, "<my-dog>")


def test_initializer_single_and_multi_word(clip_tok):
    assert initializer_ids(clip_tok, "dog") == [1929]
    ids = initializer_ids(clip_tok, "stuffed animal")
    assert len(ids) == 2 and ids == [clip_tok.convert_tokens_to_ids("stuffed</w>"), clip_tok.convert_tokens_to_ids("animal</w>")]


@pytest.mark.parametrize("text", ["", "   ", "plushie", "<|endoftext|>"])
def test_initializer_outside_vocabulary_is_refused(clip_tok, text):
    with pytest.raises(DTIError) as info:
        initializer_ids(clip_tok, text)
    assert info.value.settings == ("init",) and info.value.render(lambda s: "--" + s).startswith("--init ")


def test_a_word_the_model_does_not_know_is_answered_with_words_it_knows(clip_tok):
    """The refusal offers class words this tokenizer has (the model's own suggestions first)."""
    with pytest.raises(DTIError) as info:
        initializer_ids(clip_tok, "plushie", candidates=["notaword-xyz", "teddy", "bear"])
    message = str(info.value)
    assert "such as 'teddy', 'bear' or 'dog'" in message, message


@pytest.mark.parametrize("mode", ["sphere", "normalized", "free"])
def test_trainable_rows_parameterizations(mode):
    init = torch.randn(2, 8)
    rows = TrainableRows(init, mode, magnitude=None if mode == "free" else 0.4)
    out = rows()
    if mode == "free":
        assert torch.equal(out, init)
    else:
        assert torch.allclose(out.norm(dim=-1), torch.full((2,), 0.4), atol=1e-6)
        assert torch.allclose(sphere.normalize(out), sphere.normalize(init), atol=1e-6)


def test_extended_embedding_routes_new_ids_and_only_they_get_gradient():
    base = torch.nn.Embedding(10, 4)
    base.requires_grad_(False)
    rows = TrainableRows(torch.randn(2, 4), "sphere", 0.5)
    emb = ExtendedEmbedding(base)
    emb.blocks["<a>"] = Block("<a>", ["<a>", "<a>_1"], 10, rows)
    ids = torch.tensor([[1, 10, 3, 11, 9]])
    out = emb(ids)
    assert torch.equal(out[0, [0, 2, 4]], base.weight[[1, 3, 9]])
    assert torch.allclose(out[0, 1], rows()[0]) and torch.allclose(out[0, 3], rows()[1])
    out.sum().backward()
    assert base.weight.grad is None
    assert rows.param.grad is not None and rows.param.grad.abs().sum() > 0


def test_rows_are_not_cast_with_the_encoder():
    base = torch.nn.Embedding(10, 4)
    rows = TrainableRows(torch.randn(1, 4), "free")
    emb = ExtendedEmbedding(base)
    emb.blocks["<a>"] = Block("<a>", ["<a>"], 10, rows)
    emb.to(torch.bfloat16)
    assert rows.param.dtype == torch.float32
    assert emb(torch.tensor([[10, 2]])).dtype == torch.bfloat16


def _tiny_clip():
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    return CLIPTextModel(cfg).eval()


def test_attach_then_detach_restores_tokenizer_encoder_and_table(clip_tok):
    model = _tiny_clip()
    table = model.get_input_embeddings().weight.detach().clone()
    before_ids = clip_tok("a <my-cat> photo").input_ids
    rows = TrainableRows(table[[2368]], "sphere", 0.4)
    att = attach(clip_tok, model, "<my-cat>", rows)
    assert clip_tok.convert_tokens_to_ids("<my-cat>") == 49408
    assert isinstance(model.get_input_embeddings(), ExtendedEmbedding)
    out = model(torch.tensor([clip_tok("a <my-cat>").input_ids])).last_hidden_state
    out.sum().backward()
    att.detach()
    assert len(clip_tok) == 49408 and clip_tok("a <my-cat> photo").input_ids == before_ids
    assert type(model.get_input_embeddings()) is torch.nn.Embedding
    assert torch.equal(model.get_input_embeddings().weight, table)
    assert model.eos_token_id == 2


def test_pooling_fix_changes_nothing_for_vocabulary_prompts(clip_tok):
    model = _tiny_clip()
    ids = torch.tensor([clip_tok("a photo of a dog", padding="max_length", max_length=77).input_ids])
    before = model(ids).pooler_output
    undo = pool_at_end_token(model, clip_tok.eos_token_id)
    assert torch.equal(model(ids).pooler_output, before)
    undo()
    assert model.eos_token_id == 2


def test_pooling_with_placeholder_reads_the_end_token(clip_tok):
    model = _tiny_clip()
    rows = TrainableRows(torch.randn(1, 32), "free")
    att = attach(clip_tok, model, "<zz>", rows, pooling="eos")
    ids = clip_tok("a <zz> wearing a hat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = model(ids)
    eos_pos = int((ids[0] == clip_tok.eos_token_id).nonzero()[0])
    assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, eos_pos])
    att.detach()
    att = attach(clip_tok, model, "<zz>", rows, pooling="legacy")
    out = model(ids)
    placeholder_pos = int((ids[0] == 49408).nonzero()[0])
    assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, placeholder_pos])  # transformers' legacy rule
    att.detach()


def test_embedding_applies_the_base_scale_to_new_rows():
    """Gemma-style embeddings scale inside their forward; a new row must enter scaled the same way."""
    from transformers.models.gemma2.modeling_gemma2 import Gemma2TextScaledWordEmbedding

    torch.manual_seed(0)
    base = Gemma2TextScaledWordEmbedding(12, 16, 0, embed_scale=16**0.5)
    emb = ExtendedEmbedding(base)
    emb.blocks["<a>"] = Block("<a>", ["<a>"], 12, TrainableRows(base.weight[[5]].detach(), "free"))
    assert torch.equal(emb(torch.tensor([[12]])), base(torch.tensor([[5]])))
    assert not torch.equal(emb(torch.tensor([[12]]))[0, 0], base.weight[5])  # the raw row would be 1/4 of it


@pytest.mark.parametrize("prompt", ["a <a> dog", "<a>,<a> and <b>", "a <a> <a>_1 <a>_2 dog", "x <bb> y"])
def test_expand_prompt_is_idempotent(prompt):
    words = {"<a>": 3, "<b>": 1, "<bb>": 2}
    once = expand_prompt(prompt, words)
    assert expand_prompt(once, words) == once
    assert len(re.findall(r"<a>(?!_)", once)) == once.count("<a> <a>_1 <a>_2")  # every bare <a> carries all its parts
    assert len(re.findall(r"<bb>(?!_)", once)) == once.count("<bb> <bb>_1")
    assert "<b>" not in prompt or "<b>_1" not in once  # a one-vector word is left alone


def test_several_concepts_attach_and_detach_one_at_a_time(clip_tok):
    model = _tiny_clip()
    cls = type(clip_tok)
    table = model.get_input_embeddings().weight.detach().clone()
    a = TrainableRows(table[[2368, 1929]], "free")  # two vectors
    b = TrainableRows(table[[1929]], "free")
    attach(clip_tok, model, "<a>", a)
    attach(clip_tok, model, "<b>", b)
    assert attached_tokens(model) == ["<a>", "<b>"]
    # the tokenizer expands the two-vector word itself, whatever pipeline calls it
    assert clip_tok("x <a> y").input_ids == clip_tok("x <a> <a>_1 y").input_ids
    assert clip_tok.convert_ids_to_tokens(clip_tok("<a>").input_ids[1:-1]) == ["<a>", "<a>_1"]
    with pytest.raises(Exception, match="already attached"):
        attach(clip_tok, model, "<a>", b)
    before = model(torch.tensor([clip_tok("a <b>").input_ids])).last_hidden_state
    detach(clip_tok, model, "<a>")  # <b> moves to the first new id and still reads its rows
    assert attached_tokens(model) == ["<b>"] and clip_tok.convert_tokens_to_ids("<b>") == 49408
    assert torch.equal(model(torch.tensor([clip_tok("a <b>").input_ids])).last_hidden_state, before)
    detach(clip_tok, model, "<b>")
    assert len(clip_tok) == 49408 and type(clip_tok) is cls
    assert type(model.get_input_embeddings()) is torch.nn.Embedding


def test_byte_level_placeholders_take_the_space_before_them_but_not_a_newline():
    """A byte-level word carries its space (``a Ġdog``): the one space before each part is joined to it
    ("a  dog" is ``a Ġ Ġdog``), a newline (a chat template's ``user\\n``) is kept, as before a word; the
    expansion stays idempotent."""
    words = {"<w>": 2, "<v>": 1}
    joined = expand_prompt("user\n<w> and a <v>, a  <w>", words, join_space=True)
    assert joined == "user\n<w><w>_1 and a<v>, a <w><w>_1"
    assert expand_prompt("user\n<w><w>_1 and a<v>", words, join_space=True) == "user\n<w><w>_1 and a<v>"
    assert expand_prompt("a <v>", words) == "a <v>"  # other tokenizers keep the space


def test_a_t5_encoder_comes_back_with_its_own_modules():
    """T5 keeps one table twice (``shared`` and ``encoder.embed_tokens``, two modules over one weight):
    after the last word is detached every attribute holds the module it held before, not the table's one."""
    from dti.testing.t5 import t5_encoder, t5_tokenizer

    tokenizer = t5_tokenizer()
    encoder = t5_encoder(16, len(tokenizer))
    before = {name: id(module) for name, module in encoder.named_modules(remove_duplicate=False)}
    rows = TrainableRows(torch.randn(1, 16), "sphere", 1.0)
    attach(tokenizer, encoder, "<w>", rows, pooling="none", sentencepiece=True).detach()
    after = {name: id(module) for name, module in encoder.named_modules(remove_duplicate=False)}
    assert after == before
