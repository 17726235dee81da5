"""The real metric backbones (DINOv2, SigLIP, CLIP, DINO) on tiny random checkpoints of the real classes.

Each tiny model is saved with its processor (and tokenizer) as a hub repo holds them and loaded
back through ``load_scorer(name, folder)``; scores are checked against computations made
independently from the model's own forward outputs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dti.core.errors import DTIError
from dti.evaluation.protocol import Scorer, class_prompt
from dti.evaluation.scorers import METRICS, load_scorer, parse_metric_models
from dti.evaluation.scorers.clip import ClipScorer
from dti.evaluation.scorers.dino import DinoScorer
from dti.evaluation.scorers.dinov2 import Dinov2Scorer
from dti.evaluation.scorers.hf import apply_mask, load_references
from dti.evaluation.scorers.mini import MiniJudgeScorer
from dti.evaluation.scorers.siglip import SiglipScorer

SHA = "0123456789abcdef0123456789abcdef01234567"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
VISION = dict(TINY, image_size=32, patch_size=8)


def _build_dinov2(folder):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**VISION)).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(folder)


def _build_dino(folder):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(1)
    ViTModel(ViTConfig(**VISION), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _build_siglip(folder):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, T5TokenizerFast

    from dti.testing.t5 import t5_vocab

    # SigLIP's real tokenizer is a T5-style SentencePiece (pad = eos = "</s>", 64 tokens); this one
    # is built offline over the test corpus words and keeps punctuation, so the "." is visible.
    tok = T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=64, pad_token="</s>")
    text = dict(TINY, vocab_size=len(tok), max_position_embeddings=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(2)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=VISION))
    with torch.no_grad():  # a random init leaves scale 0 / bias 0 or random: make both matter
        model.logit_scale.fill_(np.log(10.0))
        model.logit_bias.fill_(-2.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _build_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dti.testing import CLIP_VOCAB_SIZE, clip_tokenizer

    text = dict(TINY, vocab_size=CLIP_VOCAB_SIZE, projection_dim=16)
    torch.manual_seed(3)
    CLIPModel(CLIPConfig(text_config=text, vision_config=dict(VISION, projection_dim=16), projection_dim=16)).save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


BUILD = {"dinov2": _build_dinov2, "dino": _build_dino, "siglip": _build_siglip, "clip": _build_clip}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    out = {}
    for name, build in BUILD.items():
        build(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def scorers(folders):
    return {name: load_scorer(name, str(folder)) for name, folder in folders.items()}


def _images(n, seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text, text
    return text


def _pixels(folder, images):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]


def _cos(a, b):
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


# --- loading and the registry -----------------------------------------------------------------


def test_registry_and_types(scorers):
    assert set(METRICS) == {"dinov2", "siglip", "clip", "dino", "mini"}
    assert METRICS["mini"] is MiniJudgeScorer
    kinds = {"dinov2": Dinov2Scorer, "siglip": SiglipScorer, "clip": ClipScorer, "dino": DinoScorer}
    for name, scorer in scorers.items():
        assert isinstance(scorer, kinds[name]) and isinstance(scorer, Scorer)
    assert Dinov2Scorer.DEFAULT == "facebook/dinov2-base" and SiglipScorer.DEFAULT == "google/siglip-base-patch16-512"
    assert ClipScorer.DEFAULT == "openai/clip-vit-base-patch32" and DinoScorer.DEFAULT == "facebook/dino-vits16"


def test_info_records_backbone_revision_scale(scorers, folders):
    for name, scorer in scorers.items():
        info = scorer.info
        assert info.name == name
        assert info.backbone == str(folders[name].resolve())
        assert info.revision is None  # a plain folder records no commit
        assert info.scale
    assert scorers["dinov2"].info.text_metric is None and scorers["dino"].info.text_metric is None
    assert scorers["siglip"].info.text_metric == "SigLIP" and "sigmoid" in scorers["siglip"].info.scale
    assert (scorers["clip"].info.image_metric, scorers["clip"].info.text_metric) == ("CLIP-I", "CLIP-T")
    assert "CLS" in scorers["dinov2"].info.notes and "unmasked" in scorers["dinov2"].info.notes
    assert "64" in scorers["siglip"].info.notes and "'.'" in scorers["siglip"].info.notes


def test_revision_from_the_hub_cache(folders, tmp_path, monkeypatch):
    """A hub id found in the offline cache loads from its snapshot and records the snapshot's commit."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--facebook--dinov2-base"
    shutil.copytree(folders["dinov2"], repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = load_scorer("dinov2").info  # the default id
    assert (info.backbone, info.revision) == ("facebook/dinov2-base", SHA)
    snap = load_scorer("dinov2", str(repo / "snapshots" / SHA)).info  # the snapshot folder itself
    assert (snap.backbone, snap.revision) == ("facebook/dinov2-base", SHA)


def test_revision_from_local_dir_download_metadata(folders, tmp_path):
    """`hf download --local-dir` records the commit in .cache/huggingface/download/*.metadata."""
    folder = tmp_path / "dino"
    shutil.copytree(folders["dino"], folder)
    meta = folder / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "config.json.metadata").write_text(f"{SHA}\nabc\n1700000000.0\n")
    assert load_scorer("dino", folder).info.revision == SHA


