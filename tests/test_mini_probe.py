"""The word-use probe: does a dti-mini model condition on each kind of word?"""

from __future__ import annotations

import pytest

from dti.mini import world
from dti.mini.build.probe import SWAPS, denoising_losses, probe_scenes, swapped, word_use

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
