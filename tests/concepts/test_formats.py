"""Every format in and out: lossless round trips, foreign layouts, refusal of unsafe pickles."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch
from safetensors.torch import save_file

from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats import read, write
from dti.concepts.kinds import single_file_keys
from dti.core import sphere
from dti.core.errors import DTIError

# (format, output name): a folder for diffusers, a file for the single-file layouts
TARGETS = [("dti", "c.safetensors"), ("diffusers", "diffusers"), ("a1111", "a.safetensors"), ("comfyui", "c"), ("kohya", "k.safetensors")]


def sd_concept():
    d = sphere.normalize(torch.randn(2, 768, generator=torch.Generator().manual_seed(0)))
    return Concept("<my-dog>", {"text_encoder": EncoderVectors(0.387 * d, 0.387, d)}, {"method": "dti", "base_model": "sd15"})


def sdxl_concept():
    g = torch.Generator().manual_seed(1)
    return Concept(
        "<my-dog>",
        {
            "text_encoder": EncoderVectors(torch.randn(1, 768, generator=g) * 0.02, None),
            "text_encoder_2": EncoderVectors(torch.randn(1, 1280, generator=g) * 0.02, None),
        },
        {"method": "ti"},
    )


def assert_same(a: Concept, b: Concept):
    assert a.token == b.token
    assert set(a.encoders) == set(b.encoders)
    for name in a.encoders:
        assert torch.equal(a.encoders[name].vectors, b.encoders[name].vectors), name


@pytest.mark.parametrize("make", [sd_concept, sdxl_concept])
@pytest.mark.parametrize("src, dst", list(itertools.product(TARGETS, TARGETS)))
def test_round_trip_between_every_pair_is_lossless(tmp_path, make, src, dst):
    concept = make()
    first = write(concept, src[0], tmp_path / "1" / src[1])
    middle = read(first[0].parent if src[0] == "diffusers" else first[0])
    second = write(middle, dst[0], tmp_path / "2" / dst[1])
    back = read(second[0].parent if dst[0] == "diffusers" else second[0])
    assert_same(concept, back)
    assert back.meta["method"] == concept.meta["method"]
    for name, enc in concept.encoders.items():
        assert back.encoders[name].magnitude == enc.magnitude


def test_a1111_pt_round_trip(tmp_path):
    concept = sd_concept()
    path = write(concept, "a1111", tmp_path / "my-dog.pt")[0]
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"string_to_param", "string_to_token", "name"} and raw["string_to_param"]["*"].shape == (2, 768)
    assert_same(concept, read(path))


def test_sdxl_single_file_layout(tmp_path):
    path = write(sdxl_concept(), "comfyui", tmp_path)[0]
    assert path.name == "my-dog.safetensors"
    from safetensors.torch import load_file

    assert {k: tuple(v.shape) for k, v in load_file(path).items()} == {"clip_l": (1, 768), "clip_g": (1, 1280)}


def test_foreign_files_without_our_metadata(tmp_path):
    v = torch.randn(3, 768)
    save_file({"<cat-toy>": v}, tmp_path / "learned_embeds.safetensors")
    c = read(tmp_path / "learned_embeds.safetensors")
    assert c.token == "<cat-toy>" and torch.equal(c.encoders["text_encoder"].vectors, v) and c.meta["source_format"] == "diffusers"
    save_file({"emb_params": torch.randn(2, 1024)}, tmp_path / "style.safetensors")
    c = read(tmp_path / "style.safetensors")
    assert c.token == "<style>" and c.encoders["text_encoder"].width == 1024
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, tmp_path / "xl.safetensors")
    c = read(tmp_path / "xl.safetensors", token="<xl>")
    assert c.token == "<xl>" and c.encoders["text_encoder_2"].width == 1280 and c.n_vectors == 2
    torch.save({"<bin>": torch.randn(768)}, tmp_path / "learned_embeds.bin")
    assert read(tmp_path / "learned_embeds.bin").encoders["text_encoder"].vectors.shape == (1, 768)
    torch.save({"string_to_param": {"*": torch.randn(4, 768)}, "name": "charturner", "step": 100}, tmp_path / "ct.pt")
    c = read(tmp_path / "ct.pt")
    assert c.token == "charturner" and c.n_vectors == 4 and c.meta["step"] == 100


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"string_to_param": {"*": _Evil(marker)}, "name": "x"}, f)
    with pytest.raises(DTIError, match="refused"):
        read(path)
    torch.save({"string_to_param": {"*": _Evil(marker)}, "name": "x"}, tmp_path / "evil2.pt")
    with pytest.raises(DTIError, match="refused"):
        read(tmp_path / "evil2.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, pattern",
    [
        ({"a": torch.randn(768), "b": torch.randn(768)}, "not a textual-inversion embedding"),
        ({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(2, 1280)}, "different vector counts"),
        ({"emb_params": torch.randn(2, 3, 4)}, "not a .n_vectors, width. tensor"),
    ],
)
def test_malformed_files_are_refused(tmp_path, content, pattern):
    save_file(content, tmp_path / "x.safetensors")
    with pytest.raises(DTIError, match=pattern):
        read(tmp_path / "x.safetensors")


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DTIError, match="unknown extension"):
        read(tmp_path / "x.txt")
    with pytest.raises(DTIError, match="not found"):
        read(tmp_path / "nope.safetensors")


def test_multi_encoder_concept_cannot_be_one_pt(tmp_path):
    with pytest.raises(DTIError, match="single-encoder"):
        write(sdxl_concept(), "a1111", tmp_path / "x.pt")


def test_single_encoder_files_keep_their_encoder(tmp_path):
    """dti-mini's concepts live in SDXL's text_encoder_2 alone: every one-encoder layout dti writes
    must read back there, with its kind and fixed norm, not as a width-guessed text_encoder."""
    vectors = sphere.normalize(torch.randn(1, 96)) * 1.3
    concept = Concept("<star>", {"text_encoder_2": EncoderVectors(vectors, 1.3, kind="clip_g")}, {"method": "dti"})
    for fmt, out in [
        ("a1111", tmp_path / "a.safetensors"),
        ("a1111", tmp_path / "a.pt"),
        ("diffusers", tmp_path / "d"),
        ("dti", tmp_path / "c"),
    ]:
        write(concept, fmt, out)
        back = read(out)
        assert list(back.encoders) == ["text_encoder_2"], fmt
        enc = back.encoders["text_encoder_2"]
        assert enc.kind == "clip_g" and enc.magnitude == pytest.approx(1.3) and torch.equal(enc.vectors, vectors), fmt


def test_multi_encoder_single_files_map_keys_through_the_registered_families(tmp_path):
    flux = tmp_path / "flux.safetensors"
    save_file({"clip_l": torch.randn(2, 8), "t5xxl": torch.randn(2, 16)}, flux)
    assert {n: e.kind for n, e in read(flux).encoders.items()} == {"text_encoder": "clip_l", "text_encoder_2": "t5"}
    sd3 = tmp_path / "sd3.safetensors"
    save_file({"clip_l": torch.randn(1, 8), "clip_g": torch.randn(1, 12), "t5": torch.randn(1, 16)}, sd3)  # OneTrainer's t5 key
    assert {n: e.kind for n, e in read(sd3).encoders.items()} == {
        "text_encoder": "clip_l",
        "text_encoder_2": "clip_g",
        "text_encoder_3": "t5",
    }
    sana = tmp_path / "sana.safetensors"
    save_file({"gemma": torch.randn(1, 16)}, sana)
    assert {n: e.kind for n, e in read(sana).encoders.items()} == {"text_encoder": "gemma2"}
    wan = tmp_path / "wan.safetensors"  # ComfyUI's key for Wan's UMT5: not T5's, so not PixArt's encoder
    save_file({"umt5xxl": torch.randn(1, 16)}, wan)
    back = read(wan)
    assert {n: e.kind for n, e in back.encoders.items()} == {"text_encoder": "umt5"}
    assert list(single_file_keys(back.encoders, {"pipeline_class": "WanPipeline"})) == ["umt5xxl"]
    pixart = tmp_path / "pixart.safetensors"
    save_file({"t5xxl": torch.randn(1, 16)}, pixart)
    assert {n: e.kind for n, e in read(pixart).encoders.items()} == {"text_encoder": "t5"}
    odd = tmp_path / "odd.safetensors"
    save_file({"clip_g": torch.randn(1, 12), "t5xxl": torch.randn(1, 16)}, odd)
    with pytest.raises(DTIError, match="no supported model family"):
        read(odd)


def test_diffusers_folder_second_file_is_the_second_encoder(tmp_path):
    """A folder of foreign diffusers files: learned_embeds_2 belongs to text_encoder_2 whatever its width."""
    folder = tmp_path / "d"
    folder.mkdir()
    save_file({"<t>": torch.randn(1, 8)}, folder / "learned_embeds.safetensors")
    save_file({"<t>": torch.randn(1, 96)}, folder / "learned_embeds_2.safetensors")
    assert sorted(read(folder).encoders) == ["text_encoder", "text_encoder_2"]