def test_missing_folder_refused_in_one_line(tmp_path):
    with pytest.raises(DTIError) as exc:
        load_scorer("dinov2", str(tmp_path / "nope"))
    text = _one_line(exc)
    assert "dinov2" in text and str(tmp_path / "nope") in text and "--metric-model dinov2=PATH" in text


def test_hub_id_not_in_offline_cache_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DTIError) as exc:
        load_scorer("siglip", "google/siglip-base-patch16-512")
    text = _one_line(exc)
    assert "not in the hub cache, and the machine is offline" in text and "google/siglip-base-patch16-512" in text
    assert "--metric-model siglip=PATH" in text


def test_a_hub_id_without_a_network_is_one_line_at_once(tmp_path, monkeypatch):
    """Not told it is offline, the hub unreachable: one line before any download is tried (defect:
    11 lines of retries over 25 s, then a message cut in the middle of a URL)."""
    import huggingface_hub
    from huggingface_hub import constants

    from dti.models import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download was tried"))
    with pytest.raises(DTIError) as exc:
        load_scorer("dinov2", "facebook/dinov2-base")
    text = _one_line(exc)
    assert "the hub cannot be reached (no network)" in text and "facebook/dinov2-base" in text and text.endswith(")")


def test_folder_of_another_model_refused(folders, tmp_path):
    with pytest.raises(DTIError) as exc:
        load_scorer("dinov2", folders["clip"])
    assert "clip model, not DINOv2" in _one_line(exc)
    with pytest.raises(DTIError) as exc:
        load_scorer("dino", folders["dinov2"])
    assert "dinov2 model" in _one_line(exc)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DTIError) as exc:
        load_scorer("clip", empty)
    assert "no config.json" in _one_line(exc) and "--metric-model clip=PATH" in str(exc.value)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(DTIError) as exc:
        load_scorer("clip", tmp_path / "weights.bin")
    assert "is a file" in _one_line(exc)


