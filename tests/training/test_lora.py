"""`--lora RANK`: a word and a LoRA learned together, the word kept at its in-distribution norm.

On real tiny pipelines: only the word's rows and the LoRA's matrices learn (every base weight bit for
bit as it was, the handed-in pipeline given back without LoRA layers), the word stays at its norm,
both are checkpointed and resume bit-identically, a non-finite step skips both, ``word_steps`` /
``lora_steps`` stop one before the other; the run folder's diffusers file loads through diffusers'
own ``load_lora_weights`` to the same images as ``dti.load``; the kohya file gives ComfyUI's and
A1111's lookup rules (restated below) the LoRA's weight changes and the bundled word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dti
from conftest import load_pipe, nan_loss_at
from dti.commands import main
from dti.concepts.concept import Concept
from dti.concepts.kinds import single_file_keys
from dti.models import adapter_for, model_path
from dti.models.sd import StableDiffusionAdapter
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer
from dti.use import lora as lora_files
from dti.use.generate import render
from refusal import assert_refused

RES = 64
FAST = dict(resolution=RES, progress=False, validate=False)


def weights(pipe) -> dict[tuple[str, str], torch.Tensor]:
    nets = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    return {(name, k): p.detach().clone() for name, net in nets.items() for k, p in net.state_dict().items()}


def trainer_for(pipe, photos, **settings) -> Trainer:
    adapter = adapter_for(pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", batch_size=1, **FAST, **settings), adapter.defaults, RES)
    t = Trainer(c, adapter, load_photos(photos), None)
    t.setup()
    return t


def image(pipe, prompt="a photo of a <w>") -> np.ndarray:
    return np.asarray(render(pipe, prompt, 0, 2, 3.0, RES)).astype(np.int16)


# ------------------------------------------------------------------ families: what learns, what stays
FAMILIES = ["sd", "sdxl", "sd3", "flux", "pixart", "sana", "dti-mini"]


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_word_and_the_lora_learn_and_the_word_keeps_its_norm(family, tiny_models, photos, one_thread):
    mini = family == "dti-mini"
    pipe = load_pipe(Path(model_path("dti-mini")) if mini else tiny_models(family))
    before = weights(pipe)
    res = 32 if mini else RES
    adapter = adapter_for(pipe)
    settings = dict(token="<w>", init="circle" if mini else "dog", batch_size=1, steps=2, lora=2, lora_lr=1e-2)
    c = resolve(TrainConfig(photos=str(photos), **settings, **{**FAST, "resolution": res}), adapter.defaults, res)
    t = Trainer(c, adapter, load_photos(photos), None)
    t.setup()
    start = {name: r.vectors().clone() for name, r in t.rows.items()}
    assert all(float(lora_files.norm(s, 2, 2)) == 0.0 for s in t.lora.state().values())  # B = 0: the LoRA starts as a no-op
    for _ in range(2):
        assert t.step() is not None
    lora = t.lora.state()
    assert t.lora.layers[adapter.denoiser_name] > 0
    assert all(lora_files.norm(s, 2, 2) > 0 for s in lora.values()), "the LoRA did not learn"
    for name, rows in t.rows.items():
        v = rows.vectors()
        assert not torch.equal(v, start[name]), f"{name}: the word did not learn"
        assert torch.allclose(v.double().norm(dim=-1), torch.full((v.shape[0],), t.magnitudes[name], dtype=torch.float64), atol=1e-5)
    t.detach()
    after = weights(pipe)
    assert after.keys() == before.keys(), "the pipeline was given back with other layers"
    assert not any(hasattr(m, "peft_config") for m in pipe.components.values()), "PEFT's record left on a module"
    assert all(torch.equal(after[k], before[k]) for k in before), "a base weight changed"


def test_every_family_names_lora_layers_that_exist(tiny_models):
    """Each family's targets wrap at least one layer of its tiny denoiser (a wrong name would refuse --lora)."""
    from dti.testing import BUILDERS

    for family in BUILDERS:
        adapter = adapter_for(load_pipe(tiny_models(family)))
        assert adapter.lora_targets, family
        assert lora_files.inject(adapter.denoiser, 2, 2, adapter.lora_targets, "probe"), family


