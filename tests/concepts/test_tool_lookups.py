"""Every tool finds the trained vectors in the files dti writes, by its own lookup rule.

Each rule below restates, in a few lines, how the tool's own source picks an embedding's vectors
out of a file (docs/formats.md names the functions): ComfyUI's ``load_embed``, A1111's
``create_embedding_from_data``, InvokeAI's textual-inversion loader, OneTrainer's embedding keys,
kohya's and diffusers' loaders. For every family, the files dti writes for a tool give that tool,
per encoder it supports, exactly the concept's vectors (never the initializer's, never another
encoder's): the README's "who loads it" table is what these tests check.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats import write

# ------------------------------------------------------------------ each tool's rule
# family -> (component, kind, width) of its encoders
FAMILIES = {
    "sd": [("text_encoder", "clip_l", 768)],
    "sdxl": [("text_encoder", "clip_l", 768), ("text_encoder_2", "clip_g", 1280)],
    "sd3": [("text_encoder", "clip_l", 768), ("text_encoder_2", "clip_g", 1280), ("text_encoder_3", "t5", 4096)],
    "flux": [("text_encoder", "clip_l", 768), ("text_encoder_2", "t5", 4096)],
    "pixart": [("text_encoder", "t5", 4096)],
    "sana": [("text_encoder", "gemma2", 2304)],
    "wan": [("text_encoder", "umt5", 4096)],
    "chroma": [("text_encoder", "t5", 4096)],
    "lumina2": [("text_encoder", "gemma2", 2304)],
    "zimage": [("text_encoder", "qwen3", 2560)],
    "flux2_klein": [("text_encoder", "qwen3", 2560)],  # klein 4B: Qwen3-4B
    "flux2_klein-9b": [("text_encoder", "qwen3", 4096)],  # klein 9B: Qwen3-8B
    "hidream": [
        ("text_encoder", "clip_l", 768),
        ("text_encoder_2", "clip_g", 1280),
        ("text_encoder_3", "t5", 4096),
        ("text_encoder_4", "llama", 4096),
    ],
    "qwenimage": [("text_encoder", "qwen25vl", 3584)],
    "flux2_dev": [("text_encoder", "mistral3", 5120)],  # Mistral-Small-3.1's language model
}
PIPELINES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "pixart": "PixArtSigmaPipeline",
    "sana": "SanaPipeline",
    "wan": "WanPipeline",
    "chroma": "ChromaPipeline",
    "lumina2": "Lumina2Pipeline",
    "zimage": "ZImagePipeline",
    "flux2_klein": "Flux2KleinPipeline",
    "flux2_klein-9b": "Flux2KleinPipeline",
    "hidream": "HiDreamImagePipeline",
    "qwenimage": "QwenImagePipeline",
    "flux2_dev": "Flux2Pipeline",
}
# ComfyUI: each text encoder's tokenizer looks up its embedding_key, else takes the file's first tensor
# (Qwen3's key follows the model size: qwen3_4b for the 2560-wide Qwen3-4B, qwen3_8b for the 4096-wide Qwen3-8B)
COMFYUI_KEYS = {
    "clip_l": "clip_l",
    "clip_g": "clip_g",
    "t5": "t5xxl",
    "umt5": "umt5xxl",
    "gemma2": "gemma2_2b",
    "llama": "llama",
    "qwen25vl": "qwen25_7b",
    "mistral3": "mistral3_24b",
}
COMFYUI_SIZED_KEYS = {("qwen3", 2560): "qwen3_4b", ("qwen3", 4096): "qwen3_8b"}
# OneTrainer: the key of each encoder it trains embeddings for (SD 1.5's is spelled emp_params)
# (no UMT5, Llama, Qwen2.5-VL or Mistral 3: OneTrainer's keys for Wan's, HiDream's Llama, Qwen-Image's and FLUX.2
# dev's encoders are not verified, so none of those families is claimed)
ONETRAINER_KEYS = {"clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5", "gemma2": "gemma"}
ONETRAINER_FAMILIES = sorted(f for f, encoders in FAMILIES.items() if all(kind in ONETRAINER_KEYS for _, kind, _ in encoders))


def comfyui(path, kind: str, width: int) -> torch.Tensor:
    embed = load_file(str(path))
    key = COMFYUI_SIZED_KEYS.get((kind, width)) or COMFYUI_KEYS[kind]
    return embed[key] if key in embed else next(iter(embed.values()))


def a1111(path) -> dict[str, torch.Tensor]:
    """SD 1.x/2.x: a file of one key (any name); SDXL: clip_g and clip_l; anything else refused."""
    data = load_file(str(path))
    if "clip_g" in data and "clip_l" in data:
        return {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    assert len(data) == 1, "embedding file has multiple terms in it"
    return {"clip_l": next(iter(data.values()))}


def invokeai(path) -> dict[str, torch.Tensor]:
    """string_to_param, emb_params, or clip_g + clip_l (matched to the encoders by width)."""
    data = load_file(str(path))
    if "clip_g" in data and "clip_l" in data:
        by_width = {t.shape[-1]: t for t in (data["clip_g"], data["clip_l"])}
        return {"clip_l": by_width[768], "clip_g": by_width[1280]}
    assert "emb_params" in data, "unrecognized embedding file"
    return {"clip_l": data["emb_params"]}


def onetrainer(path, family: str, kind: str) -> torch.Tensor:
    data = load_file(str(path))
    key = "emp_params" if family == "sd" else ONETRAINER_KEYS[kind]
    assert key in data, f"OneTrainer finds no {key}"
    return data[key]


def kohya(path) -> dict[str, torch.Tensor]:
    """SD 1.x/2.x: the first tensor, any key; SDXL: clip_l and clip_g."""
    data = load_file(str(path))
    if "clip_l" in data and "clip_g" in data:
        return {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    return {"clip_l": next(iter(data.values()))}


def diffusers(path) -> torch.Tensor:
    data = load_file(str(path))
    assert len(data) == 1, "Loaded state dictonary is incorrect"
    return next(iter(data.values()))


# ------------------------------------------------------------------ the checks
def concept_for(family: str) -> Concept:
    g = torch.Generator().manual_seed(len(family))
    encoders = {
        component: EncoderVectors(torch.randn(2, width, generator=g) * 0.1, 0.4, torch.randn(2, width, generator=g), kind=kind)
        for component, kind, width in FAMILIES[family]
    }
    return Concept("<my-thing>", encoders, {"method": "dti", "pipeline_class": PIPELINES[family]})


def same(got: torch.Tensor, enc: EncoderVectors) -> bool:
    return got.shape == enc.vectors.shape and torch.equal(got.float(), enc.vectors)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_comfyui_reads_every_encoder_from_the_webui_file_and_from_dtis_own(family, tmp_path):
    c = concept_for(family)
    for path in (write(c, "comfyui", tmp_path / "c.safetensors")[0], c.save(tmp_path / "concept.safetensors")):
        for component, kind, width in FAMILIES[family]:
            assert same(comfyui(path, kind, width), c.encoders[component]), (family, path.name, kind)


@pytest.mark.parametrize("family", ONETRAINER_FAMILIES)
def test_onetrainer_reads_its_keys(family, tmp_path):
    c = concept_for(family)
    path = write(c, "onetrainer", tmp_path / "o.safetensors")[0]
    for component, kind, _ in FAMILIES[family]:
        assert same(onetrainer(path, family, kind), c.encoders[component]), (family, kind)
    if family != "sd":  # the one file for every tool holds OneTrainer's keys too
        shared = write(c, "a1111", tmp_path / "a.safetensors")[0]
        for component, kind, _ in FAMILIES[family]:
            assert same(onetrainer(shared, family, kind), c.encoders[component]), (family, kind)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("tool", [a1111, invokeai, kohya])
def test_a1111_invokeai_and_kohya_read_sd_and_sdxl_files(family, tool, tmp_path):
    c = concept_for(family)
    fmt = {a1111: "a1111", invokeai: "invokeai", kohya: "kohya"}[tool]
    got = tool(write(c, fmt, tmp_path / "w.safetensors")[0])
    for component, kind, _ in FAMILIES[family]:
        assert same(got[kind], c.encoders[component]), (family, kind)


def test_a1111_refuses_dtis_own_sd_file_so_the_webui_file_is_what_to_give_it(tmp_path):
    """A one-encoder concept.safetensors holds several keys; A1111 refuses it (the README says so)."""
    path = concept_for("sd").save(tmp_path / "concept.safetensors")
    with pytest.raises(AssertionError, match="multiple terms"):
        a1111(path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_diffusers_loads_each_per_encoder_file(family, tmp_path):
    c = concept_for(family)
    paths = write(c, "diffusers", tmp_path / "d")
    for path, (component, _, _) in zip(paths, FAMILIES[family]):
        assert same(diffusers(path), c.encoders[component])


def test_invokeai_is_not_given_the_per_encoder_files(tmp_path):
    """InvokeAI's probe refuses a 2-D {token: tensor} file (it reads the vector count as the width):
    the rule here says so, and the README sends InvokeAI users to the single file."""
    paths = write(concept_for("sdxl"), "diffusers", tmp_path / "d")
    with pytest.raises(AssertionError, match="unrecognized"):
        invokeai(paths[0])


def test_the_written_keys_read_back_as_the_concept(tmp_path):
    """Several keys of one kind (t5xxl and t5) are copies: dti reads them back as one encoder."""
    from dti.concepts.formats import read

    for family in FAMILIES:
        c = concept_for(family)
        for fmt in ("comfyui", "onetrainer"):
            back = read(write(c, fmt, tmp_path / f"{family}-{fmt}.safetensors")[0])
            assert {n: e.vectors for n, e in back.encoders.items()}.keys() == c.encoders.keys()
            assert all(torch.equal(back.encoders[n].vectors, e.vectors) for n, e in c.encoders.items()), (family, fmt)


@pytest.mark.parametrize(("width", "key"), [(2560, "qwen3_4b"), (4096, "qwen3_8b"), (32, "qwen3")])
def test_qwen3_is_keyed_by_its_width(width, key, tmp_path):
    """One kind, qwen3; ComfyUI's key names the model size (4B: 2560 wide, 8B: 4096); other widths (tiny models,
    sizes no tool names) get dti's own key. Only that key is written, and it reads back as the encoder."""
    from dti.concepts.formats import read

    c = Concept("<my-thing>", {"text_encoder": EncoderVectors(torch.randn(1, width), kind="qwen3")}, {"pipeline_class": "ZImagePipeline"})
    path = write(c, "comfyui", tmp_path / "q.safetensors")[0]
    assert list(load_file(str(path))) == [key]
    back = read(path)
    assert back.encoders["text_encoder"].kind == "qwen3" and torch.equal(
        back.encoders["text_encoder"].vectors, c.encoders["text_encoder"].vectors
    )


def test_a_file_whose_copies_differ_is_refused(tmp_path):
    from safetensors.torch import save_file

    from dti.concepts.formats import read
    from dti.core.errors import DTIError

    save_file({"clip_l": torch.ones(1, 768), "t5xxl": torch.ones(1, 4096), "t5": torch.zeros(1, 4096) + 2}, str(tmp_path / "x.safetensors"))
    with pytest.raises(DTIError, match="name the same encoder twice with different vectors"):
        read(tmp_path / "x.safetensors")
