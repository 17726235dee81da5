import json

import pytest
import torch
from safetensors.torch import save_file

from dti.concepts.concept import Concept, EncoderVectors
from dti.core import sphere
from dti.core.errors import DTIError


def make_concept():
    d1 = sphere.normalize(torch.randn(2, 8))
    d2 = sphere.normalize(torch.randn(2, 12))
    return Concept(
        "<c>",
        {
            "text_encoder": EncoderVectors(0.4 * d1, 0.4, sphere.normalize(torch.randn(2, 8))),
            "text_encoder_2": EncoderVectors(0.45 * d2, 0.45, None),
        },
        {"method": "dti", "initializer": "stuffed animal", "base_model": "x/y", "vocab_norms": {"a": {"mean": 1.0}}},
    )


def test_save_load_round_trip_is_bit_identical(tmp_path):
    c = make_concept()
    path = c.save(tmp_path / "c.safetensors")
    d = Concept.load(path)
    assert d.token == "<c>" and d.meta == json.loads(json.dumps(c.meta))
    for name, enc in c.encoders.items():
        assert torch.equal(d.encoders[name].vectors, enc.vectors)
        assert d.encoders[name].magnitude == enc.magnitude
    assert torch.equal(d.encoders["text_encoder"].init, c.encoders["text_encoder"].init)
    assert d.encoders["text_encoder_2"].init is None
    assert d.tokens == ["<c>", "<c>_1"] and d.n_vectors == 2


def test_load_from_run_folder(tmp_path):
    make_concept().save(tmp_path / "concept.safetensors")
    assert Concept.load(tmp_path).token == "<c>"


def test_rescaled_sets_norm_and_keeps_direction():
    c = Concept("<t>", {"text_encoder": EncoderVectors(torch.randn(1, 8) * 7, None)}, {"method": "ti"})
    r = c.rescaled({"text_encoder": 0.4})
    assert torch.allclose(r.encoders["text_encoder"].norms, torch.tensor([0.4]))
    assert torch.allclose(r.encoders["text_encoder"].directions, c.encoders["text_encoder"].directions, atol=1e-6)
    assert r.meta["rescaled_from"] == "ti"


def test_load_refuses_foreign_and_missing_files(tmp_path):
    save_file({"<t>": torch.randn(1, 8)}, tmp_path / "foreign.safetensors")
    with pytest.raises(DTIError, match="not a dti concept"):
        Concept.load(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(DTIError, match="not a readable"):
        Concept.load(tmp_path / "junk.safetensors")
    with pytest.raises(DTIError, match="not found"):
        Concept.load(tmp_path / "missing.safetensors")


def test_save_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    import dti.concepts.concept as mod

    def boom(tensors, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "save_file", boom)
    with pytest.raises(RuntimeError):
        make_concept().save(tmp_path / "c.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_rows_past_any_usable_norm_and_spaced_tokens_are_refused_or_flagged(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from dti.concepts.formats import read

    huge = Concept("<h>", {"text_encoder": EncoderVectors(torch.ones(1, 8) * 1e30)})
    with pytest.raises(DTIError, match=r"norm 2.83e\+30, past 10000"):
        huge.save(tmp_path / "h.safetensors")
    good = Concept("<g>", {"text_encoder": EncoderVectors(torch.ones(1, 8))})
    path = good.save(tmp_path / "g.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    save_file(load_file(str(path)), str(tmp_path / "s.safetensors"), metadata={**metadata, "token": "my dog"})
    with pytest.raises(DTIError, match="white space"):
        Concept.load(tmp_path / "s.safetensors")
    problems: list[str] = []
    read(tmp_path / "s.safetensors", problems=problems)
    assert any("white space" in p for p in problems)
    assert json.loads(metadata["encoders"])["text_encoder"]["width"] == 8
