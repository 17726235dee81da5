"""The attached tokenizer's call memory: a repeated prompt is tokenized once, never stale, never shared."""

import torch
from test_tokens import _tiny_clip
from transformers import CLIPTokenizerFast

from dti.core.rows import TrainableRows
from dti.text.attach import CALL_MEMORY, _expand, attach


def _counting(monkeypatch):
    calls = []
    plain = CLIPTokenizerFast.__call__

    def counted(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("text"))
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(CLIPTokenizerFast, "__call__", counted)
    return calls


def _rows(model, n=1):
    return TrainableRows(model.get_input_embeddings().weight.detach()[[2368] * n].clone(), "free")


KWARGS = [
    dict(padding="max_length", max_length=77, truncation=True, return_tensors="pt"),
    dict(padding="longest", return_tensors="pt"),
    dict(padding=True, truncation=True, max_length=6, return_tensors="pt"),
    dict(),
    dict(add_special_tokens=False),
]


def test_each_text_is_tokenized_once_and_every_batch_equals_a_direct_call(clip_tok, monkeypatch):
    model = _tiny_clip()
    att = attach(clip_tok, model, "<my-cat>", _rows(model, 2))
    calls = _counting(monkeypatch)
    prompts = ["a photo of <my-cat>", "a <my-cat> dog on a long sunny beach", "the <my-cat>"]
    for kwargs in KWARGS:
        for batch in (prompts, prompts[::-1], prompts[:2], prompts[1], prompts * 2):
            got = clip_tok(batch, **kwargs)
            direct = CLIPTokenizerFast.__call__(clip_tok, _expand(clip_tok, batch), **kwargs)
            assert set(got.keys()) == set(direct.keys())
            for key in direct:
                if isinstance(direct[key], torch.Tensor):
                    assert got[key].dtype == direct[key].dtype and torch.equal(got[key], direct[key]), (kwargs, batch, key)
                else:
                    assert got[key] == direct[key], (kwargs, batch, key)
    assert all(clip_tok.__dict__["_dti_checked"].values())  # every set of options passed its check
    calls.clear()
    for kwargs in KWARGS:
        clip_tok(prompts[::-1], **kwargs)
    assert calls == []  # all remembered
    clip_tok(["a new <my-cat> text", prompts[0]], **KWARGS[0])
    assert calls == ["a new <my-cat> <my-cat>_1 text"]  # only the new text is tokenized (expanded to both parts)
    att.detach()
    calls.clear()
    clip_tok(prompts, **KWARGS[0])  # detached: no memory
    assert len(calls) == 1 and "_dti_calls" not in clip_tok.__dict__


def test_a_caller_changing_a_result_cannot_change_the_next(clip_tok):
    model = _tiny_clip()
    att = attach(clip_tok, model, "<my-cat>", _rows(model))
    first = clip_tok("a <my-cat>", return_tensors="pt")
    want = first.input_ids.clone()
    first.input_ids.zero_()
    listed = clip_tok("a <my-cat>")
    listed["input_ids"].append(7)
    assert torch.equal(clip_tok("a <my-cat>", return_tensors="pt").input_ids, want)
    assert clip_tok("a <my-cat>")["input_ids"] == want[0].tolist()
    att.detach()


def test_adding_or_removing_a_word_forgets_what_was_remembered(clip_tok):
    model = _tiny_clip()
    a = attach(clip_tok, model, "<a>", _rows(model))
    before = clip_tok("<a> and <b>").input_ids
    b = attach(clip_tok, model, "<b>", _rows(model, 3))
    with_b = clip_tok("<a> and <b>").input_ids
    assert with_b != before and len(with_b) == len(before) - len(clip_tok.tokenize("<b>", add_special_tokens=False)) + 3
    a.detach()  # the vocabulary is rebuilt: <b>'s ids move down by one
    after = clip_tok("<a> and <b>").input_ids
    assert after != with_b and clip_tok.convert_tokens_to_ids("<b>") in after
    b.detach()


def test_the_memory_is_bounded(clip_tok):
    model = _tiny_clip()
    att = attach(clip_tok, model, "<my-cat>", _rows(model))
    for i in range(0, CALL_MEMORY + 10, 10):
        clip_tok([f"photo {j} of <my-cat>" for j in range(i, i + 10)])
    assert len(clip_tok.__dict__["_dti_calls"]) == CALL_MEMORY
    att.detach()


def test_tokenize_is_remembered_too_and_never_stale(clip_tok, monkeypatch):
    model = _tiny_clip()
    a = attach(clip_tok, model, "<a>", _rows(model, 2))
    plain = CLIPTokenizerFast.tokenize
    calls = []
    monkeypatch.setattr(CLIPTokenizerFast, "tokenize", lambda self, text, **kw: calls.append(text) or plain(self, text, **kw))
    first = clip_tok.tokenize("a photo of <a>")
    assert first == ["a</w>", "photo</w>", "of</w>", "<a>", "<a>_1"]
    first.append("changed")
    assert clip_tok.tokenize("a photo of <a>") == ["a</w>", "photo</w>", "of</w>", "<a>", "<a>_1"] and len(calls) == 1
    b = attach(clip_tok, model, "<b>", _rows(model))  # new words: everything is tokenized afresh
    assert clip_tok.tokenize("a photo of <a> <b>")[-1] == "<b>" and len(calls) == 2
    clip_tok.tokenize("a photo of <a>")
    assert len(calls) == 3
    b.detach()
    a.detach()
