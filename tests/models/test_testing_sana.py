"""The offline Gemma tokenizer and the tiny SANA and Lumina-Image 2.0 pipelines of dti.testing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dti.testing.corpus import sentences, word_counts
from dti.testing.gemma import GEMMA_BYTE_TOKENS, gemma_tokenizer, placeholder_added_token, sana_complex_human_instruction

PROMPT = "a photo of a dog"


@pytest.fixture(scope="session")
def gemma_tok():
    return gemma_tokenizer()


@pytest.fixture(scope="session")
def tiny_sana(tmp_path_factory):
    from dti.testing.sana import build_tiny_sana

    return build_tiny_sana(tmp_path_factory.mktemp("tiny") / "sana")


@pytest.fixture(scope="session")
def sana_pipe(tiny_sana):
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(tiny_sana)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def lumina2_pipe(tmp_path_factory):
    from diffusers import Lumina2Pipeline

    from dti.testing.lumina2 import build_tiny_lumina2

    pipe = Lumina2Pipeline.from_pretrained(build_tiny_lumina2(tmp_path_factory.mktemp("tiny") / "lumina2"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pieces(tok, text, **kwargs):
    return tok.convert_ids_to_tokens(tok(text, **kwargs).input_ids)


def test_gemma_conventions(gemma_tok):
    tok = gemma_tok
    assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids(list(GEMMA_BYTE_TOKENS)) == list(range(5, 5 + 256))
    assert _pieces(tok, PROMPT) == ["<bos>", "a", "▁photo", "▁of", "▁a", "▁dog"]
    assert tok.padding_side == "right"
    padded = tok(PROMPT, padding="max_length", max_length=9)
    assert padded.input_ids[-3:] == [0, 0, 0] and padded.attention_mask == [1] * 6 + [0] * 3
    # Characters outside the vocabulary fall back to their UTF-8 bytes, and decode back.
    assert _pieces(tok, "é", add_special_tokens=False) == ["<0xC3>", "<0xA9>"]
    assert tok.decode(tok("a dog é 7", add_special_tokens=False).input_ids) == "a dog é 7"


def test_gemma_round_trip(gemma_tok, tmp_path):
    from transformers import AutoTokenizer

    gemma_tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert type(again).__name__ == "GemmaTokenizer" and len(again) == len(gemma_tok)
    assert again.padding_side == "right"
    texts = [*sentences()[::7], "\n".join(sana_complex_human_instruction()) + PROMPT, "Ünïcode 123 !?", ""]
    for text in texts:
        assert again(text).input_ids == gemma_tok(text).input_ids, text


def test_corpus_words_are_single_pieces(gemma_tok):
    prefix = gemma_tok("a photo of a").input_ids
    for word in word_counts():
        ids = gemma_tok(f"a photo of a {word}").input_ids
        assert ids[: len(prefix)] == prefix and len(ids) == len(prefix) + 1, word
        assert len(gemma_tok(word, add_special_tokens=False).input_ids) == 1, word


def test_added_token_forms(tmp_path):
    from transformers import AutoTokenizer

    plain = gemma_tokenizer()
    assert plain.add_tokens(["<my-dog>"]) == 1
    assert _pieces(plain, "a photo of a <my-dog>") == ["<bos>", "a", "▁photo", "▁of", "▁a", "▁", "<my-dog>"]

    tok = gemma_tokenizer()
    assert tok.add_tokens([placeholder_added_token("<my-dog>")]) == 1
    new_id = tok.convert_tokens_to_ids("<my-dog>")
    for template in ["a photo of a {}", "a photo of a {} on the beach", "{} wearing a santa hat", "a {}, at night"]:
        with_dog, with_token = tok(template.format("dog")).input_ids, tok(template.format("<my-dog>")).input_ids
        assert len(with_token) == len(with_dog), template
        assert [i for i, (a, b) in enumerate(zip(with_dog, with_token)) if a != b] == [with_token.index(new_id)], template
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("a photo of a <my-dog> on the beach").input_ids == tok("a photo of a <my-dog> on the beach").input_ids


def test_tiny_sana_components(sana_pipe):
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler
    from transformers import Gemma2Model

    pipe = sana_pipe
    assert isinstance(pipe.text_encoder, Gemma2Model) and isinstance(pipe.vae, AutoencoderDC)
    assert pipe.text_encoder.config.hidden_size == 32 and pipe.text_encoder.config.num_hidden_layers == 2
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.use_flow_sigmas and pipe.scheduler.config.flow_shift == 3.0
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.transformer.config.sample_size in (16, 32, 64, 128)
    assert pipe.vae_scale_factor == 32 and pipe.vae.config.scaling_factor == pytest.approx(0.41407)
    with torch.no_grad():
        encoded = pipe.vae.encode(torch.zeros(1, 3, 64, 64))
    assert not hasattr(encoded, "latent_dist")
    assert encoded.latent.shape == (1, pipe.transformer.config.in_channels, 2, 2)


def test_gemma_input_embedding_scale(sana_pipe):
    from transformers.models.gemma2.modeling_gemma2 import Gemma2TextScaledWordEmbedding

    emb = sana_pipe.text_encoder.get_input_embeddings()
    assert isinstance(emb, Gemma2TextScaledWordEmbedding)
    ids = sana_pipe.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = emb(ids)
    raw = emb.weight[ids]
    scale = math.sqrt(sana_pipe.text_encoder.config.hidden_size)
    torch.testing.assert_close(out, raw * scale)
    assert out.norm(dim=-1).mean() > 5 * raw.norm(dim=-1).mean()


def test_encode_prompt_selects_bos_and_prompt(sana_pipe):
    pipe = sana_pipe
    n = len(pipe.tokenizer(PROMPT).input_ids)
    embeds, mask, _, _ = pipe.encode_prompt("A Photo of a DOG", do_classifier_free_guidance=False)
    assert embeds.shape == (1, 300, 32) and int(mask.sum()) == n
    lower, _, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    torch.testing.assert_close(embeds, lower)  # the pipeline lower-cases prompts
    # With the default instruction the kept window is <bos> + the prompt's tokens (its first word now "▁a").
    embeds, mask, _, _ = pipe.encode_prompt(
        PROMPT, do_classifier_free_guidance=False, complex_human_instruction=sana_complex_human_instruction()
    )
    assert embeds.shape == (1, 300, 32) and int(mask.sum()) == n


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [(64, {}), (128, {"complex_human_instruction": None}), (64, {"use_resolution_binning": False, "complex_human_instruction": None})],
)
def test_tiny_sana_generates(sana_pipe, one_thread, size, kwargs):
    def run(prompt):
        out = sana_pipe(
            prompt, num_inference_steps=2, height=size, width=size, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs
        )
        return out.images

    image = run(PROMPT)
    assert image.shape == (1, size, size, 3) and np.isfinite(image).all()
    assert image.std() > 1e-3
    assert np.abs(run("a photo of a cat") - image).max() > 1e-3  # the text conditions the image


def test_tiny_lumina2_components(lumina2_pipe):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Transformer2DModel
    from transformers import Gemma2Model
    from transformers.models.gemma2.modeling_gemma2 import Gemma2TextScaledWordEmbedding

    pipe = lumina2_pipe
    assert isinstance(pipe.text_encoder, Gemma2Model) and isinstance(pipe.transformer, Lumina2Transformer2DModel)
    assert isinstance(pipe.text_encoder.get_input_embeddings(), Gemma2TextScaledWordEmbedding)
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size and pipe.tokenizer.padding_side == "right"
    config = pipe.transformer.config
    assert config.cap_feat_dim == pipe.text_encoder.config.hidden_size
    assert sum(config.axes_dim_rope) == config.hidden_size // config.num_attention_heads
    assert config.in_channels == pipe.vae.config.latent_channels == 16
    # the pipeline assumes a VAE factor of 8 (it never reads the VAE's): the tiny VAE really has it
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.vae_scale_factor == 8 == 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    with torch.no_grad():
        assert pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean.shape == (1, 16, 8, 8)
    assert pipe.vae.config.shift_factor == pytest.approx(0.1159) and pipe.vae.config.scaling_factor == pytest.approx(0.3611)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and not pipe.scheduler.config.use_dynamic_shifting
    assert pipe.scheduler.config.shift == 6.0


def test_lumina2_encode_prompt_is_the_system_prompted_second_to_last_layer(lumina2_pipe):
    pipe = lumina2_pipe
    embeds, mask, _, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    full = pipe.tokenizer(pipe.system_prompt + " <Prompt Start> " + PROMPT).input_ids
    assert embeds.shape == (1, 256, 32) and int(mask.sum()) == len(full) > len(pipe.tokenizer(PROMPT).input_ids) + 10
    ids = torch.tensor([full + [0] * (256 - len(full))])
    with torch.no_grad():
        out = pipe.text_encoder(ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(embeds, out.hidden_states[-2], rtol=0, atol=0)
    assert not torch.allclose(embeds, out.last_hidden_state)


def test_tiny_lumina2_generates(lumina2_pipe, one_thread):
    def run(prompt, output_type):
        generator = torch.Generator().manual_seed(0)
        return lumina2_pipe(prompt, num_inference_steps=2, height=64, width=64, generator=generator, output_type=output_type).images

    image = run(PROMPT, "np")
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all() and image.std() > 1e-3
    # the text conditions the latents (weakly: one word among the system prompt's, in a random tiny model)
    assert (run("a photo of a cat", "latent") - run(PROMPT, "latent")).abs().max() > 1e-4
