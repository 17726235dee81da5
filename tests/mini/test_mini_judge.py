"""The committed judge: accuracy on fresh renders, robustness, subject similarity, prompt fidelity."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from tools.mini_build.train_judge import accuracy, degrade, judge_scenes, render_set

from dti.mini.judge import WEIGHTS, Judge
from dti.mini.world import (
    BG_COLOURS,
    COLOURS,
    SLOTS,
    SUBJECTS,
    TEXTURES,
    Appearance,
    Background,
    Scene,
    Subject,
    Thing,
    compositional_prompts,
    fidelity,
    realize,
    reference_images,
    render,
    spec,
)

MAIN = ("occupied", "count", "shape", "colour", "size", "texture", "background")
APPEARANCE = ("mark", "tone", "outline")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The judge's batches are tiny: one thread is fastest, and far faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge.load()


@pytest.fixture(scope="module")
def fresh() -> dict[str, torch.Tensor]:
    """Renders from a seed neither training nor the model card's held-out set used."""
    return render_set(judge_scenes(400, "judge-test"))


def test_weights_are_small_and_documented(judge):
    assert WEIGHTS.stat().st_size < 3_000_000
    accuracy = judge.card["accuracy"]
    assert all(accuracy[k] >= 0.95 for k in MAIN) and all(accuracy[k] >= 0.93 for k in APPEARANCE), accuracy


def test_accuracy_on_fresh_renders(judge, fresh):
    acc = accuracy(judge, fresh["images"].float() / 255, fresh["slots"], fresh["scene"])
    assert all(acc[k] >= 0.95 for k in MAIN) and all(acc[k] >= 0.93 for k in APPEARANCE), acc
    # appearance is drawn to be read on large objects; on small ones a dot, a bar and a hole are 2-3 pixels
    large = accuracy(judge, fresh["images"].float() / 255, fresh["slots"], fresh["scene"], only_size="large")
    assert all(large[k] >= 0.95 for k in APPEARANCE), large


def test_accuracy_at_64_pixels(judge):
    data = render_set(judge_scenes(150, "judge-test-64"), size=64)
    acc = accuracy(judge, data["images"].float() / 255, data["slots"], data["scene"])
    assert all(acc[k] >= 0.95 for k in MAIN), acc


def test_degrades_gracefully(judge, fresh):
    blurred = degrade(fresh["images"].float() / 255, torch.Generator().manual_seed(0))
    acc = accuracy(judge, blurred, fresh["slots"], fresh["scene"])
    assert all(acc[k] >= 0.9 for k in MAIN), acc


def test_predict_returns_the_scene_as_a_spec(judge):
    scene = Scene(
        (Thing("star", "red", "large", "top", Appearance(mark="dot")), Thing("ring", "blue", "small", "bottom")),
        Background("striped", "teal"),
    )
    [predicted] = judge.predict([render(scene)])
    assert fidelity(spec(scene), predicted) == 1.0
    assert predicted["count"] == 2 and predicted["objects"][0]["appearance"] == {"mark": "dot", "tone": "none", "outline": "none"}


def test_embeddings_are_unit_vectors(judge):
    emb = judge.embed(reference_images(SUBJECTS[0], 4))
    assert emb.shape[0] == 4 and torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_subject_similarity_ranks_the_right_subject_first(judge):
    references = {s.name: reference_images(s, 5, seed=0) for s in SUBJECTS}
    for subject in SUBJECTS:
        fresh = reference_images(subject, 4, seed=7)
        scores = {name: judge.subject_similarity(fresh, refs) for name, refs in references.items()}
        for i in range(len(fresh)):
            best = max(scores, key=lambda name: scores[name][i])
            assert best == subject.name, (subject.name, {k: round(v[i], 3) for k, v in scores.items()})
            assert scores[subject.name][i] > 0.8


def test_subject_is_found_among_other_objects(judge):
    """Prompts put the subject beside other objects: the subject's renders must beat renders of a
    plain object of its class and colour (what a model that ignores the new word would draw)."""
    for subject in SUBJECTS:
        plain = Subject("plain", subject.shape, subject.colour, Appearance(), "dev")
        references = reference_images(subject, 5, seed=0)
        prompts = compositional_prompts("<s>", subject.shape, 6, seed=3)
        for k, (_, required) in enumerate(prompts):
            scenes = [realize(required, random.Random(k), {"<s>": who}) for who in (subject, plain)]
            real, fake = judge.subject_similarity([render(s) for s in scenes], references)
            assert real > fake + 0.1 and real > 0.8, (subject.name, required, real, fake)