# ------------------------------------------------------------------ a run folder, end to end
def train_cli(photos, model, out, *extra) -> Path:
    args = ["train", photos, "--token", "<w>", "--init", "dog", "--model", model, "--output", out, "--steps", "3"]
    args += ["--resolution", str(RES), "--batch-size", "1", "--no-validation", "--quiet", "--lora", "4", "--lora-lr", "0.01", *extra]
    assert main([str(a) for a in args]) == 0
    return Path(out)


@pytest.mark.parametrize("family", ["sd", "sana"])
def test_run_folder_loads_in_dti_and_in_diffusers_alike(family, tiny_models, photos, tmp_path, one_thread, capsys):
    model = tiny_models(family)
    extra = ["--lora-text-encoder"] if family == "sd" else []
    run = train_cli(photos, model, tmp_path / "run", *extra)
    assert (run / lora_files.DIFFUSERS_FILE).is_file()
    assert (run / "webui" / "w-lora.safetensors").is_file() or list((run / "webui").glob("*-lora.safetensors"))
    concept = Concept.load(run)
    assert concept.meta["lora"]["rank"] == 4 and concept.meta["lora"]["alpha"] == 4.0
    assert concept.meta["lora"]["targets"]["unet" if family == "sd" else "transformer"] == ["to_q", "to_k", "to_v", "to_out.0"]

    ours = load_pipe(model)
    plain = image(ours)
    dti.load(ours, run)
    with_lora = image(ours)
    dti.unload(ours, "<w>")
    assert np.array_equal(image(ours), plain), "unload left the LoRA in"
    dti.load(ours, run, lora_scale=0.0)
    word_only = image(ours)
    dti.unload(ours, "<w>")

    theirs = load_pipe(model)
    dti.load(theirs, concept)  # the word alone (a Concept brings no LoRA) ...
    assert np.array_equal(image(theirs), word_only)
    theirs.load_lora_weights(run)  # ... and the LoRA through diffusers' own loader
    got = image(theirs)
    assert np.abs(got - with_lora).max() <= 1, "diffusers' load_lora_weights and dti.load disagree"
    assert np.abs(with_lora - word_only).max() > 0, "the LoRA changes nothing: the comparison proves nothing"

    # dti generate --lora-scale and dti inspect
    out = tmp_path / "gen"
    args = ["generate", "a photo of a <w>", "--concept", run, "--model", model, "-n", "1", "--sample-steps", "2"]
    args += ["--resolution", str(RES), "--guidance", "3", "--output", out, "--lora-scale", "0.5"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run)]) == 0
    text = capsys.readouterr().out
    assert "LoRA" in text and "rank 4" in text and "to_q" in text


# ------------------------------------------------------------------ the tools' rules
def comfyui_lora_delta(data: dict[str, torch.Tensor], prefix: str, module_path: str) -> torch.Tensor:
    """ComfyUI (comfy/lora.py): a diffusers-named layer ``a.b.c`` is looked up as ``<prefix>_a_b_c`` with
    ``.lora_up.weight`` / ``.lora_down.weight`` / ``.alpha``; the change is alpha / rank * up @ down."""
    key = f"{prefix}_{module_path.replace('.', '_')}"
    up, down = data[f"{key}.lora_up.weight"].double(), data[f"{key}.lora_down.weight"].double()
    alpha = float(data[f"{key}.alpha"]) if f"{key}.alpha" in data else down.shape[0]
    return alpha / down.shape[0] * (up @ down)


