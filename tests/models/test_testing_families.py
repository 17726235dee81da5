"""The offline T5 tokenizer and the tiny PixArt-Sigma / SD3 / FLUX / Chroma pipelines of dti.testing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

PROMPTS = [
    "a photo of a dog",
    "a close-up photo of a cat on the beach",
    "A Photo, of 3 dogs!",
    "a  photo   of a teapot with the eiffel tower in the background",
    "",
]


@pytest.fixture(scope="session")
def t5_tok():
    from dti.testing.t5 import t5_tokenizer

    return t5_tokenizer()


@pytest.fixture(scope="session")
def pixart_dir(tmp_path_factory):
    from dti.testing.pixart import build_tiny_pixart

    return build_tiny_pixart(tmp_path_factory.mktemp("families") / "pixart")


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory):
    from dti.testing.sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("families") / "sd3")


@pytest.fixture(scope="session")
def sd3_no_t5_dir(tmp_path_factory):
    from dti.testing.sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("families") / "sd3-no-t5", with_t5=False)


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory):
    from dti.testing.flux import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("families") / "flux")


@pytest.fixture(scope="session")
def chroma_dir(tmp_path_factory):
    from dti.testing.chroma import build_tiny_chroma

    return build_tiny_chroma(tmp_path_factory.mktemp("families") / "chroma")


def _pieces(tok, text):
    return tok.convert_ids_to_tokens(tok(text).input_ids)


# --- the T5 tokenizer ------------------------------------------------------------------------------


def test_t5_tokenizer_layout(t5_tok):
    from transformers import T5TokenizerFast

    assert isinstance(t5_tok, T5TokenizerFast)
    assert (t5_tok.pad_token, t5_tok.eos_token, t5_tok.unk_token) == ("<pad>", "</s>", "<unk>")
    assert (t5_tok.pad_token_id, t5_tok.eos_token_id, t5_tok.unk_token_id) == (0, 1, 2)
    assert t5_tok.model_max_length == 512
    n = len(t5_tok)
    # Sentinels last, <extra_id_0> highest, as in the real vocabulary (32099).
    assert t5_tok.convert_tokens_to_ids("<extra_id_0>") == n - 1
    assert t5_tok.convert_tokens_to_ids("<extra_id_99>") == n - 100
    assert len(t5_tok.get_vocab()) == n


def test_t5_photo_of_a_dog(t5_tok):
    assert _pieces(t5_tok, "a photo of a dog") == ["▁a", "▁photo", "▁of", "▁a", "▁dog", "</s>"]


def test_t5_every_corpus_word_is_one_piece(t5_tok):
    from dti.testing.corpus import sentences, word_counts

    for word in word_counts():
        expected = ["▁a", "▁photo", "▁of", "▁a", f"▁{word}", "▁in", "▁the", "▁snow", "</s>"]
        assert _pieces(t5_tok, f"a photo of a {word} in the snow") == expected, word
    for line in sentences():
        assert _pieces(t5_tok, line) == [f"▁{w}" for w in line.split()] + ["</s>"], line


def test_t5_any_text_tokenizes(t5_tok):
    ids = t5_tok("A Photo, of 3 dogs! {x} ~ok~").input_ids
    assert t5_tok.unk_token_id not in ids
    assert t5_tok.decode(ids, skip_special_tokens=True) == "A Photo, of 3 dogs! {x} ~ok~"


def test_t5_save_load_same_ids(t5_tok, tmp_path):
    from transformers import AutoTokenizer, T5TokenizerFast

    t5_tok.save_pretrained(tmp_path / "t5")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "t5")
    assert isinstance(loaded, T5TokenizerFast)
    assert len(loaded) == len(t5_tok)
    assert loaded.model_max_length == t5_tok.model_max_length
    for prompt in PROMPTS:
        assert loaded(prompt).input_ids == t5_tok(prompt).input_ids, prompt
    padded = loaded(PROMPTS[0], padding="max_length", max_length=12).input_ids
    assert padded == t5_tok(PROMPTS[0]).input_ids + [0] * 6


def test_t5_added_token_is_one_id_without_lone_space(t5_tok, tmp_path):
    import copy

    from transformers import AutoTokenizer

    tok = copy.deepcopy(t5_tok)
    n = len(tok)
    assert tok.add_tokens(["<my-dog>"]) == 1
    new_id = tok.convert_tokens_to_ids("<my-dog>")
    assert new_id == n
    ids = tok("a photo of a <my-dog>").input_ids
    assert ids.count(new_id) == 1
    assert len(ids) == len(tok("a photo of a dog").input_ids)
    assert tok.convert_tokens_to_ids("▁") not in ids  # unlike Gemma, no lone "▁" before the added token
    assert _pieces(tok, "a <my-dog> on the beach") == ["▁a", "<my-dog>", "▁on", "▁the", "▁beach", "</s>"]
    tok.save_pretrained(tmp_path / "added")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "added")
    for prompt in [*PROMPTS, "a photo of a <my-dog>", "a <my-dog> in the snow"]:
        assert loaded(prompt).input_ids == tok(prompt).input_ids, prompt


# --- the pipelines ---------------------------------------------------------------------------------


def _generate(pipe, **kwargs):
    image = pipe(
        "a photo of a dog",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images[0]
    assert image.size == (64, 64)
    pixels = np.asarray(image)
    assert pixels.shape == (64, 64, 3)
    assert pixels.std() > 0, "all pixels identical"
    return pixels


def _assert_t5_table_larger(encoder, tokenizer, reference):
    assert tokenizer(PROMPTS[1]).input_ids == reference(PROMPTS[1]).input_ids
    rows = encoder.get_input_embeddings().num_embeddings
    assert rows == encoder.config.vocab_size
    assert rows > len(tokenizer)


def test_pixart(pixart_dir, t5_tok, one_thread):
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline
    from transformers import T5EncoderModel, T5TokenizerFast

    pipe = PixArtSigmaPipeline.from_pretrained(pixart_dir)
    assert isinstance(pipe.text_encoder, T5EncoderModel) and isinstance(pipe.tokenizer, T5TokenizerFast)
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    _assert_t5_table_larger(pipe.text_encoder, pipe.tokenizer, t5_tok)
    assert 32 <= pipe.text_encoder.config.d_model <= 64
    assert pipe.transformer.config.caption_channels == pipe.text_encoder.config.d_model
    assert pipe.transformer.config.out_channels == 2 * pipe.vae.config.latent_channels  # learned sigma
    _generate(pipe, clean_caption=False, use_resolution_binning=False, max_sequence_length=16)


def test_pixart_build_is_reproducible(pixart_dir, tmp_path):
    from dti.testing.pixart import build_tiny_pixart

    again = build_tiny_pixart(tmp_path / "again")
    for part in ("transformer", "text_encoder", "vae"):
        (first,) = (pixart_dir / part).glob("*.safetensors")
        assert (again / part / first.name).read_bytes() == first.read_bytes(), part


def test_sd3(sd3_dir, t5_tok, one_thread):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    from dti.testing import CLIP_VOCAB_SIZE

    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_dir)
    assert isinstance(pipe.text_encoder, CLIPTextModelWithProjection) and isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_3, T5EncoderModel)
    assert len(pipe.tokenizer) == len(pipe.tokenizer_2) == CLIP_VOCAB_SIZE
    assert pipe.tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token, pipe.tokenizer_2.pad_token_id) == ("<|endoftext|>", "!", 0)
    _assert_t5_table_larger(pipe.text_encoder_3, pipe.tokenizer_3, t5_tok)
    clip_widths = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.transformer.config.joint_attention_dim == pipe.text_encoder_3.config.d_model >= clip_widths
    projections = pipe.text_encoder.config.projection_dim + pipe.text_encoder_2.config.projection_dim
    assert pipe.transformer.config.pooled_projection_dim == projections
    assert pipe.vae.config.shift_factor is not None
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 3.0
    embeds, _, pooled, _ = pipe.encode_prompt("a photo of a dog", None, None, do_classifier_free_guidance=False, max_sequence_length=16)
    assert embeds.shape == (1, 77 + 16, pipe.text_encoder_3.config.d_model)
    assert pooled.shape == (1, projections)
    _generate(pipe, max_sequence_length=16)


def test_sd3_without_t5(sd3_no_t5_dir, one_thread):
    from diffusers import StableDiffusion3Pipeline

    assert not (sd3_no_t5_dir / "text_encoder_3").exists()
    # diffusers records the missing T5 as [null, null] but still wants it passed explicitly.
    with pytest.raises(ValueError, match="expected"):
        StableDiffusion3Pipeline.from_pretrained(sd3_no_t5_dir)
    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_no_t5_dir, text_encoder_3=None, tokenizer_3=None)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    _generate(pipe, max_sequence_length=16)


def test_flux(flux_dir, t5_tok, one_thread):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextModel, T5EncoderModel

    from dti.testing import CLIP_VOCAB_SIZE

    pipe = FluxPipeline.from_pretrained(flux_dir)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.text_encoder_2, T5EncoderModel)
    assert len(pipe.tokenizer) == CLIP_VOCAB_SIZE
    assert pipe.tokenizer_2.model_max_length <= 512
    _assert_t5_table_larger(pipe.text_encoder_2, pipe.tokenizer_2, t5_tok)
    config = pipe.transformer.config
    assert config.in_channels == 4 * pipe.vae.config.latent_channels
    assert sum(config.axes_dims_rope) == config.attention_head_dim
    assert config.guidance_embeds
    assert config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert pipe.vae.config.shift_factor is not None and pipe.vae.config.scaling_factor != 0.18215
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.use_dynamic_shifting
    embeds, pooled, _ = pipe.encode_prompt("a photo of a dog", None, max_sequence_length=16)
    assert embeds.shape == (1, 16, config.joint_attention_dim) and pooled.shape == (1, config.pooled_projection_dim)
    _generate(pipe, max_sequence_length=16, guidance_scale=3.5)


def test_chroma(chroma_dir, t5_tok, one_thread):
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import T5EncoderModel

    pipe = ChromaPipeline.from_pretrained(chroma_dir)
    assert isinstance(pipe.text_encoder, T5EncoderModel) and isinstance(pipe.transformer, ChromaTransformer2DModel)
    _assert_t5_table_larger(pipe.text_encoder, pipe.tokenizer, t5_tok)
    config = pipe.transformer.config
    assert config.in_channels == 4 * pipe.vae.config.latent_channels
    assert sum(config.axes_dims_rope) == config.attention_head_dim
    assert config.joint_attention_dim == pipe.text_encoder.config.d_model
    assert pipe.vae.config.shift_factor is not None and pipe.vae.config.scaling_factor != 0.18215
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.use_dynamic_shifting
    embeds, text_ids, mask, *_ = pipe.encode_prompt("a photo of a dog", do_classifier_free_guidance=False, max_sequence_length=16)
    assert embeds.shape == (1, 16, config.joint_attention_dim) and text_ids.shape == (16, 3)
    # the prompt's 6 tokens (5 words and </s>) and the first padding token
    assert mask.tolist() == [[1.0] * 7 + [0.0] * 9]
    _generate(pipe, max_sequence_length=16, guidance_scale=3.0)


def test_chroma_build_is_reproducible(chroma_dir, tmp_path):
    from dti.testing.chroma import build_tiny_chroma

    again = build_tiny_chroma(tmp_path / "again")
    for part in ("transformer", "text_encoder", "vae"):
        (first,) = (chroma_dir / part).glob("*.safetensors")
        assert (again / part / first.name).read_bytes() == first.read_bytes(), part