def _violate(scene: Scene, required: dict, rng: random.Random) -> Scene:
    """Break one requested attribute of a scene that satisfies ``required``."""
    options = []
    bg = scene.background
    if required["background"]:
        options.append(Scene(scene.things, Background(bg.texture, rng.choice([c for c in BG_COLOURS if c != bg.colour]))))
    if required["texture"]:
        options.append(Scene(scene.things, Background(rng.choice([t for t in TEXTURES if t != bg.texture]), bg.colour)))
    if len(scene.things) > 1:
        options.append(Scene(scene.things[1:], bg))
    if len(scene.things) == 1 and required["objects"][0]["position"]:
        moved = dataclasses.replace(scene.things[0], position=rng.choice([p for p in SLOTS if p != scene.things[0].position]))
        options.append(Scene((moved,), bg))
    for i, thing in enumerate(scene.things):
        wanted = next(o for o in required["objects"] if o["position"] in (thing.position, None))
        if wanted["colour"] and wanted["token"] is None:
            colour = rng.choice([c for c in COLOURS if c != thing.colour])
            recoloured = dataclasses.replace(thing, colour=colour, appearance=Appearance())
            options.append(Scene((*scene.things[:i], recoloured, *scene.things[i + 1 :]), bg))
    return rng.choice(options)


def test_text_fidelity_is_one_for_correct_renders_and_drops_for_violations(judge):
    rng = random.Random(0)
    cases = []
    for subject in SUBJECTS:
        for _, required in compositional_prompts("<s>", subject.shape, 4, seed=1):
            scene = realize(required, rng, {"<s>": subject})
            cases.append((required, scene, _violate(scene, required, rng)))
    good = judge.text_fidelity([render(s) for _, s, _ in cases], [r for r, _, _ in cases])
    bad = judge.text_fidelity([render(v) for _, _, v in cases], [r for r, _, _ in cases])
    truth = [fidelity(r, v) for r, _, v in cases]
    assert all(t < 1 for t in truth)
    assert sum(g == 1.0 for g in good) >= 0.95 * len(cases), good
    assert sum(abs(b - t) < 1e-9 for b, t in zip(bad, truth)) >= 0.9 * len(cases), list(zip(bad, truth))
    assert sum(bad) / len(bad) < sum(good) / len(good) - 0.1


def test_text_fidelity_accepts_captions_and_checks_lengths(judge):
    image = render(Scene((Thing("heart", "pink", "large", "center"),), Background("plain", "black")))
    assert judge.text_fidelity([image, image], "a large pink heart in the center on a plain black background") == [1.0, 1.0]
    assert judge.text_fidelity([image], "a pink heart on a plain navy background")[0] == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        judge.text_fidelity([image], ["a heart", "a star"])


def test_train_judge_writes_weights_and_card_together_and_measures_what_it_wrote(tmp_path, capsys):
    import json

    from tools.mini_build.train_judge import HELDOUT_SEED, main

    argv = ["--out", str(tmp_path), "--scenes", "64", "--batch-size", "32", "--epochs", "1", "--heldout", "24", "--threads", "2", "--quiet"]
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    assert main(argv) == 0
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1  # the caller's settings, given back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge.json", "judge.safetensors"]
    card = json.loads((tmp_path / "judge.json").read_text())
    assert card["command"] == "python -m tools.mini_build.train_judge " + " ".join(argv)
    heldout = render_set(judge_scenes(24, HELDOUT_SEED))
    written = Judge.load(tmp_path / "judge.safetensors")
    assert card["accuracy"] == accuracy(written, heldout["images"].float() / 255, heldout["slots"], heldout["scene"])
    assert card["parameters"] == sum(p.numel() for p in written.net.parameters())
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "judge.json", tmp_path / "judge.safetensors")}
    assert main(argv) == 2  # never over an earlier judge unasked
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out ") and "already exists; pass --overwrite" in err and "\n" not in err
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "judge.json", tmp_path / "judge.safetensors")}


def test_train_judge_refuses_to_replace_the_shipped_judge_unasked(tmp_path, capsys):
    from tools.mini_build.train_judge import main

    shipped = {p: p.stat().st_mtime_ns for p in (WEIGHTS, WEIGHTS.with_name("judge.json"))}
    assert main(["--quiet"]) == 2  # the default --out is the package's folder; refused before any rendering
    assert "judge.safetensors already exists; pass --overwrite" in capsys.readouterr().err
    assert shipped == {p: p.stat().st_mtime_ns for p in shipped}
    assert main(["--out", str(tmp_path / "new"), "--scenes", "8", "--batch-size", "16"]) == 2
    assert "--batch-size 16 must be between 1 and --scenes 8" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