def a1111_bundled(data: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A1111 (extensions-builtin/Lora/networks.py): every ``bundle_emb.<name>.<rest>`` key is part of the
    embedding ``<name>``; a ``string_to_param.<x>`` rest goes into its ``string_to_param`` table; then
    textual_inversion's ``create_embedding_from_data`` takes that table's only tensor, or clip_l + clip_g."""
    found: dict[str, dict] = {}
    for key, value in data.items():
        if not key.startswith("bundle_emb."):
            continue
        _, name, rest = key.split(".", 2)
        emb = found.setdefault(name, {})
        if rest.startswith("string_to_param."):
            emb.setdefault("string_to_param", {})[rest.split(".", 1)[1]] = value
        else:
            emb[rest] = value
    out = {}
    for name, emb in found.items():
        if "string_to_param" in emb:
            table = emb["string_to_param"]
            assert len(table) == 1, "embedding file has multiple terms in it"
            out[name] = {"clip_l": next(iter(table.values()))}
        else:
            assert "clip_g" in emb and "clip_l" in emb, "not an SDXL embedding"
            out[name] = {"clip_l": emb["clip_l"], "clip_g": emb["clip_g"]}
    return out


def comfyui_bundled(data: dict[str, torch.Tensor], name: str, embed_key: str) -> torch.Tensor:
    """ComfyUI: the ``bundle_emb.<name>.*`` entries are the embedding ``<name>``; its encoders look it up as
    any embedding file (comfy/sd1_clip.py ``load_embed``): ``string_to_param``, else their ``embedding_key``,
    else the first tensor."""
    prefix = f"bundle_emb.{name}."
    embed = {k.removeprefix(prefix): v for k, v in data.items() if k.startswith(prefix)}
    if "string_to_param" in embed:
        return next(iter(embed["string_to_param"].values()))
    return embed[embed_key] if embed_key in embed else next(iter(embed.values()))


def test_kohya_file_gives_comfyui_the_lora_and_a1111_the_word(tiny_sd, photos, tmp_path, one_thread):
    run = train_cli(photos, tiny_sd, tmp_path / "run", "--lora-text-encoder")
    (kohya,) = (run / "webui").glob("*-lora.safetensors")
    trigger = kohya.name.removesuffix("-lora.safetensors")
    data = load_file(str(kohya))
    parts, configs = lora_files.read_diffusers(run / lora_files.DIFFUSERS_FILE)
    prefixes = {"unet": "lora_unet", "text_encoder": "lora_te"}
    n = 0
    for component, state in parts.items():
        alpha, rank = configs[component]["lora_alpha"], configs[component]["r"]
        for key, a in state.items():
            if key.endswith(".lora_A.weight"):
                path = key.removesuffix(".lora_A.weight")
                expected = alpha / rank * (state[f"{path}.lora_B.weight"].double() @ a.double())
                assert torch.allclose(comfyui_lora_delta(data, prefixes[component], path), expected, atol=1e-7), path
                n += 1
    assert n == 32 + 8  # 8 attention blocks x 4 in the tiny UNet, 2 CLIP layers x 4
    concept = Concept.load(run)
    bundled = a1111_bundled(data)
    assert list(bundled) == [trigger]
    assert torch.equal(bundled[trigger]["clip_l"], concept.encoders["text_encoder"].vectors)
    assert torch.equal(comfyui_bundled(data, trigger, "clip_l"), concept.encoders["text_encoder"].vectors)


def test_sdxl_bundle_keys_are_clip_l_and_clip_g():
    g = torch.Generator().manual_seed(0)
    from dti.concepts.concept import EncoderVectors

    encoders = {
        "text_encoder": EncoderVectors(torch.randn(2, 768, generator=g), 0.4, torch.randn(2, 768, generator=g), kind="clip_l"),
        "text_encoder_2": EncoderVectors(torch.randn(2, 1280, generator=g), 0.4, torch.randn(2, 1280, generator=g), kind="clip_g"),
    }
    concept = Concept("<w>", encoders, {"method": "dti", "pipeline_class": "StableDiffusionXLPipeline"})
    keys = lora_files.bundle_keys("w", single_file_keys(concept.encoders, concept.meta, "a1111"))
    data = {key: concept.encoders[component].vectors for key, component in keys.items()}
    got = a1111_bundled(data)["w"]
    assert torch.equal(comfyui_bundled(data, "w", "clip_g"), encoders["text_encoder_2"].vectors)
    assert torch.equal(got["clip_l"], encoders["text_encoder"].vectors) and torch.equal(got["clip_g"], encoders["text_encoder_2"].vectors)
    assert lora_files.kohya_prefix("text_encoder", ["text_encoder", "text_encoder_2"]) == "lora_te1"
    assert lora_files.kohya_prefix("text_encoder_2", ["text_encoder", "text_encoder_2"]) == "lora_te2"


# ------------------------------------------------------------------ checkpoints, bad steps, schedules
def test_state_dict_with_lora_continues_bit_identically(tiny_sd, photos, tmp_path, one_thread):
    pipe = load_pipe(tiny_sd)
    settings = dict(steps=6, lora=2, lora_lr=1e-2, lora_text_encoder=True)
    whole = trainer_for(pipe, photos, **settings)
    losses = [whole.step() for _ in range(6)]
    rows, lora = {k: r.param.detach().clone() for k, r in whole.rows.items()}, whole.lora.state()
    whole.detach()

    first = trainer_for(pipe, photos, **settings)
    for _ in range(3):
        first.step()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    halfway = first.lora.state()
    first.detach()
    second = trainer_for(pipe, photos, **settings)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [second.step() for _ in range(3)] == losses[3:]
    assert all(torch.equal(rows[k], r.param.detach()) for k, r in second.rows.items())
    got = second.lora.state()
    second.detach()
    for component in lora:
        assert all(torch.equal(lora[component][k], got[component][k]) for k in lora[component]), component
        assert any(not torch.equal(halfway[component][k], got[component][k]) for k in got[component])  # it moved after the resume


def test_a_non_finite_step_skips_the_word_and_the_lora(tiny_sd, photos, monkeypatch, one_thread):
    pipe = load_pipe(tiny_sd)
    nan_loss_at(monkeypatch, {2})
    t = trainer_for(pipe, photos, steps=3, lora=2, lora_lr=1e-2)
    assert t.step() is not None
    rows, lora, opt = t.rows["text_encoder"].param.detach().clone(), t.lora.state(), t.lora.optimizer.state_dict()
    assert t.step() is None  # the NaN step
    assert torch.equal(rows, t.rows["text_encoder"].param.detach())
    assert all(torch.equal(v, t.lora.state()["unet"][k]) for k, v in lora["unet"].items())
    after = t.lora.optimizer.state_dict()["state"]
    assert all(torch.equal(after[i]["exp_avg"], s["exp_avg"]) and torch.equal(after[i]["step"], s["step"]) for i, s in opt["state"].items())
    assert t.step() is not None
    t.detach()


@pytest.mark.parametrize("which", ["word", "lora"])
def test_word_steps_and_lora_steps_stop_one_before_the_other(which, tiny_sd, photos, one_thread):
    pipe = load_pipe(tiny_sd)
    t = trainer_for(pipe, photos, steps=3, lora=2, lora_lr=1e-2, **{f"{which}_steps": 1})
    t.step()
    rows, lora = t.rows["text_encoder"].param.detach().clone(), t.lora.state()["unet"]
    t.step()
    t.step()
    word_still = torch.equal(rows, t.rows["text_encoder"].param.detach())
    lora_still = all(torch.equal(v, t.lora.state()["unet"][k]) for k, v in lora.items())
    t.detach()
    assert (word_still, lora_still) == ((True, False) if which == "word" else (False, True))


def test_lora_only_the_word_frozen_at_its_initializer(tiny_sd, photos, one_thread):
    """``--method ti --word-steps 0`` (a LoRA alone, the word a fixed token): the word keeps its initializer's rows, the LoRA learns."""
    pipe = load_pipe(tiny_sd)
    t = trainer_for(pipe, photos, steps=2, method="ti", word_steps=0, lora=2, lora_lr=1e-2)
    start = t.rows["text_encoder"].param.detach().clone()
    assert t.step() is not None and t.step() is not None
    assert torch.equal(start, t.rows["text_encoder"].param.detach())
    assert lora_files.norm(t.lora.state()["unet"], 2, 2) > 0
    t.detach()


# ------------------------------------------------------------------ refusals
def test_bad_lora_settings_are_one_line(base_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert_refused([*base_args, "--lora", "0"], capsys, "--lora", untouched=[out])
    assert_refused([*base_args, "--lora", "2", "--precision", "fp16"], capsys, "--lora with --precision fp16", untouched=[out])
    monkeypatch.setattr(StableDiffusionAdapter, "lora_targets", ())
    assert_refused([*base_args, "--lora", "2"], capsys, "not supported for StableDiffusionPipeline", untouched=[out])
    assert_refused(["generate", "a <w>", "--model", base_args[7], "--lora-scale", "nan"], capsys, "--lora-scale")


def test_a_run_trained_further_from_its_checkpoint_writes_what_one_run_writes(tiny_sd, photos, tmp_path, one_thread):
    """`dti train --resume RUN --steps N` from a finished run's last checkpoint: the same word and LoRA
    files, bit for bit, as one run of N steps."""
    whole = train_cli(photos, tiny_sd, tmp_path / "whole", "--lora-text-encoder", "--steps", "4", "--checkpoint-every", "2")
    part = train_cli(photos, tiny_sd, tmp_path / "part", "--lora-text-encoder", "--steps", "2", "--checkpoint-every", "2")
    assert main(["train", "--resume", str(part), "--steps", "4", "--quiet"]) == 0
    a, b = Concept.load(whole), Concept.load(part)
    assert torch.equal(a.encoders["text_encoder"].vectors, b.encoders["text_encoder"].vectors)
    for name in (lora_files.DIFFUSERS_FILE, f"webui/{next((whole / 'webui').glob('*-lora.safetensors')).name}"):
        da, db = load_file(str(whole / name)), load_file(str(part / name))
        assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da), name


def test_several_subjects_in_one_process_refuse_a_lora(tiny_sd, photos):
    from dti.core.errors import DTIError
    from dti.training.multi import MultiTrainer

    pipe = load_pipe(tiny_sd)
    adapter = adapter_for(pipe)
    c = resolve(TrainConfig(photos=str(photos), token="<w>", init="dog", steps=1, lora=2, **FAST), adapter.defaults, RES)
    with pytest.raises(DTIError, match="not supported with several subjects"):
        MultiTrainer([Trainer(c, adapter, load_photos(photos), None)], ["a"])


def test_sigterm_saves_the_word_and_the_lora_and_the_resumed_run_is_the_same(tiny_sd, photos, tmp_path, monkeypatch, one_thread):
    import os
    import signal

    from dti.training.checkpoints import load_latest
    from dti.training.stopping import RunStopped

    settings = dict(steps=4, batch_size=1, lora=2, lora_lr=1e-2, lora_text_encoder=True, checkpoint_every=0, **FAST)
    dti.train(photos, "<w>", "dog", tiny_sd, tmp_path / "whole", **settings)
    real = Trainer.launch

    def launch(self, step):
        if step == 2:  # the signal arrives while step 2 runs
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, step)

    monkeypatch.setattr(Trainer, "launch", launch)
    with pytest.raises(RunStopped) as stopped:
        dti.train(photos, "<w>", "dog", tiny_sd, tmp_path / "stopped", **settings)
    assert stopped.value.exit_code == 143
    step, state = load_latest(tmp_path / "stopped" / "checkpoints")
    assert step == 2 and set(state["lora"]["weights"]) == {"unet", "text_encoder"} and state["lora"]["optimizer"]["state"]
    monkeypatch.setattr(Trainer, "launch", real)
    dti.resume(tmp_path / "stopped")
    a, b = (load_file(str(tmp_path / run / lora_files.DIFFUSERS_FILE)) for run in ("whole", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_train_the_lora_one_process_trains(tiny_sd, photos, tmp_path):
    """accelerate: the LoRA's gradients are averaged over processes with the word's (both would drift apart otherwise)."""
    import os
    import subprocess
    import sys

    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["--batch-size", "4", "--lora-text-encoder", "--checkpoint-every", "0"]
    train_cli(photos, tiny_sd, one, *extra)
    base = ["train", photos, "--token", "<w>", "--init", "dog", "--model", tiny_sd, "--output", two, "--steps", "3"]
    base += ["--resolution", str(RES), "--no-validation", "--quiet", "--lora", "4", "--lora-lr", "0.01", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29521", "-m", "dti"]
    out = subprocess.run([*launch, *map(str, base)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = (load_file(str(run / lora_files.DIFFUSERS_FILE)) for run in (one, two))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a), max(float((a[k] - b[k]).abs().max()) for k in a)
    assert any(float(a[k].abs().max()) > 1e-3 for k in a if "lora_B" in k)  # the LoRA learned: the comparison means something