def test_folder_missing_its_processor_or_weights_refused(folders, tmp_path):
    no_proc = tmp_path / "no-proc"
    shutil.copytree(folders["dinov2"], no_proc)
    (no_proc / "preprocessor_config.json").unlink()
    with pytest.raises(DTIError) as exc:
        load_scorer("dinov2", no_proc)
    assert "image processor" in _one_line(exc) and "--metric-model dinov2=PATH" in str(exc.value)
    no_tok = tmp_path / "no-tok"
    shutil.copytree(folders["siglip"], no_tok)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(DTIError) as exc:
        load_scorer("siglip", no_tok)
    assert "siglip" in _one_line(exc)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(folders["dino"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(DTIError) as exc:
        load_scorer("dino", no_weights)
    assert "weights" in _one_line(exc)


def test_unknown_metric_refused():
    with pytest.raises(DTIError) as exc:
        load_scorer("lpips")
    assert "dinov2, siglip, clip, dino, mini" in _one_line(exc)


@pytest.mark.parametrize(
    "items, fragment",
    [
        (["dinov2"], "not NAME=PATH"),
        (["=/models/x"], "not NAME=PATH"),
        (["dinov2="], "not NAME=PATH"),
        (["lpips=/models/x"], "unknown metric 'lpips'"),
        (["dinov2=/a", "dinov2=/b"], "given twice"),
    ],
)
def test_parse_metric_models_refusals(items, fragment):
    with pytest.raises(DTIError) as exc:
        parse_metric_models(items)
    text = _one_line(exc)
    assert fragment in text
    if "twice" not in fragment:
        assert "dinov2, siglip, clip, dino, mini" in text


def test_parse_metric_models():
    assert parse_metric_models(["dinov2=/m/d=2", " siglip = /m/s "]) == {"dinov2": "/m/d=2", "siglip": "/m/s"}
    assert parse_metric_models([]) == {}


# --- image similarity -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dinov2", "dino", "siglip", "clip"])
def test_an_image_against_itself_is_one(scorers, name):
    image = _images(1, seed=5)[0]
    assert scorers[name].image_similarity([image], [image]) == pytest.approx([1.0], abs=1e-5)


def _manual_image_embeddings(name, folder, images):
    from transformers import CLIPModel, Dinov2Model, SiglipModel, ViTModel

    pixels = _pixels(folder, images)
    with torch.no_grad():
        if name == "dinov2":
            return Dinov2Model.from_pretrained(folder)(pixel_values=pixels).pooler_output
        if name == "dino":
            return ViTModel.from_pretrained(folder, add_pooling_layer=False)(pixel_values=pixels).last_hidden_state[:, 0]
        model = {"siglip": SiglipModel, "clip": CLIPModel}[name].from_pretrained(folder)
        ids = torch.zeros(len(images), 4, dtype=torch.long)
        return model(input_ids=ids, pixel_values=pixels).image_embeds


@pytest.mark.parametrize("name", ["dinov2", "dino", "siglip", "clip"])
def test_image_similarity_is_the_mean_cosine_of_the_models_embeddings(scorers, folders, name):
    images, refs = _images(3, seed=1), _images(4, seed=2, size=(40, 56))
    expected = _cos(_manual_image_embeddings(name, folders[name], images), _manual_image_embeddings(name, folders[name], refs)).mean(dim=1)
    got = scorers[name].image_similarity(images, refs)
    assert len(got) == 3
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert max(got) - min(got) > 1e-4  # different images score differently: the test can fail


def test_batching_and_the_reference_cache_do_not_change_scores(folders):
    small = Dinov2Scorer(folders["dinov2"], batch_size=2)
    images, refs = _images(5, seed=3), _images(3, seed=4)
    first = small.image_similarity(images, refs)
    again = small.image_similarity(images, refs)  # references now come from the cache
    whole = Dinov2Scorer(folders["dinov2"], batch_size=16).image_similarity(images, refs)
    assert first == again
    assert first == pytest.approx(whole, abs=1e-6)


def test_image_metric_misuse_refused(scorers):
    with pytest.raises(DTIError) as exc:
        scorers["dinov2"].image_similarity(_images(1), [])
    assert "at least one reference" in _one_line(exc)
    with pytest.raises(DTIError) as exc:
        scorers["dinov2"].text_similarity(_images(1), ["a dog"])
    assert "no text metric" in _one_line(exc)
    assert scorers["dinov2"].image_similarity([], _images(1)) == []


# --- masks ----------------------------------------------------------------------------------


@pytest.fixture()
def masked_photos(tmp_path):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    for i, image in enumerate(_images(2, seed=7, size=(48, 40))):
        image.save(photos / f"{i:02d}.jpg", quality=95)
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[8:32, 10 + i : 30 + i] = 255
        Image.fromarray(mask).save(masks / f"{i:02d}.png")
    return sorted(photos.iterdir()), masks


def test_masks_black_out_the_background_and_change_the_reference_embedding(folders, masked_photos):
    paths, masks = masked_photos
    scorer = Dinov2Scorer(folders["dinov2"])
    images = _images(2, seed=9)
    plain = scorer.image_similarity(images, paths)
    scorer.use_masks(masks)
    assert scorer.masked and str(masks) in scorer.info.notes
    masked = scorer.image_similarity(images, paths)
    assert not np.allclose(plain, masked, atol=1e-4)

    # the same as blacking the background out by hand
    by_hand = []
    for path in paths:
        photo = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
        mask = np.asarray(Image.open(masks / f"{path.stem}.png").convert("L")).astype(np.float64)[..., None] / 255
        by_hand.append(Image.fromarray(np.clip(photo * mask, 0, 255).round().astype(np.uint8)))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(load_references(paths, masks), by_hand))
    unmasked = Dinov2Scorer(folders["dinov2"])
    assert masked == pytest.approx(unmasked.image_similarity(images, by_hand), abs=1e-6)
    # references opened from their files are masked by name too
    assert masked == pytest.approx(scorer.image_similarity(images, [Image.open(p) for p in paths]), abs=1e-6)
    scorer.use_masks(None)
    assert not scorer.masked and scorer.image_similarity(images, paths) == pytest.approx(plain, abs=1e-6)


def test_a_missing_mask_is_refused(folders, masked_photos):
    paths, masks = masked_photos
    (masks / "01.png").unlink()
    scorer = Dinov2Scorer(folders["dinov2"], masks=masks)
    with pytest.raises(DTIError) as exc:
        scorer.image_similarity(_images(1), paths)
    text = _one_line(exc)
    assert "no mask for reference photo 01.jpg" in text and "01.png" in text
    with pytest.raises(DTIError) as exc:
        scorer.image_similarity(_images(1), _images(2))  # images without file names cannot be matched to masks
    assert "file names" in _one_line(exc)
    with pytest.raises(DTIError) as exc:
        Dinov2Scorer(folders["dinov2"], masks=masks / "nope")
    assert "mask folder" in _one_line(exc)


def test_a_mask_of_another_size_is_resized_and_of_another_shape_refused():
    photo = _images(1, seed=11, size=(48, 40))[0]
    small = np.zeros((20, 24), dtype=np.uint8)
    small[5:15, 6:18] = 255
    small_mask = Image.fromarray(small)
    resized = apply_mask(photo, small_mask)
    expected = apply_mask(photo, small_mask.resize((48, 40), Image.Resampling.BILINEAR))
    assert np.array_equal(np.asarray(resized), np.asarray(expected))
    assert np.asarray(resized)[0, 0].tolist() == [0, 0, 0] and np.asarray(resized)[20, 24].tolist() == np.asarray(photo)[20, 24].tolist()
    with pytest.raises(DTIError) as exc:
        apply_mask(photo, Image.new("L", (40, 48), 255), name="03.jpg")
    assert "40x48" in _one_line(exc) and "48x40" in str(exc.value) and "03.jpg" in str(exc.value)


# --- text similarity ------------------------------------------------------------------------


def test_siglip_text_input_ends_with_a_period_and_is_padded_to_64(scorers):
    siglip = scorers["siglip"]
    assert siglip.prepare_prompt("a dog on the beach") == "a dog on the beach."
    assert siglip.prepare_prompt("a dog on the beach.") == "a dog on the beach."
    inputs = siglip.text_inputs(["a dog on the beach", "a photo of a cat in the snow."])
    assert list(inputs) == ["input_ids"] and inputs["input_ids"].shape == (2, 64)
    eos = siglip.tokenizer.eos_token_id
    for row in inputs["input_ids"].tolist():
        tokens = siglip.tokenizer.convert_ids_to_tokens(row)
        end = row.index(eos)
        assert tokens[end - 1] == "." and tokens[end - 2] != "."
        assert set(row[end:]) == {eos}  # padded with the end token to the last position SigLIP pools


def test_class_prompt_changes_the_text_input(scorers):
    siglip = scorers["siglip"]
    raw = "a photo of <my-dog> dog on the beach"
    read = class_prompt(raw, "<my-dog>", "dog")
    assert read == "a photo of dog on the beach"
    assert not torch.equal(siglip.text_inputs([raw])["input_ids"], siglip.text_inputs([read])["input_ids"])
    assert torch.equal(siglip.text_inputs([read])["input_ids"], siglip.text_inputs(["a photo of dog on the beach."])["input_ids"])
    image = _images(1, seed=12)
    assert siglip.text_similarity(image, [raw]) != siglip.text_similarity(image, [read])


def test_siglip_text_similarity_is_the_sigmoid_of_the_models_logits(scorers, folders):
    from transformers import AutoTokenizer, SiglipModel

    images = _images(3, seed=13)
    prompts = ["a dog on the beach", "a cat in the snow", "a red backpack in the jungle."]
    model = SiglipModel.from_pretrained(folders["siglip"])
    tok = AutoTokenizer.from_pretrained(folders["siglip"])
    texts = [p if p.endswith(".") else p + "." for p in prompts]
    ids = tok(texts, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=_pixels(folders["siglip"], images)).logits_per_image
    expected = torch.sigmoid(torch.diagonal(logits))
    got = scorers["siglip"].text_similarity(images, prompts)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert all(0 < g < 1 for g in got) and max(got) - min(got) > 1e-4


def test_clip_text_similarity_is_the_raw_cosine(scorers, folders):
    from transformers import AutoTokenizer, CLIPModel

    images = _images(3, seed=14)
    prompts = ["a dog on the beach", "a cat in the snow", "a red backpack in the jungle"]
    model = CLIPModel.from_pretrained(folders["clip"])
    enc = AutoTokenizer.from_pretrained(folders["clip"])(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=_pixels(folders["clip"], images))
    expected = torch.diagonal(out.logits_per_image) / model.logit_scale.exp()  # no logit scale: the raw cosine
    got = scorers["clip"].text_similarity(images, prompts)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert got == pytest.approx(torch.diagonal(_cos(out.image_embeds, out.text_embeds)).tolist(), abs=1e-5)


def test_text_similarity_needs_one_prompt_per_image(scorers):
    for name in ("siglip", "clip"):
        with pytest.raises(DTIError) as exc:
            scorers[name].text_similarity(_images(2), ["a dog"])
        assert "1 prompts for 2 images" in _one_line(exc)
        assert scorers[name].text_similarity([], []) == []


def test_references_may_be_photo_paths(scorers, tmp_path):
    refs = _images(2, seed=15)
    paths = []
    for i, image in enumerate(refs):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    images = _images(2, seed=16)
    assert scorers["clip"].image_similarity(images, paths) == pytest.approx(scorers["clip"].image_similarity(images, refs), abs=1e-6)
    with pytest.raises(DTIError) as exc:
        scorers["clip"].image_similarity(images, [paths[0], refs[1]])
    assert "not mixed" in _one_line(exc)


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is not None, reason="sentencepiece is installed")
def test_siglip_s_real_tokenizer_without_sentencepiece_is_one_line(folders, tmp_path):
    """The hub's SigLIP repos ship a SentencePiece ``SiglipTokenizer`` (spiece.model): it needs a package dti does not pull in."""
    folder = tmp_path / "siglip-hub-layout"
    shutil.copytree(folders["siglip"], folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "SiglipTokenizer", "model_max_length": 64}))
    (folder / "spiece.model").write_bytes(b"\0" * 16)
    with pytest.raises(DTIError) as exc:
        load_scorer("siglip", folder)
    assert "pip install sentencepiece protobuf" in _one_line(exc)


