"""The word-use probe: does a dti-mini model condition on each kind of word?"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from tools.mini_build.probe import SWAPS, denoising_losses, probe_scenes, swapped, word_use

from dti.mini import world

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("kind", list(SWAPS))
def test_a_swap_changes_exactly_the_one_attribute_the_caption_states(kind):
    for scene in probe_scenes(20, seed=1):
        lie = swapped(scene, kind)
        before, after = world.spec(world.caption(scene)), world.spec(world.caption(lie))
        key = {"texture": "texture", "background": "background"}.get(kind)
        if key:
            assert before[key] != after[key] and before["objects"] == after["objects"]
        else:
            (a,), (b,) = before["objects"], after["objects"]
            assert a[kind] != b[kind] and {k: v for k, v in a.items() if k != kind} == {k: v for k, v in b.items() if k != kind}
            assert (before["texture"], before["background"]) == (after["texture"], after["background"])


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        swapped(probe_scenes(1)[0], "mood")


def test_probe_on_the_packaged_model_compares_like_with_like_and_sees_colour_words():
    from dti.mini.model import load_pipeline

    pipe = load_pipeline()
    scenes = probe_scenes(6, seed=2)
    prompts = [world.caption(s) for s in scenes]
    first = denoising_losses(pipe, scenes, prompts, (800,), seeds=1)
    assert first == denoising_losses(pipe, scenes, prompts, (800,), seeds=1)  # same noise, same number
    result = word_use(pipe, n=6, timesteps=(800,), seeds=1, seed=2)
    assert set(result["use"]) == set(SWAPS)
    assert result["use"]["colour"]["mean"] > 0.1  # a lying colour word hurts the model's prediction
    assert result["use"]["background"]["mean"] > 0.1


def refused(main, argv, capsys, pattern: str) -> None:
    """Exit status 2 and one ``error:`` line matching ``pattern``, as `dti` refuses bad input."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines


def test_probe_script_writes_its_result_refreshes_the_card_and_never_replaces_it_unasked(tmp_path, capsys):
    from tools.mini_build.probe import main

    from dti.mini.model import PACKAGED

    model = tmp_path / "model"
    shutil.copytree(PACKAGED, model)
    (model / "probe.json").unlink()
    argv = ["--model", model, "--n", "2", "--out", model / "probe.json", "--quiet"]
    assert main([str(a) for a in argv]) == 0
    result = json.loads((model / "probe.json").read_text())
    assert result["scenes"] == 2 and result["step"] is None and set(result["use"]) == set(SWAPS)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == list(SWAPS)
    assert all(f"use {result['use'][line.split()[0]]['mean']:+.4f}" in line for line in printed)  # what it printed is what it wrote
    assert "| " + " | ".join(f"{row['mean']:+.1%}" for row in result["use"].values()) + " |" in (model / "README.md").read_text()
    refused(main, argv, capsys, r"--out .*probe\.json already exists; pass --overwrite")
    refused(main, ["--model", tmp_path, "--n", "1"], capsys, r"--model .*: no model_index\.json there")
    refused(main, ["--n", "0"], capsys, r"--n 0 must be at least 1")


def test_checkpoints_that_cannot_be_probed_are_refused_in_one_line(tmp_path):
    from tools.mini_build.probe import load_weights

    from dti.core.errors import DTIError
    from dti.mini.model import load_pipeline
    from dti.training.checkpoints import write_state

    pipe = load_pipeline()
    with pytest.raises(DTIError, match=r"no such file; pass a train_base run's diffusion\.pt"):
        load_weights(pipe, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(DTIError, match=r"is not a train_base checkpoint"):
        load_weights(pipe, tmp_path / "junk.pt")
    unet = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    write_state(tmp_path / "ema.pt", {"step": 5, "ema": unet})
    with pytest.raises(DTIError, match=r"has no 'model' weights; use --weights model or ema"):
        load_weights(pipe, tmp_path / "ema.pt", "model")
    text = {f"text_encoder.{k}": v for k, v in pipe.text_encoder_2.state_dict().items()}
    write_state(tmp_path / "other.pt", {"step": 5, "ema": {**text, "unet.conv_in.weight": torch.zeros(1)}})
    with pytest.raises(DTIError, match=r"does not fit the --model pipeline's unet"):
        load_weights(pipe, tmp_path / "other.pt")