# --- one suite over every registered scorer: a new metric gets it by registering ----------------


def test_every_registered_scorer_has_a_tiny_build():
    """A scorer registered in dti.evaluation.scorers must be buildable here, or the suite below skips it."""
    assert set(METRICS) == {*BUILD, "mini"}


@pytest.fixture(scope="module")
def every_scorer(scorers):
    return {**scorers, "mini": load_scorer("mini")}


def _inputs(name: str):
    """(images, references, prompts) a scorer can judge: the toy world's renders and grammar for the
    mini judge, random photos and plain prompts for the real backbones."""
    if name == "mini":
        import random

        from dti.evaluation.protocol import class_prompt
        from dti.mini import world

        subject = world.subjects()[0]
        token = f"<{subject.name}>"
        jobs = world.compositional_prompts(token, subject.shape, 3, seed=0)
        prompts = [class_prompt(p, token, subject.shape) for p, _ in jobs]
        scenes = [world.render(world.realize(spec, random.Random(i), {token: subject})) for i, (_, spec) in enumerate(jobs)]
        return scenes, world.reference_images(subject, 3), prompts
    return _images(3, seed=7), _images(2, seed=8), ["a photo of a dog", "a red cube on a table", "two cats"]


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_scorer_keeps_the_protocol_and_scores_again_from_the_files(every_scorer, name, tmp_path):
    """Each scorer names its backbone and scale, gives one finite score per image for the metrics it
    declares, and gives the same scores for the same images read back from PNG files (the report's
    scores can be recomputed from what it links)."""
    scorer = every_scorer[name]
    info = scorer.info
    assert isinstance(scorer, Scorer) and info.name == name and info.backbone and info.scale
    assert info.image_metric or info.text_metric
    images, refs, prompts = _inputs(name)
    paths = []
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    again = [Image.open(p).convert("RGB") for p in paths]
    for declared, score in (
        (info.image_metric, lambda ims: scorer.image_similarity(ims, refs)),
        (info.text_metric, lambda ims: scorer.text_similarity(ims, prompts)),
    ):
        if not declared:
            continue
        first = score(images)
        assert len(first) == len(images) and all(isinstance(v, float) and np.isfinite(v) for v in first), (name, first)
        assert score(again) == first, name
